// Logit distillation fused with both LM heads, chunked over the vocabulary so neither [N,V] logits
// tensor is ever held (see Reference/LmHeadDistillationReference.cs for the math): student
// hidden[N,Cs] with head[V,Cs], teacher hidden[N,Ct] with head[V,Ct] (each head f32 or bf16), mask[N].
// Pass 1 runs both GEMMs one chunk of vocabulary rows at a time ([N,Vc] logits each) and folds each
// row into running maxima and exp-sums of s/T and t/T (online log-sum-exp) plus the weighted sum the KL
// needs, rescaled whenever a maximum moves: forward KL = sum_v e^(t/T - m_T) (t - s)/T / S_T - lse_T + lse_S,
// reverse symmetric. Row sums are in f64. When gradients are asked for, pass 2 recomputes each chunk,
// turns the student's logits into g = d L / d s and accumulates dHidden += g head[chunk] (GEMM NN) and
// dLmHead[chunk] += g^T hidden (GEMM TN). The chunk width depends only on N, so results do not depend
// on the thread count.
namespace Temper.Kernels.Cpu;

public static unsafe class LmHeadDistillation
{
    /// <summary>
    /// Each head is f32 (its bf16 span empty) or bf16 (its f32 span empty); empty dHidden/dLmHead are
    /// skipped. chunkWidth 0 picks <see cref="LmHeadCrossEntropy.ChunkWidth"/>; tests pass a small one.
    /// </summary>
    public static void Run(ReadOnlySpan<float> sHidden, ReadOnlySpan<float> sHead, ReadOnlySpan<ushort> sHeadBf16, ReadOnlySpan<float> tHidden, ReadOnlySpan<float> tHead, ReadOnlySpan<ushort> tHeadBf16,
        ReadOnlySpan<int> mask, float temperature, bool reverse, Span<float> losses, float lossScale, Span<float> dHidden, Span<float> dLmHead,
        int n, int cs, int ct, int v, int threads, int chunkWidth = 0)
    {
        if (sHidden.Length != (long)n * cs || tHidden.Length != (long)n * ct || Math.Max(sHead.Length, sHeadBf16.Length) != (long)v * cs
            || Math.Max(tHead.Length, tHeadBf16.Length) != (long)v * ct || mask.Length != n || losses.Length != n
            || (!dHidden.IsEmpty && dHidden.Length != sHidden.Length) || (!dLmHead.IsEmpty && dLmHead.Length != (long)v * cs))
            throw new ArgumentException($"LmHeadDistillation: student hidden {sHidden.Length}, head {Math.Max(sHead.Length, sHeadBf16.Length)}, teacher hidden {tHidden.Length}, " +
                $"head {Math.Max(tHead.Length, tHeadBf16.Length)}, mask {mask.Length}, losses {losses.Length}, dHidden {dHidden.Length}, dLmHead {dLmHead.Length} values for N {n} Cs {cs} Ct {ct} V {v}");
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), $"LmHeadDistillation: temperature {temperature} must be > 0");
        if (n == 0) return;
        int vc = chunkWidth > 0 ? Math.Min(chunkWidth, v) : LmHeadCrossEntropy.ChunkWidth(n, v);
        var sLogits = new float[(long)n * vc];
        var tLogits = new float[(long)n * vc];
        var maxS = new float[n];
        var maxT = new float[n];
        var sumS = new double[n];
        var sumT = new double[n];
        var acc = new double[n]; // sum of e^(z - m) (z_own - z_other) for the weighting side (teacher: forward, student: reverse)
        Array.Fill(maxS, float.NegativeInfinity);
        Array.Fill(maxT, float.NegativeInfinity);
        float invT = 1f / temperature;

        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int w = Math.Min(vc, v - v0);
            Logits(sHidden, sHead, sHeadBf16, sLogits, n, cs, v0, w, threads);
            Logits(tHidden, tHead, tHeadBf16, tLogits, n, ct, v0, w, threads);
            fixed (float* ps = sLogits) fixed (float* pt = tLogits) fixed (int* pm = mask)
            {
                nint s = (nint)ps, t = (nint)pt, m = (nint)pm;
                StaticPartition.For(n, StaticPartition.Parts(threads, n, (long)n * w, 1 << 14), (r0, r1) =>
                {
                    for (int i = r0; i < r1; i++)
                    {
                        if (((int*)m)[i] == 0) continue;
                        float* zs = (float*)s + (long)i * w, zt = (float*)t + (long)i * w;
                        float ms = maxS[i], mt = maxT[i];
                        for (int j = 0; j < w; j++) { ms = MathF.Max(ms, zs[j] * invT); mt = MathF.Max(mt, zt[j] * invT); }
                        double rs = Math.Exp(maxS[i] - ms), rt = Math.Exp(maxT[i] - mt);
                        double ss = sumS[i] * rs, st = sumT[i] * rt, a = acc[i] * (reverse ? rs : rt);
                        for (int j = 0; j < w; j++)
                        {
                            float a1 = zs[j] * invT, b1 = zt[j] * invT;
                            double es = Math.Exp(a1 - ms), et = Math.Exp(b1 - mt);
                            ss += es;
                            st += et;
                            a += reverse ? es * (a1 - b1) : et * (b1 - a1);
                        }
                        (maxS[i], maxT[i], sumS[i], sumT[i], acc[i]) = (ms, mt, ss, st, a);
                    }
                });
            }
        }
        var lseS = new float[n];
        var lseT = new float[n];
        var kl = new float[n];
        double t2 = (double)temperature * temperature;
        for (int i = 0; i < n; i++)
        {
            if (mask[i] == 0) { losses[i] = 0; continue; }
            double ls = maxS[i] + Math.Log(sumS[i]), lt = maxT[i] + Math.Log(sumT[i]);
            double k = reverse ? acc[i] / sumS[i] - ls + lt : acc[i] / sumT[i] - lt + ls;
            (lseS[i], lseT[i], kl[i]) = ((float)ls, (float)lt, (float)k);
            losses[i] = (float)(t2 * k);
        }
        if (dHidden.IsEmpty && dLmHead.IsEmpty) return;

        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int w = Math.Min(vc, v - v0);
            Span<float> chunk = sLogits.AsSpan(0, n * w);
            Logits(sHidden, sHead, sHeadBf16, sLogits, n, cs, v0, w, threads);
            Logits(tHidden, tHead, tHeadBf16, tLogits, n, ct, v0, w, threads);
            fixed (float* ps = sLogits) fixed (float* pt = tLogits) fixed (int* pm = mask)
            {
                nint s = (nint)ps, t = (nint)pt, m = (nint)pm;
                StaticPartition.For(n, StaticPartition.Parts(threads, n, (long)n * w, 1 << 14), (r0, r1) =>
                {
                    for (int i = r0; i < r1; i++)
                    {
                        float* zs = (float*)s + (long)i * w, zt = (float*)t + (long)i * w;
                        if (((int*)m)[i] == 0)
                        {
                            new Span<float>(zs, w).Clear();
                            continue;
                        }
                        float scale = lossScale * temperature;
                        for (int j = 0; j < w; j++)
                        {
                            float logPs = zs[j] * invT - lseS[i], logPt = zt[j] * invT - lseT[i];
                            float p = MathF.Exp(logPs);
                            zs[j] = scale * (reverse ? p * (logPs - logPt - kl[i]) : p - MathF.Exp(logPt));
                        }
                    }
                });
            }
            if (!dHidden.IsEmpty)
            {
                if (sHead.IsEmpty) Gemm.MultiplyNN(chunk, sHeadBf16.Slice(v0 * cs, w * cs), dHidden, n, w, cs, threads);
                else Gemm.MultiplyNN(chunk, sHead.Slice(v0 * cs, w * cs), dHidden, n, w, cs, threads);
            }
            if (!dLmHead.IsEmpty) Gemm.MultiplyTN(chunk, sHidden, dLmHead.Slice(v0 * cs, w * cs), w, n, cs, threads);
        }
    }

    /// <summary>chunk[N,w] = hidden[N,C] head[v0:v0+w, C]^T.</summary>
    private static void Logits(ReadOnlySpan<float> hidden, ReadOnlySpan<float> head, ReadOnlySpan<ushort> headBf16, float[] buffer, int n, int c, int v0, int w, int threads)
    {
        var chunk = buffer.AsSpan(0, n * w);
        chunk.Clear();
        if (head.IsEmpty) Gemm.Multiply(hidden, headBf16.Slice(v0 * c, w * c), chunk, n, c, w, threads);
        else Gemm.Multiply(hidden, head.Slice(v0 * c, w * c), chunk, n, c, w, threads);
    }
}
