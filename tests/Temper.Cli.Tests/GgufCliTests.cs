// `temper gguf` as a user runs it: with the fixture's LoRA adapter it writes the same bytes as `temper merge` followed by
// `temper gguf` of the merged folder (the merge is temper merge's), and that file differs from the base's; a folder
// for --out, an unknown --outtype, a missing model folder and --adapter-only with two adapters are one line and a
// non-zero exit, leaving no file behind.
namespace Temper.Tests;

public class GgufCliTests
{
    [Fact]
    public void An_adapter_is_merged_as_temper_merge_merges_it()
    {
        string model = Fixtures.Hf("llama-tiny"), adapter = Path.Combine(model, "adapter"), dir = TempFolder.Create("temper-gguf-cli");
        var direct = TemperCli.Run("gguf", "--model", model, "--adapter", adapter, "--out", Path.Combine(dir, "direct.gguf"), "--outtype", "bf16", "--name", "tiny");
        Assert.True(direct.ExitCode == 0, direct.Stderr);
        Assert.Contains("llama, bf16, 20 tensors", direct.Stdout);
        Assert.True(TemperCli.Run("merge", "--model", model, "--adapter", adapter, "--out", Path.Combine(dir, "merged")).ExitCode == 0);
        var viaMerge = TemperCli.Run("gguf", "--model", Path.Combine(dir, "merged"), "--out", Path.Combine(dir, "via-merge.gguf"), "--outtype", "bf16", "--name", "tiny");
        Assert.True(viaMerge.ExitCode == 0, viaMerge.Stderr);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "via-merge.gguf")), File.ReadAllBytes(Path.Combine(dir, "direct.gguf")));
        var plain = TemperCli.Run("gguf", "--model", model, "--out", Path.Combine(dir, "base.gguf"), "--outtype", "bf16", "--name", "tiny");
        Assert.True(plain.ExitCode == 0, plain.Stderr);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(dir, "base.gguf")), File.ReadAllBytes(Path.Combine(dir, "direct.gguf")));
        Assert.Equal("tiny", new GgufFile(Path.Combine(dir, "direct.gguf")).Get<string>("general.name"));
    }

    [Fact]
    public void Bad_arguments_are_one_line_and_write_nothing()
    {
        string model = Fixtures.Hf("llama-tiny"), dir = TempFolder.Create("temper-gguf-cli-bad");
        var folder = TemperCli.Run("gguf", "--model", model, "--out", dir);
        Assert.Equal(2, folder.ExitCode);
        Assert.Contains("is a folder", folder.Stderr);
        var type = TemperCli.Run("gguf", "--model", model, "--out", Path.Combine(dir, "x.gguf"), "--outtype", "q4_k");
        Assert.NotEqual(0, type.ExitCode);
        Assert.Contains("q4_k", type.Stderr);
        var missing = TemperCli.Run("gguf", "--model", Path.Combine(dir, "nope"), "--out", Path.Combine(dir, "y.gguf"));
        Assert.Equal(2, missing.ExitCode);
        string adapter = Path.Combine(model, "adapter");
        var two = TemperCli.Run("gguf", "--model", model, "--adapter", adapter, "--adapter", adapter, "--adapter-only", "--out", Path.Combine(dir, "z.gguf"));
        Assert.Equal(2, two.ExitCode);
        Assert.Contains("exactly one --adapter", two.Stderr);
        foreach (var r in new[] { folder, missing, two }) Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Empty(Directory.GetFiles(dir));
    }
}

public class GgufImportCliTests
{
    [Fact]
    public void A_gguf_file_comes_back_as_a_folder_every_verb_takes()
    {
        string model = Fixtures.Hf("qwen2-tiny"), dir = TempFolder.Create("temper-gguf-import-cli"), file = Path.Combine(dir, "m.gguf");
        Assert.True(TemperCli.Run("gguf", "--model", model, "--out", file, "--outtype", "f32").ExitCode == 0);
        var hint = TemperCli.Run("generate", "--model", file, "--prompt", "hi", "--max-new-tokens", "2");
        Assert.Equal(2, hint.ExitCode);
        Assert.Contains("temper gguf-import", hint.Stderr);
        var r = TemperCli.Run("gguf-import", file, "--out", Path.Combine(dir, "hf"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("qwen2, 27 tensors in float32", r.Stdout);
        string[] gen = ["generate", "--prompt", "1+2=", "--greedy", "--max-new-tokens", "6", "--generation-config", "none"];
        var original = TemperCli.Run([.. gen, "--model", model]);
        var imported = TemperCli.Run([.. gen, "--model", Path.Combine(dir, "hf")]);
        Assert.True(imported.ExitCode == 0, imported.Stderr);
        Assert.Equal(original.Stdout, imported.Stdout);
        var bad = TemperCli.Run("gguf-import", Path.Combine(model, "config.json"), "--out", Path.Combine(dir, "bad"));
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("no GGUF magic", bad.Stderr);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
    }
}
