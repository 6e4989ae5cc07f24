// What a temper_model handle holds: the loaded LanguageModel on its backend, and the model's "in use"
// flag. Calls that run or change the model (logits, generate, adapters, trainer steps) take the flag
// without waiting; a second such call meanwhile (another thread, or a callback of the first) gets
// TEMPER_E_BUSY naming the call in progress. Tokenizer and template calls read immutable state and
// take no flag. On TEMPER_DEVICE_CUDA the model is a CPU model with bf16 weights plus a CUDA device:
// generation runs through a CudaDecodeGraph (Temper's CUDA kernels, no ILGPU) built on first use and
// rebuilt when a merge changes the weights or a longer run needs more positions; logits, adapters and
// training use the CPU copy.
using Temper.Core;
using Temper.Cuda;
using Temper.Kernels.Cuda;
using Temper.Models;

namespace Temper.Native;

internal sealed class NativeModel(LanguageModel lm, IBackend backend, CudaDevice? cuda = null) : IDisposable
{
    /// <summary>Positions of the first decode graph (more when a run needs them, up to the model's maximum).</summary>
    public const int GraphPositions = 2048;
    private CudaDecodeGraph? _graph;
    private int _busy;
    private volatile string? _busyWith;

    public LanguageModel Lm { get; } = lm;
    public IBackend Backend { get; } = backend;
    public bool Disposed { get; private set; }
    /// <summary>The live trainer on this model, if any (it owns the LoRA views while it lives).</summary>
    public NativeTrainer? Trainer { get; set; }

    private Temper.Models.Constrained.TokenVocabulary? _vocabulary;
    private readonly Dictionary<string, Temper.Models.Constrained.JsonConstraint> _constraints = [];

    /// <summary>The JSON constraint of a schema text (null: any JSON object) over the model's vocabulary, compiled once
    /// (the last 16 kept); the vocabulary's byte trie is built at the first use.</summary>
    public Temper.Models.Constrained.JsonConstraint JsonConstraint(string? schema)
    {
        lock (_constraints)
        {
            string key = schema ?? "";
            if (_constraints.TryGetValue(key, out var c)) return c;
            _vocabulary ??= Temper.Models.Constrained.TokenVocabulary.From(Lm.RequireTokenizer(), Lm.EosIds());
            c = schema == null ? Temper.Models.Constrained.JsonConstraint.ForObject(_vocabulary)
                : Temper.Models.Constrained.JsonConstraint.ForSchema(_vocabulary, schema);
            if (_constraints.Count >= 16) _constraints.Clear();
            return _constraints[key] = c;
        }
    }

    /// <summary>The CUDA device generation runs on (TEMPER_DEVICE_CUDA), or null on the CPU.</summary>
    public CudaDevice? Cuda { get; } = cuda;

    /// <summary>The decode graph for a run of <paramref name="positions"/> positions, built (or rebuilt larger) as needed.</summary>
    public CudaDecodeGraph Graph(int positions)
    {
        if (Cuda == null) throw new InvalidOperationException("the model is not on CUDA");
        if (HasViews)
            throw new NativeError(TemperStatus.Unsupported, "temper_model_generate: generation on CUDA takes merged weights; merge the adapter (temper_adapter_merge) or remove it first");
        if (Lm.Weights.VirtualTokenCount > 0)
            throw new NativeError(TemperStatus.Unsupported, "temper_model_generate: generation on CUDA does not put a prompt- or prefix-tuning adapter's virtual tokens before the prompt; remove the adapter (temper_adapter_remove) or free the trainer first");
        if (_graph != null && _graph.Capacity >= positions) return _graph;
        int capacity = Math.Max(positions, Math.Min(GraphPositions, Lm.Config.MaxPositions));
        InvalidateGraph();
        return _graph = GraphDecoding.Build(Cuda, Lm.Config, Lm.Weights, rows: 1, capacity);
    }

    /// <summary>Drops the decode graph (its device copy of the weights) after the weights changed.</summary>
    public void InvalidateGraph()
    {
        _graph?.Dispose();
        _graph = null;
    }

    public IEnumerable<Projection> AllProjections => Lm.Weights.Projections.Append(Lm.Weights.LmHead);

    public Lease Enter(string call)
    {
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
            throw new NativeError(TemperStatus.Busy,
                $"{call}: the model is busy with {_busyWith ?? "another call"} (on another thread, or this call came from one of its callbacks)");
        _busyWith = call;
        if (Disposed)
        {
            Exit();
            throw new NativeError(TemperStatus.InvalidHandle, $"{call}: the model was freed");
        }
        return new Lease(this);
    }

