// Whether the outcomes of n seeded draws fit the distribution they should follow (the sampled speculative
// decoding tests of Temper.Models.Tests and Temper.Serving.Tests): each frequency within 5 standard errors
// (sqrt(p(1-p)/n)) of its probability, plus 1/n, and Pearson's chi-square over the outcomes expected at least 5
// times (the rest pooled into one) under its 1e-6 quantile (Wilson-Hilferty). The per-outcome bound catches one
// outcome far off, the chi-square a deviation spread thinly over many. A correct sampler fails the first with
// probability about 5.7e-7 an outcome (the normal tail beyond 5 sd), the second with 1e-6: under 1e-4 in all for
// up to ~150 outcomes.
using Xunit;

namespace Temper.Tests;

public static class Frequencies
{
    /// <summary>Asserts that counts [outcomes] of <paramref name="n"/> draws fit the probabilities <paramref name="expected"/> [outcomes].</summary>
    public static void AssertFit(double[] expected, int[] counts, int n, string what)
    {
        double chi2 = 0, pooledE = 0, pooledO = 0;
        int bins = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double f = (double)counts[i] / n, sd = Math.Sqrt(expected[i] * (1 - expected[i]) / n);
            Assert.True(Math.Abs(f - expected[i]) <= 5 * sd + 1.0 / n, $"{what}: outcome {i} drawn with frequency {f:F5}, expected {expected[i]:F5} (5 sd = {5 * sd:F5})");
            double e = expected[i] * n;
            if (e < 5)
            {
                pooledE += e;
                pooledO += counts[i];
                continue;
            }
            chi2 += (counts[i] - e) * (counts[i] - e) / e;
            bins++;
        }
        if (pooledE > 0)
        {
            chi2 += (pooledO - pooledE) * (pooledO - pooledE) / pooledE;
            bins++;
        }
        int df = Math.Max(1, bins - 1);
        double a = 2.0 / (9 * df), critical = df * Math.Pow(1 - a + 4.75 * Math.Sqrt(a), 3);
        Assert.True(chi2 < critical, $"{what}: chi-square {chi2:F1} over {bins} outcomes is above its 1e-6 quantile {critical:F1}");
    }
}
