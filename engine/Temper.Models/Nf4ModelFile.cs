// The quantised projections of a QLoRA base, saved so that quantisation runs once per model folder.
// File: DIR/temper-nf4.safetensors, a plain safetensors file. For every projection NAME (HF module
// name, e.g. model.layers.0.mlp.down_proj) with weight [Out,In], n = Out*In, blocks = ceil(n/64):
//   NAME.weight.nf4            U8  [ceil(n/2)]           packed codes, first element in the high nibble
//   NAME.weight.absmax         U8  [blocks]              8-bit dynamic-map codes of (absmax - offset)
//   NAME.weight.absmax_scale   F32 [ceil(blocks/256)]    scale of each 256-block of those codes
//   NAME.weight.absmax_offset  F32 [1]                   the mean absmax subtracted before quantising
// __metadata__: format "temper-nf4", version "1", block_size "64", absmax_block_size "256", and
// source: "file:bytes:mtime-ticks;..." of the model's safetensors files. A file whose source differs is
// stale and re-made; a file whose tensors do not fit the shapes config.json implies is refused
// (TemperException naming the file and tensor). Embeddings, norms, biases and lm_head are not here:
// they are read from the model's own files, as bitsandbytes keeps them unquantised too.
using System.Globalization;
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public static class Nf4ModelFile
{
    public const string FileName = "temper-nf4.safetensors";
    private const string Format = "temper-nf4";

    /// <summary>The fingerprint of a model's weight files (names, sizes, modification times).</summary>
    public static string Source(SafetensorsModel model) => string.Join(";", model.Files.Select(f =>
    {
        var info = new FileInfo(f.Path);
        return string.Create(CultureInfo.InvariantCulture, $"{info.Name}:{info.Length}:{info.LastWriteTimeUtc.Ticks}");
    }));

    public static void Save(string path, IReadOnlyDictionary<string, Nf4Weight> weights, string source)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, w) in weights)
        {
            var codes = new Tensor(new Shape(checked((int)w.Codes.ByteCount)), DType.U8, w.Codes.Storage, name + ".nf4");
            tensors.Add(new(name + ".nf4", codes));
            tensors.Add(new(name + ".absmax", w.AbsmaxCodes));
            tensors.Add(new(name + ".absmax_scale", w.AbsmaxScales));
            tensors.Add(new(name + ".absmax_offset", Tensor.FromFloats(new Shape(1), [w.AbsmaxOffset])));
        }
        var meta = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["version"] = "1",
            ["block_size"] = Nf4Weight.BlockSize.ToString(CultureInfo.InvariantCulture),
            ["absmax_block_size"] = Nf4Weight.AbsmaxBlockSize.ToString(CultureInfo.InvariantCulture),
            ["source"] = source,
        };
        SafetensorsWriter.Write(path, tensors, meta);
    }

    /// <summary>
    /// Opens a saved file and returns its weights (host tensors over the mapping, valid while the
    /// returned file is open), or null when the file is for other source weights. shapes: NAME -> [Out,In].
    /// </summary>
    public static (SafetensorsFile File, Dictionary<string, Nf4Weight> Weights)? Open(string path, IReadOnlyDictionary<string, Shape> shapes, string source)
    {
        var file = SafetensorsFile.Open(path);
        try
        {
            var m = file.Metadata;
            if (!m.TryGetValue("format", out var f) || f != Format || m.GetValueOrDefault("version") != "1"
                || m.GetValueOrDefault("block_size") != "64" || m.GetValueOrDefault("absmax_block_size") != "256")
                throw new TemperException($"{path}: not a version 1 {Format} file with 64/256 blocks (metadata {string.Join(", ", m.Select(kv => kv.Key + "=" + kv.Value))})");
            if (m.GetValueOrDefault("source") != source)
            {
                file.Dispose();
                return null;
            }
            var weights = new Dictionary<string, Nf4Weight>(StringComparer.Ordinal);
            foreach (var (name, shape) in shapes)
            {
                long n = shape.Elements, blocks = Nf4Weight.Blocks(n);
                var codes = Get(file, path, name + ".nf4", DType.U8, (n + 1) / 2);
                var absmax = Get(file, path, name + ".absmax", DType.U8, blocks);
                var scales = Get(file, path, name + ".absmax_scale", DType.F32, Nf4Weight.ScaleBlocks(blocks));
                var offset = Get(file, path, name + ".absmax_offset", DType.F32, 1);
                weights[name] = new Nf4Weight(new Tensor(shape, DType.NF4, codes.Storage, name), absmax, scales, offset.Floats[0]);
            }
            return (file, weights);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static Tensor Get(SafetensorsFile file, string path, string name, DType dtype, long elements)
    {
        if (!file.Contains(name)) throw new TemperException($"{path}: tensor '{name}' missing");
        var e = file.Entry(name);
        if (e.DType != dtype || e.Shape.Rank != 1 || e.Shape[0] != elements)
            throw new TemperException($"{path}: tensor '{name}' is {e.DType}{e.Shape}, the model's shapes need {dtype}[{elements}]");
        return file.Get(name);
    }
}
