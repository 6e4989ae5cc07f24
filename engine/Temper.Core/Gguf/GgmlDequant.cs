// f32 values from the bytes of a ggml tensor (a GGUF file's data), as ggml's reference dequantize_row_* computes
// them (ggml-quants.c), in float32 and in the same order of operations, so the results are bit-identical. A tensor
// row is a whole number of blocks; each block is laid out as below (little-endian; "half" is an IEEE f16):
//   f32, f16, bf16  one value per block, 4 or 2 bytes (bf16 is the top 16 bits of an f32).
//   q4_0  18 bytes / 32 values: half d, 16 bytes of nibbles; value j < 16 is the low nibble of byte j, value j + 16
//         its high nibble; x = (q - 8) * d.
//   q4_1  20 bytes / 32 values: half d, half m, 16 bytes of nibbles as q4_0; x = q * d + m.
//   q5_0  22 bytes / 32 values: half d, a u32 whose bit j is the fifth (16s) bit of value j, nibbles as q4_0;
//         x = (q - 16) * d.
//   q5_1  24 bytes / 32 values: half d, half m, the u32 of fifth bits, nibbles as q4_0; x = q * d + m.
//   q8_0  34 bytes / 32 values: half d, 32 int8 codes; x = q * d.
// The k-quants hold 256 values in sub-blocks of 16 or 32, each with a small integer scale (and min) that a half
// super-scale d (and dmin) multiplies. Their 2-bit fields run in 128-value halves: value 128h + 32k + l (k < 4,
// l < 32) is bits 2k..2k+1 of byte 32h + l of the code bytes.
//   q2_K  84 bytes: 16 scale bytes (sub-block s of 16: low nibble scale, high nibble min), 64 bytes of 2-bit codes,
//         half d, half dmin; x = (d * scale) * q - (dmin * min).
//   q3_K  110 bytes: 32 bytes of high bits (value 128h + 32k + l has bit 4h + k of byte l; a clear bit means
//         q -= 4), 64 bytes of 2-bit codes, 12 bytes of sixteen 6-bit scales, half d; x = (d * (scale - 32)) * q.
//         Scale s takes its low 4 bits from the low (s < 8) or high (s >= 8) nibble of byte s % 8 and its top 2 bits
//         from bits 2(s / 4)..+1 of byte 8 + s % 4.
//   q4_K  144 bytes: half d, half dmin, 12 bytes of eight 6-bit scales and mins, 128 bytes of nibbles; sub-block
//         s of 32 is the low (s even) or high (s odd) nibbles of bytes 32(s / 2)..+32; x = (d * scale) * q - (dmin * min).
//         Scales and mins 0..3 are the low 6 bits of bytes 0..3 and 4..7; 4..7 take their low 4 bits from the low
//         (scale) and high (min) nibbles of bytes 8..11 and their top 2 bits from the top bits of bytes 0..3
//         (scales) and 4..7 (mins): ggml's get_scale_min_k4.
//   q5_K  176 bytes: as q4_K with 32 bytes of fifth bits between the scales and the nibbles (value 32s + l has bit s
//         of byte l, worth 16).
//   q6_K  210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales (one per 16 values),
//         half d; in half h, value 128h + 32k + l is the low (k < 2) or high nibble of byte 64h + 32(k % 2) + l with
//         the high part's bits 2k..2k+1 of byte 128 + 32h + l above it; x = (d * scale) * (q - 32).
using System.Buffers.Binary;

namespace Temper.Core.Gguf;

public static class GgmlDequant
{
    private const int QK = 32, QKK = 256;

    public static bool IsSupported(GgmlType t) => t is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16
        or GgmlType.Q40 or GgmlType.Q41 or GgmlType.Q50 or GgmlType.Q51 or GgmlType.Q8
        or GgmlType.Q2K or GgmlType.Q3K or GgmlType.Q4K or GgmlType.Q5K or GgmlType.Q6K;

