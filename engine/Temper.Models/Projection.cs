// One linear projection of the decoder (q/k/v/o, gate/up/down, lm_head): weight [Out,In] (f32 or bf16),
// optional bias [Out], and an optional unmerged LoRA view (A [r,In], B [Out,r], scale) over it.
using Temper.Core;

namespace Temper.Models;

public sealed class LoraView(Tensor a, Tensor b, float scale)
{
    public Tensor A { get; } = a;       // [r, In]
    public Tensor B { get; } = b;       // [Out, r]
    public float Scale { get; } = scale;
    public int Rank => A.Shape[0];
}

public sealed class Projection(string name, Tensor weight, Tensor? bias)
{
    /// <summary>The HF module name, e.g. model.layers.0.self_attn.q_proj.</summary>
    public string Name { get; } = name;
    public Tensor Weight { get; internal set; } = weight;
    public Tensor? Bias { get; } = bias;
    public LoraView? Lora { get; set; }
    public int In => Weight.Shape[1];
    public int Out => Weight.Shape[0];

    /// <summary>y[N,Out] = x[N,In] W^T + b (+ LoRA).</summary>
    public void Forward(IBackend be, Tensor x, Tensor y)
    {
        if (Lora is { } l) be.LoraLinear(x, Weight, Bias, l.A, l.B, l.Scale, y);
        else be.Linear(x, Weight, Bias, y);
    }
}
