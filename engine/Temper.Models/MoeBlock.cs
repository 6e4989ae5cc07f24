// A mixture-of-experts MLP (Mixtral's block_sparse_moe, Qwen3-MoE's and Qwen2-MoE's sparse mlp) over backend ops, as
// transformers' MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock / Qwen2MoeSparseMoeBlock compute it:
//   logits[N,E] = h[N,C] W_router[E,C]^T; p = softmax(logits) per row in f32; the k largest p (ties: the lower
//   expert index, as torch.topk gives in practice) renormalised to sum 1 when NormTopKProb;
//   y[n] = sum over its k experts e, in expert order, of p[n,e] * down_e(silu(gate_e h[n]) * up_e h[n]);
//   Qwen2-MoE then adds its shared expert, gated per token: y[n] += sigmoid(h[n] . w_sg) * shared(h[n]) (w_sg [1,C]).
// The router product runs on the backend and its [N,E] logits (small) come back to the host for softmax and
// top-k; then per expert its tokens' rows are gathered (the Embedding op, hn standing for the table), its three
// Projections run on those m rows ([m,C] -> [m,F] -> [m,C]), each row is scaled by its routing weight
// (ScaleRows) and scattered back into a zeroed [N,C] sum (EmbeddingBackward: sum[rows[i]] += y[i]), which is
// then added to the residual, so every token's terms are summed in expert order from zero, as index_add_ does.
// The shared expert runs on all N rows; its [N,1] gate logits come back to the host for the sigmoid (ScaleRows again).
// An optional hook runs after each projection (the multi-LoRA server adds each row's own adapter there): it gets the
// projection, its input and output ([m,In] -> [m,Out]) and which of the N rows those m rows are (null: all N in order),
// so the router's adapted logits decide the routing and an expert's rows keep their request's adapter.
using Temper.Core;

namespace Temper.Models;

/// <summary>One expert's SwiGLU MLP: gate, up [F,C], down [C,F].</summary>
public sealed record MoeExpert(Projection Gate, Projection Up, Projection Down);

/// <summary>A layer's router [E,C] (no bias) and E experts; Qwen2-MoE's shared expert and its gate [1,C] when present.</summary>
public sealed class MoeWeights(Projection router, MoeExpert[] experts, int topK, bool normTopKProb, MoeExpert? shared = null, Projection? sharedGate = null)
{
    public Projection Router { get; } = router;
    public MoeExpert[] Experts { get; } = experts;
    public int TopK { get; } = topK;
    public bool NormTopKProb { get; } = normTopKProb;
    public MoeExpert? SharedExpert { get; } = shared;
    public Projection? SharedExpertGate { get; } = sharedGate;

    public IEnumerable<Projection> Projections
    {
        get
        {
            yield return Router;
            foreach (var e in SharedExpert == null ? Experts : Experts.Append(SharedExpert))
            {
                yield return e.Gate;
                yield return e.Up;
                yield return e.Down;
            }
            if (SharedExpertGate != null) yield return SharedExpertGate;
        }
    }
}

/// <summary>Called after projection p ran on input[m,In] into output[m,Out]; rows[m]: the block's rows they are (null: all N in order).</summary>
public delegate void MoeProjectionHook(Projection p, Tensor input, Tensor output, int[]? rows);

