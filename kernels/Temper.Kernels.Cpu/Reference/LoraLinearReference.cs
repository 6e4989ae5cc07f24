// LoRA linear, the oracle (PEFT's order): xa[N,r] = x[N,K] A[r,K]^T,
//   y[N,M] = x w[M,K]^T + bias + scale * (xa B[M,r]^T).
namespace Temper.Kernels.Cpu.Reference;

public static class LoraLinearReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, ReadOnlySpan<float> a, ReadOnlySpan<float> b,
        float scale, Span<float> y, Span<float> xa, int n, int k, int m, int r)
    {
        var xaLocal = new float[n * r];
        LinearReference.Forward(x, a, default, xaLocal, n, k, r, accumulate: false);
        if (!xa.IsEmpty) xaLocal.CopyTo(xa);
        var lora = new float[n * m];
        LinearReference.Forward(xaLocal, b, default, lora, n, r, m, accumulate: false);
        LinearReference.Forward(x, w, bias, y, n, k, m, accumulate: false);
        for (int i = 0; i < n * m; i++) y[i] += scale * lora[i];
    }
}
