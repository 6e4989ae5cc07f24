// generation_config.json: its stop ids join config.json's, and its sampling fields become the defaults as
// transformers applies them (do_sample true samples with the file's values and transformers' defaults for the
// rest, do_sample false or absent is greedy, repetition_penalty either way); sampling fields out of range are
// refused in one line naming the file and field only where they would be used.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class GenerationConfigTests
{
    private static string Folder(string json)
    {
        string dir = Directory.CreateTempSubdirectory("temper-gencfg-").FullName;
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), json);
        return dir;
    }

    [Fact]
    public void A_sampling_config_gives_its_values_and_transformers_defaults_for_the_rest()
    {
        var g = GenerationConfig.Load(Folder("""{"bos_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "transformers_version": "4.37.0"}"""))!;
        Assert.Equal([151645, 151643], g.EosTokenIds);
        var s = g.Defaults(new SamplingOptions { Seed = 9, PresencePenalty = 0.5f });
        Assert.Equal((false, 0.7f, 0.8f, 50, 0f, 1.05f, 9UL, 0.5f), (s.Greedy, s.Temperature, s.TopP, s.TopK, s.MinP, s.RepetitionPenalty, s.Seed, s.PresencePenalty));
        Assert.Equal(["do_sample true", "temperature 0.7", "top_p 0.8", "repetition_penalty 1.05"], g.FieldsSet());
    }

    [Fact]
    public void Without_do_sample_it_is_greedy_and_unused_fields_are_not_checked()
    {
        var g = GenerationConfig.Load(Folder("""{"do_sample": false, "temperature": 0.0, "top_p": 7, "repetition_penalty": 1.1, "max_new_tokens": 40}"""))!;
        var s = g.Defaults(new SamplingOptions());
        Assert.True(s.Greedy);
        Assert.Equal(1.1f, s.RepetitionPenalty);
        Assert.Equal(40, g.MaxNewTokens);
        Assert.Equal((null, null), (g.Temperature, g.TopP)); // out of range and unused: left out
        Assert.Null(GenerationConfig.Load(Directory.CreateTempSubdirectory("temper-gencfg-none-").FullName));
    }

    [Theory]
    [InlineData("""{"do_sample": true, "temperature": 0}""", "field 'temperature' must be > 0")]
    [InlineData("""{"do_sample": true, "top_p": 1.5}""", "field 'top_p' must be in (0, 1]")]
    [InlineData("""{"repetition_penalty": -1}""", "field 'repetition_penalty' must be > 0")]
    [InlineData("""{"eos_token_id": "x"}""", "field 'eos_token_id' must be an integer")]
    [InlineData("""{"do_sample": "yes"}""", "field 'do_sample' must be true or false")]
    [InlineData("""{"do_sample": true,""", "malformed JSON at line 1")]
    public void Bad_fields_are_refused_in_one_line(string json, string expect)
    {
        string dir = Folder(json);
        var e = Assert.Throws<TemperException>(() => GenerationConfig.Load(dir));
        Assert.Contains(Path.Combine(dir, GenerationConfig.FileName), e.Message);
        Assert.Contains(expect, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Its_stop_ids_join_the_models()
    {
        string dir = Directory.CreateTempSubdirectory("temper-gencfg-model-").FullName;
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var o = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, GenerationConfig.FileName)))!.AsObject();
        o["eos_token_id"] = new JsonArray(2, 7, 11);
        File.WriteAllText(Path.Combine(dir, GenerationConfig.FileName), o.ToJsonString());
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        Assert.Equal([2, 7, 11], lm.EosIds().Order());
        Directory.Delete(dir, true);
    }
}
