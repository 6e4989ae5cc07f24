// PEFT modules_to_save copies of embed_tokens / lm_head on the llama-tiny fixture (tied embeddings): an adapter folder
// built here with copies gives the logits of a model folder whose embedding and head are those copies (built
// independently, untied, with the same LoRA), merged or not; one copy on the tied model unties the pair as PEFT does;
// copies that do not fit, unknown modules and callers that cannot apply copies are refused in one line.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public sealed class ModulesToSaveTests
{
    private static readonly int[] Ids = [1, 40, 41, 42, 43, 50, 51, 52, 1, 60, 61, 62, 63, 64, 65, 2];
    private static string Model => Fixtures.Hf("llama-tiny");
    private static string Adapter => Path.Combine(Model, "adapter");

    private static Tensor BaseEmbed()
    {
        using var f = SafetensorsFile.Open(Path.Combine(Model, "model.safetensors"));
        return Tensor.FromFloats(f.Get("model.embed_tokens.weight").Shape, f.Get("model.embed_tokens.weight").ToFloatArray());
    }

    // The base embedding moved by seeded noise: a copy that differs from it everywhere.
    internal static Tensor Perturbed(int seed, int rows = 0)
    {
        var e = BaseEmbed();
        var rng = new Random(seed);
        int v = rows == 0 ? e.Shape[0] : rows, c = e.Shape[1];
        var values = new float[v * c];
        for (int i = 0; i < values.Length; i++) values[i] = (i < e.Elements ? e.Floats[i] : 0) + (float)(0.05 * (rng.NextDouble() - 0.5));
        return Tensor.FromFloats(new Shape(v, c), values);
    }

    /// <summary>The fixture's LoRA adapter with modules_to_save and these tensors (PEFT names) added.</summary>
    internal static string AdapterWith(JsonNode modules, params (string Name, Tensor Value)[] copies)
    {
        string dir = TempFolder.Create("temper-mts-adapter");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Adapter, "adapter_config.json")))!.AsObject();
        cfg["modules_to_save"] = modules;
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        using var f = SafetensorsFile.Open(Path.Combine(Adapter, "adapter_model.safetensors"));
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"),
            [.. f.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, f.Get(e.Name))), .. copies.Select(c => new KeyValuePair<string, Tensor>(c.Name, c.Value))]);
        return dir;
    }

    // llama-tiny untied, with this embedding and head (null = the base embedding): the model the copies should make.
    private static string ModelWith(Tensor? embed, Tensor? head)
    {
        string dir = TempFolder.Create("temper-mts-model");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Model, "config.json")))!.AsObject();
        cfg["tie_word_embeddings"] = false;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        using var f = SafetensorsFile.Open(Path.Combine(Model, "model.safetensors"));
        var baseEmbed = BaseEmbed();
        var tensors = f.Entries.Where(e => e.Name != "model.embed_tokens.weight").Select(e => new KeyValuePair<string, Tensor>(e.Name, f.Get(e.Name))).ToList();
        tensors.Add(new("model.embed_tokens.weight", embed ?? baseEmbed));
        tensors.Add(new("lm_head.weight", head ?? baseEmbed));
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return dir;
    }

    private static float[] Logits(string model, string adapter, bool merge = false)
    {
        using var lm = LanguageModel.Load(model, new CpuBackend(1), adapter, mergeAdapter: merge);
        using var logits = lm.Logits(Ids, 2);
        return logits.ToFloatArray();
    }

    private static void AssertClose(float[] want, float[] got, double tol)
    {
        double worst = want.Zip(got).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(worst <= tol, $"logits differ by up to {worst:G3}");
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void Copies_replace_the_embedding_and_head_merged_or_not(bool embed, bool head)
    {
        var (e, h) = (embed ? Perturbed(1) : null, head ? Perturbed(2) : null);
        var names = new List<JsonNode>();
        var copies = new List<(string, Tensor)>();
        if (e != null) { names.Add("embed_tokens"); copies.Add(("base_model.model.model.embed_tokens.weight", e)); }
        if (h != null) { names.Add("lm_head"); copies.Add(("base_model.model.lm_head.weight", h)); }
        string adapter = AdapterWith(new JsonArray([.. names]), [.. copies]);
        var want = Logits(ModelWith(e, h), Adapter);
        var plain = Logits(Model, Adapter);
        Assert.True(want.Zip(plain).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "the copies do not change the logits; the check would prove nothing");
        AssertClose(want, Logits(Model, adapter), 1e-5);
        AssertClose(want, Logits(Model, adapter, merge: true), 1e-4);
    }

    [Fact]
    public void Copies_that_do_not_fit_or_are_missing_are_refused()
    {
        string Refusal(string adapter) => Assert.Throws<TemperException>(() => LanguageModel.Load(Model, new CpuBackend(1), adapter)).Message;
        var resized = Refusal(AdapterWith(new JsonArray("embed_tokens"), ("base_model.model.model.embed_tokens.weight", Perturbed(1, rows: 520))));
        Assert.Contains("model.embed_tokens.weight", resized);
        Assert.Contains("resized vocabulary", resized);
        var narrow = Refusal(AdapterWith(new JsonArray("lm_head"), ("base_model.model.lm_head.weight", Tensor.FromFloats(new Shape(512, 32), new float[512 * 32]))));
        Assert.Contains("lm_head.weight", narrow);
        Assert.Contains("[512,32]", narrow.Replace(" ", ""));
        Assert.Contains("base_model.model.lm_head.weight' is missing", Refusal(AdapterWith(new JsonArray("lm_head"))));
        Assert.Contains("'norm' is not supported", Refusal(AdapterWith(new JsonArray("embed_tokens", "norm"), ("base_model.model.model.embed_tokens.weight", Perturbed(1)))));
        string tiedCopies = AdapterWith(new JsonArray("embed_tokens"), ("base_model.model.model.embed_tokens.weight", Perturbed(1)));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(tiedCopies, "adapter_config.json")))!.AsObject();
        cfg["ensure_weight_tying"] = true;
        File.WriteAllText(Path.Combine(tiedCopies, "adapter_config.json"), cfg.ToJsonString());
        Assert.Contains("ensure_weight_tying", Refusal(tiedCopies));
        // A caller that does not apply copies (combine, the C ABI) refuses them rather than dropping them.
        string copies = AdapterWith(new JsonArray("embed_tokens"), ("base_model.model.model.embed_tokens.weight", Perturbed(1)));
        Assert.Contains("modules_to_save", Assert.Throws<TemperException>(() => LoraAdapter.Load(copies)).Message);
    }
}
