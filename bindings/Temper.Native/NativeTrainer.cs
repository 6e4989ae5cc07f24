// What a temper_trainer handle holds: a LoRA SFT or DPO run driven one optimizer step at a time by the host.
// Creating it attaches fresh LoRA views (PEFT init) to the model's projections; while it lives the
// model computes with them (so the host can sample mid-training) and adapter calls on the model are
// refused; freeing it detaches them. Examples come from a JSONL file (TRL forms: messages,
// prompt/completion, text) and/or one JSON line at a time; a step takes GradAccum batches of
// BatchSize examples in a seeded shuffled order, epoch after epoch, as SftTrainer does:
//   loss = sum of token cross-entropies over the step's label tokens / their count
//   clip the global grad norm to MaxGradNorm, AdamW at the schedule's lr.
// DPO takes preference pairs (TRL's prompt/chosen/rejected, text or messages) and the sigmoid loss at
// DpoBeta, as `temper dpo` does by default: the reference is the model with the trained LoRA switched
// off (the base, or whatever adapter was merged into it before the trainer was made).
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

    public static NativeTrainer Create(NativeModel model, in TemperTrainerOptions o, string? dataPath, string? targets, string? initAdapter) =>
        throw new NativeError(TemperStatus.Unsupported,
            "temper_trainer_init: this libtemper was built without training (-p:TemperTraining=false)");

    public void Push(string jsonLine) => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public float Step() => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public void SaveAdapter(string dir) => throw new NativeError(TemperStatus.Unsupported, "training is not built in");
    public void Dispose() { }
#else
    public const bool Available = true;

    private readonly TemperTrainerOptions _o;
    private readonly LoraConfig _lora;
    private readonly TrainableParameters _ps;
    private readonly AdamW _opt;
    private readonly DecoderBackprop _backprop;
    private readonly LrSchedule _schedule;
    private readonly List<SftExample> _examples = [];     // SFT examples, or DPO pairs' chosen rows (the batch order)
    private readonly List<PreferencePair> _pairs = [];     // DPO only, parallel to _examples
    private readonly ReferenceModel? _reference;
    private bool Dpo => _o.Method == (int)TemperTrainMethod.Dpo;
    private readonly int _pad;
    private SftBatcher? _batcher;
    private int _batcherCount;
    private int _epoch, _index, _step, _pushed;

    private NativeTrainer(NativeModel model, in TemperTrainerOptions o, LoraConfig lora, string? initAdapter)
    {
        Model = model;
        _o = o;
        _lora = lora;
        var lm = model.Lm;
        try
        {
            if (initAdapter == null) LoraInit.Attach(lm.Weights, lora, model.Backend, o.Seed);
            else
            {
                using var a = LoraAdapter.Load(initAdapter);
                a.Apply(lm.Weights, model.Backend);
                model.OwnLoraCopies();   // trained in place, and independent of the folder's mapping
            }
        }
        catch
        {
            model.RemoveLora();
            throw;
        }
        try
        {
            _ps = TrainableParameters.Lora(lm.Weights, model.Backend);
            _opt = new AdamW(_ps, model.Backend, new AdamWOptions(WeightDecay: o.WeightDecay));
        }
        catch
        {
            _ps?.Dispose();
            model.RemoveLora();
            throw;
        }
        _backprop = new DecoderBackprop(lm.Decoder);
        if (Dpo) _reference = ReferenceModel.AdapterOff(lm.Weights);
        var kind = o.TotalSteps <= 0 ? ScheduleKind.Constant : (ScheduleKind)o.Scheduler;
        _schedule = new LrSchedule(kind, o.LearningRate, o.WarmupSteps, Math.Max(o.TotalSteps, 1));
        _pad = lm.Config.PadTokenId ?? lm.Tokenizer?.PadId ?? 0;
    }

    public static NativeTrainer Create(NativeModel model, in TemperTrainerOptions o, string? dataPath, string? targets, string? initAdapter)
    {
        Validate(o);
        var tok = model.Lm.RequireTokenizer();
        LoraConfig lora;
        if (initAdapter != null)
        {
            if (!Directory.Exists(initAdapter)) throw new NativeError(TemperStatus.NotFound, $"{initAdapter}: adapter folder not found");
            lora = LoraConfig.Load(initAdapter);
            if (lora.Dropout > 0) throw new NativeError(TemperStatus.Unsupported, $"{initAdapter}: LoRA dropout {lora.Dropout} is not supported by the trainer yet");
        }
        else
        {
            var list = targets == null
                ? (IReadOnlyList<string>)["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                : targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (list.Count == 0) throw Status.Arg("temper_trainer_init: lora_targets names no module");
            lora = new LoraConfig(o.LoraRank, o.LoraAlpha, o.UseRslora != 0, list, null, 0);
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
        var t = new NativeTrainer(model, o, lora, initAdapter);
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
        if (!(o.LoraAlpha > 0)) throw Status.Arg($"temper_trainer_init: lora_alpha must be > 0 (got {o.LoraAlpha})");
        if (!(o.LearningRate > 0)) throw Status.Arg($"temper_trainer_init: learning_rate must be > 0 (got {o.LearningRate})");
        if (o.Scheduler is < 0 or > 2) throw Status.Arg($"temper_trainer_init: unknown scheduler {o.Scheduler}");
        if (o.WarmupSteps < 0 || o.TotalSteps < 0) throw Status.Arg("temper_trainer_init: warmup_steps and total_steps must be >= 0");
        if (o.WeightDecay < 0 || o.MaxGradNorm < 0) throw Status.Arg("temper_trainer_init: weight_decay and max_grad_norm must be >= 0");
        if (o.BatchSize < 1 || o.GradAccum < 1) throw Status.Arg($"temper_trainer_init: batch_size ({o.BatchSize}) and grad_accum ({o.GradAccum}) must be >= 1");
        if (o.MaxLength < 2) throw Status.Arg($"temper_trainer_init: max_length must be >= 2 (got {o.MaxLength})");
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
                var r = DpoMicroBatch.Run(_backprop, _ps.GradOf, b.ExampleIndices.Select(i => _pairs[i]).ToList(), (double)b.ExampleIndices.Length / totalPairs, p, _pad, _reference);
                (loss, margin, accuracy, tokens) = (loss + r.Loss, margin + r.RewardMargin, accuracy + r.RewardAccuracy, tokens + r.Tokens);
            }
        }
        else
        {
            int count = micro.Sum(b => b.LabelTokens);
            double lossSum = 0;
            foreach (var b in micro)
            {
                lossSum += _backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f / Math.Max(1, count), _ps.GradOf).Sum(x => (double)x);
                tokens += b.Ids.Length;
            }
            loss = lossSum / Math.Max(1, count);
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

    public void SaveAdapter(string dir) =>
        PeftAdapterWriter.Save(dir, Model.Lm.Weights, _lora, Model.Backend, Path.GetFullPath(Model.Lm.Directory));

    public void Dispose()
    {
        Model.RemoveLora();
        _opt.Dispose();
        _ps.Dispose();
    }
#endif
}
