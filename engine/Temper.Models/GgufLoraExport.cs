// Writes a PEFT LoRA adapter as a GGUF LoRA, the file llama.cpp's `--lora`, llama-server's adapters and Ollama's
// ADAPTER line load over the base model's GGUF, as llama.cpp's convert_lora_to_gguf.py writes it: general.type
// "adapter", adapter.type "lora", the base's architecture, and for each adapted projection its base tensor's name plus
// ".lora_a" (PEFT's A [r, In]) and ".lora_b" (B [Out, r]), in f32, f16 or bf16; a mixture-of-experts layer's expert
// adapters stacked per projection into A [E, r, In] and B [E, Out, r] under ffn_{gate,up,down}_exps (zeros for an expert
// left alone), the router's under ffn_gate_inp. llama.cpp scales each product by
// adapter.lora.alpha / r, so alpha is written as PEFT's scale x r (lora_alpha for plain LoRA, lora_alpha x sqrt(r) for
// rsLoRA), which must come out the same for every module. llama's q_proj/k_proj B rows are permuted as the base's rows
// are (GgufTensors.PermuteRows); A is not. Projections: attention, dense MLP, routers, experts, Qwen2-MoE's shared
// expert and an untied lm_head ("output"). Refused in one line: DoRA, modules_to_save copies, the shared expert's gate,
// a tied lm_head, experts of one layer with different ranks, and scales no single alpha can express.
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
        var stacks = new SortedDictionary<string, SortedDictionary<int, (Tensor A, Tensor B)>>(StringComparer.Ordinal);
        foreach (var (module, (a, b)) in adapter.Modules.OrderBy(m => m.Key, StringComparer.Ordinal))
        {
            if (!shapes.TryGetValue(module + ".weight", out var shape))
                throw new TemperException($"{where}: module '{module}' is not a projection of the base model ({cfg.SourcePath}); is it this adapter's base?");
            if (shape != new Shape(b.Shape[0], a.Shape[1]))
                throw new TemperException($"{where}: module '{module}' adapts [{b.Shape[0]}, {a.Shape[1]}], the base's weight is {shape}; is it this adapter's base?");
            int rank = a.Shape[0];
            float moduleAlpha = adapter.Config.ScaleFor(module) * rank;
            alpha ??= moduleAlpha;
            if (Math.Abs(moduleAlpha - alpha.Value) > 1e-6f * alpha.Value)
                throw new TemperException($"{where}: module '{module}' needs alpha {moduleAlpha} where others need {alpha}; a GGUF LoRA has one alpha (its scale is alpha / r)");
            if (ExpertOf(module) is { } expert)
            {
                if (!stacks.TryGetValue(expert.Tensor, out var experts)) stacks[expert.Tensor] = experts = [];
                experts[expert.Index] = (a, b);
                continue;
            }
            string tensor = TensorName(module, cfg) ?? throw new TemperException($"{where}: module '{module}' has no GGUF LoRA form Temper writes (attention, MLP, router, experts, shared expert, untied lm_head)");
            int heads = arch != "llama" ? 0 : module.EndsWith(".q_proj", StringComparison.Ordinal) ? cfg.NumHeads : module.EndsWith(".k_proj", StringComparison.Ordinal) ? cfg.NumKvHeads : 0;
            var aValues = a.ToFloatArray();
            var bValues = b.ToFloatArray();
            if (heads > 0) bValues = GgufTensors.PermuteRows(bValues, b.Shape[0], b.Shape[1], heads);
            g.AddTensor(tensor + ".weight.lora_a", [a.Shape[0], a.Shape[1]], type, s => GgmlQuant.Write(s, aValues, type));
            g.AddTensor(tensor + ".weight.lora_b", [b.Shape[0], b.Shape[1]], type, s => GgmlQuant.Write(s, bValues, type));
        }
        // A layer's expert adapters as llama.cpp's mul_mat_id reads them: A [E, r, In], B [E, Out, r]; an expert the adapter
        // leaves alone gets zeros (no change), as it needs a slot in the stack.
        foreach (var (tensor, experts) in stacks)
        {
            var (a0, b0) = experts.Values.First();
            int r = a0.Shape[0], inDim = a0.Shape[1], outDim = b0.Shape[0], count = cfg.Moe!.Experts;
            if (experts.Values.Any(x => x.A.Shape[0] != r))
                throw new TemperException($"{where}: the experts of {tensor} have different ranks; llama.cpp stacks them into one tensor of one rank");
            g.AddTensor(tensor + ".weight.lora_a", [count, r, inDim], type, s =>
            {
                for (int e = 0; e < count; e++) GgmlQuant.Write(s, experts.TryGetValue(e, x => x.A) ?? new float[r * inDim], type);
            });
            g.AddTensor(tensor + ".weight.lora_b", [count, outDim, r], type, s =>
            {
                for (int e = 0; e < count; e++) GgmlQuant.Write(s, experts.TryGetValue(e, x => x.B) ?? new float[outDim * r], type);
            });
        }
        if (alpha == null) throw new TemperException($"{where}: the adapter adapts no module");
        g.Add("adapter.lora.alpha", alpha.Value);
        long bytes = g.Write(path);
        return new Summary(arch, adapter.Modules.Count, alpha.Value, bytes);
    }

    private static float[]? TryGetValue(this SortedDictionary<int, (Tensor A, Tensor B)> experts, int e, Func<(Tensor A, Tensor B), Tensor> pick) =>
        experts.TryGetValue(e, out var x) ? pick(x).ToFloatArray() : null;

    /// <summary>An expert projection's stacked GGUF tensor (blk.L.ffn_gate_exps, ...) and the expert's index, or null.</summary>
    private static (string Tensor, int Index)? ExpertOf(string module)
    {
        var m = ExpertModule().Match(module);
        if (!m.Success) return null;
        string kind = m.Groups[3].Value switch { "w1" or "gate_proj" => "gate", "w3" or "up_proj" => "up", _ => "down" };
        return ($"blk.{m.Groups[1].Value}.ffn_{kind}_exps", int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
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
            "block_sparse_moe.gate" or "mlp.gate" when cfg.Moe != null => "ffn_gate_inp",
            _ => null,
        } ?? "";
        return part.Length == 0 ? null : $"blk.{m.Groups[1].Value}.{part}";
    }

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)$")]
    private static partial Regex ExpertModule();

    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerModule();
}
