// Qwen3's head norms through the serving engine's paged decoder: requests of different lengths,
// prefills chunked to a small token budget and blocks of 4 positions, every greedy token checked
// against the float64 forward written from modeling_qwen3 (Qwen3Tiny), near-ties excepted; and the same
// run on the ILGPU backend (ILGPU's CPU accelerator) giving the CPU backend's tokens. The same model with
// YaRN RoPE scaling (Qwen3Tiny.YarnFolder) serves the yarn float64 forward's argmax.
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public sealed class Qwen3ServingTests
{
    private static readonly int[][] Prompts = [[5, 17, 99, 260, 31, 7, 400], [300, 12], [42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52]];

    private static async Task<List<ChoiceResult>> Serve(Core.IBackend be, bool yarn = false)
    {
        using var _ = be;
        using var lm = LanguageModel.Load(yarn ? Qwen3Tiny.YarnFolder : Qwen3Tiny.Folder, be);
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 32, MaxBatchTokens = 6 });
        e.Start();
        var handles = Prompts.Select(p => e.Submit(new ServingRequest { PromptIds = p, MaxNewTokens = 8, IgnoreEos = true, TopLogprobs = 0 })).ToList();
        var results = new List<ChoiceResult>();
        foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(TestContext.Current.CancellationToken)));
        return results;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Served_greedy_tokens_are_the_float64_forwards_argmax(bool yarn)
    {
        var results = await Serve(new CpuBackend(1), yarn);
        for (int r = 0; r < Prompts.Length; r++)
        {
            var tokens = results[r].Tokens;
            Assert.Equal(8, tokens.Count);
            var reference = Qwen3Tiny.Logits([.. Prompts[r], .. tokens], yarn: yarn);
            for (int i = 0; i < tokens.Count; i++)
            {
                var row = reference[Prompts[r].Length - 1 + i];
                var top = row.OrderDescending().Take(2).ToArray();
                if (top[0] - top[1] < 1e-3) continue;
                Assert.Equal(Array.IndexOf(row, top[0]), tokens[i]);
            }
        }
    }

    [Fact]
    public async Task The_ilgpu_backend_serves_the_cpu_backends_tokens()
    {
        var cpu = await Serve(new CpuBackend(1));
        var ilgpu = await Serve(IlgpuBackend.Create("ilgpu-cpu"));
        for (int r = 0; r < Prompts.Length; r++)
        {
            Assert.Equal(cpu[r].Tokens, ilgpu[r].Tokens);
            Assert.All(cpu[r].Logprobs.Zip(ilgpu[r].Logprobs), p => Assert.Equal(p.First, p.Second, 3));
        }
    }
}
