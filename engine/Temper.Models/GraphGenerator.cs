// Generation of one prompt through a CudaDecodeGraph of one row, with Generator's semantics: sampling
// options (greedy, temperature, top-k/p, min-p, repetition penalty; row 0's seed), EOS ids, MaxNewTokens,
// a per-token callback and cancellation. A prompt longer than PrefillFrom tokens is prefilled in chunks,
// a shorter one goes through the graph one token a step, without waiting; then each step's token is read
// back as it is chosen, so the callback streams. Greedy decoding
// without a repetition penalty takes the device's argmax (4 bytes back a token); anything else (a JSON
// constraint included) downloads the step's logits [V], picks on the host with the Sampler and writes the
// token back (Override).
// Stop strings and speculative decoding are not supported here (a TemperException says so).
using Temper.Core;
using Temper.Kernels.Cuda;

namespace Temper.Models;

public sealed class GraphGenerator(CudaDecodeGraph graph)
{
    public CudaDecodeGraph Graph { get; } = graph;

    /// <summary>Prompts longer than this are prefilled in chunks (CudaDecodeGraph.Prefill: tensor-core GEMMs and
    /// flash attention, whose bf16 rounding of the activations the step-by-step GEMVs do not have); shorter
    /// ones go through the graph one token a step.</summary>
    public const int PrefillFrom = 64;

    public GenerationResult Generate(IReadOnlyList<int> prompt, GenerationOptions o, Action<int, int>? onToken = null, CancellationToken cancel = default)
    {
        if (Graph.Rows != 1) throw new TemperException($"GraphGenerator decodes one row; the graph has {Graph.Rows}");
        if (o.MaxNewTokens < 0) throw new TemperException($"--max-new-tokens must be >= 0 (got {o.MaxNewTokens})");
        if (o.StopStrings.Count > 0) throw new TemperException("stop strings are not supported by the CUDA graph decoder");
        if (o.MinNewTokens > 0) throw new TemperException("--min-new-tokens is not supported by the CUDA graph decoder");
        if (o.Speculative != null) throw new TemperException("the CUDA graph decoder cannot decode speculatively: it runs one token a step and its KV cache does not roll back");
        if (prompt.Count == 0) throw new TemperException("a prompt is empty: give at least one token");
        if (prompt.Count + o.MaxNewTokens > Graph.Capacity)
            throw new TemperException($"prompt ({prompt.Count}) + new tokens ({o.MaxNewTokens}) exceed the decode graph's capacity of {Graph.Capacity} positions");
        o.Sampling.Validate();
        if (o.Sampling.Constraint != null && o.IgnoreEos) throw new TemperException("a JSON constraint ends the output with EOS: it cannot be combined with --ignore-eos");
        var generated = new List<int>();
        if (o.MaxNewTokens == 0) return new GenerationResult(prompt, generated, FinishReason.Length);

        var sampler = new Sampler(o.Sampling);
        bool onHost = !o.Sampling.Greedy || o.Sampling.AdjustsLogits; // the device's argmax is the plain greedy pick
        var history = new List<int>(prompt);
        int v = Graph.Shape.Vocab;
        try
        {
            Graph.Start([prompt.ToArray()]);
        }
        catch (ArgumentException e)
        {
            throw new TemperException(e.Message);
        }
        if (prompt.Count > PrefillFrom) Graph.Prefill();
        Graph.Step(prompt.Count - 1 - Graph.Position);
        for (int step = 0; step < o.MaxNewTokens; step++)
        {
            cancel.ThrowIfCancellationRequested();
            Graph.Step();
            int id;
            if (onHost)
            {
                id = sampler.Next(Graph.Logits().AsSpan(0, v), history.ToArray(), prompt.Count);
                Graph.Override(0, id);
            }
            else id = Graph.Token(0);
            history.Add(id);
            generated.Add(id);
            onToken?.Invoke(0, id);
            if (!o.IgnoreEos && o.EosIds.Contains(id)) return new GenerationResult(prompt, generated, FinishReason.Eos);
        }
        return new GenerationResult(prompt, generated, FinishReason.Length);
    }
}
