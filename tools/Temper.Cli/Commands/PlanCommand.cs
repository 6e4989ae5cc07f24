// `temper plan --model DIR [--qlora] [--full] [--lora-r N] [--lora-targets ...] [--modules-to-save LIST] [--use-dora] [--batch-size B]
// [--max-length T] [--gradient-checkpointing] [--prompt-tuning P | --prefix-tuning P | --ia3 [--ia3-targets ...] [--ia3-feedforward ...]] [--kernels ptx]`:
// the memory a training run needs (MemoryPlan; --kernels ptx: on the CUDA C++ kernels, with their bf16 copy of the largest activation;
// ptx and ilgpu: with the LM head's scratch that the ILGPU arena keeps), from
// config.json and the weights' stored dtype (or --dtype), before anything is loaded. A trainer prints
// the same prediction beside its measured peak when it finishes.
using System.CommandLine;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Cli.Commands;

internal static class PlanCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var qlora = CliOptions.QLora();
        var full = new Option<bool>("--full") { Description = "Plan full fine-tuning instead of a LoRA adapter" };
        var r = new Option<int>("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 16 };
        var targets = new Option<string>("--lora-targets") { Description = "Comma-separated module names", DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" };
        var saved = new Option<string?>("--modules-to-save") { Description = "embed_tokens and/or lm_head trained in full beside the LoRA (comma-separated; PEFT modules_to_save)" };
        var dora = new Option<bool>("--use-dora") { Description = "Plan a DoRA adapter (a magnitude per output row; keeps each projection's [N,Out] product)" };
        var batch = new Option<int>("--batch-size") { Description = "Examples per micro-batch", DefaultValueFactory = _ => 8 };
        var length = new Option<int>("--max-length", "--max-len") { Description = "Tokens per example (the padded length)", DefaultValueFactory = _ => 1024 };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Keep only each layer's input; rebuild its activations in backward" };
        var prompt = new Option<int>("--prompt-tuning") { Description = "Plan prompt tuning with this many virtual tokens instead of a LoRA adapter", DefaultValueFactory = _ => 0 };
        var prefix = new Option<int>("--prefix-tuning") { Description = "Plan prefix tuning with this many virtual tokens instead of a LoRA adapter", DefaultValueFactory = _ => 0 };
        var ia3 = new Option<bool>("--ia3") { Description = "Plan an (IA)^3 adapter (one vector per targeted projection) instead of a LoRA adapter" };
        var ia3Targets = new Option<string>("--ia3-targets") { Description = "IA3 target modules (comma-separated)", DefaultValueFactory = _ => string.Join(",", Ia3Config.DefaultTargets) };
        var ia3Feedforward = new Option<string>("--ia3-feedforward") { Description = "IA3 feedforward modules (input scaled), a subset of --ia3-targets", DefaultValueFactory = _ => string.Join(",", Ia3Config.DefaultFeedforward) };
        var cmd = new Command("plan", "Print the memory a training run needs: weights, adapters, optimizer state, activations") { model, qlora, full, r, targets, saved, dora, batch, length, checkpointing, prompt, prefix, ia3, ia3Targets, ia3Feedforward };
        cmd.SetGuardedAction(p =>
        {
            string dir = p.GetValue(model)!;
            var cfg = ModelConfig.Load(dir);
            bool isFull = p.GetValue(full), isQLora = p.GetValue(qlora) || cfg.Bnb4Bit != null;
            if (isFull && cfg.Bnb4Bit != null) throw new TemperException($"{dir} is a bitsandbytes 4-bit checkpoint, its projections frozen in NF4; it cannot be fully fine-tuned");
            if (isFull && p.GetValue(dora)) throw new TemperException("--use-dora trains a DoRA adapter over a frozen base; it cannot be combined with --full (full fine-tuning)");
            if (isFull && isQLora) throw new TemperException("--qlora freezes the base in 4 bits and trains LoRA adapters over it; it cannot be combined with --full (full fine-tuning)");
            if (p.GetValue(batch) < 1 || p.GetValue(length) < 1 || p.GetValue(r) < 1) throw new TemperException("--batch-size, --max-length and --lora-r must be >= 1");
            if (p.GetValue(prompt) < 0 || p.GetValue(prefix) < 0) throw new TemperException("--prompt-tuning and --prefix-tuning must be >= 1 virtual tokens");
            if (p.GetValue(prompt) > 0 && p.GetValue(prefix) > 0) throw new TemperException("--prompt-tuning and --prefix-tuning cannot be combined");
            bool isPrefix = p.GetValue(prefix) > 0;
            int virtualTokens = Math.Max(p.GetValue(prompt), p.GetValue(prefix));
            if (virtualTokens > 0 && (isFull || p.GetValue(dora))) throw new TemperException("prompt and prefix tuning train only their virtual tokens; --full and --use-dora cannot be combined with them");
            var copies = (p.GetValue(saved) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(m => ModulesToSave.ModuleOf(m) ?? throw new TemperException($"--modules-to-save: '{m}' is not supported (embed_tokens and lm_head are)")).Distinct().Count();
            if (copies > 0 && (isFull || virtualTokens > 0)) throw new TemperException("--modules-to-save trains copies of the embedding / LM head beside a LoRA; it cannot be combined with --full, --prompt-tuning or --prefix-tuning");
            static string[] List(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var ia3Config = !p.GetValue(ia3) ? null : new Ia3Config(List(p.GetValue(ia3Targets)!), null, List(p.GetValue(ia3Feedforward)!), null).Validated("--ia3-feedforward");
            if (ia3Config != null && (isFull || virtualTokens > 0 || copies > 0 || p.GetValue(dora)))
                throw new TemperException("--ia3 trains one scaling vector per targeted projection; it cannot be combined with --full, --use-dora, --modules-to-save, --prompt-tuning or --prefix-tuning");
            var (matrix, embedding) = HeldBytes(dir, CliOptions.WeightDType(p), isFull);
            var lora = isFull || virtualTokens > 0 || ia3Config != null ? null : new LoraConfig(p.GetValue(r), 2 * p.GetValue(r), false,
                p.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), null, 0) { UseDora = p.GetValue(dora) };
            var plan = MemoryPlan.For(cfg, new MemoryPlanOptions(p.GetValue(batch), p.GetValue(length), isQLora, isFull, lora, p.GetValue(checkpointing), matrix, embedding, virtualTokens, isPrefix)
                {
                    ModulesToSave = copies, Ia3 = ia3Config, Bf16ProductCopies = p.GetValue(CliOptions.Kernels) == "ptx",
                    Bf16MlpActivations = p.GetValue(CliOptions.Kernels) is "ptx" or "ilgpu" && matrix == 2 && !isQLora, // DecoderBackprop.KeepsBf16Mlp on a device
                    Bf16AttentionInputs = p.GetValue(CliOptions.Kernels) is "ptx" or "ilgpu" && matrix == 2 && !isQLora, // ... and KeepsBf16Attention
                    LmHeadScratchBytes = LmHeadScratch(p.GetValue(CliOptions.Kernels)),
                });
            Console.WriteLine($"model: {dir} ({cfg.NumLayers} layers, hidden {cfg.HiddenSize}, vocab {cfg.VocabSize}); {(isFull ? "full fine-tuning" : ia3Config != null ? $"{(isQLora ? "NF4 base, " : "")}(IA)^3 on {string.Join(",", ia3Config.TargetList!)}" : virtualTokens > 0 ? $"{(isQLora ? "NF4 base, " : "")}{(isPrefix ? "prefix" : "prompt")} tuning, {virtualTokens} virtual tokens" : isQLora ? $"QLoRA r{p.GetValue(r)}" : $"LoRA r{p.GetValue(r)}")}{(p.GetValue(dora) ? " DoRA" : "")}{(copies > 0 ? $" + {copies} modules_to_save {(copies == 1 ? "copy" : "copies")}" : "")}, batch {p.GetValue(batch)} x {p.GetValue(length)}{(p.GetValue(checkpointing) ? ", gradient checkpointing" : "")}");
            Console.WriteLine($"  weights      {MemoryPlan.Bytes(plan.Weights),12}");
            Console.WriteLine($"  adapters     {MemoryPlan.Bytes(plan.Adapters),12}   (trained parameters and their gradients)");
            Console.WriteLine($"  optimizer    {MemoryPlan.Bytes(plan.Optimizer),12}   (AdamW moments)");
            Console.WriteLine($"  activations  {MemoryPlan.Bytes(plan.Activations),12}");
            Console.WriteLine($"  workspace    {MemoryPlan.Bytes(plan.Workspace),12}");
            Console.WriteLine($"  total        {MemoryPlan.Bytes(plan.Total),12}");
            return 0;
        });
        return cmd;
    }

    // The LM head's scratch that stays held on the kernels --kernels names: ptx / ilgpu the ILGPU backend's arena (ptx with the
    // hidden states in bf16 for the CUDA C++ products); none on the CPU backend (its scratch is freed after the op).
    private static Func<int, int, int, bool, long>? LmHeadScratch(string? kernels) => kernels switch
    {
        "ptx" => (n, c, v, onePass) => IlgpuBackend.ArenaLmHeadBytes(n, c, v, onePass, bf16Hidden: true),
        "ilgpu" => (n, c, v, onePass) => IlgpuBackend.ArenaLmHeadBytes(n, c, v, onePass, bf16Hidden: false),
        _ => null,
    };

    // Bytes per element of the layers' matrices and of the embedding as a run would hold them: --dtype,
    // else bf16 when stored bf16, else f32 (f16/f64 are widened at load; full fine-tuning trains f32).
    private static (int Matrix, int Embedding) HeldBytes(string dir, DType? dtype, bool full)
    {
        if (full) return (4, 4);
        if (dtype is { } d) return (d == DType.BF16 ? 2 : 4, d == DType.BF16 ? 2 : 4);
        using var file = SafetensorsModel.Open(dir);
        int Of(string name) => file.Contains(name) && file.DTypeOf(name) == DType.BF16 ? 2 : 4;
        return (Of("model.layers.0.self_attn.q_proj.weight"), Of("model.embed_tokens.weight"));
    }
}
