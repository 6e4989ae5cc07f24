// NF4 dequantisation of a run of a packed weight: dst[i] = nf4[code(start + i)] * absmax[(start + i) / 64]
// over the flattened weight (codes two per byte, first element in the high nibble; absmax already
// decoded from its double quantisation, one f32 per 64-block). Any start and length: a scalar head up
// to a 16-element boundary, then 16 elements (8 bytes, one block) per AVX2 step (the 16-entry code book
// looked up by two 8-lane permutes and a blend), then a scalar tail. Each value is one f32 multiply,
// so the SIMD and scalar paths agree bit for bit (Reference/Nf4DequantizeReference.cs is the oracle).
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Temper.Core.Quantization;

namespace Temper.Kernels.Cpu;

public static unsafe class Nf4Dequantize
{
    public static void Run(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, long start, Span<float> dst, bool allowSimd = true)
    {
        long end = start + dst.Length;
        if (start < 0 || (end + 1) / 2 > packed.Length || (end > start && (end - 1) / Nf4Weight.BlockSize >= absmax.Length))
            throw new ArgumentException($"Nf4Dequantize: elements [{start},{end}) need {(end + 1) / 2} code bytes (have {packed.Length}) and {Nf4Weight.Blocks(end)} block scales (have {absmax.Length})");
        var lut = Nf4CodeBook.Values;
        fixed (byte* pc = packed) fixed (float* pa = absmax) fixed (float* pd = dst) fixed (float* pl = lut)
        {
            long i = start;
            float* d = pd;
            if (allowSimd && Avx2.IsSupported)
            {
                for (; i < end && (i & 15) != 0; i++) *d++ = Scalar(pc, pa, pl, i);
                var lo8 = Avx.LoadVector256(pl);
                var hi8 = Avx.LoadVector256(pl + 8);
                var fifteen = Vector256.Create(15);
                for (; i + 16 <= end; i += 16, d += 16)
                {
                    var bytes = Avx2.ConvertToVector256Int32(pc + (i >> 1)); // 8 bytes -> 8 ints
                    var first = Lookup(Avx2.ShiftRightLogical(bytes, 4), lo8, hi8);
                    var second = Lookup(Avx2.And(bytes, fifteen), lo8, hi8);
                    var scale = Vector256.Create(pa[i / Nf4Weight.BlockSize]);
                    first = Avx.Multiply(first, scale);
                    second = Avx.Multiply(second, scale);
                    var a = Avx.UnpackLow(first, second);  // e0 e1 e2 e3 | e8 e9 e10 e11
                    var b = Avx.UnpackHigh(first, second); // e4 e5 e6 e7 | e12 e13 e14 e15
                    Avx.Store(d, Avx.Permute2x128(a, b, 0x20));
                    Avx.Store(d + 8, Avx.Permute2x128(a, b, 0x31));
                }
            }
            for (; i < end; i++) *d++ = Scalar(pc, pa, pl, i);
        }
    }

    private static float Scalar(byte* codes, float* absmax, float* lut, long i)
    {
        int b = codes[i >> 1];
        int code = (i & 1) == 0 ? b >> 4 : b & 15;
        return lut[code] * absmax[i / Nf4Weight.BlockSize];
    }

    // lut[index] for 8 indices in 0..15: permute each half of the table, pick by bit 3 (moved to the sign bit).
    private static Vector256<float> Lookup(Vector256<int> index, Vector256<float> lo8, Vector256<float> hi8) =>
        Avx.BlendVariable(Avx2.PermuteVar8x32(lo8, index), Avx2.PermuteVar8x32(hi8, index), Avx2.ShiftLeftLogical(index, 28).AsSingle());
}
