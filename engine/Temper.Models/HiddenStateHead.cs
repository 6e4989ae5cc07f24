// A head that keeps a copy of the final normed hidden state [B*T,C] (on the decoder's backend) and
// computes nothing: a teacher's no-gradient pass for logit distillation. The caller owns Hidden.
using Temper.Core;

namespace Temper.Models;

public sealed class HiddenStateHead : IDecoderHead
{
    /// <summary>The hidden state [B*T,C] of the last Apply (null before it).</summary>
    public Tensor? Hidden { get; private set; }

    public float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf)
    {
        var be = decoder.Backend;
        Hidden?.Dispose();
        Hidden = be.Zeros(hidden.Shape);
        be.CopyRows(hidden, 0, Hidden, 0, hidden.Shape.Rows);
        return [];
    }
}
