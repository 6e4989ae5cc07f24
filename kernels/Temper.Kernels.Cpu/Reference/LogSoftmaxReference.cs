// Log-softmax over the last axis, the oracle: y[n, j] = x[n, j] - max_n - log(sum_j exp(x[n, j] - max_n))
// for x, y [N,V]; the sum in f64.
namespace Temper.Kernels.Cpu.Reference;

public static class LogSoftmaxReference
{
    public static void Forward(ReadOnlySpan<float> x, Span<float> y, int v)
    {
        int rows = v == 0 ? 0 : x.Length / v;
        for (int n = 0; n < rows; n++)
        {
            float max = float.NegativeInfinity;
            for (int j = 0; j < v; j++) max = MathF.Max(max, x[n * v + j]);
            double sum = 0;
            for (int j = 0; j < v; j++) sum += Math.Exp((double)x[n * v + j] - max);
            float logSum = (float)Math.Log(sum);
            for (int j = 0; j < v; j++) y[n * v + j] = x[n * v + j] - max - logSum;
        }
    }
}
