// Writes a PEFT LoRA adapter as a GGUF LoRA, the file llama.cpp's `--lora`, llama-server's adapters and Ollama's
// ADAPTER line load over the base model's GGUF, as llama.cpp's convert_lora_to_gguf.py writes it: general.type
// "adapter", adapter.type "lora", the base's architecture, and for each adapted projection its base tensor's name plus
// ".lora_a" (PEFT's A [r, In]) and ".lora_b" (B [Out, r]), in f32, f16 or bf16. llama.cpp scales each product by
// adapter.lora.alpha / r, so alpha is written as PEFT's scale x r (lora_alpha for plain LoRA, lora_alpha x sqrt(r) for
// rsLoRA), which must come out the same for every module. llama's q_proj/k_proj B rows are permuted as the base's rows
// are (GgufTensors.PermuteRows); A is not. Projections: attention, dense MLP, Qwen2-MoE's shared expert and an untied
// lm_head ("output"). Refused in one line: DoRA, modules_to_save copies, expert and router adapters (llama.cpp's
// converter stacks those per layer; Temper does not yet), a tied lm_head, and scales no single alpha can express.
using System.Text.RegularExpressions;
using Temper.Core;
using Temper.Core.Gguf;

namespace Temper.Models;

public static partial class GgufLoraExport
{
    public static readonly IReadOnlyList<string> OutTypes = ["f32", "f16", "bf16"];

    public sealed record Summary(string Architecture, int Modules, float Alpha, long Bytes);

    public static Summary Save(string path, ModelConfig cfg, LoraAdapter adapter, string outType = "f32", string? name = null)
    {
        string where = Path.Combine(adapter.Directory, "adapter_config.json");
        if (adapter.Config.UseDora) throw new TemperException($"{where}: a DoRA adapter (use_dora) has no GGUF LoRA form: llama.cpp applies plain LoRA only; merge it (temper gguf with --adapter)");
        if (adapter.SavedModules.Count > 0) throw new TemperException($"{where}: modules_to_save copies have no GGUF LoRA form; merge the adapter (temper gguf with --adapter)");
        var type = outType switch
        {
            "f32" => GgmlType.F32,
            "f16" => GgmlType.F16,
            "bf16" => GgmlType.BF16,
            _ => throw new TemperException($"--outtype for an adapter must be f32, f16 or bf16, not '{outType}'"),
        };
        string arch = GgufExport.ArchitectureOf(cfg, Path.Combine(adapter.Directory, "adapter_config.json"));
        var g = new GgufWriter();
        g.Add("general.architecture", arch);
        g.Add("general.type", "adapter");
        g.Add("general.name", name ?? new DirectoryInfo(adapter.Directory).Name);
        g.Add("adapter.type", "lora");
        float? alpha = null;
        var shapes = ModelWeights.ProjectionShapes(cfg);
        shapes["lm_head.weight"] = new Shape(cfg.VocabSize, cfg.HiddenSize);
        foreach (var (module, (a, b)) in adapter.Modules.OrderBy(m => m.Key, StringComparer.Ordinal))
        {
            if (!shapes.TryGetValue(module + ".weight", out var shape))
                throw new TemperException($"{where}: module '{module}' is not a projection of the base model ({cfg.SourcePath}); is it this adapter's base?");
            if (shape != new Shape(b.Shape[0], a.Shape[1]))
                throw new TemperException($"{where}: module '{module}' adapts [{b.Shape[0]}, {a.Shape[1]}], the base's weight is {shape}; is it this adapter's base?");
            string tensor = TensorName(module, cfg) ?? throw new TemperException($"{where}: module '{module}' has no GGUF LoRA form Temper writes (attention, MLP, shared expert, untied lm_head)");
            int rank = a.Shape[0];
            float moduleAlpha = adapter.Config.ScaleFor(module) * rank;
            alpha ??= moduleAlpha;
            if (Math.Abs(moduleAlpha - alpha.Value) > 1e-6f * alpha.Value)
                throw new TemperException($"{where}: module '{module}' needs alpha {moduleAlpha} where others need {alpha}; a GGUF LoRA has one alpha (its scale is alpha / r)");
            int heads = arch != "llama" ? 0 : module.EndsWith(".q_proj", StringComparison.Ordinal) ? cfg.NumHeads : module.EndsWith(".k_proj", StringComparison.Ordinal) ? cfg.NumKvHeads : 0;
            var aValues = a.ToFloatArray();
            var bValues = b.ToFloatArray();
            if (heads > 0) bValues = GgufTensors.PermuteRows(bValues, b.Shape[0], b.Shape[1], heads);
            g.AddTensor(tensor + ".weight.lora_a", [a.Shape[0], a.Shape[1]], type, s => GgmlQuant.Write(s, aValues, type));
            g.AddTensor(tensor + ".weight.lora_b", [b.Shape[0], b.Shape[1]], type, s => GgmlQuant.Write(s, bValues, type));
        }
        if (alpha == null) throw new TemperException($"{where}: the adapter adapts no module");
        g.Add("adapter.lora.alpha", alpha.Value);
        long bytes = g.Write(path);
        return new Summary(arch, adapter.Modules.Count, alpha.Value, bytes);
    }

    /// <summary>The GGUF name of the base tensor a PEFT module adapts (model.layers.3.self_attn.q_proj -> blk.3.attn_q), or null.</summary>
    public static string? TensorName(string module, ModelConfig cfg)
    {
        if (module == "lm_head") return cfg.TieWordEmbeddings ? null : "output";
        var m = LayerModule().Match(module);
        if (!m.Success) return null;
        string part = m.Groups[2].Value switch
        {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            "mlp.shared_expert.gate_proj" => "ffn_gate_shexp",
            "mlp.shared_expert.up_proj" => "ffn_up_shexp",
            "mlp.shared_expert.down_proj" => "ffn_down_shexp",
            _ => null,
        } ?? "";
        return part.Length == 0 ? null : $"blk.{m.Groups[1].Value}.{part}";
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerModule();
}
