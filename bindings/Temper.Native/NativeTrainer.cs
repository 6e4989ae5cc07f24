// What a temper_trainer handle holds: an SFT or DPO run of one adapter, driven one optimizer step at a time by the
// host. The adapter is LoRA (fresh views with PEFT init, or init_adapter's), DoRA (use_dora: LoRA plus a magnitude
// m [Out] per module), a prompt-tuning adapter (prompt_tuning_tokens P: virtual token embeddings [P,C] before every
// sequence) or a prefix-tuning one (prefix_tuning_tokens P: key/value rows [P,Hkv*D] per layer), as TrainingRun.Open
// sets them up for the CLI; since 0.5.0 also an (IA)^3 adapter (ia3: one scaling vector per projection PEFT targets by
// default, or init_adapter's IA3 folder) and, beside a LoRA, modules_to_save copies of embed_tokens / lm_head trained in
// full (modules_to_save, or init_adapter's copies), as `--ia3` and `--modules-to-save` do. Creating the trainer attaches it to the model; while it lives the model computes with
// it (so the host can sample mid-training: after each step the views drop what they cached, DoRA's norm) and
// adapter calls on the model are refused; freeing it detaches it (virtual tokens are disposed). Examples come
// from a JSONL file (TRL forms: messages, prompt/completion, text) and/or one JSON line at a time; a step takes
// GradAccum batches of BatchSize examples in a seeded shuffled order, epoch after epoch, as SftTrainer does:
//   loss = sum of token cross-entropies over the step's label tokens / their count
//   clip the global grad norm to MaxGradNorm, AdamW at the schedule's lr.
// DPO takes preference pairs (TRL's prompt/chosen/rejected, text or messages) and the sigmoid loss at
// DpoBeta, as `temper dpo` does by default: the reference is the model with the trained adapter switched
// off (LoRA views and virtual tokens: the base, or whatever adapter was merged into it before the trainer was made).
// A mixture-of-experts model whose config.json sets output_router_logits adds router_aux_loss_coef x the router
// load-balancing loss as `temper sft` and `temper dpo` do (SftTrainer.StepLoss; DpoMicroBatch with RouterAuxPass): the
// step's loss includes it (temper_step_metrics has no field for the aux loss itself, and does not change within 0.x).
// Built with TemperTraining (the default); with -p:TemperTraining=false, Create answers TEMPER_E_UNSUPPORTED.
#if TEMPER_TRAINING
using System.Diagnostics;
using Temper.Core;
using Temper.Models;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Lora;
using Temper.Training.Optim;
using Temper.Training.Preference;
using Temper.Training.Trainers;
#endif

namespace Temper.Native;

internal sealed unsafe class NativeTrainer : IDisposable
{
    public delegate* unmanaged[Cdecl]<TemperStepMetrics*, void*, void> OnMetrics { get; set; }
    public void* MetricsUser { get; set; }
    public NativeModel Model { get; }

#if !TEMPER_TRAINING
    private NativeTrainer(NativeModel model) => Model = model;

    public const bool Available = false;

    public static NativeTrainer Create(NativeModel model, in TemperTrainerOptions o, string? dataPath, string? targets, string? initAdapter, string? promptInitText, string? modulesToSave) =>
        throw new NativeError(TemperStatus.Unsupported,
            "temper_trainer_init: this libtemper was built without training (-p:TemperTraining=false)");

    public void Push(string jsonLine) => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public float Step() => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public void SaveAdapter(string dir) => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public void Dispose() { }
#else
    public const bool Available = true;

