// libtemper 0.5.0's trainer fields and adapter kinds, called in-process through function pointers as C calls them, on
// the llama-tiny fixture: temper_trainer_options' ia3 (the loss falls; the saved folder is PEFT IA3 with PEFT's default
// targets, and LanguageModel.AttachAdapter of it gives the trainer's logits; an IA3 init_adapter goes on as IA3) and
// modules_to_save (the copy is saved and read back the same way); temper_adapter_apply / remove / merge of both kinds
// (the model is the base again after remove); a 0.4.0-sized struct taken without the new fields; refusals by field name.
using System.Runtime.InteropServices;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public sealed unsafe class Ia3AndModulesToSaveTests : NativeTrainingHarness
{
    private nint Trainer(TemperTrainerOptions o, string? initAdapter = null, string? modules = null)
    {
        Assert.True(Init(o, SftData, out var t, initAdapter, modules: modules) == 0, LastError());
        return t;
    }

    /// <summary>The .NET engine's logits for Prompt with the adapter folder attached by LanguageModel.AttachAdapter.</summary>
    private static float[] EngineLogits(string adapterDir, bool merge)
    {
        using var lm = LanguageModel.Load(ModelDir, new CpuBackend(1));
        lm.AttachAdapter(adapterDir, merge);
        using var t = lm.Logits(Prompt, 1);
        return t.ToFloatArray();
    }

    /// <summary>Trains o for four steps (the loss falls), checks the model's logits against the saved folder attached by the
    /// engine, frees the trainer (the base again), and returns the folder.</summary>
    private string TrainAndSave(TemperTrainerOptions o, string? modules = null, string? initAdapter = null)
    {
        var baseLogits = Logits();
        nint t = Trainer(o, initAdapter, modules);
        string dir;
        try
        {
            var losses = Enumerable.Range(0, 4).Select(_ => Step(t)).ToArray();
            Assert.True(Falling(losses), $"loss does not fall step by step: {string.Join(", ", losses)}");
            dir = Save(t);
            Differ(baseLogits, Logits(), "the model mid-training vs the base");
            Close(EngineLogits(dir, merge: false), Logits(), "LanguageModel.AttachAdapter of the saved folder vs the trainer's model");
        }
        finally
        {
            Free(t);
        }
        Close(baseLogits, Logits(), "the base after temper_trainer_free");
        return dir;
    }

    /// <summary>temper_adapter_apply gives the engine's unmerged logits, remove the base again, merge the engine's merged logits.</summary>
    private void ApplyRemoveMerge(string dir)
    {
        var baseLogits = Logits();
        nint a = LoadAdapter(dir);
        try
        {
            Assert.True(Apply(a) == 0, LastError());
            Close(EngineLogits(dir, merge: false), Logits(), "temper_adapter_apply vs LanguageModel.AttachAdapter");
            Assert.True(Remove() == 0, LastError());
            Close(baseLogits, Logits(), "the base after temper_adapter_remove");
            Assert.True(Apply(a) == 0, LastError());
            Assert.True(Merge(a) == 0, LastError());   // detaches the applied one first
            Close(EngineLogits(dir, merge: true), Logits(), "temper_adapter_merge vs LanguageModel.AttachAdapter(merge: true)");
        }
        finally
        {
            FreeAdapter(a);
        }
    }

    [Fact]
    public void Ia3_trains_a_peft_ia3_adapter_the_engine_reads_back_and_applies_removes_and_merges()
    {
        if (!Available) return;
        var o = Quick(lr: 5e-2f);
        o.Ia3 = 1;
        o.LoraTargets = null;
        string dir = TrainAndSave(o);
        var config = Config(dir);
        Assert.Equal("IA3", config["peft_type"]!.GetValue<string>());
        Assert.Equal(["down_proj", "k_proj", "v_proj"], config["target_modules"]!.AsArray().Select(x => x!.GetValue<string>()).Order().ToArray());
        Assert.Equal(["down_proj"], config["feedforward_modules"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray());
        Assert.All(TensorNames(dir), n => Assert.EndsWith(".ia3_l", n));

        // An IA3 init_adapter goes on as IA3 without ia3 set, from the folder's vectors.
        string next = TrainAndSave(Quick(lr: 5e-2f), initAdapter: dir);
        Assert.Equal("IA3", Config(next)["peft_type"]!.GetValue<string>());

        ApplyRemoveMerge(dir);
    }

    [Fact]
    public void Modules_to_save_trains_a_copy_of_the_lm_head_saved_and_applied_as_peft_does()
    {
        if (!Available) return;
        var o = Quick(lr: 2e-3f);   // the full [V,C] head copy learns at this rate too
        string dir = TrainAndSave(o, modules: "lm_head");
        var config = Config(dir);
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal(["lm_head"], config["modules_to_save"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray());
        Assert.Contains("base_model.model.lm_head.weight", TensorNames(dir));

        // init_adapter goes on with its copy (modules_to_save NULL or naming the same module); another set is refused.
        Assert.Equal(["lm_head"], Config(TrainAndSave(Quick(lr: 2e-3f), initAdapter: dir))["modules_to_save"]!.AsArray().Select(x => x!.GetValue<string>()).ToArray());
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(Quick(), SftData, out _, dir, modules: "embed_tokens"));
        Assert.Equal($"temper_trainer_init: modules_to_save is \"embed_tokens\" but init_adapter {dir} saves [lm_head], and init_adapter continues it as it is; set modules_to_save = NULL", LastError());

        ApplyRemoveMerge(dir);
    }

    public static TheoryData<string, string> Refusals => new()
    {
        { "use_dora", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; use_dora cannot be combined with it" },
        { "use_rslora", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; use_rslora cannot be combined with it" },
        { "loraplus_lr_ratio", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; loraplus_lr_ratio cannot be combined with it" },
        { "lora_targets", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; lora_targets cannot be combined with it" },
        { "modules_to_save", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; modules_to_save cannot be combined with it" },
        { "prompt_tuning_tokens", "temper_trainer_init: (IA)^3 trains one scaling vector per targeted projection; prompt_tuning_tokens cannot be combined with it" },
        { "lora init_adapter", $"temper_trainer_init: ia3 is set but init_adapter {Path.Combine(ModelDir, "adapter")} is a LORA adapter, and init_adapter continues it as it is; set ia3 = 0" },
        { "modules_to_save q_proj", "temper_trainer_init: modules_to_save entry 'q_proj' is not supported (embed_tokens and lm_head are)" },
        { "modules_to_save empty", "temper_trainer_init: modules_to_save names no module; set it to NULL for none" },
        { "modules_to_save prefix", "temper_trainer_init: modules_to_save trains copies of the embedding / LM head beside a LoRA; it cannot be combined with prefix tuning" },
        { "lm_head in lora_targets", "temper_trainer_init: modules_to_save names lm_head, which lora_targets names too; one module cannot be both" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Bad_ia3_and_modules_to_save_settings_are_refused_naming_the_field(string setting, string message)
    {
        if (!Available) return;
        var o = Quick();
        o.Ia3 = setting.StartsWith("modules_to_save ", StringComparison.Ordinal) || setting == "lm_head in lora_targets" ? 0 : 1;
        string? modules = null, targets = null, init = null;
        switch (setting)
        {
            case "use_dora": o.UseDora = 1; break;
            case "use_rslora": o.UseRslora = 1; break;
            case "loraplus_lr_ratio": o.LoraplusLrRatio = 4; break;
            case "lora_targets": targets = "q_proj"; break;
            case "modules_to_save": modules = "lm_head"; break;
            case "prompt_tuning_tokens": o.PromptTuningTokens = 2; break;
            case "lora init_adapter": init = Path.Combine(ModelDir, "adapter"); break;
            case "modules_to_save q_proj": modules = "q_proj"; break;
            case "modules_to_save empty": modules = " , "; break;
            case "modules_to_save prefix": modules = "embed_tokens"; o.PrefixTuningTokens = 2; break;
            case "lm_head in lora_targets": modules = "lm_head"; targets = "q_proj,lm_head"; break;
        }
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out var t, init, targets, modules: modules));
        Assert.Equal(0, t);
        Assert.Equal(message, LastError());
    }

    [Fact]
    public void A_040_sized_trainer_options_struct_is_taken_without_the_new_fields()
    {
        if (!Available) return;
        // A host built against 0.4.0's temper.h: struct_size 112; ia3 lies in its tail padding and is not read.
        var o = Quick();
        o.StructSize = 112;
        o.Ia3 = 1;
        nint t = Trainer(o);
        try
        {
            Step(t);
            Assert.Equal("LORA", Config(Save(t))["peft_type"]!.GetValue<string>());
        }
        finally
        {
            Free(t);
        }
        Assert.Equal(120, sizeof(TemperTrainerOptions));
        Assert.Equal(108, (int)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.Ia3)));
        Assert.Equal(112, (int)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.ModulesToSave)));
    }
}