public static class MoeBlock
{
    /// <summary>x[N,C] += moe(hn[N,C]); <paramref name="hook"/> (optional) runs after every projection, before its output is used.</summary>
    public static void AddTo(IBackend be, MoeWeights moe, Tensor hn, Tensor x, MoeProjectionHook? hook = null)
    {
        int n = hn.Shape.Rows, c = hn.Shape[-1], e = moe.Experts.Length;
        void Project(Projection p, Tensor input, Tensor output, int[]? rows)
        {
            p.Forward(be, input, output);
            hook?.Invoke(p, input, output, rows);
        }
        using var logits = be.Zeros(new Shape(n, e));
        Project(moe.Router, hn, logits, null);
        var (chosen, weights) = Route(HostValues(be, logits), n, e, moe.TopK, moe.NormTopKProb);

        using var sum = be.Zeros(new Shape(n, c));
        var rows = new List<int>();
        var scales = new List<float>();
        for (int ex = 0; ex < e; ex++)
        {
            rows.Clear();
            scales.Clear();
            for (int i = 0; i < n; i++)
                for (int j = 0; j < moe.TopK; j++)
                    if (chosen[i * moe.TopK + j] == ex)
                    {
                        rows.Add(i);
                        scales.Add(weights[i * moe.TopK + j]);
                    }
            if (rows.Count == 0) continue;
            var expert = moe.Experts[ex];
            int m = rows.Count, f = expert.Gate.Out;
            using var xe = be.Uninitialized(new Shape(m, c));
            using var gate = be.Uninitialized(new Shape(m, f));
            using var up = be.Uninitialized(new Shape(m, f));
            using var y = be.Uninitialized(new Shape(m, c));
            var idx = rows.ToArray();
            be.Embedding(hn, idx, xe);
            Project(expert.Gate, xe, gate, idx);
            Project(expert.Up, xe, up, idx);
            be.SwiGlu(gate, up, gate);
            Project(expert.Down, gate, y, idx);
            be.ScaleRows(y, scales.ToArray());
            be.EmbeddingBackward(y, idx, sum);
        }
        if (moe.SharedExpert is { } shared && moe.SharedExpertGate is { } sharedGate)
        {
            using var gateLogit = be.Zeros(new Shape(n, 1));
            Project(sharedGate, hn, gateLogit, null);
            var sigmoid = HostValues(be, gateLogit).Select(z => 1f / (1f + MathF.Exp(-z))).ToArray();
            int fs = shared.Gate.Out;
            using var sGate = be.Uninitialized(new Shape(n, fs));
            using var sUp = be.Uninitialized(new Shape(n, fs));
            using var y = be.Uninitialized(new Shape(n, c));
            Project(shared.Gate, hn, sGate, null);
            Project(shared.Up, hn, sUp, null);
            be.SwiGlu(sGate, sUp, sGate);
            Project(shared.Down, sGate, y, null);
            be.ScaleRows(y, sigmoid);
            be.Add(sum, y, sum);
        }
        be.Add(x, sum, x);
    }

    /// <summary>
    /// Per token n of logits[N,E]: its k experts chosen[n*k + j] (descending probability, ties to the lower index)
    /// and their routing weights[n*k + j]: softmax over all E in f32, the top k, divided by their sum when normTopKProb.
    /// </summary>
    public static (int[] Chosen, float[] Weights) Route(ReadOnlySpan<float> logits, int n, int e, int k, bool normTopKProb)
    {
        var chosen = new int[n * k];
        var weights = new float[n * k];
        var p = new float[e];
        for (int i = 0; i < n; i++)
        {
            Softmax(logits.Slice(i * e, e), p);
            float picked = 0;
            for (int j = 0; j < k; j++)
            {
                int best = -1;
                for (int ex = 0; ex < e; ex++)
                    if (!chosen.AsSpan(i * k, j).Contains(ex) && (best < 0 || p[ex] > p[best])) best = ex;
                chosen[i * k + j] = best;
                weights[i * k + j] = p[best];
                picked += p[best];
            }
            if (normTopKProb)
                for (int j = 0; j < k; j++) weights[i * k + j] /= picked;
        }
        return (chosen, weights);
    }

    /// <summary>p[E] = softmax(row[E]) in f32 (the routing probabilities of one token).</summary>
    public static void Softmax(ReadOnlySpan<float> row, Span<float> p)
    {
        float max = float.NegativeInfinity;
        foreach (float v in row) max = MathF.Max(max, v);
        float total = 0;
        for (int j = 0; j < row.Length; j++) total += p[j] = MathF.Exp(row[j] - max);
        for (int j = 0; j < row.Length; j++) p[j] /= total;
    }

    internal static float[] HostValues(IBackend be, Tensor t)
    {
        if (t.IsHost) return t.ToFloatArray();
        using var host = be.ToHost(t);
        return host.ToFloatArray();
    }
}
