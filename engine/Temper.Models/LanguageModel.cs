// A model folder opened for use: config, weights on a backend, tokenizer and chat template (when the
// folder has them), optionally a PEFT adapter applied unmerged or merged. The entry point the CLI,
// the trainers and the native library share.
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Models;

public sealed class LanguageModel : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    private LanguageModel(string dir, ModelConfig cfg, ModelWeights weights, IBackend be)
    {
        Directory = dir;
        Config = cfg;
        Weights = weights;
        Decoder = new Decoder(cfg, weights, be);
        _owned.Add(weights);
    }

    public string Directory { get; }
    public ModelConfig Config { get; }
    public ModelWeights Weights { get; }
    public Decoder Decoder { get; }
    public HfTokenizer? Tokenizer { get; private set; }
    /// <summary>The folder's generation_config.json (stop ids, sampling defaults), null when it has none.</summary>
    public GenerationConfig? Generation { get; private set; }
    /// <summary>The chat template prompts are rendered with: the folder's, or one that replaces it (vLLM's --chat-template).</summary>
    public ChatTemplate? Template { get; set; }

    public HfTokenizer RequireTokenizer() => Tokenizer ?? throw new TemperException($"{Directory}: no tokenizer.json");
    public ChatTemplate RequireTemplate() => Template ?? throw new TemperException($"{Directory}: no chat template (chat_template.jinja or tokenizer_config.json 'chat_template')");

    /// <summary>Opens a model folder; qlora NF4-quantises the layers' projections (see <see cref="ModelWeights.Load"/>).
    /// A bitsandbytes 4-bit folder stays in NF4 unless dequantize (or mergeAdapter) asks for dense weights.</summary>
    public static LanguageModel Load(string dir, IBackend be, string? adapterDir = null, bool mergeAdapter = false, DType? weightDType = null, bool qlora = false,
        bool dequantize = false)
    {
        ModelFolderFiles.RequireFolder(dir);
        if (qlora && mergeAdapter) throw new TemperException("an adapter cannot be merged into an NF4 (QLoRA) base; apply it unmerged or load the model without --qlora");
        var cfg = ModelConfig.Load(dir);
        var weights = ModelWeights.Load(dir, cfg, be, weightDType, nf4: qlora, dequantize: dequantize || mergeAdapter);
        var m = new LanguageModel(dir, cfg, weights, be);
        try
        {
            if (File.Exists(Path.Combine(dir, "tokenizer.json"))) m.Tokenizer = HfTokenizer.Load(dir);
            m.Template = ChatTemplate.LoadFromModelDir(dir);
            m.Generation = GenerationConfig.Load(dir);
            if (adapterDir != null) m.AttachAdapter(adapterDir, mergeAdapter);
        }
        catch
        {
            m.Dispose();
            throw;
        }
        return m;
    }

    /// <summary>A model with seeded random weights shaped by DIR/config.json, with DIR's tokenizer and template (for pre-training from scratch).</summary>
    public static LanguageModel CreateRandom(string dir, IBackend be, int seed)
    {
        ModelFolderFiles.RequireFolder(dir);
        var cfg = ModelConfig.Load(dir);
        var m = new LanguageModel(dir, cfg, ModelWeights.Random(cfg, be, seed), be);
        try
        {
            if (File.Exists(Path.Combine(dir, "tokenizer.json"))) m.Tokenizer = HfTokenizer.Load(dir);
            m.Template = ChatTemplate.LoadFromModelDir(dir);
        }
        catch
        {
            m.Dispose();
            throw;
        }
        return m;
    }

    /// <summary>Applies a PEFT adapter folder: unmerged (LoRA or IA3 views) or merged into the weights (always, for DoRA,
    /// unless <paramref name="doraUnmerged"/>: training attaches a DoRA adapter's views with their magnitudes). modules_to_save
    /// copies of the embedding / LM head replace them (f32 when <paramref name="trainable"/>: training continues them).</summary>
    public void AttachAdapter(string adapterDir, bool merge, bool doraUnmerged = false, bool trainable = false)
    {
        string type = PeftConfigFile.TypeOf(adapterDir);
        if (PeftConfigFile.IsVirtualTokens(type))
        {
            string kind = type == PeftConfigFile.PromptTuning ? "prompt" : "prefix";
            if (merge) throw new TemperException($"{adapterDir}: a {kind}-tuning adapter adds virtual tokens before the input; it has no weights to merge (apply it without merging)");
            if (type == PeftConfigFile.PromptTuning) AttachPrompt(adapterDir);
            else AttachPrefix(PrefixTuningAdapter.Load(adapterDir, Config));
            return;
        }
        if (type == PeftConfigFile.Ia3)
        {
            var ia3 = Ia3Adapter.Load(adapterDir);
            if (merge) ia3.Merge(Weights, Decoder.Backend);
            else ia3.Apply(Weights, Decoder.Backend);
            return;
        }
        var adapter = LoraAdapter.Load(adapterDir, allowDora: true, embeddingCopies: true);
        _owned.Add(adapter);
        if (merge || (adapter.Config.UseDora && !doraUnmerged)) adapter.Merge(Weights, Decoder.Backend);
        else adapter.Apply(Weights, Decoder.Backend, dora: doraUnmerged, trainable: trainable);
    }

    /// <summary>The prompt-tuning adapter in DIR, attached: its virtual tokens go before every sequence from now on.</summary>
    public PromptTuningConfig AttachPrompt(string adapterDir)
    {
        if (Weights.VirtualTokenCount > 0) throw new TemperException($"{adapterDir}: the model already carries a prompt- or prefix-tuning adapter; attach one at a time");
        var (cfg, host) = PromptTuningAdapter.Load(adapterDir, Config.HiddenSize);
        AttachPrompt(host);
        return cfg;
    }

    /// <summary>Virtual token embeddings [P,C] (an f32 host tensor, copied to the backend) attached as a prompt-tuning adapter the model owns.</summary>
    public void AttachPrompt(Tensor hostEmbeddings)
    {
        if (Weights.VirtualTokenCount > 0) throw new TemperException("the model already carries a prompt- or prefix-tuning adapter; attach one at a time");
        if (hostEmbeddings.DType != DType.F32 || hostEmbeddings.Shape.Rank != 2 || hostEmbeddings.Shape[1] != Config.HiddenSize || hostEmbeddings.Shape[0] < 1)
            throw new TemperException($"prompt embeddings {hostEmbeddings.Shape} {hostEmbeddings.DType} must be f32 [P,{Config.HiddenSize}] with P >= 1");
        var device = Decoder.Backend.FromHost(hostEmbeddings);
        if (!ReferenceEquals(device, hostEmbeddings)) hostEmbeddings.Dispose();
        _owned.Add(device);
        Weights.PromptEmbeddings = device;
    }

    /// <summary>A prefix-tuning adapter's rows (f32 host tensors, copied to the backend) attached; the model owns them.</summary>
    public void AttachPrefix(PrefixKv host)
    {
        if (Weights.VirtualTokenCount > 0) throw new TemperException("the model already carries a prompt- or prefix-tuning adapter; attach one at a time");
        int width = Config.NumKvHeads * Config.HeadDim;
        if (host.Keys.Length != Config.NumLayers || host.Values.Length != Config.NumLayers || host.Keys.Concat(host.Values).Any(t => t.Shape.Rank != 2 || t.Shape[0] != host.Tokens || t.Shape[1] != width || t.DType != DType.F32))
            throw new TemperException($"prefix rows must be f32 [P,{width}] for each of the {Config.NumLayers} layers' keys and values");
        var device = host.Upload(Decoder.Backend);
        _owned.Add(device);
        Weights.Prefix = device;
    }

    /// <summary>Detaches and disposes the attached prompt- or prefix-tuning adapter (no-op without one): the model reads
    /// its input as it is again. For a host that swaps adapters on one loaded model (libtemper's temper_adapter_remove).</summary>
    public void DetachVirtualTokens()
    {
        if (Weights.PromptEmbeddings is { } prompt)
        {
            Weights.PromptEmbeddings = null;
            _owned.Remove(prompt);
            prompt.Dispose();
        }
        if (Weights.Prefix is { } prefix)
        {
            Weights.Prefix = null;
            _owned.Remove(prefix);
            prefix.Dispose();
        }
    }

    /// <summary>EOS ids for generation: config.json's and generation_config.json's, plus the tokenizer's EOS token.</summary>
    public IReadOnlyList<int> EosIds()
    {
        var ids = new List<int>(Config.EosTokenIds);
        foreach (int g in Generation?.EosTokenIds ?? [])
            if (!ids.Contains(g)) ids.Add(g);
        if (Tokenizer?.EosId is int e && !ids.Contains(e)) ids.Add(e);
        return ids;
    }

    /// <summary>Logits [B*T, V] for equal-length rows of ids [B,T] with an optional 0/1 mask [B,T].</summary>
    public Tensor Logits(int[] ids, int batch, int[]? mask = null)
    {
        int t = ids.Length / batch;
        var pos = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++) pos[i] = i % t;
        using var cache = new KvCache(Config, Decoder.Backend, batch, t + Weights.VirtualTokenCount);
        return Decoder.Forward(ids, pos, mask ?? [], batch, cache, allPositions: true);
    }

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
