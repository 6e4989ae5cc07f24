// The reference policy of DPO/KTO/GRPO without a second copy of the base: the same weights with the
// trained LoRA (or (IA)^3 vectors, or prompt-tuning adapter, or modules_to_save copies of the embedding / LM head) switched off, or with a frozen adapter swapped in for the duration of a pass; or, when
// asked, a separate model folder.
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;

namespace Temper.Training.Preference;

public sealed class ReferenceModel : IDisposable
{
    private readonly ModelWeights _weights;
    private readonly Dictionary<Projection, LoraView?> _views;
    private readonly LanguageModel? _separate;
    private readonly LoraAdapter? _frozen;
    private readonly Tensor? _prompt;
    private readonly PrefixKv? _prefix;
    private Tensor? _embed, _head; // the reference's modules_to_save copies (a frozen adapter's), null = the base's own

    private ReferenceModel(ModelWeights weights, Dictionary<Projection, LoraView?> views, LanguageModel? separate, LoraAdapter? frozen, string description, Tensor? prompt = null, PrefixKv? prefix = null)
    {
        _weights = weights;
        _views = views;
        _separate = separate;
        _frozen = frozen;
        _prompt = prompt;
        _prefix = prefix;
        Description = description;
    }

    public string Description { get; }

    /// <summary>The base model: the policy's weights with every LoRA view off.</summary>
    public static ReferenceModel AdapterOff(ModelWeights w) =>
        new(w, w.Projections.Append(w.LmHead).ToDictionary(p => p, _ => (LoraView?)null), null, null, "base model (adapter off)");

    /// <summary>The base plus a frozen copy of the adapter in DIR (e.g. the SFT adapter DPO starts from).</summary>
    public static ReferenceModel FrozenAdapter(ModelWeights w, string adapterDir, IBackend be, ModelConfig config)
    {
        var views = w.Projections.Append(w.LmHead).ToDictionary(p => p, _ => (LoraView?)null);
        string type = PeftConfigFile.TypeOf(adapterDir);
        if (type == PeftConfigFile.PromptTuning)
        {
            var (_, host) = PromptTuningAdapter.Load(adapterDir, w.Embed.Shape[1]);
            return new ReferenceModel(w, views, null, null, $"base + frozen prompt-tuning adapter {adapterDir}", be.FromHost(host));
        }
        if (type == PeftConfigFile.PrefixTuning)
        {
            return new ReferenceModel(w, views, null, null, $"base + frozen prefix-tuning adapter {adapterDir}", prefix: PrefixTuningAdapter.Load(adapterDir, config).Upload(be));
        }
        var adapter = LoraAdapter.Load(adapterDir, embeddingCopies: true);
        foreach (var (name, (a, b)) in adapter.Modules)
        {
            var p = views.Keys.FirstOrDefault(x => x.Name == name) ?? throw new TemperException($"{adapterDir}: adapter module '{name}' does not exist in the model");
            if (a.Shape[1] != p.In || b.Shape[0] != p.Out) throw new TemperException($"{adapterDir}: adapter module '{name}' has A {a.Shape} and B {b.Shape}, the model's weight is [{p.Out},{p.In}]");
            views[p] = new LoraView(be.FromHost(Tensor.FromFloats(a.Shape, a.ToFloatArray())), be.FromHost(Tensor.FromFloats(b.Shape, b.ToFloatArray())), adapter.Config.ScaleFor(name));
        }
        var (embed, head) = adapter.LanguageModelCopies;
        var reference = new ReferenceModel(w, views, null, adapter, $"base + frozen adapter {adapterDir}");
        if (embed != null || head != null)
        {
            // Attached to the weights only long enough to check and convert them, then held for the reference passes.
            var (policyEmbed, policyHead) = (w.EmbedReplacement, w.LmHead.Replacement);
            (w.EmbedReplacement, w.LmHead.Replacement) = (null, null);
            try
            {
                ModulesToSave.Attach(w, be, embed, head, f32: false, Path.Combine(adapterDir, "adapter_model.safetensors"));
                (reference._embed, reference._head) = (w.EmbedReplacement, w.LmHead.Replacement);
            }
            finally
            {
                (w.EmbedReplacement, w.LmHead.Replacement) = (policyEmbed, policyHead);
            }
        }
        return reference;
    }

    /// <summary>A separate reference model, which must share the policy's tokenizer (same ids for the same text).</summary>
    public static ReferenceModel Separate(LanguageModel model, LanguageModel policy)
    {
        string Tok(LanguageModel m) => File.Exists(Path.Combine(m.Directory, "tokenizer.json")) ? File.ReadAllText(Path.Combine(m.Directory, "tokenizer.json")) : "";
        if (model.Config.VocabSize != policy.Config.VocabSize || Tok(model) != Tok(policy))
        {
            model.Dispose();
            throw new TemperException($"{model.Directory}: the reference model's tokenizer differs from the policy's ({policy.Directory}); log-probs would not be comparable");
        }
        return new(model.Weights, [], model, null, $"separate model {model.Directory}");
    }

    /// <summary>Summed completion log-probs under the reference (no gradients).</summary>
    public double[] Logps(DecoderBackprop policy, IReadOnlyList<SftExample> examples, int padId)
    {
        if (_separate != null) return SequenceLogps.Compute(new DecoderBackprop(_separate.Decoder), examples, padId).Sums;
        double[] sums = [];
        WithReference(policy, () => sums = SequenceLogps.Compute(policy, examples, padId).Sums);
        return sums;
    }

    /// <summary>Runs <paramref name="pass"/> with the policy's weights turned into the reference's (adapter views swapped).</summary>
    public void WithReference(DecoderBackprop policy, Action pass)
    {
        if (_separate != null) throw new InvalidOperationException("a separate reference model has its own weights; call Logps");
        var saved = _views.Keys.ToDictionary(p => p, p => p.Lora);
        var ia3 = _views.Keys.ToDictionary(p => p, p => p.Ia3); // a trained (IA)^3 vector is off in the reference (base = reference)
        var (prompt, prefix) = (_weights.PromptEmbeddings, _weights.Prefix); // a trained prompt or prefix is off in the reference too (or the frozen one is on)
        var (embed, head) = (_weights.EmbedReplacement, _weights.LmHead.Replacement); // so are trained copies of the embedding and head
        try
        {
            foreach (var (p, v) in _views) (p.Lora, p.Ia3) = (v, null);
            _weights.PromptEmbeddings = _prompt;
            _weights.Prefix = _prefix;
            (_weights.EmbedReplacement, _weights.LmHead.Replacement) = (_embed, _head);
            pass();
        }
        finally
        {
            foreach (var (p, v) in saved) (p.Lora, p.Ia3) = (v, ia3[p]);
            _weights.PromptEmbeddings = prompt;
            _weights.Prefix = prefix;
            (_weights.EmbedReplacement, _weights.LmHead.Replacement) = (embed, head);
        }
    }

    public void Dispose()
    {
        _separate?.Dispose();
        _frozen?.Dispose();
        _prompt?.Dispose();
        _prefix?.Dispose();
        _embed?.Dispose();
        _head?.Dispose();
    }
}
