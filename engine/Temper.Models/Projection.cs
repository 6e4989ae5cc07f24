// One linear projection of the decoder (q/k/v/o, gate/up/down, lm_head): weight [Out,In] (f32, bf16,
// or NF4 for a QLoRA base, whose Weight is then the packed codes and Nf4 the whole quantised weight),
// optional bias [Out], and an optional unmerged LoRA view (A [r,In], B [Out,r], scale) over it. lm_head's weight
// may be stood in for by a full copy (PEFT modules_to_save; Replacement).
// Over an NF4 base the LoRA branch is added with the plain ops: xa = x A^T, y += scale (xa B^T).
// A DoRA view (PEFT use_dora) adds a magnitude m [Out]: y = m / ||W + s B A||_row * (x W^T + s (x A^T) B^T) + bias,
// the norm [Out] recomputed from the current A, B each forward and treated as a constant (DoRA §4.3; an NF4
// base is dequantised for it, as PEFT does).
// An (IA)^3 view (PEFT IA3, Ia3Adapter) scales the output, y = (x W^T + b) * l with l [Out], or, feedforward, the input,
// y = (x * l) W^T + b with l [In]; both with the backend's DoRA column-scaling op (norm = ones).
using Temper.Core;
using Temper.Core.Quantization;

namespace Temper.Models;

public sealed class LoraView(Tensor a, Tensor b, float scale, Tensor? magnitude = null)
{
    public Tensor A { get; } = a;       // [r, In]
    public Tensor B { get; } = b;       // [Out, r]
    public float Scale { get; } = scale;
    /// <summary>DoRA's magnitude m [Out] (f32), or null for plain LoRA.</summary>
    public Tensor? Magnitude { get; } = magnitude;

    /// <summary>DoRA: the norm [Out] the inference forward last computed (a decode step would otherwise pay M K r
    /// for it every token). Training passes always recompute it; whoever changes A or B calls ParametersChanged.</summary>
    internal Tensor? NormCache { get; set; }

    /// <summary>A, B or the magnitude changed (an optimizer step, a checkpoint load): drops the cached DoRA norm.</summary>
    public void ParametersChanged()
    {
        NormCache?.Dispose();
        NormCache = null;
    }
    public int Rank => A.Shape[0];
}

public sealed class Projection(string name, Tensor weight, Tensor? bias)
{
    /// <summary>A projection over an NF4-quantised (frozen) base weight.</summary>
    public Projection(string name, Nf4Weight weight, Tensor? bias) : this(name, weight.Codes, bias) => Nf4 = weight;

    /// <summary>The HF module name, e.g. model.layers.0.self_attn.q_proj.</summary>
    public string Name { get; } = name;
    private Tensor _weight = weight;

    /// <summary>The weight the projection computes with: the <see cref="Replacement"/> while one is set, else the base weight.</summary>
    public Tensor Weight { get => Replacement ?? _weight; internal set => _weight = value; }
    /// <summary>The model's own weight, whatever stands in for it.</summary>
    public Tensor BaseWeight => _weight;
    /// <summary>A full copy [Out,In] that stands in for the weight while set (PEFT modules_to_save on lm_head, see ModulesToSave);
    /// a reference pass clears it for its duration. The model's weights dispose the one attached when they go.</summary>
    public Tensor? Replacement { get; set; }
    public Tensor? Bias { get; private set; } = bias;
    /// <summary>The quantised base weight (QLoRA), or null for an f32/bf16 one.</summary>
    public Nf4Weight? Nf4 { get; }
    public LoraView? Lora { get; set; }
    /// <summary>An unmerged (IA)^3 vector over this projection (never beside a LoRA view), or null.</summary>
    public Ia3View? Ia3 { get; set; }
    public int In => Weight.Shape[1];
    public int Out => Weight.Shape[0];

    /// <summary>The weight a fused LM-head op (cross-entropy, distillation) computes with: those ops take a plain f32/bf16
    /// weight only, so a LoRA, DoRA or (IA)^3 view, a bias or an NF4 base on this projection is refused rather than ignored.</summary>
    public Tensor FusedHeadWeight()
    {
        string? what = Lora != null ? "a LoRA" : Ia3 != null ? "an (IA)^3 vector" : Bias != null ? "a bias" : Nf4 != null ? "an NF4 (4-bit) base" : null;
        if (what != null) throw new TemperException($"{Name}: the fused LM-head loss takes a plain f32/bf16 weight; {what} on it is not supported");
        return Weight;
    }

    /// <summary>The weight's values as f32 [Out*In] (a host copy, widened from bf16); NF4 weights are refused.</summary>
    public float[] WeightValues(IBackend be)
    {
        if (Nf4 != null) throw new TemperException($"{Name}: an NF4 (QLoRA) base weight has no plain values to read; load the model without --qlora");
        if (Weight.IsHost) return Weight.ToFloatArray();
        using var host = be.ToHost(Weight);
        return host.ToFloatArray();
    }

    /// <summary>Replaces the weight by these values [Out*In], kept in the weight's dtype (f32 or bf16, rounded), on the backend.</summary>
    public void ReplaceWeight(IBackend be, float[] values)
    {
        if (Nf4 != null) throw new TemperException($"{Name}: an NF4 (QLoRA) base weight cannot be rewritten; load the model without --qlora");
        Weight = be.FromHost(Tensor.FromFloatsAs(Weight.Shape, values, Weight.DType == DType.BF16 ? DType.BF16 : DType.F32, Name));
    }

