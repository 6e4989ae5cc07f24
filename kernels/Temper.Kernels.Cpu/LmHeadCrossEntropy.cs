// LM head fused with cross-entropy, chunked over the vocabulary so the [N,V] logits are never all held:
// hidden[N,C], lmHead[V,C] (f32 or bf16), labels[N] -> losses[N] = logsumexp(logits[n]) - logits[n][label],
// 0 where label < 0. Pass 1 runs the GEMM one chunk of vocab rows at a time ([N, Vc] logits) and keeps
// a running max and exp-sum per row (online logsumexp) and the label's logit. When only dHidden is asked
// for (a frozen or tied head: LoRA), pass 1 also turns each chunk into exp(logits - running max) and
// accumulates acc[N,C] += that lmHead[chunk] (GEMM NN), rescaling a row of acc when its max grows (as
// flash attention does with P V), and ends with dHidden += s (acc / sum - lmHead[label]), s = lossScale
// (times the row's scale): the softmax gradient without a second pass over the logits. When dLmHead is
// asked for, pass 2 recomputes each chunk's logits, turns them into dlogits = s (softmax - onehot) and
// accumulates dHidden += dlogits lmHead[chunk] (GEMM NN) and dLmHead[chunk] += dlogits^T hidden (GEMM TN).
// The chunk width depends only on N, so results do not depend on the thread count.
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
        int vc = chunkWidth > 0 ? Math.Min(chunkWidth, v) : ChunkWidth(n, v);
        bool onePass = dLmHead.IsEmpty && !dHidden.IsEmpty;
        long need = (long)n * vc + (onePass ? (long)n * c : 0);
        if (scratch.Length < need) scratch = GC.AllocateUninitializedArray<float>(checked((int)need));
        var logits = scratch[..(n * vc)];
        var acc = onePass ? scratch.Slice(n * vc, n * c) : default; // sum over the chunks so far of exp(logits - max) lmHead
        acc.Clear();
        var max = new float[n];
        var sum = new float[n];
        var labelLogit = new float[n];
        Array.Fill(max, float.NegativeInfinity);

        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int w = Math.Min(vc, v - v0);
            Span<float> chunk = logits[..(n * w)];
            Logits(hidden, lmHead, lmHeadBf16, chunk, n, c, v0, w, threads);
            fixed (float* pl = chunk)
            fixed (float* pacc = acc)
            fixed (int* plab = labels)
            {
                nint l = (nint)pl, lab = (nint)plab, ac = (nint)pacc;
                StaticPartition.For(n, StaticPartition.Parts(threads, n, (long)n * w, 1 << 15), (r0, r1) =>
                {
                    for (int i = r0; i < r1; i++)
                    {
                        float* row = (float*)l + (long)i * w;
                        int label = ((int*)lab)[i];
                        if (label >= v0 && label < v0 + w) labelLogit[i] = row[label - v0];
                        float m = MathF.Max(max[i], Reductions.Max(row, w));
                        float rescale = MathF.Exp(max[i] - m);
                        if (ac == 0) sum[i] = sum[i] * rescale + Reductions.SumExpShifted(row, w, m);
                        else
                        {
                            // The row becomes exp(logits - m); what acc holds was relative to the old max.
                            if (rescale != 1f) Scale.Apply(new Span<float>((float*)ac + (long)i * c, c), rescale);
                            sum[i] = sum[i] * rescale + Reductions.ExpShiftedInPlace(row, w, m);
                        }
                        max[i] = m;
                    }
                });
            }
            if (onePass)
            {
                if (bf16) Gemm.MultiplyNN(chunk, lmHeadBf16.Slice(v0 * c, w * c), acc, n, w, c, threads);
                else Gemm.MultiplyNN(chunk, lmHead.Slice(v0 * c, w * c), acc, n, w, c, threads);
            }
        }
        var lse = new float[n];
        for (int i = 0; i < n; i++)
        {
            lse[i] = max[i] + MathF.Log(sum[i]);
            losses[i] = labels[i] < 0 ? 0 : lse[i] - labelLogit[i];
        }
        if (dHidden.IsEmpty && dLmHead.IsEmpty) return;
        if (onePass)
        {
            // dHidden[i] += s (softmax_i lmHead - lmHead[label_i]) = s (acc_i / sum_i - lmHead[label_i]).
            for (int i = 0; i < n; i++)
            {
                int label = labels[i];
                if (label < 0) continue;
                float scale = rowScales.IsEmpty ? lossScale : lossScale * rowScales[i];
                float p = scale / sum[i];
                var a = acc.Slice(i * c, c);
                var d = dHidden.Slice(i * c, c);
                for (int j = 0; j < c; j++)
                {
                    float wl = bf16 ? BitConverter.Int32BitsToSingle(lmHeadBf16[label * c + j] << 16) : lmHead[label * c + j];
                    d[j] += p * a[j] - scale * wl;
                }
            }
            return;
        }

        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int w = Math.Min(vc, v - v0);
            Span<float> chunk = logits[..(n * w)];
            Logits(hidden, lmHead, lmHeadBf16, chunk, n, c, v0, w, threads);
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

    /// <summary>The floats of Run's scratch: one chunk of logits, and the accumulator [N,C] when only dHidden is asked for.</summary>
    public static long ScratchFloats(int n, int c, int v, bool onePass) => (long)n * ChunkWidth(n, v) + (onePass ? (long)n * c : 0);

    /// <summary>
    /// Vocabulary rows per chunk, a multiple of 32: about 256K logits (1 MB, an L2's worth, so the chunk is still
    /// cached when the softmax and the dHidden GEMM read it back; 16 MB chunks made the op ~25% slower at N = 256),
    /// and at least 512 wide so the GEMMs' tiles stay full.
    /// </summary>
    public static int ChunkWidth(int n, int v) => Math.Min(v, Math.Max(512, (1 << 18) / Math.Max(1, n) / 32 * 32));

    private static void Logits(ReadOnlySpan<float> hidden, ReadOnlySpan<float> lmHead, ReadOnlySpan<ushort> lmHeadBf16, Span<float> chunk, int n, int c, int v0, int w, int threads)
    {
        if (lmHead.IsEmpty) Gemm.Multiply(hidden, lmHeadBf16.Slice(v0 * c, w * c), chunk, n, c, w, threads, overwrite: true);
        else Gemm.Multiply(hidden, lmHead.Slice(v0 * c, w * c), chunk, n, c, w, threads, overwrite: true);
    }
}
