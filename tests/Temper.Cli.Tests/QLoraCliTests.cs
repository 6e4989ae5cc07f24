// The QLoRA side of the CLI: `temper plan` prints the memory parts and a total that grows with the
// batch; --qlora shrinks the weights; --qlora with --full is one line on stderr and exit 2 (plan, sft
// and dpo); `sft --qlora` trains and prints the memory report; `generate --qlora` generates;
// `bench train --layers 1 --profile` times a one-layer model and prints the ops by time; `quantize` writes a
// bitsandbytes 4-bit folder that generate reads with --qlora's text and plan counts in NF4, and refuses a bad
// skip name or its own folder as output in one line.
namespace Temper.Tests;

public class QLoraCliTests
{
    private static string CopyModel(string name)
    {
        string src = Fixtures.Hf(name), dst = Directory.CreateTempSubdirectory("temper-cli-qlora-").FullName;
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    /// <summary>The bytes `plan` prints on the line of one part ("weights", ..., "total").</summary>
    private static double Part(string stdout, string part)
    {
        var line = stdout.Split('\n').Single(l => l.TrimStart().StartsWith(part + " ", StringComparison.Ordinal));
        var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        double v = double.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
        return v * fields[2] switch { "GiB" => 1 << 30, "MiB" => 1 << 20, "KiB" => 1 << 10, _ => 1 };
    }

    [Fact]
    public void Plan_prints_every_part_and_scales_with_the_batch()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var small = TemperCli.Run("plan", "--model", dir, "--batch-size", "1", "--max-length", "64");
        var big = TemperCli.Run("plan", "--model", dir, "--batch-size", "4", "--max-length", "64");
        var q = TemperCli.Run("plan", "--model", dir, "--batch-size", "1", "--max-length", "64", "--qlora");
        Assert.Equal(0, small.ExitCode);
        foreach (var part in new[] { "weights", "adapters", "optimizer", "activations", "total" }) Assert.Contains(part, small.Stdout);
        Assert.True(Part(big.Stdout, "activations") > 3.9 * Part(small.Stdout, "activations"), big.Stdout);
        Assert.Equal(Part(small.Stdout, "weights"), Part(big.Stdout, "weights"));
        Assert.True(Part(q.Stdout, "weights") < 0.5 * Part(small.Stdout, "weights"), q.Stdout);
        var bad = TemperCli.Run("plan", "--model", dir, "--qlora", "--full");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--full", bad.Stderr);
    }

    [Fact]
    public void Sft_and_generate_run_with_qlora()
    {
        string model = CopyModel("llama-tiny"), data = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl");
        var full = TemperCli.Run("sft", "--model", model, "--data", data, "--out", Path.Combine(model, "full"), "--qlora", "--full", "--device", "cpu");
        Assert.Equal(2, full.ExitCode);
        Assert.Single(full.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--qlora", full.Stderr);
        var dpo = TemperCli.Run("dpo", "--model", model, "--data", Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "dpo.jsonl"), "--out", Path.Combine(model, "dpo"), "--qlora", "--full", "--device", "cpu");
        Assert.Equal(2, dpo.ExitCode);
        Assert.Contains("--qlora", dpo.Stderr);
        var run = TemperCli.Run("sft", "--model", model, "--data", data, "--out", Path.Combine(model, "run"), "--qlora", "--max-steps", "1", "--lora-r", "4", "--device", "cpu");
        Assert.True(run.ExitCode == 0, run.Stderr);
        Assert.Contains("measured peak", run.Stdout.Replace("\n", " "));
        Assert.True(File.Exists(Path.Combine(model, "run", "adapter_model.safetensors")));
        var gen = TemperCli.Run("generate", "--model", model, "--qlora", "--adapter", Path.Combine(model, "run"), "-p", "hello", "--max-new-tokens", "3", "--device", "cpu");
        Assert.True(gen.ExitCode == 0, gen.Stderr);
        Assert.StartsWith("hello", gen.Stdout);
        Directory.Delete(model, true);
    }

    [Fact]
    public void Bench_train_with_profile_prints_the_ops_by_time()
    {
        var r = TemperCli.Run("bench", "train", "--device", "cpu", "--layers", "1", "--seq-len", "4", "--steps", "1", "--lora-r", "2", "--threads", "1", "--profile");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("smollm-135m-shaped, 1 layers", r.Stdout);
        Assert.Contains("| op | ms/step | calls/step | share of step |", r.Stdout);
        foreach (var op in new[] { "LmHeadCrossEntropy", "AdamWSteps", "LoraLinear [4,576]->576", "LoraLinearBackward [4,1536]->576", "AttentionBackward" })
            Assert.Contains("| " + op + " |", r.Stdout);

        var bad = TemperCli.Run("bench", "train", "--device", "cpu", "--layers", "0");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("temper: --layers must be >= 1", bad.Stderr.Trim());
    }

    [Fact]
    public void Quantize_writes_a_folder_every_verb_reads_in_4_bits()
    {
        string model = CopyModel("llama-tiny"), bnb = Path.Combine(model, "bnb");
        var q = TemperCli.Run("quantize", "--model", model, "--out", bnb);
        Assert.True(q.ExitCode == 0, q.Stderr);
        Assert.Contains("quantised 14 projections", q.Stdout);
        string[] gen = ["--prompt", "hello", "--max-new-tokens", "6", "--greedy", "--device", "cpu"];
        var fromBnb = TemperCli.Run(["generate", "--model", bnb, .. gen]);
        var fromQlora = TemperCli.Run(["generate", "--model", model, "--qlora", .. gen]);
        Assert.True(fromBnb.ExitCode == 0, fromBnb.Stderr);
        Assert.Equal(fromQlora.Stdout, fromBnb.Stdout);
        var plan = TemperCli.Run("plan", "--model", bnb);
        Assert.Contains("QLoRA", plan.Stdout);
        // merge without an adapter writes the checkpoint dequantised (dense, no quantization_config), with --qlora's text.
        string dense = Path.Combine(model, "dense");
        var deq = TemperCli.Run("merge", "--model", bnb, "--out", dense);
        Assert.True(deq.ExitCode == 0, deq.Stderr);
        Assert.DoesNotContain("quantization_config", File.ReadAllText(Path.Combine(dense, "config.json")));
        Assert.Equal(fromQlora.Stdout, TemperCli.Run(["generate", "--model", dense, .. gen]).Stdout);
        var noAdapter = TemperCli.Run("merge", "--model", model, "--out", Path.Combine(model, "x"));
        Assert.Equal(2, noAdapter.ExitCode);
        Assert.Contains("--adapter is required", noAdapter.Stderr);
        foreach (var bad in new[] { TemperCli.Run("quantize", "--model", model, "--out", model), TemperCli.Run("quantize", "--model", model, "--out", bnb + "2", "--skip-modules", "mlp.nope"), TemperCli.Run("quantize", "--model", bnb, "--out", bnb + "3") })
        {
            Assert.Equal(2, bad.ExitCode);
            Assert.Single(bad.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        Directory.Delete(model, true);
    }
}
