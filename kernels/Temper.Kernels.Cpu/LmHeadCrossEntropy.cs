// LM head fused with cross-entropy, chunked over the vocabulary so the [N,V] logits are never all held:
// hidden[N,C], lmHead[V,C] (f32 or bf16), labels[N] -> losses[N] = logsumexp(logits[n]) - logits[n][label],
// 0 where label < 0. Pass 1 cuts the vocabulary into a few groups of chunks that run side by side, one thread
// each; a group runs the GEMM one chunk of vocab rows at a time ([N, Vc] logits) and keeps a running max and
// exp-sum per row (online logsumexp) and the label's logit. When only dHidden is asked for (a frozen or tied
// head: LoRA), a group also turns each chunk into exp(logits - running max) and accumulates acc[N,C] += that
// lmHead[chunk] (GEMM NN), rescaling a row of acc when its max grows (as flash attention does with P V). The
// groups' maxima, sums and accumulators merge in group order, and dHidden += s (acc / sum - lmHead[label]),
// s = lossScale (times the row's scale): the softmax gradient without a second pass over the logits. When
// dLmHead is asked for, pass 2 recomputes each chunk's logits, turns them into dlogits = s (softmax - onehot)
// and accumulates dHidden += dlogits lmHead[chunk] (GEMM NN) and dLmHead[chunk] += dlogits^T hidden (GEMM TN).
// The chunk width and the groups depend only on N and V, so results do not depend on the thread count.
namespace Temper.Kernels.Cpu;

