// Read-only weight operands of the kernels, f32 or bf16 (bf16 stored as ushort, the top half of an
// f32, widened in-kernel by a 16-bit shift). Kernels are generic over these structs, so each dtype
// gets its own compiled kernel with no branch in the inner loop.
using ILGPU;

namespace Temper.Kernels.Ilgpu.Ops;

internal interface IWeights
{
    float Get(int i);
}

internal readonly struct F32Weights(ArrayView<float> values) : IWeights
{
    private readonly ArrayView<float> _values = values;
    public float Get(int i) => _values[i];
}

internal readonly struct Bf16Weights(ArrayView<ushort> values) : IWeights
{
    private readonly ArrayView<ushort> _values = values;
    public float Get(int i) => Interop.IntAsFloat((uint)_values[i] << 16);
}