    /// <summary>ggml's name of the type (ggml_type_name: "q4_K", "bf16"), or "type N" for one Temper does not know.</summary>
    public static string Name(GgmlType t) => t switch
    {
        GgmlType.F32 => "f32", GgmlType.F16 => "f16", GgmlType.BF16 => "bf16",
        GgmlType.Q40 => "q4_0", GgmlType.Q41 => "q4_1", GgmlType.Q50 => "q5_0", GgmlType.Q51 => "q5_1", GgmlType.Q8 => "q8_0",
        GgmlType.Q2K => "q2_K", GgmlType.Q3K => "q3_K", GgmlType.Q4K => "q4_K", GgmlType.Q5K => "q5_K", GgmlType.Q6K => "q6_K",
        _ => $"type {(uint)t}",
    };

    /// <summary>Values per block.</summary>
    public static int BlockSize(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 1,
        GgmlType.Q40 or GgmlType.Q41 or GgmlType.Q50 or GgmlType.Q51 or GgmlType.Q8 => QK,
        GgmlType.Q2K or GgmlType.Q3K or GgmlType.Q4K or GgmlType.Q5K or GgmlType.Q6K => QKK,
        _ => throw Unsupported(t),
    };

    /// <summary>Bytes per block (ggml-common.h's block_* sizes).</summary>
    public static int BlockBytes(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q40 => 2 + QK / 2,
        GgmlType.Q41 => 4 + QK / 2,
        GgmlType.Q50 => 2 + 4 + QK / 2,
        GgmlType.Q51 => 4 + 4 + QK / 2,
        GgmlType.Q8 => 2 + QK,
        GgmlType.Q2K => QKK / 16 + QKK / 4 + 4,
        GgmlType.Q3K => QKK / 8 + QKK / 4 + 12 + 2,
        GgmlType.Q4K => 4 + 12 + QKK / 2,
        GgmlType.Q5K => 4 + 12 + QKK / 8 + QKK / 2,
        GgmlType.Q6K => QKK / 2 + QKK / 4 + QKK / 16 + 2,
        _ => throw Unsupported(t),
    };

    /// <summary>Bytes that hold the given number of values (whole blocks).</summary>
    public static long ByteCount(GgmlType t, long values)
    {
        int bs = BlockSize(t);
        if (values < 0 || values % bs != 0) throw new TemperException($"ggml {Name(t)}: {values} values are not whole blocks of {bs}");
        return checked(values / bs * BlockBytes(t));
    }

