// The op benches' inputs: a device tensor of seeded uniform values in [-scale, scale), f32 or rounded to
// bf16 (never zeros, which can hide unwritten outputs and run faster than real data).
using Temper.Core;

namespace Temper.Cli.Commands;

internal static class BenchTensors
{
    public static Tensor Random(IBackend be, Random rng, Shape shape, float scale = 1f, DType dtype = DType.F32)
    {
        var values = new float[shape.Elements];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        if (dtype != DType.BF16) return be.FromHost(Tensor.FromFloats(shape, values));
        var bits = new ushort[values.Length];
        BFloat16.FromSingle(values, bits);
        return be.FromHost(Tensor.FromArray<ushort>(shape, bits, DType.BF16));
    }
}
