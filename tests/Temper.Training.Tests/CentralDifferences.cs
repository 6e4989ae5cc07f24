// A backward pass against central differences of a float64 loss: each sampled entry of the values the loss reads is
// moved by +-h (and put back), and the difference quotient must lie within tolerance x the rms of the quotients of
// the gradient's entry; that rms must exceed minRms, so a check of a zero gradient cannot pass.
namespace Temper.Tests;

internal static class CentralDifferences
{
    public static void AssertMatches(string name, double[] values, int[] entries, IReadOnlyList<float> gradient, Func<double> loss, double tolerance, double minRms)
    {
        const double h = 1e-5;
        var fd = new double[entries.Length];
        for (int e = 0; e < entries.Length; e++)
        {
            int i = entries[e];
            double keep = values[i];
            values[i] = keep + h;
            double up = loss();
            values[i] = keep - h;
            double down = loss();
            values[i] = keep;
            fd[e] = (up - down) / (2 * h);
        }
        double scale = Math.Sqrt(fd.Average(x => x * x));
        Assert.True(scale > minRms, $"{name}: the sampled gradient is zero; the check would prove nothing");
        for (int e = 0; e < entries.Length; e++)
            Assert.True(Math.Abs(gradient[entries[e]] - fd[e]) <= tolerance * scale,
                $"{name}[{entries[e]}]: backward {gradient[entries[e]]:G6}, central difference {fd[e]:G6} (rms {scale:G3})");
    }
}
