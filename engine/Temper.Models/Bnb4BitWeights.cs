// Reads the NF4 projections of a bitsandbytes 4-bit checkpoint (see Bnb4BitConfig). For a quantised module
// NAME (e.g. model.layers.0.mlp.down_proj) with weight [Out,In], n = Out*In, blocks = ceil(n/64), transformers
// saves Params4bit and its QuantState.as_dict(packed=True) as:
//   NAME.weight                                    U8  [ceil(n/2), 1]   codes, two per byte, first in the high nibble
//   NAME.weight.absmax                             U8  [blocks]         double quant: 8-bit codes of absmax - offset
//                                                  F32 [blocks]         plain: each block's absmax
//   NAME.weight.quant_map                          F32 [16]             the NF4 code book
//   NAME.weight.nested_absmax                      F32 [ceil(blocks/256)]  double quant: scale of each 256 codes
//   NAME.weight.nested_quant_map                   F32 [256]            double quant: the signed dynamic map
//   NAME.weight.quant_state.bitsandbytes__nf4      U8  [bytes]          UTF-8 JSON: quant_type, blocksize, dtype,
//                                                  shape, and nested_blocksize, nested_dtype, nested_offset
// A double-quantised weight is Temper's Nf4Weight as it stands (the codes mapped, not copied). A plain one is
// double-quantised from its exact absmax at load, as bitsandbytes' compress_statistics would have done it
// (the codes are the file's; each absmax moves by its 8-bit rounding). Dequantize gives the exact f32 values
// nf4[code] * absmax (for merging into a dense copy). A module without a quant state is a dense weight
// (llm_int8_skip_modules); one with an fp4 state, or any tensor or field that does not fit the model's
// shape, is refused with one line naming the file and tensor. No size read from the file sizes an
// allocation before it is checked against the shape config.json implies.
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public static class Bnb4BitWeights
{
    public const string QuantStateSuffix = ".quant_state.bitsandbytes__nf4";
    private const int MaxStateBytes = 4096;

    /// <summary>True when the checkpoint stores NAME.weight (weightName) quantised; false for a dense (skipped) module.</summary>
    public static bool IsQuantized(SafetensorsModel file, string weightName)
    {
        if (file.Contains(weightName + ".quant_state.bitsandbytes__fp4"))
            throw new TemperException($"{file.Folder}: tensor '{weightName}' is bitsandbytes fp4; Temper loads nf4");
        return file.Contains(weightName + QuantStateSuffix);
    }

    /// <summary>The quantised weight, NF4 with double-quantised absmax (see the header), host tensors over the mapping.</summary>
    public static Nf4Weight Read(SafetensorsModel file, string weightName, Shape shape)
    {
        var (codes, absmax) = ReadParts(file, weightName, shape);
        return absmax.Nested ?? Nf4Weight.FromBlockAbsmax(codes, absmax.Plain!);
    }

    /// <summary>The weight's exact values nf4[code] * absmax (f32, [Out,In] host tensor), as bitsandbytes' dequantize_4bit computes them before its cast.</summary>
    public static Tensor Dequantize(SafetensorsModel file, string weightName, Shape shape)
    {
        var (codes, absmax) = ReadParts(file, weightName, shape);
        float[] blockAbsmax = absmax.Plain ?? absmax.Nested!.BlockAbsmax();
        var packed = codes.Bytes;
        var w = Tensor.Zeros(shape, DType.F32, weightName);
        var values = w.Floats;
        var book = Nf4CodeBook.Values;
        for (long i = 0; i < values.Length; i++)
        {
            int b = packed[(int)(i >> 1)];
            int code = (i & 1) == 0 ? b >> 4 : b & 15;
            values[(int)i] = book[code] * blockAbsmax[(int)(i / Nf4Weight.BlockSize)];
        }
        return w;
    }

    private sealed record Absmax(Nf4Weight? Nested, float[]? Plain);

    private static (Tensor Codes, Absmax Absmax) ReadParts(SafetensorsModel file, string name, Shape shape)
    {
        long n = shape.Elements, blocks = Nf4Weight.Blocks(n);
        var state = ReadState(file, name, shape);
        var weight = Get(file, name, DType.U8, (n + 1) / 2, allowColumn: true);
        var codes = new Tensor(shape, DType.NF4, weight.Storage, name);
        var map = Get(file, name + ".quant_map", DType.F32, 16).Floats;
        for (int i = 0; i < 16; i++)
            if (map[i] != Nf4CodeBook.Values[i])
                throw Bad(file, name + ".quant_map", $"entry {i} is {map[i]:R}, not the NF4 code book's {Nf4CodeBook.Values[i]:R}");
        if (state.NestedOffset is not float offset)
        {
            var plain = Get(file, name + ".absmax", DType.F32, blocks).Floats.ToArray();
            return (codes, new Absmax(null, plain));
        }
        var dyn = Get(file, name + ".nested_quant_map", DType.F32, 256).Floats;
        for (int i = 0; i < 256; i++)
            if (MathF.Abs(dyn[i] - DynamicMap.Values[i]) > 1e-7f)
                throw Bad(file, name + ".nested_quant_map", $"entry {i} is {dyn[i]:R}, not bitsandbytes' signed dynamic map's {DynamicMap.Values[i]:R}");
        var codesOfAbsmax = Get(file, name + ".absmax", DType.U8, blocks);
        var scales = Get(file, name + ".nested_absmax", DType.F32, Nf4Weight.ScaleBlocks(blocks));
        return (codes, new Absmax(new Nf4Weight(codes, codesOfAbsmax, scales, offset), null));
    }

    private sealed record State(float? NestedOffset);

    // The packed JSON of the quant state, checked against the model's shape; returns the nested offset (double quant) or null.
    private static State ReadState(SafetensorsModel file, string name, Shape shape)
    {
        string stateName = name + QuantStateSuffix;
        var e = file.Entry(stateName);
        if (e.DType != DType.U8 || e.Shape.Elements > MaxStateBytes)
            throw Bad(file, stateName, $"is {e.DType}{e.Shape}; a bitsandbytes quant state is at most {MaxStateBytes} bytes of U8 JSON");
        JsonObject o;
        try
        {
            o = JsonNode.Parse(Encoding.UTF8.GetString(file.Get(stateName).Bytes)) as JsonObject ?? throw Bad(file, stateName, "is not a JSON object");
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw Bad(file, stateName, $"is not JSON ({ModelConfig.FirstLine(ex.Message)})");
        }
        string Str(string key) => o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Bad(file, stateName, $"field '{key}' must be a string");
        long Int(string key) => o[key] is JsonValue v && v.TryGetValue<long>(out var i) ? i : throw Bad(file, stateName, $"field '{key}' must be an integer");
        if (Str("quant_type") != "nf4") throw Bad(file, stateName, $"quant_type is '{Str("quant_type")}', not nf4");
        if (Int("blocksize") != Nf4Weight.BlockSize) throw Bad(file, stateName, $"blocksize is {Int("blocksize")}; Temper reads blocks of {Nf4Weight.BlockSize}");
        if (Str("dtype") is not ("bfloat16" or "float16" or "float32")) throw Bad(file, stateName, $"dtype is '{Str("dtype")}', not bfloat16, float16 or float32");
        var dims = o["shape"] as JsonArray ?? throw Bad(file, stateName, "field 'shape' must be a list");
        var want = Enumerable.Range(0, shape.Rank).Select(i => (long)shape[i]).ToArray();
        var got = dims.Select(d => d is JsonValue v && v.TryGetValue<long>(out var x) ? x : -1).ToArray();
        if (!got.SequenceEqual(want)) throw Bad(file, stateName, $"shape is [{string.Join(", ", got)}], config.json implies [{string.Join(", ", want)}]");
        if (!o.ContainsKey("nested_offset")) return new State(null);
        if (Int("nested_blocksize") != Nf4Weight.AbsmaxBlockSize) throw Bad(file, stateName, $"nested_blocksize is {Int("nested_blocksize")}; Temper reads blocks of {Nf4Weight.AbsmaxBlockSize}");
        if (Str("nested_dtype") != "float32") throw Bad(file, stateName, $"nested_dtype is '{Str("nested_dtype")}', not float32");
        if (o["nested_offset"] is not JsonValue ov || !ov.TryGetValue<double>(out double offset) || !double.IsFinite(offset))
            throw Bad(file, stateName, "field 'nested_offset' must be a finite number");
        return new State((float)offset);
    }

    private static Tensor Get(SafetensorsModel file, string name, DType dtype, long elements, bool allowColumn = false)
    {
        if (!file.Contains(name)) throw new TemperException($"{file.Folder}: tensor '{name}' missing");
        var e = file.Entry(name);
        bool shapeOk = e.Shape.Rank == 1 && e.Shape[0] == elements || allowColumn && e.Shape.Rank == 2 && e.Shape[0] == elements && e.Shape[1] == 1;
        if (e.DType != dtype || !shapeOk)
            throw Bad(file, name, $"is {e.DType}{e.Shape}, the model's shapes need {dtype}[{elements}{(allowColumn ? ", 1" : "")}]");
        return file.Get(name);
    }

    private static TemperException Bad(SafetensorsModel file, string tensor, string problem) =>
        new($"{file.Folder}: tensor '{tensor}' {problem}");
}
