// The blittable structs of the C ABI, field for field as temper.h declares them (the header test
// compares names, order and types). int32_t flags are 0/1 ints, never C bool, so every layout is plain.
using System.Runtime.InteropServices;

namespace Temper.Native;

/// <summary>temper_model_options.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct TemperModelOptions
{
    public uint StructSize; // sizeof(temper_model_options); OptionStructs.Read checks it
    public int Device;      // TEMPER_DEVICE_CPU
    public int Threads;     // 0 = every core
}

/// <summary>temper_generate_options: GenerationOptions and SamplingOptions in one struct that only grows at its end.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct TemperGenerateOptions
{
    public uint StructSize;
    public int MaxNewTokens;
    public int IgnoreEos;
    public int Greedy;
    public float Temperature;
    public int TopK;
    public float TopP;
    public float MinP;
    public float RepetitionPenalty;
    public float FrequencyPenalty;
    public float PresencePenalty;
    public ulong Seed;
    public byte** Stop;         // StopCount NUL-terminated UTF-8 strings; NULL = none
    public int StopCount;
    public int JsonObject;      // 0.3.0: non-zero = the output is one JSON object
    public byte* JsonSchema;    // 0.3.0: NUL-terminated UTF-8 JSON Schema the output matches; NULL = none
    public int MinNewTokens;    // 0.5.0: neither EOS nor a stop string ends the generation before this many new tokens
}

/// <summary>temper_generate_result.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct TemperGenerateResult
{
    public int Generated;
    public int Finish;      // temper_finish_reason
}

/// <summary>temper_trainer_options.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct TemperTrainerOptions
{
    public uint StructSize;
    public int Method;              // temper_train_method
    public byte* InitAdapter;       // PEFT folder to continue training; NULL = fresh LoRA
    public int LoraRank;
    public float LoraAlpha;
    public int UseRslora;
    public byte* LoraTargets;       // comma-separated module names; NULL = every linear of the blocks
    public float LearningRate;
    public int Scheduler;           // temper_lr_schedule
    public int WarmupSteps;
    public int TotalSteps;          // length of the schedule; 0 = constant after warm-up
    public float WeightDecay;
    public float MaxGradNorm;       // 0 = no clipping
    public int BatchSize;
    public int GradAccum;
    public int MaxLength;
    public int Seed;
    public float DpoBeta;
    public int UseDora;             // 0.4.0: non-zero = DoRA (PEFT use_dora): a magnitude per module beside A and B
    public int PromptTuningTokens;  // 0.4.0: > 0 = train P virtual token embeddings (PEFT PROMPT_TUNING) instead of LoRA
    public int PrefixTuningTokens;  // 0.4.0: > 0 = train P key/value rows per layer (PEFT PREFIX_TUNING) instead of LoRA
    public byte* PromptTuningInitText; // 0.4.0: prompt tuning's TEXT init (the text's token embeddings); NULL = RANDOM
    public float LoraplusLrRatio;   // 0.4.0: LoRA+: lora_B and DoRA's magnitudes learn at learning_rate times this; 1 = off
    public int Ia3;                 // 0.5.0: non-zero = train a PEFT (IA)^3 adapter (PEFT's default targets) instead of LoRA
    public byte* ModulesToSave;     // 0.5.0: comma-separated embed_tokens and/or lm_head trained in full beside the LoRA; NULL = none
}

/// <summary>temper_step_metrics.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct TemperStepMetrics
{
    public int Step;
    public float Loss;
    public float GradNorm;
    public float LearningRate;
    public float TokensPerSecond;
    public int Tokens;
    public int Skipped;
    public float RewardMargin;
    public float RewardAccuracy;
}

/// <summary>Enumerations of temper.h, values as the header defines them.</summary>
public enum TemperDevice { Cpu = 0, Cuda = 1 }

public enum TemperFinishReason { Length = 0, Eos = 1, Stopped = 2, StopString = 3 }

public enum TemperTrainMethod { Sft = 0, Dpo = 1 }

public enum TemperLrSchedule { Constant = 0, Linear = 1, Cosine = 2 }
