// End-to-end parity with transformers + PEFT on the fixture models (qwen3-yarn-tiny: YaRN RoPE scaling): logits (plain, padded, LoRA
// unmerged, LoRA merged by us, the merged/ folder), greedy ids teacher-forced, and a config rewritten
// in the transformers-4 form. Tolerance: max abs error <= 1e-4 x max|ref| (fixtures README; tests/Shared/LogitParity.cs).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class ParityTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny", "qwen3-tiny", "qwen3-yarn-tiny" };

    [Theory, MemberData(nameof(Models))]
    public void Logits_match_transformers(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var (ids, b, _) = LogitParity.Ids(r, "input_ids");
        using var logits = lm.Logits(ids, b);
        LogitParity.AssertClose(r.Get("logits").Floats, logits.Floats);
    }

    [Theory, MemberData(nameof(Models))]
    public void Masked_logits_match_at_unpadded_positions(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var (ids, b, t) = LogitParity.Ids(r, "input_ids");
        var mask = r.Get("attention_mask").ToFloatArray().Select(x => (int)x).ToArray();
        Assert.Contains(0, mask);
        using var logits = lm.Logits(ids, b, mask);
        int v = lm.Config.VocabSize;
        LogitParity.AssertClose(r.Get("masked_logits").Floats, logits.Floats, i => mask[i / v] == 1);
    }

    [Theory, MemberData(nameof(Models))]
    public void Lora_logits_unmerged_match_peft(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        Assert.All(lm.Weights.Projections, p => Assert.NotNull(p.Lora));
        var (ids, b, _) = LogitParity.Ids(r, "input_ids");
        using var logits = lm.Logits(ids, b);
        LogitParity.AssertClose(r.Get("lora.logits").Floats, logits.Floats);
    }

    [Theory, MemberData(nameof(Models))]
    public void Our_merge_and_the_merged_folder_match_peft_merge(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var (ids, b, _) = LogitParity.Ids(r, "input_ids");
        using (var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"), mergeAdapter: true))
        {
            Assert.All(lm.Weights.Projections, p => Assert.Null(p.Lora));
            using var logits = lm.Logits(ids, b);
            LogitParity.AssertClose(r.Get("merged.logits").Floats, logits.Floats);
        }
        using var merged = LanguageModel.Load(Path.Combine(dir, "merged"), new CpuBackend());
        using var mlogits = merged.Logits(ids, b);
        LogitParity.AssertClose(r.Get("merged.logits").Floats, mlogits.Floats);
    }

    [Theory, MemberData(nameof(Models))]
    public void Greedy_ids_match_teacher_forced(string name)
    {
        string dir = Fixtures.Hf(name);
        var g = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["greedy"]!;
        var prompt = g["prompt_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var output = g["output_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var gaps = g["top2_gaps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        // Teacher-forced: one forward over the reference sequence; the argmax at each generated step.
        using var logits = lm.Logits(output[..^1], 1);
        int v = lm.Config.VocabSize, checkedSteps = 0;
        for (int s = 0; s < gaps.Length; s++)
        {
            if (gaps[s] < 1e-3) continue;
            int pos = prompt.Length - 1 + s;
            Assert.Equal(output[pos + 1], Sampler.ArgMax(logits.Floats.Slice(pos * v, v)));
            checkedSteps++;
        }
        Assert.True(checkedSteps > 10);
        // And the KV-cache generator, run free, reproduces those ids (the gaps here are all large).
        var gen = new Generator(lm.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = gaps.Length, IgnoreEos = true, EosIds = lm.EosIds() })[0];
        Assert.Equal(output[prompt.Length..], gen.GeneratedIds.ToArray());
    }

    [Theory, MemberData(nameof(Models))]
    public void Transformers4_config_form_gives_the_same_logits(string name)
    {
        string src = Fixtures.Hf(name);
        string dir = Directory.CreateTempSubdirectory("temper-t4-").FullName;
        try
        {
            foreach (var f in new[] { "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(src, f), Path.Combine(dir, f));
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
            var rp = cfg["rope_parameters"]!.AsObject();
            cfg.Remove("rope_parameters");
            cfg["rope_theta"] = rp["rope_theta"]!.GetValue<double>();
            // The scaling fields (yarn's) move to rope_scaling; none for the default type.
            var scaling = rp.DeepClone().AsObject();
            scaling.Remove("rope_theta");
            cfg["rope_scaling"] = (string?)rp["rope_type"] is null or "default" ? null : scaling;
            File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());

            using var r = SafetensorsFile.Open(Path.Combine(src, "reference.safetensors"));
            using var lm = LanguageModel.Load(dir, new CpuBackend());
            Assert.Equal(rp["rope_theta"]!.GetValue<double>(), lm.Config.Rope.Theta);
            var (ids, b, _) = LogitParity.Ids(r, "input_ids");
            using var logits = lm.Logits(ids, b);
            LogitParity.AssertClose(r.Get("logits").Floats, logits.Floats);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
