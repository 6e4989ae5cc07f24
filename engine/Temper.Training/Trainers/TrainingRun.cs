// The part every trainer shares, as one component (not a base class): open the model, attach or
// initialise the LoRA (with modules_to_save copies of the embedding / LM head trained beside it when asked), or (IA)^3
// vectors (ones at the start, so step 0 is the base; or an IA3 --init-adapter's), or a prompt- or
// prefix-tuning adapter's virtual tokens, or train all weights; AdamW + schedule, then the step loop with metrics.jsonl,
// manifest.json, checkpoints, resume, Ctrl-C and non-finite-step handling, and the final save.
// A recipe supplies only its data and a step function that fills the gradients and returns the loss.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Lora;
using Temper.Training.Optim;
using Temper.Training.Runs;

namespace Temper.Training.Trainers;

/// <summary>Where the data order stands: the next batch is batch Index of epoch Epoch.</summary>
public readonly record struct BatchCursor(int Epoch, int Index)
{
    public BatchCursor Next(int perEpoch) => Index + 1 < perEpoch ? this with { Index = Index + 1 } : new BatchCursor(Epoch + 1, 0);
}

/// <summary>What a recipe's step computed: the loss, tokens processed, the method's own figures, the next data position.</summary>
public sealed record StepOutput(double Loss, long Tokens, BatchCursor Next, JsonObject? Extra = null)
{
    /// <summary>The step's largest micro-batch as rows x padded length, when the recipe says (the memory report plans for it).</summary>
    public (int Batch, int Length)? LargestMicroBatch { get; init; }
}

public sealed class TrainingRun : IDisposable
{
    private readonly SftOptions _o;

