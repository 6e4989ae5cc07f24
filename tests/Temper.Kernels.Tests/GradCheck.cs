// Finite-difference checks of backward ops: for a loss L(x) = sum_i r_i y_i(x) with fixed random r,
// the directional derivative (L(x + h u) - L(x - h u)) / 2h along random directions u must match
// sum_i grad_i u_i from the backward op.
namespace Temper.Kernels.Tests;

public static class GradCheck
{
    /// <summary>L = sum r_i y_i in f64.</summary>
    public static double Project(ReadOnlySpan<float> y, ReadOnlySpan<float> r)
    {
        double s = 0;
        for (int i = 0; i < y.Length; i++) s += (double)y[i] * r[i];
        return s;
    }

    /// <summary>Checks grad against central differences of loss around x along 3 random directions.</summary>
    public static void Directional(string what, float[] x, float[] grad, Func<float[], double> loss, double h = 1e-2, double tol = 2e-3, int seed = 99)
    {
        Assert.Equal(x.Length, grad.Length);
        var rng = new Random(seed);
        for (int trial = 0; trial < 3; trial++)
        {
            var u = new float[x.Length];
            double norm = 0;
            for (int i = 0; i < u.Length; i++)
            {
                u[i] = (float)(rng.NextDouble() * 2 - 1);
                norm += (double)u[i] * u[i];
            }
            norm = Math.Sqrt(norm);
            for (int i = 0; i < u.Length; i++) u[i] = (float)(u[i] / norm);
            var plus = new float[x.Length];
            var minus = new float[x.Length];
            for (int i = 0; i < x.Length; i++)
            {
                plus[i] = (float)(x[i] + h * u[i]);
                minus[i] = (float)(x[i] - h * u[i]);
            }
            double fd = (loss(plus) - loss(minus)) / (2 * h);
            double analytic = 0, gradNorm = 0;
            for (int i = 0; i < x.Length; i++)
            {
                analytic += (double)grad[i] * u[i];
                gradNorm += (double)grad[i] * grad[i];
            }
            double err = Math.Abs(fd - analytic), scale = Math.Max(Math.Abs(analytic), 0.1 * Math.Sqrt(gradNorm));
            Assert.True(err <= tol * scale, $"{what}: finite difference {fd:E4} vs backward {analytic:E4} (direction {trial}, error {err:E2} > {tol * scale:E2})");
        }
    }
}