    private readonly TemperTrainerOptions _o;
    private readonly LoraConfig? _lora;                    // LoRA or DoRA; null when virtual tokens are trained
    private readonly PromptTuningConfig? _prompt;          // prompt tuning (its embeddings are Lm.Weights.PromptEmbeddings)
    private readonly Ia3Config? _ia3;                      // (IA)^3 (its vectors are the projections' Ia3 views)
    private readonly TrainableParameters _ps;
    private readonly AdamW _opt;
    private readonly DecoderBackprop _backprop;
    private readonly LrSchedule _schedule;
    private readonly List<SftExample> _examples = [];     // SFT examples, or DPO pairs' chosen rows (the batch order)
    private readonly List<PreferencePair> _pairs = [];     // DPO only, parallel to _examples
    private readonly ReferenceModel? _reference;
    private readonly double? _routerAuxCoef;               // DPO: config.json's router_aux_loss_coef when output_router_logits
    private bool Dpo => _o.Method == (int)TemperTrainMethod.Dpo;
    private readonly int _pad;
    private SftBatcher? _batcher;
    private int _batcherCount;
    private int _epoch, _index, _step, _pushed;

    private NativeTrainer(NativeModel model, in TemperTrainerOptions o, string? kind, LoraConfig? lora, Ia3Config? ia3, (bool Embed, bool Head) copies,
        string? initAdapter, string? promptInitText)
    {
        Model = model;
        _o = o;
        _lora = lora;
        _ia3 = ia3;
        var lm = model.Lm;
        try
        {
            if (kind == PeftConfigFile.PromptTuning && initAdapter != null) _prompt = lm.AttachPrompt(initAdapter);
            else if (kind == PeftConfigFile.PromptTuning)
            {
                _prompt = promptInitText == null
                    ? new PromptTuningConfig(o.PromptTuningTokens)
                    : new PromptTuningConfig(o.PromptTuningTokens, PromptTuningConfig.Text, promptInitText);
                lm.AttachPrompt(PromptTuningInit.Create(lm, _prompt, o.Seed));
            }
            else if (kind == PeftConfigFile.PrefixTuning)
                lm.AttachPrefix(initAdapter != null ? PrefixTuningAdapter.Load(initAdapter, lm.Config) : PromptTuningInit.Prefix(lm.Config, o.PrefixTuningTokens, o.Seed));
            else if (ia3 != null && initAdapter != null) Ia3Adapter.Load(initAdapter).Apply(lm.Weights, model.Backend);   // as LanguageModel.AttachAdapter
            else if (ia3 != null) ia3.AttachFresh(lm.Weights, model.Backend);
            else if (initAdapter == null)
            {
                LoraInit.Attach(lm.Weights, lora!, model.Backend, o.Seed);
                if (copies.Embed || copies.Head) model.TrackCopies(() => ModulesToSave.AttachFreshCopies(lm.Weights, model.Backend, copies.Embed, copies.Head));
            }
            else
            {
                // As LanguageModel.AttachAdapter(trainable: true): a DoRA folder goes on as DoRA, its magnitudes on the views,
                // and its modules_to_save copies (f32) are trained on.
                using var a = LoraAdapter.Load(initAdapter, allowDora: true, embeddingCopies: true);
                model.TrackCopies(() => a.Apply(lm.Weights, model.Backend, dora: true, trainable: true));
                model.OwnLoraCopies();   // trained in place, and independent of the folder's mapping
            }
        }
        catch
        {
            model.RemoveAdapters();
            throw;
        }
        try
        {
            _ps = TrainableParameters.Lora(lm.Weights, model.Backend);
            _opt = new AdamW(_ps, model.Backend, new AdamWOptions(WeightDecay: o.WeightDecay, LoraPlusRatio: o.LoraplusLrRatio));
        }
        catch
        {
            _ps?.Dispose();
            model.RemoveAdapters();
            throw;
        }
        _backprop = new DecoderBackprop(lm.Decoder);
        // The router load-balancing loss as the CLI's sft (TrainingRun.Open) and dpo (RouterAuxPass.Take) add it.
        if (Dpo) _routerAuxCoef = RouterAuxPass.Take(_backprop, lm.Config);
        else _backprop.RouterAuxLossCoef = lm.Config.RouterAuxLossCoef ?? 0;
        if (Dpo) _reference = ReferenceModel.AdapterOff(lm.Weights);
        var schedule = o.TotalSteps <= 0 ? ScheduleKind.Constant : (ScheduleKind)o.Scheduler;
        _schedule = new LrSchedule(schedule, o.LearningRate, o.WarmupSteps, Math.Max(o.TotalSteps, 1));
        _pad = lm.Config.PadTokenId ?? lm.Tokenizer?.PadId ?? 0;
    }

