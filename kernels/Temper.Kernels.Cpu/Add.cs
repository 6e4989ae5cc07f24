// Residual add: y = a + b elementwise over equal-length spans (y may alias a or b).
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class Add
{
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        if (a.Length != y.Length || b.Length != y.Length)
            throw new ArgumentException($"Add: a has {a.Length} values, b {b.Length}, y {y.Length}");
        int n = y.Length, i = 0;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
        {
            if (Vector512.IsHardwareAccelerated)
                for (; i <= n - 16; i += 16) (Vector512.Load(pa + i) + Vector512.Load(pb + i)).Store(py + i);
            if (Vector256.IsHardwareAccelerated)
                for (; i <= n - 8; i += 8) (Vector256.Load(pa + i) + Vector256.Load(pb + i)).Store(py + i);
            if (Vector128.IsHardwareAccelerated)
                for (; i <= n - 4; i += 4) (Vector128.Load(pa + i) + Vector128.Load(pb + i)).Store(py + i);
            for (; i < n; i++) py[i] = pa[i] + pb[i];
        }
    }

    /// <summary>y += s * a (the LoRA branch's scaled add).</summary>
    public static void ScaledInPlace(ReadOnlySpan<float> a, float s, Span<float> y)
    {
        if (a.Length != y.Length) throw new ArgumentException($"Add: a has {a.Length} values, y {y.Length}");
        int n = y.Length, i = 0;
        fixed (float* pa = a) fixed (float* py = y)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var sv = Vector512.Create(s);
                for (; i <= n - 16; i += 16) (Vector512.Load(py + i) + sv * Vector512.Load(pa + i)).Store(py + i);
            }
            if (Vector256.IsHardwareAccelerated)
            {
                var sv = Vector256.Create(s);
                for (; i <= n - 8; i += 8) (Vector256.Load(py + i) + sv * Vector256.Load(pa + i)).Store(py + i);
            }
            if (Vector128.IsHardwareAccelerated)
            {
                var sv = Vector128.Create(s);
                for (; i <= n - 4; i += 4) (Vector128.Load(py + i) + sv * Vector128.Load(pa + i)).Store(py + i);
            }
            for (; i < n; i++) py[i] += s * pa[i];
        }
    }
}
