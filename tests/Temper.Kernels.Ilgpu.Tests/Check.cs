// Helpers of the ILGPU op checks beside the shared ones (tests/Shared/OpTolerance.cs: seeded inputs,
// normalised MSE 1e-10 in f32, bitwise): bf16 rounding and host tensors.
global using static Temper.Tests.OpTolerance;
using Temper.Core;

namespace Temper.Kernels.Ilgpu.Tests;

public static class Check
{
    /// <summary>Rounds to bf16; <paramref name="widened"/> gets the exact f32 values the bf16 holds.</summary>
    public static ushort[] ToBf16(float[] f, out float[] widened)
    {
        var r = new ushort[f.Length];
        BFloat16.FromSingle(f, r);
        widened = new float[f.Length];
        BFloat16.ToSingle(r, widened);
        return r;
    }

    public static Tensor Host(float[] values, params int[] shape) => Tensor.FromFloats(new Shape(shape), values);
    public static Tensor HostBf16(ushort[] values, params int[] shape) => Tensor.FromArray<ushort>(new Shape(shape), values, DType.BF16);
}