    public static NativeTrainer Create(NativeModel model, in TemperTrainerOptions o, string? dataPath, string? targets, string? initAdapter, string? promptInitText, string? modulesToSave)
    {
        Validate(o);
        var tok = model.Lm.RequireTokenizer();
        if (initAdapter != null && !Directory.Exists(initAdapter)) throw new NativeError(TemperStatus.NotFound, $"{initAdapter}: adapter folder not found");
        var ia3 = ValidateIa3(o, targets, initAdapter, promptInitText, modulesToSave);
        string? kind = ia3 != null ? PeftConfigFile.Ia3 : ValidateVirtualTokens(o, targets, initAdapter, promptInitText);
        var copies = ValidateModulesToSave(modulesToSave, kind, targets, initAdapter);
        LoraConfig? lora = null;
        if (kind == null && initAdapter != null)
        {
            lora = LoraConfig.Load(initAdapter);
            if (lora.Dropout > 0) throw new NativeError(TemperStatus.Unsupported, $"{initAdapter}: LoRA dropout {lora.Dropout} is not supported by the trainer yet");
            if (o.UseDora != 0 && !lora.UseDora)
                throw Status.Arg($"temper_trainer_init: use_dora is set but init_adapter {initAdapter} is a plain LoRA adapter (use_dora false), and init_adapter continues it as it is; set use_dora = 0");
            if (modulesToSave != null && !ModulesToSave.SameModules(Modules(modulesToSave), lora.ModulesToSave))
                throw Status.Arg($"temper_trainer_init: modules_to_save is \"{modulesToSave}\" but init_adapter {initAdapter} saves [{string.Join(", ", lora.ModulesToSave)}], and init_adapter continues it as it is; set modules_to_save = NULL");
        }
        else if (kind == null)
        {
            var list = targets == null
                ? (IReadOnlyList<string>)["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                : targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (list.Count == 0) throw Status.Arg("temper_trainer_init: lora_targets names no module");
            lora = new LoraConfig(o.LoraRank, o.LoraAlpha, o.UseRslora != 0, list, null, 0) { UseDora = o.UseDora != 0 };
        }
        List<SftExample>? first = null;
        List<PreferencePair>? pairs = null;
        if (dataPath != null)
        {
            if (!File.Exists(dataPath)) throw new NativeError(TemperStatus.NotFound, $"{dataPath}: data file not found");
            if (o.Method == (int)TemperTrainMethod.Dpo)
            {
                pairs = [.. LoadPairs(dataPath, model.Lm, o).Pairs];
                first = [.. pairs.Select(x => x.Chosen)];
            }
            else first = [.. SftDataset.Load(dataPath, tok, model.Lm.Template, DataOptions(o)).Examples];
        }
        var t = new NativeTrainer(model, o, kind, lora, ia3, copies, initAdapter, promptInitText);
        if (first != null) t._examples.AddRange(first);
        if (pairs != null) t._pairs.AddRange(pairs);
        return t;
    }

    private static SftDataOptions DataOptions(in TemperTrainerOptions o) => new(MaxLength: o.MaxLength, Truncation: Truncation.Right);

    // Pairs longer than max_length are dropped (cutting a completion would change what is preferred).
    private static PreferenceDataset LoadPairs(string path, LanguageModel lm, in TemperTrainerOptions o) =>
        PreferenceDataset.Load(path, lm.RequireTokenizer(), lm.Template, unpaired: false, o.MaxLength);

    private static void Validate(in TemperTrainerOptions o)
    {
        if (o.Method is not ((int)TemperTrainMethod.Sft or (int)TemperTrainMethod.Dpo)) throw Status.Arg($"temper_trainer_init: unknown method {o.Method}");
        if (o.Method == (int)TemperTrainMethod.Dpo && !(o.DpoBeta > 0)) throw Status.Arg($"temper_trainer_init: dpo_beta must be > 0 (got {o.DpoBeta})");
        if (o.LoraRank < 1) throw Status.Arg($"temper_trainer_init: lora_rank must be >= 1 (got {o.LoraRank})");
        if (!(o.LoraplusLrRatio > 0)) throw Status.Arg($"temper_trainer_init: loraplus_lr_ratio must be > 0 (1 = off; got {o.LoraplusLrRatio})");
        if (!(o.LoraAlpha > 0)) throw Status.Arg($"temper_trainer_init: lora_alpha must be > 0 (got {o.LoraAlpha})");
        if (!(o.LearningRate > 0)) throw Status.Arg($"temper_trainer_init: learning_rate must be > 0 (got {o.LearningRate})");
        if (o.Scheduler is < 0 or > 2) throw Status.Arg($"temper_trainer_init: unknown scheduler {o.Scheduler}");
        if (o.WarmupSteps < 0 || o.TotalSteps < 0) throw Status.Arg("temper_trainer_init: warmup_steps and total_steps must be >= 0");
        if (o.WeightDecay < 0 || o.MaxGradNorm < 0) throw Status.Arg("temper_trainer_init: weight_decay and max_grad_norm must be >= 0");
        if (o.BatchSize < 1 || o.GradAccum < 1) throw Status.Arg($"temper_trainer_init: batch_size ({o.BatchSize}) and grad_accum ({o.GradAccum}) must be >= 1");
        if (o.MaxLength < 2) throw Status.Arg($"temper_trainer_init: max_length must be >= 2 (got {o.MaxLength})");
        if (o.PromptTuningTokens < 0) throw Status.Arg($"temper_trainer_init: prompt_tuning_tokens must be >= 0 (0 = off; got {o.PromptTuningTokens})");
        if (o.PrefixTuningTokens < 0) throw Status.Arg($"temper_trainer_init: prefix_tuning_tokens must be >= 0 (0 = off; got {o.PrefixTuningTokens})");
        if (o.PromptTuningTokens > 0 && o.PrefixTuningTokens > 0) throw Status.Arg("temper_trainer_init: prompt_tuning_tokens and prefix_tuning_tokens are both set; train one kind of virtual tokens");
    }

    // (IA)^3 (ia3, or an init_adapter of peft_type IA3) trains one vector per targeted projection: as TrainingRun.ValidateIa3
    // does for `--ia3`, every LoRA-only or other-kind setting is refused by its field name (lora_rank and lora_alpha, which
    // always hold a value, are ignored). Returns the IA3 config trained (PEFT's default targets, or the folder's), or null.
    private static Ia3Config? ValidateIa3(in TemperTrainerOptions o, string? targets, string? initAdapter, string? promptInitText, string? modulesToSave)
    {
        const string f = "temper_trainer_init";
        string? adapterKind = initAdapter != null ? PeftConfigFile.TypeOf(initAdapter) : null;
        bool continued = adapterKind == PeftConfigFile.Ia3;
        if (o.Ia3 == 0 && !continued) return null;
        if (initAdapter != null && !continued)
            throw Status.Arg($"{f}: ia3 is set but init_adapter {initAdapter} is a {adapterKind} adapter, and init_adapter continues it as it is; set ia3 = 0");
        string Refused(string field) => $"{f}: (IA)^3 trains one scaling vector per targeted projection; {field} cannot be combined with it";
        if (o.UseDora != 0) throw Status.Arg(Refused("use_dora"));
        if (o.UseRslora != 0) throw Status.Arg(Refused("use_rslora"));
        if (o.LoraplusLrRatio != 1) throw Status.Arg(Refused("loraplus_lr_ratio"));
        if (targets != null) throw Status.Arg(Refused("lora_targets"));
        if (modulesToSave != null) throw Status.Arg(Refused("modules_to_save"));
        if (o.PromptTuningTokens > 0) throw Status.Arg(Refused("prompt_tuning_tokens"));
        if (o.PrefixTuningTokens > 0) throw Status.Arg(Refused("prefix_tuning_tokens"));
        if (promptInitText != null) throw Status.Arg(Refused("prompt_tuning_init_text"));
        return continued ? Ia3Config.Load(initAdapter!) : new Ia3Config(Ia3Config.DefaultTargets, null, Ia3Config.DefaultFeedforward, null);
    }

    // The modules modules_to_save names (ModulesToSave.EmbedModule / HeadModule), each entry checked.
    private static string[] Modules(string modulesToSave)
    {
        var entries = modulesToSave.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (entries.Length == 0) throw Status.Arg("temper_trainer_init: modules_to_save names no module; set it to NULL for none");
        return [.. entries.Select(e => ModulesToSave.ModuleOf(e) ?? throw Status.Arg($"temper_trainer_init: modules_to_save entry '{e}' is not supported (embed_tokens and lm_head are)")).Distinct()];
    }

    // modules_to_save: embed_tokens and/or lm_head trained in full beside a LoRA, as TrainingRun.ValidateModulesToSave does for
    // `--modules-to-save`. Returns which ones a fresh LoRA gets (an init_adapter brings its own).
    private static (bool Embed, bool Head) ValidateModulesToSave(string? modulesToSave, string? kind, string? targets, string? initAdapter)
    {
        if (modulesToSave == null) return (false, false);
        var modules = Modules(modulesToSave);
        if (kind != null) throw Status.Arg($"temper_trainer_init: modules_to_save trains copies of the embedding / LM head beside a LoRA; it cannot be combined with {(kind == PeftConfigFile.PromptTuning ? "prompt" : "prefix")} tuning");
        bool head = modules.Contains(ModulesToSave.HeadModule);
        if (head && initAdapter == null && targets != null && targets.Split(',', StringSplitOptions.TrimEntries).Any(t => t.Length > 0 && ModulesToSave.ModuleOf(t) == ModulesToSave.HeadModule))
            throw Status.Arg("temper_trainer_init: modules_to_save names lm_head, which lora_targets names too; one module cannot be both");
        return (modules.Contains(ModulesToSave.EmbedModule), head);
    }

    // Prompt or prefix tuning (prompt_tuning_tokens / prefix_tuning_tokens P, or an init_adapter of that kind) trains
    // only its virtual tokens: as TrainingRun.ValidateVirtualTokens does for the CLI, every LoRA-only setting that
    // would be ignored is refused by its field name (lora_rank and lora_alpha, which always hold a value, are
    // ignored). Returns the PEFT type trained (PROMPT_TUNING, PREFIX_TUNING), or null for LoRA / DoRA.
    private static string? ValidateVirtualTokens(in TemperTrainerOptions o, string? targets, string? initAdapter, string? promptInitText)
    {
        const string f = "temper_trainer_init";
        string? adapterKind = initAdapter != null && PeftConfigFile.TypeOf(initAdapter) is var t && PeftConfigFile.IsVirtualTokens(t) ? t : null;
        string? kind = o.PromptTuningTokens > 0 ? PeftConfigFile.PromptTuning : o.PrefixTuningTokens > 0 ? PeftConfigFile.PrefixTuning : adapterKind;
        if (kind == null)
        {
            if (promptInitText != null) throw Status.Arg($"{f}: prompt_tuning_init_text applies to prompt tuning; set prompt_tuning_tokens too");
            return null;
        }
        string field = kind == PeftConfigFile.PromptTuning ? "prompt_tuning_tokens" : "prefix_tuning_tokens", name = kind == PeftConfigFile.PromptTuning ? "prompt" : "prefix";
        int tokens = kind == PeftConfigFile.PromptTuning ? o.PromptTuningTokens : o.PrefixTuningTokens;
        static string KindName(string? k) => k == null ? "LoRA" : k == PeftConfigFile.PromptTuning ? "prompt-tuning" : "prefix-tuning";
        if (initAdapter != null && adapterKind != kind)
            throw Status.Arg($"{f}: {field} is set but init_adapter {initAdapter} is a {KindName(adapterKind)} adapter, and init_adapter continues it as it is; set {field} = 0");
        if (adapterKind != null && tokens > 0 && PeftConfigFile.Read(initAdapter!).Json["num_virtual_tokens"]?.GetValue<int>() is int p && p != tokens)
            throw Status.Arg($"{f}: {field} is {tokens} but init_adapter {initAdapter} has {p} virtual tokens, and init_adapter continues it as it is");
        string Refused(string what) => $"{f}: {name} tuning trains only its virtual tokens; {what} cannot be combined with it";
        if (o.UseDora != 0) throw Status.Arg(Refused("use_dora"));
        if (o.UseRslora != 0) throw Status.Arg(Refused("use_rslora"));
        if (o.LoraplusLrRatio != 1) throw Status.Arg(Refused("loraplus_lr_ratio"));
        if (targets != null) throw Status.Arg(Refused("lora_targets"));
        if (promptInitText != null && kind == PeftConfigFile.PrefixTuning)
            throw Status.Arg($"{f}: prompt_tuning_init_text applies to prompt tuning; a prefix starts N(0,1) as PEFT's does");
        if (promptInitText != null && adapterKind != null)
            throw Status.Arg($"{f}: prompt_tuning_init_text initialises a fresh prompt, and init_adapter {initAdapter} continues one as it is; set prompt_tuning_init_text = NULL");
        if (promptInitText is "") throw Status.Arg($"{f}: prompt_tuning_init_text is empty; set it to NULL for RANDOM init");
        return kind;
    }

    /// <summary>Adds one example given as one JSON line (the forms a data file holds).</summary>
    public void Push(string jsonLine)
    {
        if (jsonLine.Contains('\n', StringComparison.Ordinal)) throw Status.Arg("temper_trainer_push: the example must be one JSON line (no newline)");
        _pushed++;
        // SftDataset reads files; a one-line file gives this example exactly the file path's treatment.
        string tmp = Path.Combine(Path.GetTempPath(), $"temper-push-{Environment.ProcessId}-{Guid.NewGuid():N}.jsonl");
        try
        {
            File.WriteAllText(tmp, jsonLine + "\n");
            try
            {
                if (Dpo)
                {
                    var pairs = LoadPairs(tmp, Model.Lm, _o).Pairs;
                    if (pairs.Count == 0) throw new NativeError(TemperStatus.InvalidData, $"pushed example {_pushed}: the pair is longer than max_length {_o.MaxLength} tokens");
                    _pairs.AddRange(pairs);
                    _examples.AddRange(pairs.Select(x => x.Chosen));
                    return;
                }
                var ds = SftDataset.Load(tmp, Model.Lm.RequireTokenizer(), Model.Lm.Template, DataOptions(_o));
                if (ds.Examples.Count == 0) throw new NativeError(TemperStatus.InvalidData, $"pushed example {_pushed}: nothing to learn (no label token left after truncation to max_length {_o.MaxLength})");
                _examples.AddRange(ds.Examples);
            }
            catch (TemperException e)
            {
                throw new NativeError(TemperStatus.InvalidData, e.Message.Replace(tmp + ":1", $"pushed example {_pushed}", StringComparison.Ordinal).Replace(tmp, $"pushed example {_pushed}", StringComparison.Ordinal));
            }
        }
        finally
        {
            File.Delete(tmp);
        }
    }

    /// <summary>One optimizer step; returns its loss (NaN/Inf steps are skipped, not applied).</summary>
    public float Step()
    {
        if (_examples.Count == 0) throw Status.Arg("temper_trainer_step: no examples yet: give a data file to temper_trainer_init or push examples (temper_trainer_push)");
        var be = Model.Backend;
        var sw = Stopwatch.StartNew();
        var micro = new List<SftBatch>();
        for (int i = 0; i < _o.GradAccum; i++) micro.Add(NextBatch());
        _ps.ZeroGrads();
        double loss = 0, margin = 0, accuracy = 0;
        long tokens = 0;
        if (Dpo)
        {
            int totalPairs = micro.Sum(b => b.ExampleIndices.Length);
            var p = new PreferenceOptions { Beta = _o.DpoBeta };
            foreach (var b in micro)
            {
                var r = DpoMicroBatch.Run(_backprop, _ps.GradOf, b.ExampleIndices.Select(i => _pairs[i]).ToList(), (double)b.ExampleIndices.Length / totalPairs, p, _pad, _reference,
                    routerAuxCoef: _routerAuxCoef);
                (loss, margin, accuracy, tokens) = (loss + r.Loss, margin + r.RewardMargin, accuracy + r.RewardAccuracy, tokens + r.Tokens);
            }
        }
        else
        {
            loss = SftTrainer.StepLoss(_backprop, micro, _ps.GradOf).Loss;
            tokens = micro.Sum(b => (long)b.Ids.Length);
        }
        double norm = _ps.GradNorm();
        float lr = _schedule.At(_step);
        _step++;
        bool skipped = !double.IsFinite(loss) || !double.IsFinite(norm);
        if (!skipped)
        {
            if (_o.MaxGradNorm > 0 && norm > _o.MaxGradNorm)
                foreach (var p in _ps.All) be.Scale(p.Grad, (float)(_o.MaxGradNorm / (norm + 1e-6)));
            _opt.Update(lr);
            ParametersChanged();
        }
        if (OnMetrics != null)
        {
            var m = new TemperStepMetrics
            {
                Step = _step,
                Loss = (float)loss,
                GradNorm = (float)norm,
                LearningRate = lr,
                TokensPerSecond = (float)(tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds)),
                Tokens = (int)tokens,
                Skipped = skipped ? 1 : 0,
                RewardMargin = (float)margin,
                RewardAccuracy = (float)accuracy,
            };
            OnMetrics(&m, MetricsUser);
        }
        return (float)loss;
    }

