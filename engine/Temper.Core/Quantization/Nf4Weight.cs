// A weight matrix quantised to NF4 the way bitsandbytes' QLoRA does it (quantize_4bit with
// quant_type="nf4", blocksize 64, compress_statistics=True):
//   - the weight [Out,In] is flattened; every block of 64 elements (the last may be partial) has an
//     absmax, and each element's 4-bit code is Nf4CodeBook.Quantize(w * (1 / absmax));
//   - codes are packed two per byte, the first element of a pair in the high nibble; an odd count
//     leaves a low nibble holding the code of 0 (bitsandbytes pads its loads with zeros);
//   - double quantisation: offset = mean(absmax); (absmax - offset) is quantised in blocks of 256
//     to 8-bit DynamicMap codes with one f32 absmax (scale) per block.
// Reconstruction, as bitsandbytes' dequantize_4bit: absmax[b] = f32(f32(dyn[q[b]] * scale[b/256]) +
// offset) (two roundings, no fused multiply-add), then w[i] = f32(nf4[code[i]] * absmax[i/64]).
// Tensors: Codes NF4 [Out,In] (ceil(Out*In/2) bytes), AbsmaxCodes U8 [blocks], AbsmaxScales F32
// [ceil(blocks/256)]; all host or all on one backend.
using Temper.Core;

namespace Temper.Core.Quantization;

public sealed class Nf4Weight : IDisposable
{
    public const int BlockSize = 64;
    public const int AbsmaxBlockSize = 256;

    public Nf4Weight(Tensor codes, Tensor absmaxCodes, Tensor absmaxScales, float absmaxOffset)
    {
        long blocks = Blocks(codes.Elements);
        if (codes.DType != DType.NF4 || absmaxCodes.DType != DType.U8 || absmaxScales.DType != DType.F32)
            throw new TemperException($"NF4 weight {codes.Name}: codes {codes.DType}, absmax {absmaxCodes.DType}, scales {absmaxScales.DType}; need NF4, U8, F32");
        if (absmaxCodes.Elements != blocks || absmaxScales.Elements != ScaleBlocks(blocks))
            throw new TemperException($"NF4 weight {codes.Name} {codes.Shape}: {absmaxCodes.Elements} absmax codes and {absmaxScales.Elements} scales, need {blocks} and {ScaleBlocks(blocks)}");
        Codes = codes;
        AbsmaxCodes = absmaxCodes;
        AbsmaxScales = absmaxScales;
        AbsmaxOffset = absmaxOffset;
    }

    /// <summary>The packed 4-bit codes, shaped as the weight ([Out,In]).</summary>
    public Tensor Codes { get; }
    /// <summary>8-bit DynamicMap codes of (absmax - offset), one per 64-element block.</summary>
    public Tensor AbsmaxCodes { get; }
    /// <summary>The absmax of each 256-block of (absmax - offset): the scale of its 8-bit codes.</summary>
    public Tensor AbsmaxScales { get; }
    /// <summary>The mean of the blocks' absmax values, subtracted before their quantisation.</summary>
    public float AbsmaxOffset { get; }
    public Shape Shape => Codes.Shape;
    public string? Name => Codes.Name;
    public long Elements => Codes.Elements;
    /// <summary>Bytes held: codes, absmax codes and scales (about 4.127 bits per weight).</summary>
    public long ByteCount => Codes.ByteCount + AbsmaxCodes.ByteCount + AbsmaxScales.ByteCount;

    public static long Blocks(long elements) => (elements + BlockSize - 1) / BlockSize;
    public static long ScaleBlocks(long blocks) => (blocks + AbsmaxBlockSize - 1) / AbsmaxBlockSize;
    /// <summary>Bytes an NF4 weight of this many elements holds.</summary>
    public static long BytesFor(long elements) => (elements + 1) / 2 + Blocks(elements) + 4 * ScaleBlocks(Blocks(elements));

