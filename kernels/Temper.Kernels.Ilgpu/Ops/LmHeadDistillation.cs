// Logit distillation fused with both LM heads over vocabulary chunks (the math is in
// Temper.Kernels.Cpu/Reference/LmHeadDistillationReference.cs): student hidden[N,Cs] with head[V,Cs],
// teacher hidden[N,Ct] with head[V,Ct] (f32 or bf16 each), mask[N]; only one chunk [N,Vc] of each
// side's logits is in the arena at a time.
// Pass 1, per chunk: both logit chunks (Gemm NT), then one group per row (coalesced reads, GroupReduce,
// as LmHeadCrossEntropy does) folds them into running maxima and exp-sums of s/T and t/T (online
// log-sum-exp) and the KL's weighted sum, rescaled as maxima move;
// a row kernel turns these into losses = T^2 KL, lse_S, lse_T and KL. When gradients are asked for,
// pass 2 recomputes each chunk, turns the student's logits into g = d L / d s (one thread per element)
// and accumulates dHidden += g head[chunk] (Gemm NN) and dLmHead[chunk] += g^T hidden (Gemm TN).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class LmHeadDistillation
{
    public static void StatsKernel(ArrayView<float> sLogits, ArrayView<float> tLogits, ArrayView<int> mask, ArrayView<float> maxS, ArrayView<float> maxT,
        ArrayView<float> sumS, ArrayView<float> sumT, ArrayView<float> acc, int vc, float invT, int reverse, int first)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int n = Grid.IdxX;
        if (mask[n] == 0) return; // the whole group leaves together
        int o = n * vc;
        float ms0 = first != 0 ? float.NegativeInfinity : maxS[n], mt0 = first != 0 ? float.NegativeInfinity : maxT[n];
        float ms = ms0, mt = mt0;
        for (int j = Group.IdxX; j < vc; j += Group.DimX)
        {
            ms = IntrinsicMath.Max(ms, sLogits[o + j] * invT);
            mt = IntrinsicMath.Max(mt, tLogits[o + j] * invT);
        }
        ms = GroupReduce.Max(shared, ms);
        mt = GroupReduce.Max(shared, mt);
        float ss = 0, st = 0, a = 0;
        for (int j = Group.IdxX; j < vc; j += Group.DimX)
        {
            float zs = sLogits[o + j] * invT, zt = tLogits[o + j] * invT;
            float es = MathF.Exp(zs - ms), et = MathF.Exp(zt - mt);
            ss += es;
            st += et;
            a += reverse != 0 ? es * (zs - zt) : et * (zt - zs);
        }
        ss = GroupReduce.Sum(shared, ss);
        st = GroupReduce.Sum(shared, st);
        a = GroupReduce.Sum(shared, a);
        if (Group.IdxX != 0) return;
        float rs = first != 0 ? 0f : MathF.Exp(ms0 - ms), rt = first != 0 ? 0f : MathF.Exp(mt0 - mt);
        if (first == 0)
        {
            ss += sumS[n] * rs;
            st += sumT[n] * rt;
            a += acc[n] * (reverse != 0 ? rs : rt);
        }
        maxS[n] = ms;
        maxT[n] = mt;
        sumS[n] = ss;
        sumT[n] = st;
        acc[n] = a;
    }

    public static void LossKernel(Index1D n, ArrayView<int> mask, ArrayView<float> maxS, ArrayView<float> maxT, ArrayView<float> sumS, ArrayView<float> sumT, ArrayView<float> acc,
        ArrayView<float> losses, ArrayView<float> lseS, ArrayView<float> lseT, ArrayView<float> kl, float t2, int reverse)
    {
        if (mask[n] == 0)
        {
            losses[n] = 0;
            return;
        }
        float ls = maxS[n] + MathF.Log(sumS[n]), lt = maxT[n] + MathF.Log(sumT[n]);
        float k = reverse != 0 ? acc[n] / sumS[n] - ls + lt : acc[n] / sumT[n] - lt + ls;
        lseS[n] = ls;
        lseT[n] = lt;
        kl[n] = k;
        losses[n] = t2 * k;
    }

    public static void GradKernel(Index1D index, ArrayView<float> sLogits, ArrayView<float> tLogits, ArrayView<int> mask, ArrayView<float> lseS, ArrayView<float> lseT, ArrayView<float> kl,
        int vc, float invT, float scale, int reverse)
    {
        int n = index / vc;
        if (mask[n] == 0)
        {
            sLogits[index] = 0;
            return;
        }
        float logPs = sLogits[index] * invT - lseS[n], logPt = tLogits[index] * invT - lseT[n];
        float p = MathF.Exp(logPs);
        sLogits[index] = scale * (reverse != 0 ? p * (logPs - logPt - kl[n]) : p - MathF.Exp(logPt));
    }

    public static void Run(DeviceContext dc, ArrayView<float> sHidden, WeightView sHead, ArrayView<float> tHidden, WeightView tHead, ReadOnlySpan<int> mask, float temperature, bool reverse,
        ArrayView<float> losses, float lossScale, ArrayView<float>? dHidden, ArrayView<float>? dLmHead, int n, int cs, int ct, int v, int chunk)
    {
        if (n == 0) return;
        int vc = Math.Min(v, chunk > 0 ? chunk : LmHeadCrossEntropy.AutoChunk(n, v));
        var dMask = dc.Arena.Upload(mask);
        var (maxS, maxT, sumS, sumT, acc) = (dc.Arena.Take<float>(n), dc.Arena.Take<float>(n), dc.Arena.Take<float>(n), dc.Arena.Take<float>(n), dc.Arena.Take<float>(n));
        var (lseS, lseT, kl) = (dc.Arena.Take<float>(n), dc.Arena.Take<float>(n), dc.Arena.Take<float>(n));
        var sLogits = dc.Arena.Take<float>((long)n * vc);
        var tLogits = dc.Arena.Take<float>((long)n * vc);
        float invT = 1f / temperature;
        int rev = reverse ? 1 : 0;
        var stats = dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>>("kd.stats",
            a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(StatsKernel));
        // PTX route: each hidden converted to bf16 once for every chunk's product in both passes.
        var sBf16 = Gemm.ActivationsInBf16(dc, sHidden, sHead, n, cs);
        var tBf16 = Gemm.ActivationsInBf16(dc, tHidden, tHead, n, ct);
        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int len = Math.Min(vc, v - v0);
            var (sc, tc) = (sLogits.SubView(0, (long)n * len), tLogits.SubView(0, (long)n * len));
            Gemm.NT(dc, sHidden, sBf16, sHead.Rows(v0, len, cs), null, sc, n, cs, len, 1f, accumulate: false);
            Gemm.NT(dc, tHidden, tBf16, tHead.Rows(v0, len, ct), null, tc, n, ct, len, 1f, accumulate: false);
            stats(GroupReduce.RowGroups(dc, n), sc, tc, dMask, maxS, maxT, sumS, sumT, acc, len, invT, rev, v0 == 0 ? 1 : 0);
        }
        dc.Kernel<Action<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, int>>("kd.loss",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, int>(LossKernel))
            (n, dMask, maxS, maxT, sumS, sumT, acc, losses, lseS, lseT, kl, temperature * temperature, rev);
        if (dHidden == null && dLmHead == null) return;
        var grad = dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, float, int>>("kd.grad",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, float, int>(GradKernel));
        for (int v0 = 0; v0 < v; v0 += vc)
        {
            int len = Math.Min(vc, v - v0);
            var (sc, tc) = (sLogits.SubView(0, (long)n * len), tLogits.SubView(0, (long)n * len));
            var w = sHead.Rows(v0, len, cs);
            Gemm.NT(dc, sHidden, sBf16, w, null, sc, n, cs, len, 1f, accumulate: false);
            Gemm.NT(dc, tHidden, tBf16, tHead.Rows(v0, len, ct), null, tc, n, ct, len, 1f, accumulate: false);
            grad(n * len, sc, tc, dMask, lseS, lseT, kl, len, invT, lossScale * temperature, rev);
            if (dHidden is { } dh) Gemm.NN(dc, sc, w, dh, n, cs, len, 1f, accumulate: true);
            if (dLmHead is { } dw) Gemm.TN(dc, sc, sHidden, dw.SubView((long)v0 * cs, (long)len * cs), n, cs, len, 1f, accumulate: true);
        }
    }
}