    private SftBatch NextBatch()
    {
        // Pushed examples join from the next epoch's order on (the batcher is rebuilt when the set grew).
        if (_batcher == null || (_batcherCount != _examples.Count && _index == 0))
        {
            _batcher = new SftBatcher(_examples.ToArray(), _o.BatchSize, _pad, (ulong)_o.Seed);
            _batcherCount = _examples.Count;
        }
        var b = _batcher.Batch(_epoch, _index);
        if (++_index >= _batcher.BatchesPerEpoch)
        {
            _index = 0;
            _epoch++;
        }
        return b;
    }

    // The views cache what they derive from A, B and m between forwards (DoRA's norm, for the generate and logits
    // calls the host makes mid-training); an optimizer step changes them, as TrainingRun.ParametersChanged says.
    private void ParametersChanged()
    {
        foreach (var p in Model.AllProjections) p.Lora?.ParametersChanged();
    }

    public void SaveAdapter(string dir)
    {
        var lm = Model.Lm;
        string baseModel = Path.GetFullPath(lm.Directory);
        if (lm.Weights.Prefix is { } prefix) PeftAdapterWriter.SavePrefix(dir, prefix, lm.Config, baseModel, Model.Backend);
        else if (_prompt != null) PeftAdapterWriter.SavePrompt(dir, lm.Weights.PromptEmbeddings!, _prompt, lm.Config, baseModel, Model.Backend);
        else if (_ia3 != null) PeftAdapterWriter.SaveIa3(dir, lm.Weights, _ia3, Model.Backend, baseModel);
        else PeftAdapterWriter.Save(dir, lm.Weights, _lora!, Model.Backend, baseModel, SavedCopies());
    }

    // The modules_to_save copies this run trains (not ones an earlier temper_adapter_merge left in place of the weights).
    private PeftAdapterWriter.SavedModules? SavedCopies()
    {
        var (embed, head) = Model.AppliedCopies;
        var w = Model.Lm.Weights;
        if (embed == null && head == null) return w.EmbedReplacement == null && w.LmHead.Replacement == null ? null : new("CAUSAL_LM", [], []);
        var names = new List<string>();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        if (embed != null) { names.Add("embed_tokens"); tensors.Add(new(ModulesToSave.EmbedModule + ".weight", embed)); }
        if (head != null) { names.Add("lm_head"); tensors.Add(new(ModulesToSave.HeadModule + ".weight", head)); }
        return new("CAUSAL_LM", names, tensors);
    }

    public void Dispose()
    {
        Model.RemoveAdapters();
        _opt.Dispose();
        _ps.Dispose();
    }
#endif
}
