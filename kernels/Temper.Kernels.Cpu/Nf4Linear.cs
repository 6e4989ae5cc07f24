// The fused NF4 linear on the CPU, base weight frozen:
//   forward  y[N,M] = x[N,K] dequant(w)[M,K]^T + bias[M]  (or y += that when accumulating)
//   backward dx[N,K] = dy[N,M] dequant(w)[M,K]            (or dx += that)
// The dequantised weight is never built whole: rows of w are dequantised a slab at a time (about
// 1M floats, split over the threads) into a thread-shared scratch and fed to the packed GEMM's strided
// NT / NN forms, which write straight into the slab's columns of y (forward) or add the slab's share
// of the reduction into dx (backward). Reference: Reference/Nf4LinearReference.cs.
using System.Buffers;
using Temper.Core.Quantization;

namespace Temper.Kernels.Cpu;

public static unsafe class Nf4Linear
{
    private const int SlabFloats = 1 << 20;

    /// <summary>Rows of w per slab: about SlabFloats values, a multiple of 32 rows where w is larger.</summary>
    public static int SlabRows(int k, int m) => Math.Min(m, Math.Max(32, SlabFloats / Math.Max(1, k) / 32 * 32));

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, ReadOnlySpan<float> bias, Span<float> y,
        int n, int k, int m, bool accumulate, int threads)
    {
        if (x.Length != (long)n * k || y.Length != (long)n * m || (!bias.IsEmpty && bias.Length != m))
            throw new ArgumentException($"Nf4Linear: x has {x.Length} values (need {n}x{k}), y {y.Length} (need {n}x{m}), bias {bias.Length} (need {m})");
        if (!accumulate) y.Clear();
        if (!bias.IsEmpty)
            for (int i = 0; i < n; i++) Add.Forward(y.Slice(i * m, m), bias, y.Slice(i * m, m));
        if ((long)n * k * m == 0) return;
        int rows = SlabRows(k, m);
        var slab = ArrayPool<float>.Shared.Rent(rows * k);
        try
        {
            fixed (float* px = x) fixed (float* py = y) fixed (float* ps = slab)
                for (int m0 = 0; m0 < m; m0 += rows)
                {
                    int r = Math.Min(rows, m - m0);
                    DequantizeRows(packed, absmax, (long)m0 * k, slab.AsSpan(0, r * k), k, threads);
                    Gemm.MultiplyNT(px, k, ps, k, py + m0, m, n, k, r, threads);
                }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(slab);
        }
    }

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, Span<float> dx,
        int n, int k, int m, bool accumulateDx, int threads)
    {
        if (dy.Length != (long)n * m || dx.Length != (long)n * k)
            throw new ArgumentException($"Nf4Linear backward: dy has {dy.Length} values (need {n}x{m}), dx {dx.Length} (need {n}x{k})");
        if (!accumulateDx) dx.Clear();
        if ((long)n * k * m == 0) return;
        int rows = SlabRows(k, m);
        var slab = ArrayPool<float>.Shared.Rent(rows * k);
        try
        {
            fixed (float* pdy = dy) fixed (float* pdx = dx) fixed (float* ps = slab)
                for (int m0 = 0; m0 < m; m0 += rows)
                {
                    int r = Math.Min(rows, m - m0);
                    DequantizeRows(packed, absmax, (long)m0 * k, slab.AsSpan(0, r * k), k, threads);
                    Gemm.MultiplyNN(pdy + m0, m, ps, k, pdx, k, n, r, k, threads);
                }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(slab);
        }
    }

    // Whole rows of the slab per thread (each value is computed alone, so the split changes no bit).
    private static void DequantizeRows(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, long start, Span<float> dst, int k, int threads)
    {
        int rows = dst.Length / k;
        int t = Math.Max(1, Math.Min(threads, dst.Length / 65536));
        if (t == 1)
        {
            Nf4Dequantize.Run(packed, absmax, start, dst);
            return;
        }
        fixed (byte* pp = packed) fixed (float* pa = absmax) fixed (float* pd = dst)
        {
            byte* p = pp;
            float* a = pa, d = pd;
            int pl = packed.Length, al = absmax.Length;
            StaticPartition.For(rows, t, (r0, r1) =>
                Nf4Dequantize.Run(new ReadOnlySpan<byte>(p, pl), new ReadOnlySpan<float>(a, al), start + (long)r0 * k, new Span<float>(d + (long)r0 * k, (r1 - r0) * k)));
        }
    }
}
