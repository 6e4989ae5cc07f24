// Shared pieces of the serving tests: the tiny llama fixture on the CPU backend, distinct PEFT adapters
// derived deterministically from the fixture adapter (B scaled, A perturbed), and the reference a
// served completion is checked against: teacher-forced logits of the contiguous decoder (optionally with
// an adapter merged; the tiny llama or another model folder), step by step, where steps whose top-2 logit
// gap is under 1e-3 may pick either.
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public static class ServingFixtures
{
    public static string Model => Fixtures.Hf("llama-tiny");
    public static string FixtureAdapter => Path.Combine(Model, "adapter");

    private static readonly Lazy<string> _adapters = new(MakeAdapters);

    /// <summary>Folder of adapter folders a0..a3, each a distinct deterministic variant of the fixture adapter.</summary>
    public static string AdapterRoot => _adapters.Value;
    public static string Adapter(int i) => Path.Combine(AdapterRoot, $"a{i}");

    private static string MakeAdapters()
    {
        string root = Path.Combine(Path.GetTempPath(), $"temper-serving-adapters-{Environment.ProcessId}");
        using var src = SafetensorsFile.Open(Path.Combine(FixtureAdapter, "adapter_model.safetensors"));
        float[] scales = [1f, -0.7f, 2.5f, 0.4f];
        for (int i = 0; i < scales.Length; i++)
        {
            string dir = Path.Combine(root, $"a{i}");
            Directory.CreateDirectory(dir);
            File.Copy(Path.Combine(FixtureAdapter, "adapter_config.json"), Path.Combine(dir, "adapter_config.json"), overwrite: true);
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var e in src.Entries)
            {
                var v = src.Get(e.Name).ToFloatArray();
                bool isB = e.Name.Contains(".lora_B", StringComparison.Ordinal);
                for (int j = 0; j < v.Length; j++) v[j] = isB ? v[j] * scales[i] : v[j] * (1 + 0.3f * MathF.Sin(7 * i + j));
                tensors.Add(new(e.Name, Tensor.FromFloats(src.Get(e.Name).Shape, v)));
            }
            SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        }
        return root;
    }

    /// <summary>Steps the engine by hand until every handle's stream is complete.</summary>
    public static List<IReadOnlyList<ChoiceResult>> RunAll(ServingEngine e, IReadOnlyList<RequestHandle> handles)
    {
        var collect = handles.Select(h => h.CollectAsync()).ToArray();
        var idleSince = System.Diagnostics.Stopwatch.StartNew();
        while (collect.Any(t => !t.IsCompleted))
        {
            if (e.Step()) idleSince.Restart();
            else Task.WaitAll(collect, 10); // the streams' readers finish on the thread pool
            Assert.True(idleSince.Elapsed.TotalSeconds < 10, "the engine stopped making progress");
        }
        return collect.Select(t => t.Result).ToList();
    }

    /// <summary>Log-softmax rows [T, V] of the contiguous decoder over ids (adapter merged when given; model: the tiny llama unless given).</summary>
    public static float[][] ReferenceLogprobs(IReadOnlyList<int> ids, string? adapterDir = null, string? model = null)
    {
        using var lm = LanguageModel.Load(model ?? Model, new CpuBackend(1), adapterDir, mergeAdapter: adapterDir != null);
        using var logits = lm.Logits([.. ids], 1);
        int v = lm.Config.VocabSize;
        var f = logits.Floats;
        var rows = new float[ids.Count][];
        for (int t = 0; t < ids.Count; t++)
        {
            var row = f.Slice(t * v, v);
            float max = float.NegativeInfinity;
            foreach (float x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (float x in row) sum += Math.Exp(x - max);
            float lse = max + (float)Math.Log(sum);
            rows[t] = row.ToArray().Select(x => x - lse).ToArray();
        }
        return rows;
    }

    /// <summary>
    /// Asserts that greedy <paramref name="generated"/> after <paramref name="prompt"/> is what the contiguous
    /// decoder picks at every step (teacher-forced) except near-ties, and that the served log-probs match.
    /// </summary>
    /// <paramref name="gap"/>: top-2 gaps below it may pick either; <paramref name="logprobTolerance"/>: how far a served log-prob may be off.
    public static void AssertMatchesReference(IReadOnlyList<int> prompt, ChoiceResult generated, string? adapterDir = null, string what = "", string? model = null,
        float gap = 1e-3f, float logprobTolerance = 1e-4f)
    {
        var ids = prompt.Concat(generated.Tokens).ToArray();
        var reference = ReferenceLogprobs(ids, adapterDir, model);
        for (int t = 0; t < generated.Tokens.Count; t++)
        {
            var row = reference[prompt.Count - 1 + t];
            var sorted = row.OrderDescending().Take(2).ToArray();
            int best = Sampler.ArgMax(row);
            if (sorted[0] - sorted[1] >= gap)
                Assert.True(best == generated.Tokens[t], $"{what} step {t}: served token {generated.Tokens[t]}, reference {best}");
            if (generated.Logprobs.Count > t)
                Assert.True(Math.Abs(row[generated.Tokens[t]] - generated.Logprobs[t]) < logprobTolerance,
                    $"{what} step {t}: served logprob {generated.Logprobs[t]}, reference {row[generated.Tokens[t]]}");
        }
    }
}
