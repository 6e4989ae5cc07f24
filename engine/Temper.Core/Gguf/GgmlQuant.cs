// f32 values encoded in the ggml types Temper writes to GGUF: F32 as is; F16 (IEEE half, round to nearest even);
// BF16 (the top 16 bits of f32, round to nearest even, NaN kept quiet: gguf-py's and BFloat16's rule); and Q8_0,
// ggml's quantize_row_q8_0_ref: blocks of 32 values along a row, each stored as an f16 scale d = max|x| / 127
// followed by 32 int8 codes round(x / d) (roundf: halves away from zero; x times the f32 1/d, as ggml computes it;
// an all-zero block has d = 0 and codes 0). Rows are whole blocks (the caller checks). Each writer streams a
// span of values of any length (a multiple of 32 for Q8_0) in chunks.
using System.Buffers.Binary;

namespace Temper.Core.Gguf;

public static class GgmlQuant
{
    public const int Q8BlockSize = 32;
    public const int Q8BlockBytes = 2 + Q8BlockSize;
    private const int ChunkValues = 1 << 16;

    public static void Write(Stream s, ReadOnlySpan<float> values, GgmlType type)
    {
        switch (type)
        {
            case GgmlType.F32: WriteF32(s, values); break;
            case GgmlType.F16: WriteHalves(s, values, bf16: false); break;
            case GgmlType.BF16: WriteHalves(s, values, bf16: true); break;
            case GgmlType.Q8: WriteQ8(s, values); break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    private static void WriteF32(Stream s, ReadOnlySpan<float> values)
    {
        var buf = new byte[Math.Min(values.Length, ChunkValues) * 4];
        for (int i = 0; i < values.Length; i += ChunkValues)
        {
            var part = values.Slice(i, Math.Min(ChunkValues, values.Length - i));
            for (int j = 0; j < part.Length; j++) BinaryPrimitives.WriteSingleLittleEndian(buf.AsSpan(j * 4), part[j]);
            s.Write(buf, 0, part.Length * 4);
        }
    }

    private static void WriteHalves(Stream s, ReadOnlySpan<float> values, bool bf16)
    {
        var buf = new byte[Math.Min(values.Length, ChunkValues) * 2];
        for (int i = 0; i < values.Length; i += ChunkValues)
        {
            var part = values.Slice(i, Math.Min(ChunkValues, values.Length - i));
            for (int j = 0; j < part.Length; j++)
                BinaryPrimitives.WriteUInt16LittleEndian(buf.AsSpan(j * 2), bf16 ? BFloat16.FromSingle(part[j]) : BitConverter.HalfToUInt16Bits((Half)part[j]));
            s.Write(buf, 0, part.Length * 2);
        }
    }

    private static void WriteQ8(Stream s, ReadOnlySpan<float> values)
    {
        if (values.Length % Q8BlockSize != 0) throw new ArgumentException($"Q8_0 takes whole blocks of {Q8BlockSize} values, not {values.Length}");
        int blocksPerChunk = ChunkValues / Q8BlockSize;
        var buf = new byte[Math.Min(values.Length / Q8BlockSize, blocksPerChunk) * Q8BlockBytes];
        for (int i = 0; i < values.Length; i += ChunkValues)
        {
            var part = values.Slice(i, Math.Min(ChunkValues, values.Length - i));
            int blocks = part.Length / Q8BlockSize;
            for (int b = 0; b < blocks; b++) QuantizeQ8Block(part.Slice(b * Q8BlockSize, Q8BlockSize), buf.AsSpan(b * Q8BlockBytes, Q8BlockBytes));
            s.Write(buf, 0, blocks * Q8BlockBytes);
        }
    }

    /// <summary>One Q8_0 block: 32 values into 34 bytes (f16 d, then 32 int8 codes).</summary>
    public static void QuantizeQ8Block(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (var v in x) amax = MathF.Max(amax, MathF.Abs(v));
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits((Half)d));
        for (int j = 0; j < Q8BlockSize; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }
}
