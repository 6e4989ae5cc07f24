// bf16 -> f32 widening of a run of values: a bf16 is the top half of an f32, so widening is a
// zero-extend and a 16-bit shift (Vector512/256/128 paths, scalar tail).
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

/// <summary>bf16 -> f32 widening of a run of values.</summary>
internal static unsafe class Bf16
{
    public static void Widen(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= n - 32; i += 32)
            {
                var u = Vector512.Load(src + i);
                Vector512.ShiftLeft(Vector512.WidenLower(u), 16).AsSingle().Store(dst + i);
                Vector512.ShiftLeft(Vector512.WidenUpper(u), 16).AsSingle().Store(dst + i + 16);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - 16; i += 16)
            {
                var u = Vector256.Load(src + i);
                Vector256.ShiftLeft(Vector256.WidenLower(u), 16).AsSingle().Store(dst + i);
                Vector256.ShiftLeft(Vector256.WidenUpper(u), 16).AsSingle().Store(dst + i + 8);
            }
        }
        if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= n - 8; i += 8)
            {
                var u = Vector128.Load(src + i);
                Vector128.ShiftLeft(Vector128.WidenLower(u), 16).AsSingle().Store(dst + i);
                Vector128.ShiftLeft(Vector128.WidenUpper(u), 16).AsSingle().Store(dst + i + 4);
            }
        }
        for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
    }
}
