// The three matrix products the linear ops need, one thread per output element with an f32 k-loop
// (simple and correct first; the tuned PTX path takes over on CUDA later). Row-major throughout:
//   NT: c[N,M] = beta c + alpha a[N,K] w[M,K]^T + bias[M]     (Linear forward, LoRA's x A^T and xa B^T)
//   NN: c[N,K] = beta c + alpha a[N,M] w[M,K]                 (dx = dy W)
//   TN: c[M,K] = beta c + alpha a[N,M]^T b[N,K]               (dW += dy^T x)
// beta is 0 or 1 (Accumulate); w may be f32 or bf16 (IWeights), a and b are f32.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal struct GemmDims
{
    public int N, K, M;
    public float Alpha;
    public int Accumulate;
    public int HasBias;
}

internal static class Gemm
{
    public static void NTKernel<TW>(Index1D index, ArrayView<float> a, TW w, ArrayView<float> bias, ArrayView<float> c, GemmDims d) where TW : struct, IWeights
    {
        int i = index / d.M, j = index - i * d.M;
        int ao = i * d.K, wo = j * d.K;
        float sum = 0;
        for (int q = 0; q < d.K; q++) sum += a[ao + q] * w.Get(wo + q);
        float r = d.Alpha * sum;
        if (d.HasBias != 0) r += bias[j];
        if (d.Accumulate != 0) r += c[index];
        c[index] = r;
    }

    public static void NNKernel<TW>(Index1D index, ArrayView<float> a, TW w, ArrayView<float> c, GemmDims d) where TW : struct, IWeights
    {
        int i = index / d.K, q = index - i * d.K;
        int ao = i * d.M;
        float sum = 0;
        for (int j = 0; j < d.M; j++) sum += a[ao + j] * w.Get(j * d.K + q);
        float r = d.Alpha * sum;
        if (d.Accumulate != 0) r += c[index];
        c[index] = r;
    }

    public static void TNKernel(Index1D index, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmDims d)
    {
        int j = index / d.K, q = index - j * d.K;
        float sum = 0;
        for (int i = 0; i < d.N; i++) sum += a[i * d.M + j] * b[i * d.K + q];
        float r = d.Alpha * sum;
        if (d.Accumulate != 0) r += c[index];
        c[index] = r;
    }

    /// <summary>c[N,M] = (accumulate ? c : 0) + alpha x w^T + bias.</summary>
    public static void NT(DeviceContext dc, ArrayView<float> a, WeightView w, ArrayView<float>? bias, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if ((long)n * m == 0) return;
        var d = new GemmDims { N = n, K = k, M = m, Alpha = alpha, Accumulate = accumulate ? 1 : 0, HasBias = bias.HasValue ? 1 : 0 };
        var b = bias ?? c;
        if (w.IsBf16)
            dc.Kernel<Action<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, ArrayView<float>, GemmDims>>("gemm.nt.bf16", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, ArrayView<float>, GemmDims>(NTKernel))
                (n * m, a, new Bf16Weights(w.Bf16), b, c, d);
        else
            dc.Kernel<Action<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, ArrayView<float>, GemmDims>>("gemm.nt.f32", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, ArrayView<float>, GemmDims>(NTKernel))
                (n * m, a, new F32Weights(w.F32), b, c, d);
    }

    /// <summary>c[N,K] = (accumulate ? c : 0) + alpha a[N,M] w[M,K].</summary>
    public static void NN(DeviceContext dc, ArrayView<float> a, WeightView w, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if ((long)n * k == 0) return;
        var d = new GemmDims { N = n, K = k, M = m, Alpha = alpha, Accumulate = accumulate ? 1 : 0 };
        if (w.IsBf16)
            dc.Kernel<Action<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, GemmDims>>("gemm.nn.bf16", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, GemmDims>(NNKernel))
                (n * k, a, new Bf16Weights(w.Bf16), c, d);
        else
            dc.Kernel<Action<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, GemmDims>>("gemm.nn.f32", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, GemmDims>(NNKernel))
                (n * k, a, new F32Weights(w.F32), c, d);
    }

    /// <summary>c[M,K] = (accumulate ? c : 0) + alpha a[N,M]^T b[N,K].</summary>
    public static void TN(DeviceContext dc, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if ((long)m * k == 0) return;
        var d = new GemmDims { N = n, K = k, M = m, Alpha = alpha, Accumulate = accumulate ? 1 : 0 };
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>>("gemm.tn", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims>(TNKernel))
            (m * k, a, b, c, d);
    }
}

/// <summary>A weight matrix on the device, f32 or bf16 (exactly one of the views is set).</summary>
internal readonly struct WeightView
{
    public WeightView(ArrayView<float> f32) { F32 = f32; IsBf16 = false; }
    public WeightView(ArrayView<ushort> bf16) { Bf16 = bf16; IsBf16 = true; }
    public ArrayView<float> F32 { get; }
    public ArrayView<ushort> Bf16 { get; }
    public bool IsBf16 { get; }

    /// <summary>Rows [row0, row0 + rows) of a [*, cols] matrix.</summary>
    public WeightView Rows(int row0, int rows, int cols) => IsBf16
        ? new WeightView(Bf16.SubView((long)row0 * cols, (long)rows * cols))
        : new WeightView(F32.SubView((long)row0 * cols, (long)rows * cols));
}
