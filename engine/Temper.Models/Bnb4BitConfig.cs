// config.json's quantization_config for a bitsandbytes 4-bit checkpoint (what transformers writes when a
// model loaded with BitsAndBytesConfig(load_in_4bit=True) is saved, e.g. the hub's "*-bnb-4bit" models):
//   {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4",
//    "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8",
//    "llm_int8_skip_modules": null | [...], ...}
// Temper runs NF4 with uint8 storage (Bnb4BitWeights reads each projection's tensors). Everything else
// a quantization_config can say (another quant_method, 8-bit LLM.int8, fp4, another storage type) is refused
// here with one line naming config.json and the field, before any weight is read.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

/// <param name="DoubleQuant">bnb_4bit_use_double_quant: the block absmax values are themselves 8-bit quantised.</param>
/// <param name="ComputeDType">bnb_4bit_compute_dtype as written (e.g. "bfloat16"); informational.</param>
/// <param name="SkipModules">llm_int8_skip_modules: module names kept unquantised (informational: each tensor's own
/// quant state says whether it is quantised).</param>
public sealed record Bnb4BitConfig(bool DoubleQuant, string ComputeDType, IReadOnlyList<string> SkipModules)
{
    /// <summary>Reads quantization_config (null when absent: a plain checkpoint).</summary>
    public static Bnb4BitConfig? Parse(JsonNode? node, string path)
    {
        if (node == null) return null;
        if (node is not JsonObject o) throw new TemperException($"{path}: field 'quantization_config' must be an object");
        var r = new ConfigReader(o, path);
        string method = r.OptString("quant_method") ?? "";
        if (method != "bitsandbytes")
            throw new TemperException($"{path}: quantization_config quant_method '{method}' is not supported; Temper loads bitsandbytes 4-bit (nf4) checkpoints and f32/bf16/f16 ones");
        bool in4 = r.OptBool("load_in_4bit") ?? r.OptBool("_load_in_4bit") ?? false;
        bool in8 = r.OptBool("load_in_8bit") ?? r.OptBool("_load_in_8bit") ?? false;
        if (!in4)
            throw new TemperException($"{path}: quantization_config is bitsandbytes {(in8 ? "8-bit (LLM.int8)" : "without load_in_4bit")}; Temper loads only its 4-bit nf4 checkpoints");
        string type = r.OptString("bnb_4bit_quant_type") ?? "fp4"; // transformers' default
        if (type != "nf4") throw new TemperException($"{path}: quantization_config bnb_4bit_quant_type '{type}' is not supported; Temper loads nf4");
        string storage = r.OptString("bnb_4bit_quant_storage") ?? "uint8";
        if (storage != "uint8") throw new TemperException($"{path}: quantization_config bnb_4bit_quant_storage '{storage}' is not supported; Temper reads codes stored as uint8");
        var skip = o["llm_int8_skip_modules"] switch
        {
            null => [],
            JsonArray a => a.Select(x => x is JsonValue v && v.TryGetValue<string>(out var s) ? s
                : throw new TemperException($"{path}: field 'llm_int8_skip_modules' must be a list of module names")).ToArray(),
            _ => throw new TemperException($"{path}: field 'llm_int8_skip_modules' must be a list of module names or null"),
        };
        return new Bnb4BitConfig(r.OptBool("bnb_4bit_use_double_quant") ?? false, r.OptString("bnb_4bit_compute_dtype") ?? "float32", skip);
    }

    /// <summary>The quantization_config transformers writes for these settings (keys as BitsAndBytesConfig.to_dict orders them).</summary>
    public JsonObject ToJson() => new()
    {
        ["_load_in_4bit"] = true,
        ["_load_in_8bit"] = false,
        ["bnb_4bit_compute_dtype"] = ComputeDType,
        ["bnb_4bit_quant_storage"] = "uint8",
        ["bnb_4bit_quant_type"] = "nf4",
        ["bnb_4bit_use_double_quant"] = DoubleQuant,
        ["llm_int8_enable_fp32_cpu_offload"] = false,
        ["llm_int8_has_fp16_weight"] = false,
        ["llm_int8_skip_modules"] = SkipModules.Count == 0 ? null : new JsonArray(SkipModules.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray()),
        ["llm_int8_threshold"] = 6.0,
        ["load_in_4bit"] = true,
        ["load_in_8bit"] = false,
        ["quant_method"] = "bitsandbytes",
    };
}
