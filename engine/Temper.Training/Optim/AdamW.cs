// AdamW with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW's update): per parameter
// m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p).
// State (m, v) is f32 beside each trained tensor; the update itself is the backend's AdamWSteps op (all
// tensors at once: one launch on the CUDA C++ route, one AdamWStep per tensor elsewhere). LoRA+ (Hayou et al.;
// PEFT's create_loraplus_optimizer) gives the LoRA B matrices and every 1-D parameter (DoRA's magnitudes) the
// learning rate times LoraPlusRatio, the rest the learning rate: one AdamWSteps call per group.
using Temper.Core;

namespace Temper.Training.Optim;

/// <param name="LoraPlusRatio">LoRA+: the learning-rate multiplier of lora_B and 1-D parameters (1 = plain AdamW).</param>
public sealed record AdamWOptions(float Beta1 = 0.9f, float Beta2 = 0.999f, float Eps = 1e-8f, float WeightDecay = 0f, float LoraPlusRatio = 1f);

public sealed class AdamW : IDisposable
{
    private readonly IBackend _backend;
    private readonly TrainableParameters _params;
    private readonly Tensor[] _m, _v;
    private readonly AdamWTensors[] _tensors, _plus;

    public AdamW(TrainableParameters ps, IBackend be, AdamWOptions options)
    {
        if (!(options.LoraPlusRatio > 0)) throw new TemperException($"--loraplus-lr-ratio must be > 0 (got {options.LoraPlusRatio})"); // before any state is allocated
        _backend = be;
        _params = ps;
        Options = options;
        _m = ps.All.Select(p => be.Zeros(p.Value.Shape)).ToArray();
        _v = ps.All.Select(p => be.Zeros(p.Value.Shape)).ToArray();
        var all = ps.All.Select((p, i) => (Plus: options.LoraPlusRatio != 1 && IsLoraPlusB(p), Tensors: new AdamWTensors(p.Value, p.Grad, _m[i], _v[i]))).ToArray();
        _tensors = all.Where(x => !x.Plus).Select(x => x.Tensors).ToArray();
        _plus = all.Where(x => x.Plus).Select(x => x.Tensors).ToArray();
    }

    /// <summary>PEFT's LoRA+ group B: the lora_B matrices and every 1-D parameter.</summary>
    public static bool IsLoraPlusB(TrainableParameter p) => p.Name.Contains(".lora_B.", StringComparison.Ordinal) || p.Value.Shape.Rank == 1;

    public AdamWOptions Options { get; }
    /// <summary>Updates taken so far (bias correction uses Step + 1 for the next one).</summary>
    public int Step { get; private set; }

    public void Update(float lr)
    {
        Step++;
        var o = Options;
        var args = new AdamWParams(lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, Step);
        if (_tensors.Length > 0) _backend.AdamWSteps(_tensors, args);
        if (_plus.Length > 0) _backend.AdamWSteps(_plus, args with { Lr = lr * o.LoraPlusRatio });
    }

    /// <summary>The optimizer state by name, for checkpoints: name.exp_avg, name.exp_avg_sq.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> State()
    {
        for (int i = 0; i < _params.All.Count; i++)
        {
            yield return new(_params.All[i].Name + ".exp_avg", _m[i]);
            yield return new(_params.All[i].Name + ".exp_avg_sq", _v[i]);
        }
    }

    /// <summary>Restores state written by <see cref="State"/> and the step count.</summary>
    public void Load(Func<string, Tensor?> get, int step, string origin)
    {
        foreach (var (name, t) in State())
        {
            var src = get(name) ?? throw new TemperException($"{origin}: optimizer state '{name}' missing");
            if (src.Shape != t.Shape) throw new TemperException($"{origin}: optimizer state '{name}' has shape {src.Shape}, expected {t.Shape}");
            _backend.CopyInto(src, t);
        }
        Step = step;
    }

    public void Dispose()
    {
        foreach (var t in _m) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