    /// <summary>Decodes src, whole blocks of type t, into dst.Length values.</summary>
    public static void ToFloats(GgmlType t, ReadOnlySpan<byte> src, Span<float> dst)
    {
        long expected = ByteCount(t, dst.Length);
        if (src.Length != expected)
            throw new TemperException($"ggml {Name(t)}: {src.Length} bytes for {dst.Length} values, expected {expected}");
        int bs = BlockSize(t), bb = BlockBytes(t);
        for (int i = 0; i < dst.Length / bs; i++)
        {
            var b = src.Slice(i * bb, bb);
            var y = dst.Slice(i * bs, bs);
            switch (t)
            {
                case GgmlType.F32: y[0] = BinaryPrimitives.ReadSingleLittleEndian(b); break;
                case GgmlType.F16: y[0] = Half(b, 0); break;
                case GgmlType.BF16: y[0] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(b) << 16); break;
                case GgmlType.Q40: Q40(b, y); break;
                case GgmlType.Q41: Q41(b, y); break;
                case GgmlType.Q50: Q50(b, y); break;
                case GgmlType.Q51: Q51(b, y); break;
                case GgmlType.Q8: Q80(b, y); break;
                case GgmlType.Q2K: Q2K(b, y); break;
                case GgmlType.Q3K: Q3K(b, y); break;
                case GgmlType.Q4K: Q45K(b, y, fifthBit: false); break;
                case GgmlType.Q5K: Q45K(b, y, fifthBit: true); break;
                case GgmlType.Q6K: Q6K(b, y); break;
                default: throw Unsupported(t);
            }
        }
    }

    private static TemperException Unsupported(GgmlType t) =>
        new($"ggml {Name(t)} tensors are not supported (Temper reads f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K)");

    private static float Half(ReadOnlySpan<byte> b, int at) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(b[at..]));

    // The 4-bit code of value j of a 32-value block: low nibbles first, then high nibbles.
    private static int Nibble(ReadOnlySpan<byte> qs, int j) => j < QK / 2 ? qs[j] & 0xF : qs[j - QK / 2] >> 4;

    private static void Q40(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        var qs = b.Slice(2, QK / 2);
        for (int j = 0; j < QK; j++) y[j] = (Nibble(qs, j) - 8) * d;
    }

    private static void Q41(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), m = Half(b, 2);
        var qs = b.Slice(4, QK / 2);
        for (int j = 0; j < QK; j++) y[j] = Nibble(qs, j) * d + m;
    }

    private static void Q50(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[2..]);
        var qs = b.Slice(6, QK / 2);
        for (int j = 0; j < QK; j++) y[j] = ((Nibble(qs, j) | (int)((qh >> j) & 1) << 4) - 16) * d;
    }

    private static void Q51(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), m = Half(b, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        var qs = b.Slice(8, QK / 2);
        for (int j = 0; j < QK; j++) y[j] = (Nibble(qs, j) | (int)((qh >> j) & 1) << 4) * d + m;
    }

    private static void Q80(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        for (int j = 0; j < QK; j++) y[j] = (sbyte)b[2 + j] * d;
    }

    // The 2-bit field of value e (< 256) in 64 code bytes: bits 2k..2k+1 of byte 32h + l for e = 128h + 32k + l.
    private static int Crumb(ReadOnlySpan<byte> qs, int e) => (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;

    private static void Q2K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var scales = b[..16];
        var qs = b.Slice(16, 64);
        float d = Half(b, 80), dmin = Half(b, 82);
        for (int s = 0; s < 16; s++)
        {
            float dl = d * (scales[s] & 0xF), ml = dmin * (scales[s] >> 4);
            for (int e = 16 * s; e < 16 * s + 16; e++) y[e] = dl * Crumb(qs, e) - ml;
        }
    }

    private static void Q3K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var hmask = b[..32];
        var qs = b.Slice(32, 64);
        var scales = b.Slice(96, 12);
        float d = Half(b, 108);
        for (int s = 0; s < 16; s++)
        {
            int low = s < 8 ? scales[s] & 0xF : scales[s - 8] >> 4;
            int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
            float dl = d * ((low | high << 4) - 32);
            for (int e = 16 * s; e < 16 * s + 16; e++)
            {
                int hbit = (hmask[e % 32] >> (4 * (e / 128) + e % 128 / 32)) & 1;
                y[e] = dl * (Crumb(qs, e) - (hbit == 0 ? 4 : 0));
            }
        }
    }

    // Scale and min of sub-block s (< 8) from q4_K's and q5_K's 12 packed bytes: ggml's get_scale_min_k4.
    private static (int Scale, int Min) ScaleMin(ReadOnlySpan<byte> p, int s) => s < 4
        ? (p[s] & 63, p[s + 4] & 63)
        : ((p[s + 4] & 0xF) | (p[s - 4] >> 6) << 4, (p[s + 4] >> 4) | (p[s] >> 6) << 4);

    // q4_K and q5_K: 8 sub-blocks of 32 with 6-bit scales and mins; q5_K adds a fifth bit per element from qh.
    private static void Q45K(ReadOnlySpan<byte> b, Span<float> y, bool fifthBit)
    {
        float d = Half(b, 0), dmin = Half(b, 2);
        var scales = b.Slice(4, 12);
        var qh = fifthBit ? b.Slice(16, QKK / 8) : default;
        var qs = b.Slice(fifthBit ? 48 : 16, QKK / 2);
        for (int s = 0; s < 8; s++)
        {
            var (sc, m) = ScaleMin(scales, s);
            float ds = d * sc, ms = dmin * m;
            var q = qs.Slice(32 * (s / 2), 32);
            int shift = 4 * (s % 2);
            for (int l = 0; l < 32; l++)
                y[32 * s + l] = ds * (((q[l] >> shift) & 0xF) + (fifthBit ? ((qh[l] >> s) & 1) << 4 : 0)) - ms;
        }
    }

    private static void Q6K(ReadOnlySpan<byte> b, Span<float> y)
    {
        var ql = b[..128];
        var qh = b.Slice(128, 64);
        var scales = b.Slice(192, 16);
        float d = Half(b, 208);
        for (int e = 0; e < QKK; e++)
        {
            int h = e / 128, k = e % 128 / 32, l = e % 32;
            int low = (ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
            int high = (qh[32 * h + l] >> (2 * k)) & 3;
            y[e] = d * (sbyte)scales[e / 16] * ((low | high << 4) - 32);
        }
    }
}
