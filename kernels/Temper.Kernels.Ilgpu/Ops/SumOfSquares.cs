// Sum of squares of all elements (for global grad norms), accumulated in f64: P threads each sum a
// strided share into partials[P] (f64) in the arena; the P partials (at most 8 KiB) are the only
// thing read back, and the host adds them in order.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class SumOfSquares
{
    public const int Parts = 1024;

    public static void Kernel(Index1D p, ArrayView<float> x, ArrayView<double> partials, int n, int parts)
    {
        double sum = 0;
        for (int i = p; i < n; i += parts) sum += (double)x[i] * x[i];
        partials[p] = sum;
    }

    public static double Compute(DeviceContext dc, ArrayView<float> x, int n, out long downloadedBytes)
    {
        downloadedBytes = 0;
        if (n == 0) return 0;
        int parts = Math.Min(Parts, n);
        var partials = dc.Arena.Take<double>(parts);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<double>, int, int>>("sumsq", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<double>, int, int>(Kernel))
            (parts, x, partials, n, parts);
        var host = new double[parts];
        ((ArrayView1D<double, Stride1D.Dense>)partials.SubView(0, parts)).CopyToCPU(dc.Stream, host.AsSpan());
        dc.Stream.Synchronize();
        downloadedBytes = 8L * parts;
        double sum = 0;
        foreach (var s in host) sum += s;
        return sum;
    }
}
