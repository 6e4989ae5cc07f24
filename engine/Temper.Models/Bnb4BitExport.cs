// Writes a model folder as a bitsandbytes 4-bit checkpoint: what transformers saves after
// from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
// bnb_4bit_use_double_quant=D, bnb_4bit_compute_dtype=<the weights' dtype>)), so transformers + bitsandbytes,
// vLLM and Temper load it in 4 bits. Each layer projection [Out,In] not named by skipModules is quantised as
// Nf4Weight does (bitsandbytes' quantize_4bit, blocks of 64) and written in the tensor layout Bnb4BitWeights
// reads (its header lists it); every other tensor (embedding, norms, biases, lm_head, skipped modules) is
// copied as stored. A mixture-of-experts model's router, experts and shared expert (and its gate) are layer projections too,
// each quantised under its own HF name (block_sparse_moe.experts.3.w1, mlp.gate, ...), as transformers' bitsandbytes
// integration quantises every nn.Linear but lm_head; experts fused into 3-D tensors (transformers 5) are refused. config.json gains quantization_config; tokenizer and template files are copied.
// A skip name matches a module whose dotted name contains it as whole components ("mlp.down_proj" matches
// model.layers.3.mlp.down_proj; "model.layers.0" every projection of layer 0; "gate" Mixtral's routers but no gate_proj),
// and must match one.
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public static class Bnb4BitExport
{
    public sealed record Summary(int Quantized, int Skipped, long SourceBytes, long WrittenBytes);

    public static Summary Save(string sourceDir, string outDir, bool doubleQuant, IReadOnlyList<string> skipModules)
    {
        var cfg = ModelConfig.Load(sourceDir);
        if (cfg.Bnb4Bit != null) throw new TemperException($"{sourceDir}: already a bitsandbytes 4-bit checkpoint");
        if (Path.GetFullPath(sourceDir).TrimEnd('/') == Path.GetFullPath(outDir).TrimEnd('/'))
            throw new TemperException($"{outDir}: the output folder must differ from the model folder");
        var shapes = ModelWeights.ProjectionShapes(cfg);
        // A skip name matches the module of a projection's weight when it is whole dotted components of its name.
        static bool Names(string skip, string weight) => ("." + weight[..^".weight".Length] + ".").Contains("." + skip + ".", StringComparison.Ordinal);
        bool Skipped(string weight) => skipModules.Any(k => Names(k, weight));
        foreach (var k in skipModules)
            if (k.Length == 0 || !shapes.Keys.Any(w => Names(k, w)))
                throw new TemperException($"--skip-modules: '{k}' names no layer projection of {sourceDir} (e.g. mlp.down_proj, model.layers.0.self_attn.q_proj)");

        using var file = SafetensorsModel.Open(sourceDir);
        ModelWeights.CheckExpertLayout(cfg, file);
        if (shapes.Keys.FirstOrDefault(w => !file.Contains(w)) is { } missing) throw new TemperException($"{sourceDir}: tensor '{missing}' missing");
        var tensors = new List<KeyValuePair<string, Tensor>>();
        int quantized = 0, skipped = 0;
        string? weightsDType = null;
        long sourceBytes = 0;
        foreach (var name in file.Names)
        {
            var t = file.Get(name);
            sourceBytes += t.ByteCount;
            if (!shapes.TryGetValue(name, out var shape) || Skipped(name))
            {
                if (shapes.ContainsKey(name)) skipped++;
                tensors.Add(new(name, t));
                continue;
            }
            if (t.Shape != shape) throw new TemperException($"{sourceDir}: tensor '{name}' has shape {t.Shape}, config.json implies {shape}");
            if (t.DType is not (DType.F32 or DType.BF16 or DType.F16)) throw new TemperException($"{sourceDir}: tensor '{name}' is {t.DType}; bitsandbytes quantises f32, bf16 or f16 weights");
            string dtype = t.DType switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" };
            weightsDType ??= dtype;
            tensors.AddRange(Quantize(name, t, dtype, doubleQuant));
            quantized++;
        }
        if (quantized == 0) throw new TemperException($"--skip-modules leaves no projection of {sourceDir} to quantise");

        Directory.CreateDirectory(outDir);
        SafetensorsWriter.Write(Path.Combine(outDir, SafetensorsModel.SingleFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var config = JsonNode.Parse(cfg.RawJson) as JsonObject ?? throw new TemperException($"{sourceDir}: config.json is not a JSON object");
        config["quantization_config"] = new Bnb4BitConfig(doubleQuant, weightsDType!, skipModules).ToJson();
        AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        ModelFolderFiles.CopyTokenizer(sourceDir, outDir);
        long written = new FileInfo(Path.Combine(outDir, SafetensorsModel.SingleFileName)).Length;
        return new Summary(quantized, skipped, sourceBytes, written);
    }

    // One projection's tensors as QuantState.as_dict(packed=True) names them (see Bnb4BitWeights).
    private static IEnumerable<KeyValuePair<string, Tensor>> Quantize(string name, Tensor weight, string dtype, bool doubleQuant)
    {
        var values = weight.DType == DType.F32 ? weight.Floats : weight.ToFloatArray();
        var (codes, absmax) = Nf4Weight.QuantizeCodes(values, weight.Shape, name);
        long n = weight.Shape.Elements;
        yield return new(name, new Tensor(new Shape(checked((int)((n + 1) / 2)), 1), DType.U8, codes.Storage, name));
        var state = new StringBuilder().Append(CultureInfo.InvariantCulture, $"{{\"quant_type\": \"nf4\", \"blocksize\": {Nf4Weight.BlockSize}, \"dtype\": \"{dtype}\", \"shape\": [{weight.Shape[0]}, {weight.Shape[1]}]");
        if (doubleQuant)
        {
            var q = Nf4Weight.FromBlockAbsmax(codes, absmax);
            yield return new(name + ".absmax", q.AbsmaxCodes);
            yield return new(name + ".quant_map", Tensor.FromFloats(new Shape(16), Nf4CodeBook.Values.ToArray()));
            yield return new(name + ".nested_absmax", q.AbsmaxScales);
            yield return new(name + ".nested_quant_map", Tensor.FromFloats(new Shape(256), DynamicMap.Values.ToArray()));
            state.Append(CultureInfo.InvariantCulture, $", \"nested_blocksize\": {Nf4Weight.AbsmaxBlockSize}, \"nested_dtype\": \"float32\", \"nested_offset\": {((double)q.AbsmaxOffset).ToString("R", CultureInfo.InvariantCulture)}");
        }
        else
        {
            yield return new(name + ".absmax", Tensor.FromFloats(new Shape(absmax.Length), absmax));
            yield return new(name + ".quant_map", Tensor.FromFloats(new Shape(16), Nf4CodeBook.Values.ToArray()));
        }
        var json = Encoding.UTF8.GetBytes(state.Append('}').ToString());
        var bytes = Tensor.Zeros(new Shape(json.Length), DType.U8, name + Bnb4BitWeights.QuantStateSuffix);
        json.CopyTo(bytes.Bytes);
        yield return new(name + Bnb4BitWeights.QuantStateSuffix, bytes);
    }
}
