// Every knob of an SFT / continued-pretraining run, with TRL-like defaults. The CLI fills it from
// flags; the library caller builds it directly. Recorded whole in manifest.json.
using System.Text.Json.Nodes;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Lora;
using Temper.Training.Optim;

namespace Temper.Training.Trainers;

public sealed record SftOptions
{
    public required string ModelDir { get; init; }
    public required string DataPath { get; init; }
    public required string OutDir { get; init; }
    public string? InitAdapter { get; init; }
    public bool Full { get; init; }
    /// <summary>QLoRA: the base's layer projections NF4-quantised (frozen), LoRA adapters trained over them.</summary>
    public bool QLora { get; init; }
    /// <summary>Random (seeded) initial weights from config.json instead of the folder's safetensors.</summary>
    public bool FromScratch { get; init; }
    public int LoraRank { get; init; } = 16;
    public double LoraAlpha { get; init; } = 32;
    public double LoraDropout { get; init; }
    public bool UseRsLora { get; init; }
    /// <summary>DoRA (PEFT use_dora): a trained magnitude per output row over the LoRA-adapted weight's direction.</summary>
    public bool UseDora { get; init; }
    /// <summary>NEFTune (transformers' neftune_noise_alpha): uniform noise on the embeddings while training; 0 = off.</summary>
    public double NeftuneNoiseAlpha { get; init; }
    /// <summary>Prompt tuning (PEFT PROMPT_TUNING): this many trained virtual tokens before every sequence instead of a LoRA; 0 = off.</summary>
    public int PromptTuningTokens { get; init; }
    /// <summary>How a fresh prompt starts: RANDOM, TEXT (PromptTuningInitText's token embeddings) or RANDOM_DISCRETE.</summary>
    public string PromptTuningInit { get; init; } = PromptTuningConfig.Random;
    public string? PromptTuningInitText { get; init; }
    /// <summary>Prefix tuning (PEFT PREFIX_TUNING): this many trained key/value rows per layer before every sequence instead of a LoRA; 0 = off.</summary>
    public int PrefixTuningTokens { get; init; }
    /// <summary>(IA)^3 (PEFT IA3): a trained scaling vector per targeted projection (ones at the start) instead of a LoRA.</summary>
    public bool Ia3 { get; init; }
    /// <summary>IA3's target_modules and feedforward_modules (a subset: those scale their input); PEFT's llama/qwen2/mistral defaults.</summary>
    public IReadOnlyList<string> Ia3Targets { get; init; } = Ia3Config.DefaultTargets;
    public IReadOnlyList<string> Ia3Feedforward { get; init; } = Ia3Config.DefaultFeedforward;
    /// <summary>How a fresh LoRA starts (PEFT's init_lora_weights): default, gaussian or pissa (LoraInitMethods).</summary>
    public string LoraInit { get; init; } = LoraInitMethods.Default;
    /// <summary>PEFT modules_to_save: embed_tokens and/or lm_head trained in full (f32 copies) beside the LoRA; empty = none.</summary>
    public IReadOnlyList<string> ModulesToSave { get; init; } = [];
    public IReadOnlyList<string> LoraTargets { get; init; } = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    public float LearningRate { get; init; } = 2e-4f;
    public ScheduleKind Scheduler { get; init; } = ScheduleKind.Linear;
    public int WarmupSteps { get; init; }
    public float WeightDecay { get; init; }
    /// <summary>LoRA+: lora_B (and DoRA's magnitudes) learn at LearningRate times this (PEFT's loraplus_lr_ratio); 1 = off.</summary>
    public float LoraPlusRatio { get; init; } = 1f;
    public float MaxGradNorm { get; init; } = 1f;
    public int BatchSize { get; init; } = 8;
    public int GradAccum { get; init; } = 1;
    public int? MaxSteps { get; init; }
    public int Epochs { get; init; } = 1;
    public int MaxLength { get; init; } = 1024;
    /// <summary>Pack examples into rows of MaxLength tokens (TRL packing=True): each still trains as if alone.</summary>
    public bool Packing { get; init; }
    /// <summary>"messages" data: learn only the assistant turns (default); false: every token (TRL's assistant_only_loss=False).</summary>
    public bool AssistantOnlyLoss { get; init; } = true;
    /// <summary>"prompt"/"completion" data: learn only the completion (default, TRL's completion_only_loss); false: the prompt too.</summary>
    public bool CompletionOnlyLoss { get; init; } = true;
    public Truncation Truncation { get; init; } = Truncation.Right;
    public bool SkipBadLines { get; init; }
    public int Seed { get; init; } = 42;
    public string? EvalData { get; init; }
    public int EvalEvery { get; init; }
    public int SaveEvery { get; init; }
    public bool Resume { get; init; }
    public int Threads { get; init; }
    /// <summary>Recompute each layer's activations in backward instead of keeping them (less memory, one more forward).</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>Consecutive NaN/Inf steps tolerated (each skipped with a warning) before the run aborts.</summary>
    public int MaxBadSteps { get; init; } = 5;

    public JsonObject ToJson() => new()
    {
        ["init_adapter"] = InitAdapter,
        ["full"] = Full,
        ["qlora"] = QLora,
        ["from_scratch"] = FromScratch,
        ["lora_r"] = LoraRank,
        ["lora_alpha"] = LoraAlpha,
        ["lora_dropout"] = LoraDropout,
        ["use_rslora"] = UseRsLora,
        ["use_dora"] = UseDora,
        ["lora_init"] = LoraInit,
        ["neftune_noise_alpha"] = NeftuneNoiseAlpha,
        ["prompt_tuning_tokens"] = PromptTuningTokens,
        ["prompt_tuning_init"] = PromptTuningInit,
        ["prompt_tuning_init_text"] = PromptTuningInitText,
        ["prefix_tuning_tokens"] = PrefixTuningTokens,
        ["ia3"] = Ia3,
        ["ia3_targets"] = new JsonArray(Ia3Targets.Select(t => (JsonNode)t).ToArray()),
        ["ia3_feedforward"] = new JsonArray(Ia3Feedforward.Select(t => (JsonNode)t).ToArray()),
        ["lora_targets"] = new JsonArray(LoraTargets.Select(t => (JsonNode)t).ToArray()),
        ["modules_to_save"] = new JsonArray(ModulesToSave.Select(t => (JsonNode)t).ToArray()),
        ["lr"] = LearningRate,
        ["lr_scheduler"] = Scheduler.ToString().ToLowerInvariant(),
        ["warmup_steps"] = WarmupSteps,
        ["weight_decay"] = WeightDecay,
        ["loraplus_lr_ratio"] = LoraPlusRatio,
        ["max_grad_norm"] = MaxGradNorm,
        ["batch_size"] = BatchSize,
        ["grad_accum"] = GradAccum,
        ["max_steps"] = MaxSteps,
        ["epochs"] = Epochs,
        ["max_len"] = MaxLength,
        ["packing"] = Packing,
        ["assistant_only_loss"] = AssistantOnlyLoss,
        ["completion_only_loss"] = CompletionOnlyLoss,
        ["truncation"] = Truncation.ToString().ToLowerInvariant(),
        ["seed"] = Seed,
        ["eval_every"] = EvalEvery,
        ["save_every"] = SaveEvery,
        ["threads"] = Threads,
        ["gradient_checkpointing"] = GradientCheckpointing,
    };
}
