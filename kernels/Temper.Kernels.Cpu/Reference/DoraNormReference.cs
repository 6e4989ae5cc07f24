// DoRA's weight norm, the oracle: norm[M] = || W[M,K] + scale (B[M,r] A[r,K]) ||_row, the L2 norm of each
// row of the adapted weight (PEFT's get_weight_norm: weight + scaling * (lora_B @ lora_A), norm over dim 1),
// summed in f64. W is given widened to f32 (a bf16 weight's exact values).
namespace Temper.Kernels.Cpu.Reference;

public static class DoraNormReference
{
    public static void Compute(ReadOnlySpan<float> w, ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale, Span<float> norm, int m, int k, int r)
    {
        for (int j = 0; j < m; j++)
        {
            double sum = 0;
            for (int q = 0; q < k; q++)
            {
                double ba = 0;
                for (int t = 0; t < r; t++) ba += (double)b[j * r + t] * a[t * k + q];
                double v = w[j * k + q] + scale * ba;
                sum += v * v;
            }
            norm[j] = (float)Math.Sqrt(sum);
        }
    }
}
