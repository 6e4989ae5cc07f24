// A mixture-of-experts model (MoeTiny's Qwen2-MoE: routed experts, the gated shared expert, a dense layer) in 4 bits
// through the CLI: `logits --qlora` writes the logits of the model loaded with qlora in the library, `quantize` writes a
// bitsandbytes folder with every router, expert and shared expert quantised that `generate` reads with `generate --qlora`'s
// greedy text (perplexity over an NF4 MoE model: MoeNf4Tests).
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class MoeQLoraCliTests
{
    [Fact]
    public void Logits_and_generate_take_qlora_and_quantize_writes_what_generate_reads_with_its_text()
    {
        var m = MoeTiny.Qwen2Moe;
        string model = m.Write(TempFolder.Create("temper-cli-moe")), bnb = Path.Combine(model, "bnb");
        var q = TemperCli.Run("quantize", "--model", model, "--out", bnb);
        Assert.True(q.ExitCode == 0, q.Stderr);
        // Layer 0 dense (q, k, v, o, gate, up, down); layer 1 attention, router, 4 experts x 3, shared expert x 3 and its gate.
        Assert.Contains("quantised 28 projections", q.Stdout);

        string ids = Path.Combine(model, "ids.json"), output = Path.Combine(model, "logits.safetensors");
        File.WriteAllText(ids, "[[5, 17, 99, 260, 31, 7, 400]]");
        var logits = TemperCli.Run("logits", "--model", model, "--qlora", "--ids", ids, "--out", output, "--device", "cpu", "--threads", "1");
        Assert.True(logits.ExitCode == 0, logits.Stderr);
        using (var lm = LanguageModel.Load(model, new CpuBackend(1), qlora: true))
        using (var expected = lm.Logits([5, 17, 99, 260, 31, 7, 400], 1))
        using (var f = SafetensorsFile.Open(output))
            Assert.Equal(expected.ToFloatArray(), f.Get("logits").Floats.ToArray());

        string[] gen = ["--prompt", "hello there", "--max-new-tokens", "6", "--greedy", "--ignore-eos", "--device", "cpu"];
        var fromQlora = TemperCli.Run(["generate", "--model", model, "--qlora", .. gen]);
        var fromBnb = TemperCli.Run(["generate", "--model", bnb, .. gen]);
        Assert.True(fromQlora.ExitCode == 0, fromQlora.Stderr);
        Assert.True(fromBnb.ExitCode == 0, fromBnb.Stderr);
        Assert.StartsWith("hello there", fromQlora.Stdout);
        Assert.True(fromQlora.Stdout.Length > "hello there".Length, fromQlora.Stdout);
        Assert.Equal(fromQlora.Stdout, fromBnb.Stdout);
    }
}
