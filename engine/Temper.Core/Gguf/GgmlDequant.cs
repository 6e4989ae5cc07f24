// ggml tensor bytes to f32 values, as ggml's dequantize_row_* reference functions compute them (float32 arithmetic):
// F32; F16 (IEEE half); BF16 (the top 16 bits of f32); Q8_0 (blocks of 32: an f16 scale d, 32 int8 codes, x = d q).
// Values come in whole blocks along a row.
using System.Buffers.Binary;

namespace Temper.Core.Gguf;

public static class GgmlDequant
{
    public static bool IsSupported(GgmlType t) => t is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8;

    public static int BlockSize(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 1,
        GgmlType.Q8 => 32,
        _ => throw Unsupported(t),
    };

    public static int BlockBytes(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q8 => 34,
        _ => throw Unsupported(t),
    };

    public static long ByteCount(GgmlType t, long values)
    {
        int block = BlockSize(t);
        if (values % block != 0) throw new TemperException($"{values} values are not whole {t} blocks of {block}");
        return values / block * BlockBytes(t);
    }

    public static void ToFloats(GgmlType t, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (src.Length != ByteCount(t, dst.Length)) throw new TemperException($"{src.Length} bytes of {t} do not hold {dst.Length} values");
        switch (t)
        {
            case GgmlType.F32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]);
                break;
            case GgmlType.F16:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]));
                break;
            case GgmlType.BF16:
                for (int i = 0; i < dst.Length; i++) dst[i] = BFloat16.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..]));
                break;
            case GgmlType.Q8:
                for (int b = 0; b < dst.Length / 32; b++)
                {
                    var block = src.Slice(b * 34, 34);
                    float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block));
                    for (int j = 0; j < 32; j++) dst[b * 32 + j] = (sbyte)block[2 + j] * d;
                }
                break;
            default:
                throw Unsupported(t);
        }
    }

    private static TemperException Unsupported(GgmlType t) => new($"ggml type {t} ({(uint)t}) is not one Temper reads");
}
