// In-place scale: x *= s (Vector512/256/128 paths, scalar tail).
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class Scale
{
    public static void Apply(Span<float> x, float s)
    {
        int n = x.Length, i = 0;
        fixed (float* p = x)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var sv = Vector512.Create(s);
                for (; i <= n - 16; i += 16) (Vector512.Load(p + i) * sv).Store(p + i);
            }
            if (Vector256.IsHardwareAccelerated)
            {
                var sv = Vector256.Create(s);
                for (; i <= n - 8; i += 8) (Vector256.Load(p + i) * sv).Store(p + i);
            }
            if (Vector128.IsHardwareAccelerated)
            {
                var sv = Vector128.Create(s);
                for (; i <= n - 4; i += 4) (Vector128.Load(p + i) * sv).Store(p + i);
            }
            for (; i < n; i++) p[i] *= s;
        }
    }
}