    /// <summary>Quantises host values (f32, bf16 or f16 tensors are widened to f32 first, exactly).</summary>
    public static Nf4Weight Quantize(Tensor weight)
    {
        if (weight.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new TemperException($"tensor {weight.Name}: NF4 quantisation takes f32, bf16 or f16, not {weight.DType}");
        var values = weight.DType == DType.F32 && weight.IsHost ? weight.Floats : weight.ToFloatArray();
        return Quantize(values, weight.Shape, weight.Name);
    }

    public static Nf4Weight Quantize(ReadOnlySpan<float> w, Shape shape, string? name = null)
    {
        var (codes, absmax) = QuantizeCodes(w, shape, name);
        return FromBlockAbsmax(codes, absmax);
    }

    /// <summary>The first level alone: packed codes and each 64-block's absmax in f32 (bitsandbytes without
    /// double quantisation stores exactly these).</summary>
    public static (Tensor Codes, float[] Absmax) QuantizeCodes(ReadOnlySpan<float> w, Shape shape, string? name = null)
    {
        if (w.Length != shape.Elements) throw new ArgumentException($"{w.Length} values do not fill {shape}");
        var codes = Tensor.Zeros(shape, DType.NF4, name);
        var absmax = new float[Blocks(w.Length)];
        QuantizeBlocks(w, absmax, codes.Bytes);
        return (codes, absmax);
    }

    /// <summary>
    /// Packed codes [Out,In] with their blocks' f32 absmax, double-quantised as bitsandbytes' compress_statistics
    /// does: offset = mean(absmax), (absmax - offset) in 8-bit DynamicMap codes, one f32 scale per 256 blocks.
    /// </summary>
    public static Nf4Weight FromBlockAbsmax(Tensor codes, ReadOnlySpan<float> absmax)
    {
        long blocks = absmax.Length;
        if (blocks != Blocks(codes.Elements)) throw new ArgumentException($"{blocks} absmax values for {codes.Shape}, need {Blocks(codes.Elements)}");
        string? name = codes.Name;
        double sum = 0;
        foreach (float a in absmax) sum += a;
        float offset = blocks == 0 ? 0f : (float)(sum / blocks);
        var centred = new float[blocks];
        for (long b = 0; b < blocks; b++) centred[b] = absmax[(int)b] - offset;
        var absmaxCodes = Tensor.Zeros(new Shape(checked((int)blocks)), DType.U8, name + ".absmax");
        var scales = Tensor.Zeros(new Shape(checked((int)ScaleBlocks(blocks))), DType.F32, name + ".absmax_scale");
        var q = absmaxCodes.Span<byte>();
        var s = scales.Floats;
        for (int sb = 0; sb < s.Length; sb++)
        {
            var part = centred.AsSpan(sb * AbsmaxBlockSize, (int)Math.Min(AbsmaxBlockSize, blocks - (long)sb * AbsmaxBlockSize));
            float max = AbsMax(part);
            float inv = 1f / max;
            s[sb] = max;
            for (int i = 0; i < part.Length; i++) q[sb * AbsmaxBlockSize + i] = DynamicMap.Quantize(part[i] * inv);
        }
        return new Nf4Weight(codes, absmaxCodes, scales, offset);
    }

    // First level: each 64-block's absmax, then its codes two per byte (the first in the high nibble).
    // Blocks are independent, so runs of them go to all cores (the result does not depend on how).
    private static unsafe void QuantizeBlocks(ReadOnlySpan<float> w, float[] absmax, Span<byte> packed)
    {
        const int blocksPerTask = 4096;
        int length = w.Length;
        fixed (float* pw = w)
        fixed (byte* pp = packed)
        {
            nint wp = (nint)pw, pk = (nint)pp;
            Parallel.For(0, (absmax.Length + blocksPerTask - 1) / blocksPerTask, task =>
            {
                var all = new ReadOnlySpan<float>((float*)wp, length);
                var bytes = new Span<byte>((byte*)pk, (length + 1) / 2);
                int end = Math.Min(absmax.Length, (task + 1) * blocksPerTask);
                for (int b = task * blocksPerTask; b < end; b++)
                {
                    int start = b * BlockSize;
                    var block = all.Slice(start, Math.Min(BlockSize, length - start));
                    float max = AbsMax(block);
                    absmax[b] = max;
                    float inv = 1f / max;
                    for (int i = 0; i < block.Length; i += 2)
                    {
                        byte hi = Nf4CodeBook.Quantize(block[i] * inv);
                        byte lo = Nf4CodeBook.Quantize((i + 1 < block.Length ? block[i + 1] : 0f) * inv);
                        bytes[(start + i) / 2] = (byte)(hi << 4 | lo);
                    }
                }
            });
        }
    }

    // max |v| as CUDA's fmaxf reduction: a NaN element is ignored.
    private static float AbsMax(ReadOnlySpan<float> v)
    {
        float m = 0f;
        foreach (float x in v)
        {
            float a = MathF.Abs(x);
            if (a > m) m = a;
        }
        return m;
    }

    /// <summary>The reconstructed absmax of every 64-block (host tensors only).</summary>
    public float[] BlockAbsmax()
    {
        var r = new float[AbsmaxCodes.Elements];
        DecodeAbsmax(AbsmaxCodes.Span<byte>(), AbsmaxScales.Floats, AbsmaxOffset, r);
        return r;
    }

    /// <summary>absmax[b] = f32(f32(dyn[q[b]] * scales[b/256]) + offset), as bitsandbytes computes it.</summary>
    public static void DecodeAbsmax(ReadOnlySpan<byte> q, ReadOnlySpan<float> scales, float offset, Span<float> absmax)
    {
        var dyn = DynamicMap.Values;
        for (int b = 0; b < absmax.Length; b++)
        {
            float scaled = dyn[q[b]] * scales[b / AbsmaxBlockSize];
            absmax[b] = scaled + offset;
        }
    }

    /// <summary>This weight on a backend (the same object's tensors where the backend shares host memory).</summary>
    public Nf4Weight To(IBackend be)
    {
        var codes = be.FromHost(Codes);
        if (ReferenceEquals(codes, Codes)) return this;
        return new Nf4Weight(codes, be.FromHost(AbsmaxCodes), be.FromHost(AbsmaxScales), AbsmaxOffset);
    }

    public void Dispose()
    {
        Codes.Dispose();
        AbsmaxCodes.Dispose();
        AbsmaxScales.Dispose();
    }

    public override string ToString() => $"{Name ?? "weight"} NF4{Shape}";
}