public static unsafe class LmHeadCrossEntropy
{
    /// <summary>
    /// lmHead is f32 (lmHeadBf16 empty) or bf16 (lmHead empty); empty dHidden/dLmHead are skipped.
    /// chunkWidth 0 picks <see cref="ChunkWidth"/>; tests pass a small one to cross chunk edges. scratch
    /// (optional, contents unspecified) holds the chunk's logits and the one-pass accumulator: at least
    /// <see cref="ScratchFloats"/> floats; allocated per call when empty.
    /// </summary>
    public static void Run(ReadOnlySpan<float> hidden, ReadOnlySpan<float> lmHead, ReadOnlySpan<ushort> lmHeadBf16, ReadOnlySpan<int> labels,
        Span<float> losses, float lossScale, Span<float> dHidden, Span<float> dLmHead, int n, int c, int v, int threads, int chunkWidth = 0, ReadOnlySpan<float> rowScales = default,
        Span<float> scratch = default)
    {
        bool bf16 = lmHead.IsEmpty;
        if (hidden.Length != (long)n * c || (bf16 ? lmHeadBf16.Length : lmHead.Length) != (long)v * c || labels.Length != n || losses.Length != n
            || (!dHidden.IsEmpty && dHidden.Length != hidden.Length) || (!dLmHead.IsEmpty && dLmHead.Length != (long)v * c))
            throw new ArgumentException($"LmHeadCrossEntropy: hidden {hidden.Length}, lmHead {Math.Max(lmHead.Length, lmHeadBf16.Length)}, labels {labels.Length}, losses {losses.Length}, " +
                $"dHidden {dHidden.Length}, dLmHead {dLmHead.Length} values for N {n} C {c} V {v}");
        for (int i = 0; i < n; i++)
            if (labels[i] >= v) throw new ArgumentOutOfRangeException(nameof(labels), $"LmHeadCrossEntropy: label {labels[i]} at {i} is outside the vocabulary of {v}");
        if (n == 0) return;
        int vc = Math.Max(1, chunkWidth > 0 ? Math.Min(chunkWidth, v) : ChunkWidth(n, v));
        bool onePass = dLmHead.IsEmpty && !dHidden.IsEmpty;
        int groups = GroupCount(n, v, vc);
        long need = ScratchFloats(n, c, v, onePass, vc);
        if (scratch.Length < need) scratch = GC.AllocateUninitializedArray<float>(checked((int)need));
        var max = new float[groups * n]; // group g's running max and exp-sum of row i at [g * n + i]
        var sum = new float[groups * n];
        var labelLogit = new float[n];
        fixed (float* ph = hidden) fixed (float* pw = lmHead) fixed (ushort* pwb = lmHeadBf16) fixed (int* plab = labels) fixed (float* ps = scratch)
        {
            nint h = (nint)ph, wf = (nint)pw, wb = (nint)pwb, lab = (nint)plab, scr = (nint)ps;
            int parts = Math.Min(threads, groups), inner = Math.Max(1, threads / parts);
            StaticPartition.For(groups, parts, (g0, g1) =>
            {
                for (int g = g0; g < g1; g++)
                {
                    float* logits = (float*)scr + (long)g * n * vc;
                    float* acc = onePass ? (float*)scr + (long)groups * n * vc + (long)g * n * c : null;
                    var head = new Head((float*)h, (float*)wf, (ushort*)wb, n, c, v);
                    PassOne(head, (int*)lab, logits, acc, max.AsSpan(g * n, n), sum.AsSpan(g * n, n), labelLogit,
                        g * ((v + vc - 1) / vc) / groups * vc, (g + 1) * ((v + vc - 1) / vc) / groups * vc, vc, inner);
                }
            });
        }
        var lse = new float[n];
        for (int i = 0; i < n; i++)
        {
            float m = float.NegativeInfinity, total = 0;
            for (int g = 0; g < groups; g++) m = MathF.Max(m, max[g * n + i]);
            for (int g = 0; g < groups; g++) total += sum[g * n + i] * MathF.Exp(max[g * n + i] - m);
            lse[i] = m + MathF.Log(total);
            losses[i] = labels[i] < 0 ? 0 : lse[i] - labelLogit[i];
            if (!onePass || labels[i] < 0) continue;
            // dHidden[i] += s (softmax_i lmHead - lmHead[label_i]) = s (sum over groups of acc_g,i exp(max_g - m) / total - lmHead[label_i]).
            float scale = rowScales.IsEmpty ? lossScale : lossScale * rowScales[i];
            var d = dHidden.Slice(i * c, c);
            for (int g = 0; g < groups; g++)
            {
                var a = scratch.Slice(groups * n * vc + (g * n + i) * c, c);
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(a, scale * MathF.Exp(max[g * n + i] - m) / total, d, d);
            }
            int label = labels[i];
            for (int j = 0; j < c; j++)
                d[j] -= scale * (bf16 ? BitConverter.Int32BitsToSingle(lmHeadBf16[label * c + j] << 16) : lmHead[label * c + j]);
        }
        if (onePass) return;
        if (dHidden.IsEmpty && dLmHead.IsEmpty) return;
        var logits = scratch[..(n * vc)];
        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int w = Math.Min(vc, v - v0);
            Span<float> chunk = logits[..(n * w)];
            fixed (float* ph = hidden) fixed (float* pw = lmHead) fixed (ushort* pwb = lmHeadBf16)
                Logits(new Head(ph, pw, pwb, n, c, v), chunk, v0, w, threads);
            fixed (float* pl = chunk)
            fixed (int* plab = labels)
            fixed (float* prs = rowScales)
            {
                nint l = (nint)pl, lab = (nint)plab, rs = (nint)prs;
                bool perRow = !rowScales.IsEmpty;
                StaticPartition.For(n, StaticPartition.Parts(threads, n, (long)n * w, 1 << 15), (r0, r1) =>
                {
                    for (int i = r0; i < r1; i++)
                    {
                        float* row = (float*)l + (long)i * w;
                        int label = ((int*)lab)[i];
                        if (label < 0)
                        {
                            new Span<float>(row, w).Clear();
                            continue;
                        }
                        Reductions.ExpShiftedInPlace(row, w, lse[i]);
                        float scale = perRow ? lossScale * ((float*)rs)[i] : lossScale;
                        Scale.Apply(new Span<float>(row, w), scale);
                        if (label >= v0 && label < v0 + w) row[label - v0] -= scale;
                    }
                });
            }
            if (!dHidden.IsEmpty)
            {
                if (bf16) Gemm.MultiplyNN(chunk, lmHeadBf16.Slice(v0 * c, w * c), dHidden, n, w, c, threads);
                else Gemm.MultiplyNN(chunk, lmHead.Slice(v0 * c, w * c), dHidden, n, w, c, threads);
            }
            if (!dLmHead.IsEmpty) Gemm.MultiplyTN(chunk, hidden, dLmHead.Slice(v0 * c, w * c), w, n, c, threads);
        }
    }

    /// <summary>
    /// The floats of Run's scratch: a chunk of logits per vocabulary group, and an accumulator [N,C] per group when
    /// only dHidden is asked for. chunkWidth 0 is <see cref="ChunkWidth"/>.
    /// </summary>
    public static long ScratchFloats(int n, int c, int v, bool onePass, int chunkWidth = 0)
    {
        int vc = Math.Max(1, chunkWidth > 0 ? Math.Min(chunkWidth, v) : ChunkWidth(n, v));
        return GroupCount(n, v, vc) * ((long)n * vc + (onePass ? (long)n * c : 0));
    }

    /// <summary>
    /// Pass 1 cuts the vocabulary into this many groups of whole chunks (fewer when there are fewer chunks). Each group
    /// runs its chunks on its own, so two threads meet once a call rather than at every chunk's three parallel steps,
    /// and keeps its own running max, sum and accumulator, merged in group order at the end; the count does not depend
    /// on the thread count, so neither do the bits.
    /// </summary>
    public const int Groups = 4;

    private static int GroupCount(int n, int v, int vc) => Math.Max(1, Math.Min(Groups, (v + vc - 1) / vc));

    // hidden[N,C] and the head [V,C] (f32 w, or bf16 wb) as pointers, for pass 1's threads.
    private readonly struct Head(float* hidden, float* w, ushort* wb, int n, int c, int v)
    {
        public readonly float* Hidden = hidden, W = w;
        public readonly ushort* Wb = wb;
        public readonly int N = n, C = c, V = v;
    }

    // Pass 1 over vocabulary rows [v0, v1) in chunks of vc: the running max and exp-sum of every row and the label's
    // logit; with acc (the one-pass path), also acc[N,C] = sum over the chunks of exp(logits - max) head[chunk],
    // rescaled when a row's max grows.
    private static void PassOne(in Head head, int* labels, float* logits, float* acc, Span<float> max, Span<float> sum, float[] labelLogit,
        int v0, int v1, int vc, int threads)
    {
        int n = head.N, c = head.C;
        max.Fill(float.NegativeInfinity);
        sum.Clear();
        if (acc != null) new Span<float>(acc, n * c).Clear();
        v1 = Math.Min(v1, head.V);
        for (int at = v0; at < v1; at += vc)
        {
            int w = Math.Min(vc, v1 - at);
            var chunk = new Span<float>(logits, n * w);
            Logits(head, chunk, at, w, threads);
            for (int i = 0; i < n; i++)
            {
                float* row = logits + (long)i * w;
                int label = labels[i];
                if (label >= at && label < at + w) labelLogit[i] = row[label - at];
                float m = MathF.Max(max[i], Reductions.Max(row, w));
                float rescale = MathF.Exp(max[i] - m);
                if (acc == null) sum[i] = sum[i] * rescale + Reductions.SumExpShifted(row, w, m);
                else
                {
                    // The row becomes exp(logits - m); what acc holds was relative to the old max.
                    if (rescale != 1f) Scale.Apply(new Span<float>(acc + (long)i * c, c), rescale);
                    sum[i] = sum[i] * rescale + Reductions.ExpShiftedInPlace(row, w, m);
                }
                max[i] = m;
            }
            if (acc == null) continue;
            var accSpan = new Span<float>(acc, n * c);
            if (head.W == null) Gemm.MultiplyNN(chunk, new ReadOnlySpan<ushort>(head.Wb + (long)at * c, w * c), accSpan, n, w, c, threads);
            else Gemm.MultiplyNN(chunk, new ReadOnlySpan<float>(head.W + (long)at * c, w * c), accSpan, n, w, c, threads);
        }
    }

    /// <summary>
    /// Vocabulary rows per chunk, a multiple of 32: about 128K logits (512 KB, half a core's L2, so the chunk is still
    /// cached when the softmax and the dHidden GEMM read it back; 16 MB chunks made the op ~25% slower at N = 256, and
    /// at N = 256 a 512-wide chunk per group ran 10% faster than 1024 shared by both threads), and at least 512 wide
    /// so the GEMMs' tiles stay full.
    /// </summary>
    public static int ChunkWidth(int n, int v) => Math.Min(v, Math.Max(512, (1 << 17) / Math.Max(1, n) / 32 * 32));

    private static void Logits(in Head head, Span<float> chunk, int v0, int w, int threads)
    {
        var hidden = new ReadOnlySpan<float>(head.Hidden, head.N * head.C);
        if (head.W == null) Gemm.Multiply(hidden, new ReadOnlySpan<ushort>(head.Wb + (long)v0 * head.C, w * head.C), chunk, head.N, head.C, w, threads, overwrite: true);
        else Gemm.Multiply(hidden, new ReadOnlySpan<float>(head.W + (long)v0 * head.C, w * head.C), chunk, head.N, head.C, w, threads, overwrite: true);
    }
}