    private void Exit()
    {
        _busyWith = null;
        Volatile.Write(ref _busy, 0);
    }

    public readonly struct Lease(NativeModel m) : IDisposable
    {
        public void Dispose() => m.Exit();
    }

    // The modules_to_save copies an unmerged adapter (apply, or a trainer) stands in for the embedding / LM head; copies
    // a merge attached are not these and stay (a merge cannot be undone without reloading).
    private Tensor? _appliedEmbed, _appliedHead;

    /// <summary>Runs attach (which may set modules_to_save copies) and records the copies it set as removable with the adapter.</summary>
    public void TrackCopies(Action attach)
    {
        var w = Lm.Weights;
        var (embed, head) = (w.EmbedReplacement, w.LmHead.Replacement);
        try
        {
            attach();
        }
        finally
        {
            if (!ReferenceEquals(w.EmbedReplacement, embed)) _appliedEmbed = w.EmbedReplacement;
            if (!ReferenceEquals(w.LmHead.Replacement, head)) _appliedHead = w.LmHead.Replacement;
        }
    }

    /// <summary>The modules_to_save copies of the unmerged adapter (null where it has none).</summary>
    public (Tensor? Embed, Tensor? Head) AppliedCopies => (_appliedEmbed, _appliedHead);

    /// <summary>Unmerged views on the model: LoRA / DoRA, (IA)^3, or an applied adapter's modules_to_save copies.</summary>
    public bool HasViews => AllProjections.Any(p => p.Lora != null || p.Ia3 != null) || _appliedEmbed != null || _appliedHead != null;

    /// <summary>Any adapter on the model: unmerged views, or a prompt- or prefix-tuning adapter's virtual tokens.</summary>
    public bool HasAdapter => HasViews || Lm.Weights.VirtualTokenCount > 0;

    /// <summary>Detaches every unmerged adapter: LoRA and (IA)^3 views, an applied adapter's modules_to_save copies (disposed;
    /// the base embedding / LM head compute again), and a prompt- or prefix-tuning adapter (disposed).</summary>
    public void RemoveAdapters()
    {
        var w = Lm.Weights;
        foreach (var p in AllProjections)
        {
            p.Lora = null;
            if (p.Ia3 is { } ia3)
            {
                p.Ia3 = null;
                Free(ia3.Vector);
                Free(ia3.Ones);
            }
        }
        if (_appliedEmbed != null && ReferenceEquals(w.EmbedReplacement, _appliedEmbed))
        {
            w.EmbedReplacement = null;
            Free(_appliedEmbed);
        }
        if (_appliedHead != null && ReferenceEquals(w.LmHead.Replacement, _appliedHead))
        {
            w.LmHead.Replacement = null;
            Free(_appliedHead);
        }
        (_appliedEmbed, _appliedHead) = (null, null);
        Lm.DetachVirtualTokens();
    }

    // A device tensor goes back to its backend; host tensors are managed memory (as ModelWeights.Dispose frees).
    private static void Free(Tensor t)
    {
        if (!t.IsHost) t.Dispose();
    }

    /// <summary>
    /// Replaces every LoRA view by a copy the model owns: the views LoraAdapter.Apply makes may be
    /// windows of the adapter's mapped file, which the host may free (temper_adapter_free) at any time.
    /// A DoRA view keeps (a copy of) its magnitude.
    /// </summary>
    public void OwnLoraCopies()
    {
        foreach (var p in AllProjections)
            if (p.Lora is { } l)
                p.Lora = new LoraView(Backend.FromHost(Copy(l.A)), Backend.FromHost(Copy(l.B)), l.Scale,
                    l.Magnitude is { } m ? Backend.FromHost(Copy(m)) : null);
    }

    private Tensor Copy(Tensor t)
    {
        var host = t.IsHost ? t : Backend.ToHost(t);
        return Tensor.FromFloats(host.Shape, host.ToFloatArray(), host.Name);
    }

    public void Dispose()
    {
        if (Disposed) return;
        Disposed = true;
        InvalidateGraph();
        Cuda?.Dispose();
        Lm.Dispose();
    }
}

