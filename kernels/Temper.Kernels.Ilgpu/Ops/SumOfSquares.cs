// Sum of squares of all elements (for global grad norms), accumulated in f64: P threads each sum a
// strided share into partials[P] (f64) in the arena; the P partials (at most 8 KiB) are the only
// thing read back, and the host adds them in order. Many tensors (a global grad norm) share one read-back.
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

    /// <summary>Each tensor's partials into one arena region (one launch each), read back together after one sync; the
    /// sum of each tensor's partials in order, added in tensor order (the same bits as one Compute a tensor).</summary>
    public static double Compute(DeviceContext dc, IReadOnlyList<(ArrayView<float> X, int N)> xs, out long downloadedBytes)
    {
        int total = 0;
        foreach (var (_, n) in xs) total += Math.Min(Parts, n);
        downloadedBytes = 8L * total;
        if (total == 0) return 0;
        var partials = dc.Arena.Take<double>(total);
        var kernel = dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<double>, int, int>>("sumsq",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<double>, int, int>(Kernel));
        int at = 0;
        foreach (var (x, n) in xs)
        {
            int parts = Math.Min(Parts, n);
            if (parts > 0) kernel(parts, x, partials.SubView(at, parts), n, parts);
            at += parts;
        }
        var host = new double[total];
        ((ArrayView1D<double, Stride1D.Dense>)partials.SubView(0, total)).CopyToCPU(dc.Stream, host.AsSpan());
        dc.Stream.Synchronize();
        double sum = 0;
        at = 0;
        foreach (var (_, n) in xs)
        {
            double one = 0;
            for (int i = 0; i < Math.Min(Parts, n); i++) one += host[at + i];
            at += Math.Min(Parts, n);
            sum += one;
        }
        return sum;
    }
}