    /// <summary>The bias's values as f32 [Out] (a host copy).</summary>
    public float[] BiasValues(IBackend be)
    {
        var b = Bias ?? throw new InvalidOperationException($"{Name}: no bias");
        if (b.IsHost) return b.ToFloatArray();
        using var host = be.ToHost(b);
        return host.ToFloatArray();
    }

    /// <summary>Replaces the bias by these values [Out] (f32, on the backend).</summary>
    public void ReplaceBias(IBackend be, float[] values)
    {
        if (Bias == null || values.Length != Out) throw new InvalidOperationException($"{Name}: no bias of {values.Length} values to replace");
        Bias = be.FromHost(Tensor.FromFloats(new Shape(Out), values, Name + ".bias"));
    }

    /// <summary>y[N,Out] = x[N,In] W^T + b (+ LoRA, or scaled by IA3); xa [N,r] (optional, LoRA only) keeps x A^T for backward.</summary>
    public void Forward(IBackend be, Tensor x, Tensor y, Tensor? xa = null)
    {
        if (Ia3 is { } ia3) ForwardIa3(be, ia3, x, y, null);
        else if (Lora is { Magnitude: not null } dora)
        {
            if (dora.NormCache == null)
            {
                var norm = be.Uninitialized(new Shape(Out));
                DoraNorm(be, norm);
                dora.NormCache = norm;
            }
            ForwardDora(be, x, y, xa, dora.NormCache, y);
        }
        else if (Nf4 is { } q)
        {
            be.Nf4Linear(x, q, Bias, y);
            if (Lora is { } lora) AddLora(be, lora, x, y, xa);
        }
        else if (Lora is { } l) be.LoraLinear(x, Weight, Bias, l.A, l.B, l.Scale, y, xa);
        else be.Linear(x, Weight, Bias, y);
    }

    /// <summary>DoRA: norm[Out] = ||W + s B A||_row of the current A and B (an NF4 base dequantised first).</summary>
    public void DoraNorm(IBackend be, Tensor norm)
    {
        var l = Lora ?? throw new InvalidOperationException($"{Name}: no LoRA view");
        if (Nf4 is not { } q)
        {
            be.DoraNorm(Weight, l.A, l.B, l.Scale, norm);
            return;
        }
        using var dense = be.Uninitialized(new Shape(Out, In));
        be.Nf4Dequantize(q, dense);
        be.DoraNorm(dense, l.A, l.B, l.Scale, norm);
    }

    /// <summary>
    /// DoRA forward with the norm given: z[N,Out] = x W^T + s (x A^T) B^T (no bias; kept for the magnitude's
    /// gradient), then y = m / norm * z + bias (without the bias when not addBias). z may be y (nothing kept).
    /// </summary>
    public void ForwardDora(IBackend be, Tensor x, Tensor y, Tensor? xa, Tensor norm, Tensor z, bool addBias = true)
    {
        var l = Lora ?? throw new InvalidOperationException($"{Name}: no LoRA view");
        var m = l.Magnitude ?? throw new InvalidOperationException($"{Name}: not a DoRA view");
        if (Nf4 is { } q)
        {
            be.Nf4Linear(x, q, null, z);
            AddLora(be, l, x, z, xa);
        }
        else be.LoraLinear(x, Weight, null, l.A, l.B, l.Scale, z, xa);
        be.DoraScale(z, m, norm, addBias ? Bias : null, y);
    }

    /// <summary>IA3: y = base(x) * l (z [N,Out] then keeps base(x), or is y), or feedforward y = base(x * l) (z, then [N,In], keeps x * l, or is null).</summary>
    public void ForwardIa3(IBackend be, Ia3View ia3, Tensor x, Tensor y, Tensor? z)
    {
        if (!ia3.Feedforward)
        {
            ForwardBase(be, x, z ?? y);
            be.DoraScale(z ?? y, ia3.Vector, ia3.Ones, null, y);
            return;
        }
        using var own = z == null ? be.Uninitialized(x.Shape) : null;
        var scaled = z ?? own!;
        be.DoraScale(x, ia3.Vector, ia3.Ones, null, scaled);
        ForwardBase(be, scaled, y);
    }

    /// <summary>y = x W^T + bias, the base weight alone (NF4 or dense), without the LoRA branch.</summary>
    public void ForwardBase(IBackend be, Tensor x, Tensor y)
    {
        if (Nf4 is { } q) be.Nf4Linear(x, q, Bias, y);
        else be.Linear(x, Weight, Bias, y);
    }

    /// <summary>dInput[N,In] (+)= dy W (the base part of backward; an NF4 base is frozen, so it gets no gradient).</summary>
    public void BackwardBase(IBackend be, Tensor dy, Tensor x, Tensor dInput, bool accumulate, Func<Tensor, Tensor?> gradOf)
    {
        if (Nf4 is { } q)
        {
            if (gradOf(Weight) != null) throw new TemperException($"{Name}: an NF4 base weight is frozen; train LoRA adapters over it (QLoRA), not the weight");
            be.Nf4LinearBackward(dy, q, dInput, accumulate);
        }
        else be.LinearBackward(dy, x, Weight, dInput, gradOf(Weight), Bias == null ? null : gradOf(Bias), accumulate);
    }

    private static void AddLora(IBackend be, LoraView l, Tensor x, Tensor y, Tensor? xa)
    {
        var rows = x.Shape.WithLast(l.Rank);
        var ownXa = xa == null ? be.Zeros(rows) : null;
        using var delta = be.Zeros(y.Shape);
        try
        {
            var a = xa ?? ownXa!;
            be.Linear(x, l.A, null, a);
            be.Linear(a, l.B, null, delta);
            be.Scale(delta, l.Scale);
            be.Add(y, delta, y);
        }
        finally
        {
            ownXa?.Dispose();
        }
    }
}