    private TrainingRun(SftOptions o, IBackend be, LanguageModel lm, LoraConfig? lora, TrainableParameters ps)
    {
        _o = o;
        Backend = be;
        Model = lm;
        Lora = lora;
        Params = ps;
        Backprop = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = o.GradientCheckpointing };
    }

    public IBackend Backend { get; }
    public LanguageModel Model { get; }
    public LoraConfig? Lora { get; }
    /// <summary>The (IA)^3 adapter this run trains (its vectors are the projections' Ia3 views), or null.</summary>
    public Ia3Config? Ia3 { get; private init; }
    // PiSSA: each adapted projection's initial (A_0, B_0), for the converted save.
    private Dictionary<string, (float[] A0, float[] B0)>? _pissaStart;

    /// <summary>The prompt-tuning adapter this run trains (its virtual tokens are Model.Weights.PromptEmbeddings), or null.</summary>
    public PromptTuningConfig? PromptTuning { get; private init; }
    public TrainableParameters Params { get; }
    public DecoderBackprop Backprop { get; }
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    /// <summary>
    /// Loads the model and sets up what is trained (LoRA from --init-adapter, a fresh LoRA, or all
    /// weights); extraParameters(model) adds fully trained tensors the caller owns (a reward head).
    /// A recipe that sets Backprop.DropoutSeed per micro-batch passes setsDropoutSeed; the others refuse a LoRA dropout and
    /// NEFTune, which both draw from that seed. A recipe that adds transformers' router load-balancing loss to its loss passes
    /// routerAuxLoss (Backprop.RouterAuxLossCoef is then config.json's router_aux_loss_coef when output_router_logits, else 0);
    /// the others refuse a mixture-of-experts config.json with output_router_logits true.
    /// </summary>
    public static TrainingRun Open(SftOptions o, IBackend be, Func<LanguageModel, IReadOnlyList<(string Name, Tensor Value)>>? extraParameters = null, bool setsDropoutSeed = false,
        bool baseMayChange = false, bool routerAuxLoss = false)
    {
        Validate(o);
        if (!o.FromScratch && System.IO.Directory.Exists(o.ModelDir) && ModelConfig.Load(o.ModelDir).Bnb4Bit != null)
        {
            string why = $"{o.ModelDir} is a bitsandbytes 4-bit checkpoint, its projections frozen in NF4";
            if (o.Full) throw new TemperException($"{why}; train LoRA adapters over it, or merge-export a dense copy first (temper merge) to fine-tune all weights");
            if (LoraInitMethods.ChangesBase(o.LoraInit)) throw new TemperException($"{why}; --lora-init {o.LoraInit} rewrites the base weights and cannot run over it");
        }
        if (o.LoraInit != LoraInitMethods.Default && (o.Full || o.InitAdapter != null))
            throw new TemperException($"--lora-init {o.LoraInit} starts a fresh LoRA adapter; it cannot be combined with {(o.Full ? "--full" : "--init-adapter")}");
        if (LoraInitMethods.ChangesBase(o.LoraInit))
        {
            if (!baseMayChange) throw new TemperException($"--lora-init {o.LoraInit} trains over a residual of the base, which a reference model with the adapter off would see instead of the base; it is supported by sft and pretrain only");
            if (o.QLora || o.UseDora) throw new TemperException($"--lora-init {o.LoraInit} rewrites the base weights; it cannot be combined with {(o.QLora ? "--qlora" : "--use-dora")}");
        }
        var ia3 = ValidateIa3(o, extraParameters != null);
        string? virtualKind = ValidateVirtualTokens(o, extraParameters != null);
        var (saveEmbed, saveHead) = ValidateModulesToSave(o, extraParameters != null);
        if (!(o.NeftuneNoiseAlpha >= 0)) throw new TemperException($"--neftune-noise-alpha must be >= 0 (got {o.NeftuneNoiseAlpha})");
        if (o.NeftuneNoiseAlpha > 0 && !setsDropoutSeed) throw new TemperException("--neftune-noise-alpha is supported by sft and pretrain only");
        // before the output folder is made: the router load-balancing loss only where the recipe adds it
        if (!routerAuxLoss && File.Exists(Path.Combine(o.ModelDir, "config.json")) && ModelConfig.Load(o.ModelDir) is { Moe.OutputRouterLogits: true } moeConfig)
            throw new TemperException($"{moeConfig.SourcePath}: field 'output_router_logits' is true, so transformers would add router_aux_loss_coef x the load-balancing loss to the training loss; Temper adds it in sft, pretrain, dpo, kto, orpo and cpo, as TRL does (TRL's GRPO, reward and GKD trainers add none): set it to false to train on this verb's own loss alone");
        Directory.CreateDirectory(o.OutDir);
        var lm = o.FromScratch ? LanguageModel.CreateRandom(o.ModelDir, be, o.Seed) : LanguageModel.Load(o.ModelDir, be, qlora: o.QLora);
        try
        {
            LoraConfig? lora = null;
            PromptTuningConfig? prompt = null;
            Dictionary<string, (float[], float[])>? pissa = null;
            if (virtualKind == PeftConfigFile.PromptTuning && o.InitAdapter != null) prompt = lm.AttachPrompt(o.InitAdapter);
            else if (virtualKind == PeftConfigFile.PromptTuning)
            {
                prompt = new PromptTuningConfig(o.PromptTuningTokens, o.PromptTuningInit, o.PromptTuningInitText);
                lm.AttachPrompt(PromptTuningInit.Create(lm, prompt, o.Seed));
            }
            else if (virtualKind == PeftConfigFile.PrefixTuning)
                lm.AttachPrefix(o.InitAdapter != null ? PrefixTuningAdapter.Load(o.InitAdapter, lm.Config) : PromptTuningInit.Prefix(lm.Config, o.PrefixTuningTokens, o.Seed));
            else if (ia3 != null && o.InitAdapter != null) lm.AttachAdapter(o.InitAdapter, merge: false);
            else if (ia3 != null) ia3.AttachFresh(lm.Weights, be);
            else if (!o.Full)
            {
                if (o.InitAdapter != null)
                {
                    lora = LoraConfig.Load(o.InitAdapter);
                    if (o.UseDora && !lora.UseDora)
                        throw new TemperException($"--use-dora: {o.InitAdapter} is a plain LoRA adapter (use_dora false), and --init-adapter continues it as it is; drop --use-dora");
                    if (o.ModulesToSave.Count > 0 && !ModulesToSave.SameModules(o.ModulesToSave, lora.ModulesToSave))
                        throw new TemperException($"--modules-to-save {string.Join(",", o.ModulesToSave)}: {o.InitAdapter} saves [{string.Join(", ", lora.ModulesToSave)}], and --init-adapter continues it as it is; drop --modules-to-save");
                    lm.AttachAdapter(o.InitAdapter, merge: false, doraUnmerged: true, trainable: true);
                }
                else
                {
                    lora = new LoraConfig(o.LoraRank, o.LoraAlpha, o.UseRsLora, o.LoraTargets, null, o.LoraDropout) { UseDora = o.UseDora };
                    LoraInit.Attach(lm.Weights, lora, be, o.Seed);
                    if (o.LoraInit == LoraInitMethods.Gaussian) LoraInitMethods.ApplyGaussian(lm.Weights, be, o.Seed);
                    else if (LoraInitMethods.ChangesBase(o.LoraInit)) pissa = LoraInitMethods.ApplyToBase(lm.Weights, be, o.LoraInit);
                    if (saveEmbed || saveHead) ModulesToSave.AttachFreshCopies(lm.Weights, be, saveEmbed, saveHead);
                }
                if (!(lora.Dropout >= 0 && lora.Dropout < 1)) throw new TemperException($"LoRA dropout {lora.Dropout} must be in [0, 1)");
                if (lora.Dropout > 0 && !setsDropoutSeed) throw new TemperException($"LoRA dropout {lora.Dropout} is supported by sft and pretrain only so far; use 0");
            }
            var extra = extraParameters?.Invoke(lm);
            var ps = o.Full ? TrainableParameters.Full(lm.Weights, be, extra) : TrainableParameters.Lora(lm.Weights, be, extra);
            var run = new TrainingRun(o, be, lm, lora, ps) { PromptTuning = prompt, _pissaStart = pissa, Ia3 = ia3 };
            run.Backprop.LoraDropout = (float)(lora?.Dropout ?? 0);
            run.Backprop.NeftuneNoiseAlpha = (float)o.NeftuneNoiseAlpha;
            run.Backprop.RouterAuxLossCoef = lm.Config.RouterAuxLossCoef ?? 0;
            return run;
        }
        catch
        {
            lm.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs optimizer steps until totalSteps (or cancellation). step(cursor) fills the gradients of the
    /// trained parameters (they are zeroed before each call) and returns the loss. Every step's line goes
    /// to metrics.jsonl; afterStep may add figures (evaluation) to it.
    /// </summary>
    public SftResult Run(string kind, int totalSteps, string dataSha, JsonObject dataInfo, Func<BatchCursor, StepOutput> step, Action<int, JsonObject>? afterStep = null, CancellationToken cancel = default)
    {
        var schedule = new LrSchedule(_o.Scheduler, _o.LearningRate, _o.WarmupSteps, totalSteps);
        using var opt = new AdamW(Params, Backend, new AdamWOptions(WeightDecay: _o.WeightDecay, LoraPlusRatio: _o.LoraPlusRatio));
        int stepNo = 0;
        var cursor = new BatchCursor(0, 0);
        if (_o.Resume && Checkpoint.Latest(_o.OutDir) is string ck)
        {
            var st = Checkpoint.Load(ck, Params, opt);
            ParametersChanged();
            if (st.DataSha256 != dataSha) throw new TemperException($"{ck}: the checkpoint was trained on different data (SHA-256 {st.DataSha256[..12]}..., {_o.DataPath} is {dataSha[..12]}...)");
            stepNo = st.Step;
            cursor = new BatchCursor(st.Epoch, st.BatchIndex);
        }
        else if (_o.Resume) OnWarning?.Invoke($"--resume: no checkpoint in {_o.OutDir}; starting from step 0");

        RunManifest.Write(_o.OutDir, kind, _o.ModelDir, dataInfo, _o.ToJson());
        var meter = Backend as IMemoryMeter;
        meter?.ResetPeak();
        (int Batch, int Length)? largest = null;
        using var metrics = new MetricsLog(Path.Combine(_o.OutDir, "metrics.jsonl"), _o.Resume ? stepNo : null);
        var reports = new List<StepReport>();
        int bad = 0;
        bool interrupted = false;
        while (stepNo < totalSteps)
        {
            if (cancel.IsCancellationRequested) { interrupted = true; break; }
            var sw = Stopwatch.StartNew();
            Params.ZeroGrads();
            var output = step(cursor);
            if (output.LargestMicroBatch is { } mb && (largest is not { } l || (long)mb.Batch * mb.Length > (long)l.Batch * l.Length)) largest = mb;
            cursor = output.Next;
            stepNo++;
            double norm = Params.GradNorm();
            float lr = schedule.At(stepNo - 1);
            bool skipped = !double.IsFinite(output.Loss) || !double.IsFinite(norm);
            if (skipped)
            {
                bad++;
                OnWarning?.Invoke($"step {stepNo}: loss {output.Loss} / grad norm {norm} is not finite; step skipped ({bad} in a row)");
                if (bad >= _o.MaxBadSteps)
                    throw new TemperException($"{bad} non-finite steps in a row at step {stepNo}; aborting. Last good checkpoint: {Checkpoint.Latest(_o.OutDir) ?? "none"}");
            }
            else
            {
                bad = 0;
                if (_o.MaxGradNorm > 0 && norm > _o.MaxGradNorm)
                    foreach (var p in Params.All) Backend.Scale(p.Grad, (float)(_o.MaxGradNorm / (norm + 1e-6)));
                opt.Update(lr);
                ParametersChanged();
            }
            var report = new StepReport(stepNo, totalSteps, output.Loss, norm, lr, output.Tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds), skipped);
            reports.Add(report);
            var line = MetricsLog.Line(stepNo, output.Loss, norm, lr, report.TokensPerSecond);
            line["epoch"] = cursor.Epoch;
            if (skipped) line["skipped"] = true;
            if (output.Extra != null)
                foreach (var (k, v) in output.Extra) line[k] = v?.DeepClone();
            afterStep?.Invoke(stepNo, line);
            metrics.Write(line);
            OnStep?.Invoke(report);
            if (_o.SaveEvery > 0 && stepNo % _o.SaveEvery == 0 && !skipped)
                Checkpoint.Save(_o.OutDir, new TrainerState(stepNo, cursor.Epoch, cursor.Index, dataSha), Params, opt, Backend);
        }
        if (interrupted)
            Checkpoint.Save(_o.OutDir, new TrainerState(stepNo, cursor.Epoch, cursor.Index, dataSha), Params, opt, Backend);
        var memory = new MemoryReport(Plan(largest), meter == null ? null : MemoryPlan.HostHeldBytes(Model.Weights) + meter.PeakBytes,
            Process.GetCurrentProcess().PeakWorkingSet64);
        SaveResult();
        return new SftResult(stepNo, interrupted, _o.OutDir, reports) { Memory = memory };
    }

    // Adapter views cache what they derive from their parameters (DoRA's norm for inference passes); a step changes them.
    private void ParametersChanged()
    {
        foreach (var p in Model.Weights.Projections) p.Lora?.ParametersChanged();
    }

    /// <summary>The memory plan for this run's model and settings, at a micro-batch of rows x length (default BatchSize x MaxLength).</summary>
    public MemoryPlan Plan((int Batch, int Length)? microBatch = null)
    {
        static int Bytes(Core.DType t) => t == Core.DType.BF16 ? 2 : 4;
        var w = Model.Weights;
        var first = w.Layers.Length > 0 ? w.Layers[0].Q.Weight.DType : w.Embed.DType;
        var (rows, length) = microBatch ?? (_o.BatchSize, _o.MaxLength);
        return MemoryPlan.For(Model.Config, new MemoryPlanOptions(rows, length, _o.QLora || Model.Config.Bnb4Bit != null, _o.Full, Lora,
            MatrixBytes: Bytes(first), EmbeddingBytes: Bytes(w.BaseEmbed.DType), VirtualTokens: w.VirtualTokenCount, PrefixTuning: w.Prefix != null)
            {
                ModulesToSave = (w.EmbedReplacement != null ? 1 : 0) + (w.LmHead.Replacement != null ? 1 : 0),
                Ia3 = Ia3,
                Bf16ProductCopies = Backend is Core.IMemoryMeter { HoldsBf16ProductCopies: true },
                Bf16MlpActivations = w.Layers.FirstOrDefault(l => l.Moe == null) is { } dense && DecoderBackprop.KeepsBf16Mlp(Backend, dense),
                Bf16AttentionInputs = w.Layers.Length > 0 && DecoderBackprop.KeepsBf16Attention(Backend, w.Layers[0]),
                LmHeadScratchBytes = Backend is Core.IMemoryMeter meter ? meter.LmHeadScratchBytes : null,
            });
    }

    /// <summary>Writes the result into OutDir instead of the default adapter / model folder (a reward model adds its head).</summary>
    public Action? SaveAs { get; set; }

    /// <summary>The trained adapter (PEFT format) or the full model folder, in OutDir.</summary>
    public void SaveResult()
    {
        if (SaveAs != null) SaveAs();
        else if (Model.Weights.Prefix is { } prefix) PeftAdapterWriter.SavePrefix(_o.OutDir, prefix, Model.Config, Path.GetFullPath(_o.ModelDir), Backend);
        else if (Ia3 != null) PeftAdapterWriter.SaveIa3(_o.OutDir, Model.Weights, Ia3, Backend, Path.GetFullPath(_o.ModelDir));
        else if (PromptTuning != null) PeftAdapterWriter.SavePrompt(_o.OutDir, Model.Weights.PromptEmbeddings!, PromptTuning, Model.Config, Path.GetFullPath(_o.ModelDir), Backend);
        else if (Lora != null && _pissaStart != null)
            PeftAdapterWriter.Write(_o.OutDir, LoraInitMethods.Converted(Model.Weights, Backend, _pissaStart),
                Lora with { Rank = 2 * Lora.Rank, Alpha = Lora.Alpha * (Lora.UseRsLora ? Math.Sqrt(2) : 2) }, Path.GetFullPath(_o.ModelDir),
                PeftAdapterWriter.LanguageModelCopies(Model.Weights), Backend);
        else if (Lora != null) PeftAdapterWriter.Save(_o.OutDir, Model.Weights, Lora, Backend, Path.GetFullPath(_o.ModelDir));
        else ModelExport.Save(_o.OutDir, Model, Backend);
    }

    public int PadId => Model.Config.PadTokenId ?? Model.RequireTokenizer().PadId ?? 0;

    private static void Validate(SftOptions o)
    {
        if (o.BatchSize < 1) throw new TemperException($"--batch-size must be >= 1 (got {o.BatchSize})");
        if (o.GradAccum < 1) throw new TemperException($"--grad-accum must be >= 1 (got {o.GradAccum})");
        if (o.MaxSteps is < 1) throw new TemperException($"--max-steps must be >= 1 (got {o.MaxSteps})");
        if (o.Epochs < 1) throw new TemperException($"--epochs must be >= 1 (got {o.Epochs})");
        if (o.MaxLength < 2) throw new TemperException($"--max-len must be >= 2 (got {o.MaxLength})");
        if (!(o.LearningRate > 0)) throw new TemperException($"--lr must be > 0 (got {o.LearningRate})");
        if (o.Full && o.UseDora) throw new TemperException("--use-dora trains a DoRA adapter over a frozen base; it cannot be combined with --full (full fine-tuning)");
        if (o.Full && o.InitAdapter != null) throw new TemperException("--full and --init-adapter cannot be combined");
        if (!(o.LoraPlusRatio > 0)) throw new TemperException($"--loraplus-lr-ratio must be > 0 (got {o.LoraPlusRatio})");
        if (o.Full && o.LoraPlusRatio != 1) throw new TemperException("--loraplus-lr-ratio scales the LoRA B matrices' learning rate; full fine-tuning has none");
        if (o.QLora && o.Full) throw new TemperException("--qlora freezes the base in 4 bits and trains LoRA adapters over it; it cannot be combined with --full (full fine-tuning)");
        if (o.QLora && o.FromScratch) throw new TemperException("--qlora quantises a pretrained base; it cannot be combined with training from scratch");
        if (!File.Exists(o.DataPath)) throw new TemperException($"{o.DataPath}: data file not found");
        if (o.EvalData != null && !File.Exists(o.EvalData)) throw new TemperException($"{o.EvalData}: eval data file not found");
    }

    // (IA)^3 (a fresh --ia3, or an --init-adapter of peft_type IA3) trains only its vectors: LoRA-only and whole-model
    // options are refused by name rather than ignored. Returns the IA3 config trained, or null.
    private static Ia3Config? ValidateIa3(SftOptions o, bool extraParameters)
    {
        string? adapterKind = o.InitAdapter != null && Directory.Exists(o.InitAdapter) ? PeftConfigFile.TypeOf(o.InitAdapter) : null;
        bool continued = adapterKind == PeftConfigFile.Ia3;
        if (!o.Ia3 && !continued) return null;
        if (o.InitAdapter != null && !continued)
            throw new TemperException($"--ia3: {o.InitAdapter} is a {adapterKind ?? "missing"} adapter, and --init-adapter continues it as it is; drop --ia3");
        string Refused(string what) => $"(IA)^3 trains one scaling vector per targeted projection; {what} cannot be combined with it";
        if (o.Full) throw new TemperException(Refused("--full"));
        if (o.UseDora) throw new TemperException(Refused("--use-dora"));
        if (o.UseRsLora) throw new TemperException(Refused("--rslora"));
        if (o.LoraDropout != 0) throw new TemperException(Refused("--lora-dropout"));
        if (o.LoraPlusRatio != 1) throw new TemperException(Refused("--loraplus-lr-ratio"));
        if (o.LoraInit != LoraInitMethods.Default) throw new TemperException(Refused("--lora-init"));
        if (o.ModulesToSave.Count > 0) throw new TemperException(Refused("--modules-to-save"));
        if (o.PromptTuningTokens > 0 || o.PrefixTuningTokens > 0) throw new TemperException(Refused(o.PromptTuningTokens > 0 ? "--prompt-tuning" : "--prefix-tuning"));
        if (extraParameters) throw new TemperException(Refused("a reward model's score head"));
        var cfg = continued ? Ia3Config.Load(o.InitAdapter!) : new Ia3Config(o.Ia3Targets, null, o.Ia3Feedforward, null).Validated("--ia3-feedforward");
        if (cfg.Targets(ModulesToSave.HeadModule)) throw new TemperException("--ia3-targets: an IA3 vector on lm_head is not supported (the decoder layers' projections are)");
        return cfg;
    }

    // Prompt or prefix tuning (a fresh --prompt-tuning / --prefix-tuning P, or an --init-adapter of that kind) trains
    // only the virtual tokens: every LoRA-only or whole-model option is refused by name rather than ignored. Returns
    // the PEFT type trained (PROMPT_TUNING, PREFIX_TUNING) or null.
    private static string? ValidateVirtualTokens(SftOptions o, bool extraParameters)
    {
        if (o.PromptTuningTokens < 0) throw new TemperException($"--prompt-tuning must be >= 1 virtual tokens (got {o.PromptTuningTokens})");
        if (o.PrefixTuningTokens < 0) throw new TemperException($"--prefix-tuning must be >= 1 virtual tokens (got {o.PrefixTuningTokens})");
        if (o.PromptTuningTokens > 0 && o.PrefixTuningTokens > 0) throw new TemperException("--prompt-tuning and --prefix-tuning cannot be combined; train one kind of virtual tokens");
        string? adapterKind = o.InitAdapter != null && Directory.Exists(o.InitAdapter) && PeftConfigFile.TypeOf(o.InitAdapter) is var t && PeftConfigFile.IsVirtualTokens(t) ? t : null;
        string? kind = o.PromptTuningTokens > 0 ? PeftConfigFile.PromptTuning : o.PrefixTuningTokens > 0 ? PeftConfigFile.PrefixTuning : adapterKind;
        if (kind == null) return null;
        string flag = kind == PeftConfigFile.PromptTuning ? "--prompt-tuning" : "--prefix-tuning", name = kind == PeftConfigFile.PromptTuning ? "prompt" : "prefix";
        int tokens = kind == PeftConfigFile.PromptTuning ? o.PromptTuningTokens : o.PrefixTuningTokens;
        if (o.InitAdapter != null && adapterKind != kind)
            throw new TemperException($"{flag}: {o.InitAdapter} is a {(adapterKind == null ? "LoRA" : adapterKind == PeftConfigFile.PromptTuning ? "prompt-tuning" : "prefix-tuning")} adapter, and --init-adapter continues it as it is; drop {flag}");
        if (adapterKind != null && tokens > 0 && PeftConfigFile.Read(o.InitAdapter!).Json["num_virtual_tokens"]?.GetValue<int>() is int p && p != tokens)
            throw new TemperException($"{flag} {tokens}: {o.InitAdapter} has {p} virtual tokens, and --init-adapter continues it as it is");
        string Refused(string what) => $"{name} tuning trains only its virtual tokens; {what} cannot be combined with it";
        if (o.Full) throw new TemperException(Refused("--full"));
        if (o.ModulesToSave.Count > 0) throw new TemperException(Refused("--modules-to-save"));
        if (o.UseDora) throw new TemperException(Refused("--use-dora"));
        if (o.UseRsLora) throw new TemperException(Refused("--rslora"));
        if (o.LoraDropout != 0) throw new TemperException(Refused("--lora-dropout"));
        if (o.LoraPlusRatio != 1) throw new TemperException(Refused("--loraplus-lr-ratio"));
        if (o.NeftuneNoiseAlpha != 0) throw new TemperException(Refused("--neftune-noise-alpha (its noise is on the word embeddings)"));
        if (o.Packing) throw new TemperException(Refused("--packing (the virtual tokens go before each sequence, not each packed row)"));
        if (extraParameters) throw new TemperException(Refused("a reward model's score head"));
        if (kind == PeftConfigFile.PrefixTuning && (o.PromptTuningInitText != null || o.PromptTuningInit != PromptTuningConfig.Random))
            throw new TemperException("--prompt-tuning-init and --prompt-tuning-init-text apply to --prompt-tuning; a prefix starts N(0,1) as PEFT's does");
        if (kind == PeftConfigFile.PromptTuning && adapterKind == null && o.PromptTuningInit == PromptTuningConfig.Text && string.IsNullOrEmpty(o.PromptTuningInitText))
            throw new TemperException("--prompt-tuning-init text needs --prompt-tuning-init-text");
        return kind;
    }

    // --modules-to-save: embed_tokens and/or lm_head trained in full beside a LoRA. Returns which.
    private static (bool Embed, bool Head) ValidateModulesToSave(SftOptions o, bool extraParameters)
    {
        if (o.ModulesToSave.Count == 0) return (false, false);
        foreach (var m in o.ModulesToSave)
            if (ModulesToSave.ModuleOf(m) == null) throw new TemperException($"--modules-to-save: '{m}' is not supported (embed_tokens and lm_head are)");
        string Refused(string what) => $"--modules-to-save trains copies of the embedding / LM head beside a LoRA; it cannot be combined with {what}";
        if (o.Full) throw new TemperException(Refused("--full (which trains those weights already)"));
        if (o.PromptTuningTokens > 0 || o.PrefixTuningTokens > 0) throw new TemperException(Refused(o.PromptTuningTokens > 0 ? "--prompt-tuning" : "--prefix-tuning"));
        if (extraParameters) throw new TemperException(Refused("a reward model's score head"));
        var modules = o.ModulesToSave.Select(ModulesToSave.ModuleOf).ToHashSet();
        if (modules.Contains(ModulesToSave.HeadModule) && o.InitAdapter == null && o.LoraTargets.Any(t => ModulesToSave.HeadModule == t || ModulesToSave.HeadModule.EndsWith("." + t, StringComparison.Ordinal)))
            throw new TemperException("--modules-to-save lm_head: lm_head is also in --lora-targets; one module cannot be both");
        return (modules.Contains(ModulesToSave.EmbedModule), modules.Contains(ModulesToSave.HeadModule));
    }

    public void Dispose()
    {
        Params.Dispose();
        Model.Dispose();
    }
}
