// Fused LM head + cross-entropy over vocabulary chunks: the [N,V] logits are never all held, only
// one chunk [N,Vc] in the arena at a time. hidden[N,C], lmHead[V,C] (f32 or bf16), labels[N]:
//   losses[n] = logsumexp_v(hidden[n] . lmHead[v]) - hidden[n] . lmHead[labels[n]], 0 where labels[n] < 0.
// Pass 1, per chunk: logits = hidden lmHead[v0:v0+Vc]^T (Gemm NT; on the PTX route with hidden converted to bf16
// once for all chunks and both passes), then one group per row (coalesced
// reads, GroupReduce) folds the chunk into a running max m[n] and sum s[n] (online log-sum-exp) and
// picks up the label's logit.
// When only dHidden is asked for (a frozen or tied head: LoRA), pass 1 also gives the gradient, with no second
// pass over the logits (the CPU backend's one-pass, Temper.Kernels.Cpu/LmHeadCrossEntropy.cs): the stats kernel
// turns the chunk into p = exp(logits - ref[n]) and acc[N,C] (+)= p lmHead[chunk] (Gemm NN), ref[n] a per-row
// reference that starts at the first chunk's max and moves up to the running max only when a chunk's max passes it
// by more than RefSlack (then the row of acc is rescaled by exp(old - new) first; p stays below e^RefSlack, so
// nothing overflows, and bf16 and f32 keep their relative precision at any magnitude). At the end
// dHidden += s (exp(ref - lse) acc - lmHead[label]), s = lossScale rowScales[n]. That saves one product of the
// three per chunk (pass 2's recomputed logits) and pass 2's elementwise kernel.
// When dLmHead is asked for, pass 2 recomputes each chunk, turns it into
// dlogits = lossScale rowScales[n] (softmax - onehot) (0 for unlabelled rows; no rowScales = all 1),
// and accumulates
// dHidden += dlogits lmHead[chunk] (Gemm NN) and dLmHead[chunk] += dlogits^T hidden (Gemm TN).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class LmHeadCrossEntropy
{
    /// <summary>Chunk rows when the caller does not choose: about 16M floats of logits per chunk.</summary>
    public static int AutoChunk(int n, int v) => Math.Max(1, Math.Min(v, (1 << 24) / Math.Max(1, n)));

    /// <summary>How far (natural-log units) a chunk's max may pass a row's reference before the reference moves up.</summary>
    public const float RefSlack = 16f;

    /// <summary>One group per row folds the chunk into the running max and sum (online log-sum-exp) and picks up the label's
    /// logit. onePass != 0 (the one-pass gradient) also turns the chunk into p = exp(logits - ref) in place (0 on unlabelled
    /// rows), the reference ref[n] moved up (and acc's row rescaled) when the chunk's max passes it by more than RefSlack.</summary>
    public static void StatsKernel(ArrayView<float> logits, ArrayView<int> labels, ArrayView<float> max, ArrayView<float> sum, ArrayView<float> labelLogit,
        ArrayView<float> reference, ArrayView<float> acc, int v0, int vc, int c, int onePass)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int n = Grid.IdxX, label = labels[n];
        int o = n * vc;
        if (label < 0)
        {
            if (onePass != 0)
                for (int j = Group.IdxX; j < vc; j += Group.DimX) logits[o + j] = 0f;
            return; // the whole group leaves together
        }
        float m = v0 == 0 ? float.NegativeInfinity : max[n];
        float cm = float.NegativeInfinity;
        for (int j = Group.IdxX; j < vc; j += Group.DimX)
        {
            float x = logits[o + j];
            cm = IntrinsicMath.Max(cm, x);
            if (v0 + j == label) labelLogit[n] = x; // one thread of the group owns it, read before p may overwrite it
        }
        cm = GroupReduce.Max(shared, cm);
        float nm = IntrinsicMath.Max(m, cm);
        float r = onePass == 0 || v0 == 0 ? float.NegativeInfinity : reference[n];
        float nr = v0 == 0 || cm > r + RefSlack ? nm : r;
        if (onePass != 0 && v0 != 0 && nr != r)
        {
            float f = MathF.Exp(r - nr);
            for (int j = Group.IdxX; j < c; j += Group.DimX) acc[n * c + j] *= f;
        }
        float cs = 0;
        for (int j = Group.IdxX; j < vc; j += Group.DimX)
        {
            float x = logits[o + j];
            cs += MathF.Exp(x - nm);
            if (onePass != 0) logits[o + j] = MathF.Exp(x - nr);
        }
        cs = GroupReduce.Sum(shared, cs);
        if (Group.IdxX != 0) return;
        sum[n] = (m == float.NegativeInfinity ? 0f : sum[n] * MathF.Exp(m - nm)) + cs;
        max[n] = nm;
        if (onePass != 0) reference[n] = nr;
    }

    /// <summary>dHidden[n, j] += s (exp(ref[n] - lse[n]) acc[n, j] - lmHead[label[n], j]) for labelled rows (one thread an element).</summary>
    public static void OnePassGradKernel<TW>(Index1D index, ArrayView<float> acc, TW lmHead, ArrayView<int> labels, ArrayView<float> lse, ArrayView<float> reference,
        ArrayView<float> rowScales, ArrayView<float> dHidden, int c, float lossScale, int hasRowScales) where TW : struct, IWeights
    {
        int n = index / c, j = index - n * c, label = labels[n];
        if (label < 0) return;
        float s = hasRowScales != 0 ? lossScale * rowScales[n] : lossScale;
        dHidden[index] += s * (MathF.Exp(reference[n] - lse[n]) * acc[index] - lmHead.Get(label * c + j));
    }

    public static void LossKernel(Index1D n, ArrayView<int> labels, ArrayView<float> max, ArrayView<float> sum, ArrayView<float> labelLogit, ArrayView<float> losses, ArrayView<float> lse)
    {
        if (labels[n] < 0)
        {
            losses[n] = 0;
            return;
        }
        float l = max[n] + MathF.Log(sum[n]);
        lse[n] = l;
        losses[n] = l - labelLogit[n];
    }

    public static void GradKernel(Index1D index, ArrayView<float> logits, ArrayView<int> labels, ArrayView<float> lse, ArrayView<float> rowScales, int v0, int vc, float lossScale, int hasRowScales)
    {
        int n = index / vc, j = index - n * vc;
        int label = labels[n];
        if (label < 0)
        {
            logits[index] = 0;
            return;
        }
        float p = MathF.Exp(logits[index] - lse[n]);
        float scale = hasRowScales != 0 ? lossScale * rowScales[n] : lossScale;
        logits[index] = scale * (label == v0 + j ? p - 1f : p);
    }

    /// <summary>The arena bytes Run takes with the automatic chunk, in its order: the labels, four row statistics [n], the chunk's
    /// logits [n, vc], the hidden states in bf16 [n, C] where the pipelined CUDA C++ products take them, and in one pass the
    /// reference [n] and the accumulator [n, C].</summary>
    public static long ArenaBytes(int n, int c, int v, bool onePass, bool bf16Hidden)
    {
        long vc = Math.Min(v, AutoChunk(n, v));
        return DeviceArena.Bytes<int>(n) + 4 * DeviceArena.Bytes<float>(n) + DeviceArena.Bytes<float>(n * vc)
            + (bf16Hidden ? DeviceArena.Bytes<ushort>((long)n * c) : 0) + (onePass ? DeviceArena.Bytes<float>(n) + DeviceArena.Bytes<float>((long)n * c) : 0);
    }

    public static void Run(DeviceContext dc, ArrayView<float> hidden, WeightView lmHead, ReadOnlySpan<int> labels, ArrayView<float> losses, float lossScale,
        ArrayView<float>? dHidden, ArrayView<float>? dLmHead, ReadOnlySpan<float> rowScales, int n, int c, int v, int chunk)
    {
        if (n == 0) return;
        foreach (int l in labels)
            if (l >= v) throw new ArgumentException($"ilgpu LmHeadCrossEntropy: label {l} is outside the vocabulary ({v})");
        int vc = Math.Min(v, chunk > 0 ? chunk : AutoChunk(n, v));
        var dLabels = dc.Arena.Upload(labels);
        var max = dc.Arena.Take<float>(n);
        var sum = dc.Arena.Take<float>(n);
        var labelLogit = dc.Arena.Take<float>(n);
        var lse = dc.Arena.Take<float>(n);
        var logits = dc.Arena.Take<float>((long)n * vc);
        var hiddenBf16 = Gemm.ActivationsInBf16(dc, hidden, lmHead, n, c); // PTX route: converted once for every chunk's product
        bool onePass = dHidden != null && dLmHead == null;
        var reference = onePass ? dc.Arena.Take<float>(n) : max; // unread without the one pass
        var acc = onePass ? dc.Arena.Take<float>((long)n * c) : max;
        var stats = dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>>("ce.stats",
            a => a.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(StatsKernel));
        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int len = Math.Min(vc, v - v0);
            var chunkLogits = logits.SubView(0, (long)n * len);
            var w = lmHead.Rows(v0, len, c);
            Gemm.NT(dc, hidden, hiddenBf16, w, null, chunkLogits, n, c, len, 1f, accumulate: false);
            stats(GroupReduce.RowGroups(dc, n), chunkLogits, dLabels, max, sum, labelLogit, reference, acc, v0, len, c, onePass ? 1 : 0);
            if (onePass) Gemm.NN(dc, chunkLogits, w, acc, n, c, len, 1f, accumulate: v0 != 0);
        }
        dc.Kernel<Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>>("ce.loss",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(LossKernel))
            (n, dLabels, max, sum, labelLogit, losses, lse);
        if (dHidden == null && dLmHead == null) return;
        var dScales = dc.Arena.Upload(rowScales);
        if (onePass)
        {
            int count = checked(n * c);
            if (lmHead.IsBf16)
                dc.Kernel<Action<Index1D, ArrayView<float>, Bf16Weights, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>>("ce.grad.onepass.bf16",
                    a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Bf16Weights, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>(OnePassGradKernel))
                    (count, acc, new Bf16Weights(lmHead.Bf16), dLabels, lse, reference, dScales, dHidden!.Value, c, lossScale, rowScales.IsEmpty ? 0 : 1);
            else
                dc.Kernel<Action<Index1D, ArrayView<float>, F32Weights, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>>("ce.grad.onepass.f32",
                    a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, F32Weights, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>(OnePassGradKernel))
                    (count, acc, new F32Weights(lmHead.F32), dLabels, lse, reference, dScales, dHidden!.Value, c, lossScale, rowScales.IsEmpty ? 0 : 1);
            return;
        }
        var grad = dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float, int>>("ce.grad",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float, int>(GradKernel));
        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int len = Math.Min(vc, v - v0);
            var chunkLogits = logits.SubView(0, (long)n * len);
            var w = lmHead.Rows(v0, len, c);
            Gemm.NT(dc, hidden, hiddenBf16, w, null, chunkLogits, n, c, len, 1f, accumulate: false);
            grad(n * len, chunkLogits, dLabels, lse, dScales, v0, len, lossScale, rowScales.IsEmpty ? 0 : 1);
            if (dHidden is { } dh) Gemm.NN(dc, chunkLogits, w, dh, n, c, len, 1f, accumulate: true);
            if (dLmHead is { } dw) Gemm.TN(dc, chunkLogits, hidden, dw.SubView((long)v0 * c, (long)len * c), n, c, len, 1f, accumulate: true);
        }
    }
}
