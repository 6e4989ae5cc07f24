// temper_trainer_*: an SFT or DPO trainer of a LoRA (with modules_to_save copies since 0.5.0), DoRA, (IA)^3 (since
// 0.5.0), prompt-tuning or prefix-tuning adapter on a loaded model, stepped by the host. Every trainer call takes its model's in-use flag, so a
// generate or logits call during a step (from another thread or from the metrics callback) gets
// TEMPER_E_BUSY, and so does a second trainer call meanwhile.
using System.Runtime.InteropServices;

namespace Temper.Native.Exports;

public static unsafe class TrainerExports
{
    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_options_default")]
    public static TemperTrainerOptions TrainerOptionsDefault() => Defaults;

    internal static TemperTrainerOptions Defaults => new()
    {
        StructSize = (uint)sizeof(TemperTrainerOptions),
        Method = (int)TemperTrainMethod.Sft,
        InitAdapter = null,
        LoraRank = 16,
        LoraAlpha = 32,
        UseRslora = 0,
        LoraTargets = null,
        LearningRate = 2e-4f,
        Scheduler = (int)TemperLrSchedule.Linear,
        WarmupSteps = 0,
        TotalSteps = 0,
        WeightDecay = 0,
        MaxGradNorm = 1,
        BatchSize = 8,
        GradAccum = 1,
        MaxLength = 1024,
        Seed = 42,
        DpoBeta = 0.1f,
        UseDora = 0,
        PromptTuningTokens = 0,
        PrefixTuningTokens = 0,
        PromptTuningInitText = null,
        LoraplusLrRatio = 1,
        Ia3 = 0,
        ModulesToSave = null,
    };

    /// <summary>0.3.0's temper_trainer_options: its struct_size and the bytes of its fields (up to use_dora).</summary>
    private static readonly (uint, int) V030 = (88, (int)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.UseDora)));

    /// <summary>0.4.0's temper_trainer_options: its struct_size (112 on LP64) and the bytes of its fields (up to ia3).</summary>
    private static readonly (uint, int) V040 = ((uint)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.ModulesToSave)),
        (int)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.Ia3)));

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_init")]
    public static int TrainerInit(nint model, TemperTrainerOptions* options, byte* dataPath, nint* trainer)
    {
        LastError.Clear();
        try
        {
            if (trainer == null) throw Status.Arg("temper_trainer_init: out (temper_trainer**) is NULL");
            *trainer = 0;
            var m = Handles.Get<NativeModel>(model, "model");
            var o = OptionStructs.Read(options, Defaults, "temper_trainer_init", "temper_trainer_options", V030, V040);
            string? path = Utf8.ReadOptional(dataPath, "temper_trainer_init: data_path");
            string? targets = Utf8.ReadOptional(o.LoraTargets, "temper_trainer_init: options->lora_targets");
            string? initAdapter = Utf8.ReadOptional(o.InitAdapter, "temper_trainer_init: options->init_adapter");
            string? initText = Utf8.ReadOptional(o.PromptTuningInitText, "temper_trainer_init: options->prompt_tuning_init_text");
            string? modulesToSave = Utf8.ReadOptional(o.ModulesToSave, "temper_trainer_init: options->modules_to_save");
            using var lease = m.Enter("temper_trainer_init");
            if (m.Trainer != null) throw new NativeError(TemperStatus.Busy, "temper_trainer_init: the model already has a trainer; free it first");
            if (m.HasAdapter) throw new NativeError(TemperStatus.Busy, "temper_trainer_init: an adapter is applied to the model; remove it (temper_adapter_remove) or merge it first");
            var t = NativeTrainer.Create(m, o, path, targets, initAdapter, initText, modulesToSave);
            m.Trainer = t;
            *trainer = Handles.Create(t);
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_free")]
    public static int TrainerFree(nint trainer)
    {
        LastError.Clear();
        try
        {
            if (trainer == 0) return 0;
            var t = Handles.Get<NativeTrainer>(trainer, "trainer");
            using var lease = t.Model.Enter("temper_trainer_free");
            if (!Handles.Free(trainer)) throw new NativeError(TemperStatus.InvalidHandle, "temper_trainer_free: the trainer was already freed");
            t.Model.Trainer = null;
            t.Dispose();
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_push")]
    public static int TrainerPush(nint trainer, byte* jsonLine)
    {
        LastError.Clear();
        try
        {
            var t = Handles.Get<NativeTrainer>(trainer, "trainer");
            string line = Utf8.Read(jsonLine, "temper_trainer_push: json_line");
            using var lease = t.Model.Enter("temper_trainer_push");
            t.Push(line);
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_step")]
    public static int TrainerStep(nint trainer, float* loss)
    {
        LastError.Clear();
        try
        {
            if (loss != null) *loss = float.NaN;
            var t = Handles.Get<NativeTrainer>(trainer, "trainer");
            using var lease = t.Model.Enter("temper_trainer_step");
            float l = t.Step();
            if (loss != null) *loss = l;
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_set_metrics_callback")]
    public static int TrainerSetMetricsCallback(nint trainer, delegate* unmanaged[Cdecl]<TemperStepMetrics*, void*, void> callback, void* user)
    {
        LastError.Clear();
        try
        {
            var t = Handles.Get<NativeTrainer>(trainer, "trainer");
            using var lease = t.Model.Enter("temper_trainer_set_metrics_callback");
            t.OnMetrics = callback;
            t.MetricsUser = user;
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_trainer_save_adapter")]
    public static int TrainerSaveAdapter(nint trainer, byte* dir)
    {
        LastError.Clear();
        try
        {
            var t = Handles.Get<NativeTrainer>(trainer, "trainer");
            string path = Utf8.Read(dir, "temper_trainer_save_adapter: dir");
            using var lease = t.Model.Enter("temper_trainer_save_adapter");
            t.SaveAdapter(path);
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }
}
