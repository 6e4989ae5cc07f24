// The parameters a run trains and their gradient buffers: every base weight (full fine-tuning) or the
// LoRA A/B of each targeted projection (and DoRA's magnitude) with the modules_to_save copies of the embedding and LM
// head attached in place of the base's (model.embed_tokens.weight, lm_head.weight), or a prompt-tuning adapter's virtual token embeddings. GradOf(param) is what DecoderBackprop calls; frozen tensors
// answer null. Names are the HF/PEFT names (model.layers.0.self_attn.q_proj.weight,
// model.layers.0.self_attn.q_proj.lora_A.weight, ...q_proj.lora_magnitude_vector, ...k_proj.ia3_l for an (IA)^3 vector [Out] or [In]) used in checkpoints and gradient fixtures.
using Temper.Core;
using Temper.Models;

namespace Temper.Training;

public sealed class TrainableParameter(string name, Tensor value, Tensor grad)
{
    public string Name { get; } = name;
    public Tensor Value { get; } = value;
    public Tensor Grad { get; } = grad;
}

public sealed class TrainableParameters : IDisposable
{
    private readonly Dictionary<Tensor, TrainableParameter> _byTensor = new(ReferenceEqualityComparer.Instance);
    private readonly IBackend _backend;

    /// <summary>The backend whose memory holds the values and gradients.</summary>
    public IBackend Backend => _backend;

    private TrainableParameters(IBackend be, IEnumerable<(string Name, Tensor Value)> list)
    {
        _backend = be;
        foreach (var (name, value) in list)
        {
            if (_byTensor.ContainsKey(value)) continue; // tied embeddings: one parameter, one gradient
            if (value.DType != DType.F32) throw new TemperException($"parameter {name} is {value.DType}; trained parameters must be f32");
            _byTensor[value] = new TrainableParameter(name, value, be.Zeros(value.Shape));
        }
        All = _byTensor.Values.ToArray();
    }

    public IReadOnlyList<TrainableParameter> All { get; }

    /// <summary>Every base weight of the decoder (for full fine-tuning of small models), plus <paramref name="extra"/> (a reward head).</summary>
    public static TrainableParameters Full(ModelWeights w, IBackend be, IEnumerable<(string Name, Tensor Value)>? extra = null)
    {
        var list = new List<(string, Tensor)> { ("model.embed_tokens.weight", w.Embed) };
        for (int i = 0; i < w.Layers.Length; i++)
        {
            var l = w.Layers[i];
            foreach (var (name, norm) in l.Norms) list.Add(($"model.layers.{i}.{name}", norm));
            foreach (var p in l.Projections)
            {
                list.Add((p.Name + ".weight", p.Weight));
                if (p.Bias != null) list.Add((p.Name + ".bias", p.Bias));
            }
        }
        list.Add(("model.norm.weight", w.FinalNorm));
        list.Add(("lm_head.weight", w.LmHead.Weight));
        return new TrainableParameters(be, list.Concat(extra ?? []));
    }

    /// <summary>The LoRA A and B (and DoRA magnitude) or the IA3 vector of every projection that carries one, the modules_to_save copies of the
    /// embedding and LM head attached (ModulesToSave), a prompt-tuning adapter's prompt_embeddings [P,C] when the weights
    /// carry one, plus <paramref name="extra"/> (fully trained modules such as a reward head).</summary>
    public static TrainableParameters Lora(ModelWeights w, IBackend be, IEnumerable<(string Name, Tensor Value)>? extra = null)
    {
        var list = new List<(string, Tensor)>();
        foreach (var p in w.Projections.Append(w.LmHead))
            if (p.Lora is { } l)
            {
                list.Add((p.Name + ".lora_A.weight", l.A));
                list.Add((p.Name + ".lora_B.weight", l.B));
                if (l.Magnitude != null) list.Add((p.Name + ".lora_magnitude_vector", l.Magnitude));
            }
            else if (p.Ia3 is { } ia3) list.Add((p.Name + Ia3Adapter.TensorSuffix, ia3.Vector));
        if (w.PromptEmbeddings is { } prompt) list.Add((PromptTuningAdapter.TensorName, prompt));
        if (w.Prefix is { } prefix) list.AddRange(prefix.Named());
        if (list.Count == 0) throw new TemperException("no LoRA modules to train: no projection matches the target modules");
        if (w.EmbedReplacement is { } embed) list.Add((ModulesToSave.EmbedModule + ".weight", embed));
        if (w.LmHead.Replacement is { } head) list.Add((ModulesToSave.HeadModule + ".weight", head));
        return new TrainableParameters(be, list.Concat(extra ?? []));
    }

    public Tensor? GradOf(Tensor param) => _byTensor.TryGetValue(param, out var p) ? p.Grad : null;

    public void ZeroGrads()
    {
        foreach (var p in All) _backend.Clear(p.Grad); // not Scale by 0, which keeps a skipped step's NaN for every later step
    }

    /// <summary>Global L2 norm of all gradients.</summary>
    public double GradNorm() => Math.Sqrt(_backend.SumOfSquares(All.Select(p => p.Grad).ToArray()));

    public long Count => All.Sum(p => p.Value.Elements);

    public void Dispose()
    {
        foreach (var p in All) p.Grad.Dispose();
    }
}
