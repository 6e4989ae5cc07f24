// PEFT adapter loading: target matching as PEFT does it, refused options, and adapters that do not
// fit the model, each with a message naming the folder and the cause.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class AdapterTests
{
    internal static string CopyAdapter(Action<JsonObject>? editConfig = null, Func<string, Tensor, Tensor>? editTensor = null)
    {
        string src = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter");
        string dir = Directory.CreateTempSubdirectory("temper-adapter-").FullName;
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "adapter_config.json")))!.AsObject();
        editConfig?.Invoke(cfg);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        using var f = SafetensorsFile.Open(Path.Combine(src, "adapter_model.safetensors"));
        var tensors = f.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, editTensor?.Invoke(e.Name, f.Get(e.Name)) ?? f.Get(e.Name))).ToList();
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        return dir;
    }

    [Theory]
    [InlineData("rank_pattern", """{"q_proj": 8}""", "rank_pattern")]
    [InlineData("alpha_pattern", """{"q_proj": 8}""", "alpha_pattern")]
    [InlineData("modules_to_save", """["lm_head"]""", "modules_to_save")]
    public void Unsupported_peft_options_are_refused(string key, string json, string named)
    {
        string dir = CopyAdapter(c => c[key] = JsonNode.Parse(json));
        var m = Assert.Throws<TemperException>(() => LoraAdapter.Load(dir)).Message;
        Assert.Contains("adapter_config.json", m);
        Assert.Contains(named, m);
        Assert.Contains("not supported", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Adapter_whose_shapes_do_not_fit_is_refused()
    {
        string dir = CopyAdapter(editTensor: (name, t) => name.EndsWith("layers.1.mlp.up_proj.lora_A.weight", StringComparison.Ordinal)
            ? Tensor.FromFloats(new Shape(4, 32), new float[128], name) : t);
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        var m = Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("model.layers.1.mlp.up_proj", m);
        Assert.Contains("[4,32]", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Adapter_for_a_module_the_model_lacks_is_refused()
    {
        string dir = CopyAdapter(editTensor: null);
        // Add a pair under a layer index the model does not have.
        string file = Path.Combine(dir, "adapter_model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafetensorsFile.Open(file))
            list = f.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, Tensor.FromFloats(e.Shape, f.Get(e.Name).ToFloatArray()))).ToList();
        list.Add(new("base_model.model.model.layers.7.mlp.up_proj.lora_A.weight", Tensor.FromFloats(new Shape(4, 64), new float[256])));
        list.Add(new("base_model.model.model.layers.7.mlp.up_proj.lora_B.weight", Tensor.FromFloats(new Shape(160, 4), new float[640])));
        SafetensorsWriter.Write(file, list);
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        var m = Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("model.layers.7.mlp.up_proj", m);
        Assert.Contains("does not exist", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Target_matching_follows_peft()
    {
        var list = new LoraConfig(4, 8, false, ["q_proj", "v_proj"], null, 0);
        Assert.True(list.Targets("model.layers.0.self_attn.q_proj"));
        Assert.False(list.Targets("model.layers.0.self_attn.qq_proj"));
        var regex = new LoraConfig(4, 8, false, null, @".*\.0\.self_attn\.(q|k)_proj", 0);
        Assert.True(regex.Targets("model.layers.0.self_attn.k_proj"));
        Assert.False(regex.Targets("model.layers.10.self_attn.k_proj"));
        Assert.Equal(2f, list.Scale);
        Assert.Equal(4f, (list with { UseRsLora = true }).Scale);
    }
}