/// <summary>
/// What a temper_adapter handle holds: a PEFT folder read into memory, one of four kinds: LoRA (or DoRA) A/B views
/// (with modules_to_save copies of embed_tokens / lm_head when the folder has them), (IA)^3 vectors, a prompt-tuning
/// adapter's virtual token embeddings [P,C], or a prefix-tuning adapter's per-layer key/value rows [P,Hkv*D] (host
/// tensors, checked against a model when applied).
/// </summary>
internal sealed class NativeAdapter : IDisposable
{
    private NativeAdapter(string dir) => Directory = dir;

    public string Directory { get; }
    public LoraAdapter? Lora { get; private init; }
    public Ia3Adapter? Ia3 { get; private init; }
    public PromptTuningConfig? PromptConfig { get; private init; }
    public Tensor? Prompt { get; private init; }          // [P, C] f32, host
    public PrefixKv? Prefix { get; private init; }        // per layer [P, Hkv*D] f32, host

    /// <summary>"LoRA", "DoRA", "IA3", "prompt-tuning" or "prefix-tuning", for messages.</summary>
    public string Kind => Prompt != null ? "prompt-tuning" : Prefix != null ? "prefix-tuning" : Ia3 != null ? "IA3" : Lora!.Config.UseDora ? "DoRA" : "LoRA";

    /// <summary>Reads the folder by its peft_type: LORA (use_dora and modules_to_save too), IA3, PROMPT_TUNING or PREFIX_TUNING;
    /// anything else is refused.</summary>
    public static NativeAdapter Load(string dir)
    {
        string type = PeftConfigFile.TypeOf(dir);
        if (type == PeftConfigFile.PromptTuning)
        {
            var (cfg, host) = PromptTuningAdapter.Load(dir, hiddenSize: null);
            return new NativeAdapter(dir) { PromptConfig = cfg, Prompt = host };
        }
        if (type == PeftConfigFile.PrefixTuning) return new NativeAdapter(dir) { Prefix = PrefixTuningAdapter.Load(dir, model: null) };
        if (type == PeftConfigFile.Ia3) return new NativeAdapter(dir) { Ia3 = Ia3Adapter.Load(dir) };
        return new NativeAdapter(dir) { Lora = LoraAdapter.Load(dir, allowDora: true, embeddingCopies: true) };
    }

    /// <summary>Attaches the adapter to the model unmerged (every adapter applied before is removed first); the model
    /// holds copies, so this handle may be freed afterwards. On failure the model is left without adapter.</summary>
    public void Apply(NativeModel m)
    {
        var lm = m.Lm;
        m.RemoveAdapters();
        try
        {
            if (Lora != null)
            {
                // DoRA runs unmerged too: each view carries its magnitude, and the forward rescales by m / ||W + s B A||.
                // modules_to_save copies (new tensors, not views of the file) stand in for the embedding / LM head until removed.
                m.TrackCopies(() => Lora.Apply(lm.Weights, m.Backend, dora: Lora.Config.UseDora));
                m.OwnLoraCopies();
            }
            else if (Ia3 != null) Ia3.Apply(lm.Weights, m.Backend);   // as LanguageModel.AttachAdapter's IA3 path; the vectors are copies
            else if (Prompt != null)
            {
                if (Prompt.Shape[1] != lm.Config.HiddenSize)
                    throw new TemperException($"{Directory}: the prompt-tuning adapter's token_dim {Prompt.Shape[1]} does not match the model's hidden size {lm.Config.HiddenSize}");
                lm.AttachPrompt(Tensor.FromFloats(Prompt.Shape, Prompt.ToFloatArray(), PromptTuningAdapter.TensorName));
            }
            else
            {
                var p = Prefix!;
                int width = lm.Config.NumKvHeads * lm.Config.HeadDim;
                if (p.Keys.Length != lm.Config.NumLayers || p.Keys[0].Shape[1] != width)
                    throw new TemperException($"{Directory}: the prefix-tuning adapter has {p.Keys.Length} layers of token_dim {p.Keys[0].Shape[1]}; the model has {lm.Config.NumLayers} layers of key width {width} (num_key_value_heads {lm.Config.NumKvHeads} x head_dim {lm.Config.HeadDim})");
                static Tensor Copy(Tensor t) => Tensor.FromFloats(t.Shape, t.ToFloatArray(), t.Name);
                lm.AttachPrefix(new PrefixKv(p.Keys.Select(Copy).ToArray(), p.Values.Select(Copy).ToArray()));
            }
        }
        catch
        {
            m.RemoveAdapters();
            throw;
        }
    }

    public void Dispose()
    {
        Lora?.Dispose();
        Prompt?.Dispose();
        Prefix?.Dispose();
    }
}
