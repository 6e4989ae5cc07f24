// `generate` takes its sampling defaults from generation_config.json as transformers does: a do_sample file's
// values give the text of the same values as flags (and says so on stderr), a flag overrides its field,
// --greedy and --generation-config none give plain greedy text, and a bad value is one line naming the file.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class GenerationConfigCliTests
{
    [Fact]
    public void Generate_samples_with_the_files_defaults_unless_told_otherwise()
    {
        string dir = Directory.CreateTempSubdirectory("temper-cli-gencfg-").FullName;
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string cfg = Path.Combine(dir, "generation_config.json");
        var o = JsonNode.Parse(File.ReadAllText(cfg))!.AsObject();
        o["do_sample"] = true;
        o["temperature"] = 1.5;
        o["top_k"] = 40;
        o["max_new_tokens"] = 12;
        File.SetAttributes(cfg, FileAttributes.Normal);
        File.WriteAllText(cfg, o.ToJsonString());
        string[] run = ["generate", "--model", dir, "--prompt", "hello", "--ignore-eos", "--seed", "3", "--device", "cpu"];
        var byFile = TemperCli.Run(run);
        Assert.True(byFile.ExitCode == 0, byFile.Stderr);
        Assert.Contains("generation_config.json: do_sample true, temperature 1.5, top_k 40", byFile.Stderr);
        var byFlags = TemperCli.Run([.. run, "--generation-config", "none", "--temperature", "1.5", "--top-k", "40", "--top-p", "1", "--max-new-tokens", "12"]);
        Assert.Equal(byFlags.Stdout, byFile.Stdout);
        var greedy = TemperCli.Run([.. run, "--greedy", "--max-new-tokens", "12"]);
        var plain = TemperCli.Run([.. run, "--generation-config", "none", "--max-new-tokens", "12"]);
        Assert.Equal(plain.Stdout, greedy.Stdout);
        Assert.NotEqual(greedy.Stdout, byFile.Stdout);
        // A flag overrides only its field: top-k 1 over the file's sampling is greedy.
        Assert.Equal(greedy.Stdout, TemperCli.Run([.. run, "--top-k", "1"]).Stdout);

        o["top_p"] = 2;
        File.WriteAllText(cfg, o.ToJsonString());
        var bad = TemperCli.Run(run);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("generation_config.json: field 'top_p' must be in (0, 1]", bad.Stderr);
        Assert.Single(bad.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Directory.Delete(dir, true);
    }
}
