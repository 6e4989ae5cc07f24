// What DecoderBackprop puts on the decoder's final normed hidden state hidden [B*T,C]: the LM head with
// cross-entropy (SFT, preference, RL), a scalar score head (reward models), logit distillation against
// a teacher, or a plain copy of the hidden state (a teacher's no-gradient pass). A head computes its
// figures and, when training, writes d loss / d hidden and its own parameters' gradients.
using Temper.Core;

namespace Temper.Models;

public interface IDecoderHead
{
    /// <summary>
    /// hidden [B*T,C] on the decoder's backend. dHidden (null when not training) arrives zeroed and gets
    /// d loss / d hidden; gradOf(param) gives a parameter's gradient buffer (null = frozen). Returns the
    /// head's figures (each head documents their layout).
    /// </summary>
    float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf);
}
