// bfloat16 <-> float32: bf16 is the top 16 bits of an f32. Narrowing rounds to nearest even, as
// PyTorch does; NaN stays NaN.
namespace Temper.Core;

public static class BFloat16
{
    public static float ToSingle(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    public static ushort FromSingle(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7FFFFFFF) > 0x7F800000) return (ushort)((u >> 16) | 0x40);
        return (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }

    public static void ToSingle(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        for (int i = 0; i < src.Length; i++) dst[i] = ToSingle(src[i]);
    }

    public static void FromSingle(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        for (int i = 0; i < src.Length; i++) dst[i] = FromSingle(src[i]);
    }
}
