// The op set every backend implements: the forward and backward of each decoder op, the optimizer
// step and the reductions training needs. Shapes are row-major; N is the number of token rows (B*T),
// C the model width, V the vocabulary, H/Hkv query/key-value heads, D the head size.
// A backend that lacks an op throws NotSupportedException naming it (op-check reports "not supported").
namespace Temper.Core;

public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>A zero-filled tensor in this backend's memory.</summary>
    Tensor Zeros(Shape shape, DType dtype = DType.F32);
    /// <summary>
    /// A tensor in this backend's memory whose contents are unspecified (a pooled buffer's old values):
    /// only for an output the next op overwrites whole, where Zeros would clear it for nothing.
    /// </summary>
    Tensor Uninitialized(Shape shape, DType dtype = DType.F32);
    /// <summary>This backend's copy of a host tensor (the host tensor itself where memory is shared).</summary>
    Tensor FromHost(Tensor host);
    /// <summary>A host copy of a tensor of this backend.</summary>
    Tensor ToHost(Tensor t);
    /// <summary>
    /// Copies rows [srcRow, srcRow + rows) of src into rows [dstRow, dstRow + rows) of dst, both of
    /// this backend; a row is the last dimension, which src and dst share, as they share the dtype.
    /// </summary>
    void CopyRows(Tensor src, int srcRow, Tensor dst, int dstRow, int rows);

    // ---- forward ----
    /// <summary>out[N,C] = table[V,C][ids[N]].</summary>
    void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output);
    /// <summary>y[N,C] = x / rms(x) * weight (y may alias x); rstd[N] (optional) keeps 1/rms for backward.</summary>
    void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor? rstd = null);
    /// <summary>The residual add and the norm after it in one op: sum = a + b, then RmsNorm(sum, weight, eps, y, rstd), the same bits
    /// as the two ops (sum may alias a or b; a fused kernel reads the rows once fewer and saves a launch).</summary>
    void AddRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor y, Tensor? rstd = null)
    {
        Add(a, b, sum);
        RmsNorm(sum, weight, eps, y, rstd);
    }
    /// <summary>y[N,M] = x[N,K] weight[M,K]^T + bias[M] (weight f32 or bf16); accumulate adds into y.</summary>
    void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y, bool accumulate = false);
    /// <summary>y[N,M] = x W^T + bias + scale (x A[r,K]^T) B[M,r]^T; xa[N,r] (optional) keeps x A^T.</summary>
    void LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor? xa = null);
    /// <summary>DoRA: norm[M] = ||W[M,K] + scale B[M,r] A[r,K]||_row, each output row's L2 norm of the adapted weight (W f32 or bf16; f32 out).</summary>
    void DoraNorm(Tensor weight, Tensor loraA, Tensor loraB, float scale, Tensor norm);
    /// <summary>DoRA: y[N,M] = z[N,M] * magnitude[M] / norm[M] + bias[M] (bias optional; y may alias z). With no bias it is also the backward to z.</summary>
    void DoraScale(Tensor z, Tensor magnitude, Tensor norm, Tensor? bias, Tensor y);
    /// <summary>Rotates x[N,H,D] in place by the angles of positions[N] (HF rotate_half layout).</summary>
    void Rope(Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs);
    /// <summary>Causal GQA attention; see <see cref="AttentionArgs"/>. q, k and v f32, or all three bf16 (read as they are: the
    /// device kernels stage bf16 for the tensor cores, so bf16 inputs give the results of f32 inputs holding the same values).</summary>
    void Attention(in AttentionArgs a);
    /// <summary>y = silu(gate) * up, all [N,F]: gate and up f32, or both bf16 (kept activations, widened); y f32.</summary>
    void SwiGlu(Tensor gate, Tensor up, Tensor y);
    /// <summary>SwiGlu of gate and up [N,F] f32 rounded to bf16 (nearest even), which it also writes to gateBf16 and upBf16 [N,F]
    /// bf16: y = silu(g') * up' from the rounded values, so that SwiGlu(gateBf16, upBf16, y) rebuilds the same y in backward.
    /// y may alias gate or up.</summary>
    void SwiGluRounded(Tensor gate, Tensor up, Tensor y, Tensor gateBf16, Tensor upBf16);
    /// <summary>y = x rounded to bf16 (nearest even, NaN kept quiet: BFloat16.FromSingle), element for element: x f32, y bf16, one shape.</summary>
    void RoundToBf16(Tensor x, Tensor y);
    /// <summary>Whether a training pass over bf16 weights keeps its MLPs' gate and up activations in bf16 (SwiGluRounded),
    /// as PyTorch's autograd keeps a bf16 model's: the device backends (GPUs store bf16); the CPU backend computes and keeps f32.</summary>
    bool KeepsBf16Activations => false;
    /// <summary>y = a + b (y may alias a).</summary>
    void Add(Tensor a, Tensor b, Tensor y);
    /// <summary>y[N,V] = log_softmax(x[N,V]) per row.</summary>
    void LogSoftmax(Tensor x, Tensor y);
    /// <summary>y[N,M] = x[N,K] dequant(w[M,K])^T + bias[M] (NF4 base weight, dequantised tile by tile, never whole); accumulate adds into y.</summary>
    void Nf4Linear(Tensor x, Quantization.Nf4Weight w, Tensor? bias, Tensor y, bool accumulate = false);
    /// <summary>output[M,K] f32 = dequant(w): the whole matrix (for checks, parity runs and merging).</summary>
    void Nf4Dequantize(Quantization.Nf4Weight w, Tensor output);
    /// <summary>
    /// Inverted dropout, y = keep ? x / (1 - p) : 0 (any shape, y may alias x). Element i is kept when the
    /// top 24 bits of the (i+1)-th output of SplitMix64(seed) are >= p * 2^24, so the mask depends only
    /// on (seed, i): the same call on dy with the same seed is the backward.
    /// </summary>
    void Dropout(Tensor x, ulong seed, float p, Tensor y);

    // ---- backward ----
    /// <summary>dTable[ids[n]] += dOut[n].</summary>
    void EmbeddingBackward(Tensor dOut, ReadOnlySpan<int> ids, Tensor dTable);
    /// <summary>dx (and dWeight += ) from dy, x, weight and the rstd saved by forward.</summary>
    /// <summary>dx = RMSNorm's input gradient (added to dx when accumulateDx: a residual stream's gradient), dWeight += its weight gradient.</summary>
    void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dWeight, bool accumulateDx = false);
    /// <summary>dx[N,K] = dy W (accumulated if asked); dWeight[M,K] += dy^T x; dBias[M] += sum dy.</summary>
    void LinearBackward(Tensor dy, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, bool accumulateDx = false);
    /// <summary>LoRA part of backward: dA[r,K] += scale (dy B)^T x, dB[M,r] += scale dy^T xa (each when given), and dx += scale (dy B) A.</summary>
    void LoraLinearBackward(Tensor dy, Tensor x, Tensor xa, Tensor loraA, Tensor loraB, float scale, Tensor? dx, Tensor? dA, Tensor? dB);
    /// <summary>DoRA: dMagnitude[M] += sum_n dy[n,j] z[n,j] / norm[j] (z as DoraScale took it; the norm is a constant, DoRA §4.3).</summary>
    void DoraMagnitudeBackward(Tensor dy, Tensor z, Tensor norm, Tensor dMagnitude);
    /// <summary>Rotates dx[N,H,D] in place by minus the angles (the transpose of the rotation).</summary>
    void RopeBackward(Tensor dx, ReadOnlySpan<int> positions, RopeFrequencies freqs);
    /// <summary>dq, dk, dv (overwritten) from dOut; q, k and v f32, or all three bf16 (as Attention). When a.Lse is given, it and a.Output hold Attention's results for these args (backends may read both); without it the backend recomputes them.</summary>
    void AttentionBackward(in AttentionArgs a, Tensor dOut, Tensor dq, Tensor dk, Tensor dv);
    /// <summary>dUp = dy silu(gate), dGate = dy up silu'(gate) (overwritten); gate and up f32, or both bf16 (as SwiGlu). dGate may be
    /// dy itself (each element's dy is read before its dGate is written: DecoderBackprop's backward turns d act into d gate in place).</summary>
    void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dGate, Tensor dUp);
    /// <summary>
    /// Fused LM head + cross-entropy over vocabulary chunks (the [N,V] logits are never all held):
    /// losses[N] = -log softmax(hidden lmHead^T)[labels]; rows with label &lt; 0 get 0. When dHidden or
    /// dLmHead are given, gradients of sum_n(losses[n] * lossScale * rowScales[n]) are accumulated into
    /// them (rowScales empty = all 1; preference losses weight each sequence's tokens).
    /// </summary>
    void LmHeadCrossEntropy(Tensor hidden, Tensor lmHead, ReadOnlySpan<int> labels, Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead, ReadOnlySpan<float> rowScales = default);
    /// <summary>
    /// Logit distillation fused with both LM heads over vocabulary chunks (neither [N,V] logits tensor is
    /// held): for rows with mask[n] != 0, with p_S = softmax(studentHidden[N,Cs] studentLmHead[V,Cs]^T / T)
    /// and p_T = softmax(teacherHidden[N,Ct] teacherLmHead[V,Ct]^T / T), losses[N] = T^2 KL(p_T || p_S)
    /// (forward) or T^2 KL(p_S || p_T) (reverse); 0 elsewhere. When dHidden or dLmHead are given, the
    /// gradients of lossScale * sum_n losses[n] with respect to the student's hidden and LM head are
    /// accumulated into them; the teacher gets none.
    /// </summary>
    void LmHeadDistillation(Tensor studentHidden, Tensor studentLmHead, Tensor teacherHidden, Tensor teacherLmHead, ReadOnlySpan<int> mask, float temperature, bool reverse,
        Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead);
    /// <summary>dx[N,K] = dy[N,M] dequant(w[M,K]) (added to dx when accumulateDx); the NF4 base is frozen, so no weight gradient.</summary>
    void Nf4LinearBackward(Tensor dy, Quantization.Nf4Weight w, Tensor dx, bool accumulateDx = false);

    // ---- optimizer and reductions ----
    void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWParams p);
    /// <summary>AdamWStep over many tensors with one set of hyperparameters (a backend may do them in one launch).</summary>
    void AdamWSteps(IReadOnlyList<AdamWTensors> tensors, in AdamWParams p)
    {
        foreach (var t in tensors) AdamWStep(t.Param, t.Grad, t.M, t.V, p);
    }
    /// <summary>Sum of squares of all elements (for global grad norms), accumulated in f64.</summary>
    double SumOfSquares(Tensor x);
    /// <summary>The SumOfSquares of each tensor, added in order (a global grad norm's square; a device backend reads
    /// them all back at once, not one sync a tensor). Same value as adding SumOfSquares(x) over xs in order.</summary>
    double SumOfSquares(IReadOnlyList<Tensor> xs)
    {
        double sum = 0;
        foreach (var x in xs) sum += SumOfSquares(x);
        return sum;
    }
    /// <summary>x *= s in place.</summary>
    void Scale(Tensor x, float s);
    /// <summary>Every byte of x set to zero in place (NaN and infinities too, which Scale by 0 keeps: a gradient buffer
    /// after a skipped step).</summary>
    void Clear(Tensor x);
    /// <summary>x[N,C] row n *= scales[n] in place (f32; a mixture-of-experts block's routing weights).</summary>
    void ScaleRows(Tensor x, ReadOnlySpan<float> scales);

    // ---- serving ----
    /// <summary>Attention of token rows of many sequences over a paged KV cache; see <see cref="PagedAttentionArgs"/>.</summary>
    void PagedAttention(in PagedAttentionArgs a);
    /// <summary>
    /// Gathered (BGMV) LoRA: y[n] += scales[i] (x[n] A[i]^T) B[i]^T with i = rowAdapter[n] for each row of
    /// x[N,K], y[N,M]; A [L,r,K] and B [L,M,r] stack L adapters (smaller ranks zero-padded); rows with i &lt; 0 are untouched.
    /// </summary>
    void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y);
}

/// <summary>
/// Q[N,H,D]: token rows of several sequences; KCache, VCache [Blocks, BlockSize, Hkv, D]: the paged cache, both f32 or
/// both bf16 (read as their f32 values; the arithmetic is f32 either way).
/// Row n belongs to sequence RowSequence[n] and sees its keys at positions 0..RowKvLength[n]-1 (causal:
/// its own position + 1); key position p of sequence s lives in block BlockTables[s * MaxBlocks + p / BlockSize],
/// slot p % BlockSize. Output[N,H,D]; head h reads kv head h / (H / Hkv). A row that sees no key gets zeros.
/// </summary>
public readonly record struct PagedAttentionArgs(
    Tensor Q, Tensor KCache, Tensor VCache, Tensor Output, ReadOnlyMemory<int> BlockTables, int MaxBlocks,
    ReadOnlyMemory<int> RowSequence, ReadOnlyMemory<int> RowKvLength, float Scale);

/// <summary>
/// q[B,Tq,H,D] attends to k,v[B,S,Hkv,D] (S = cache capacity, the first KvLength rows used). Query i
/// sits at key position QueryOffset + i and sees keys at positions &lt;= its own (causal) whose
/// KeyMask[B,KvLength] entry is non-zero. Output[B,Tq,H,D]; Lse[B,H,Tq] (optional) keeps the
/// log-sum-exp for backward. A query that sees no key gets zeros. SegmentIds[B,KvLength] (optional,
/// packed sequences; needs QueryOffset + Tq &lt;= KvLength) further limits query position p to the keys
/// j with SegmentIds[b,j] == SegmentIds[b,p], so no example of a packed row attends to another.
/// </summary>
public readonly record struct AttentionArgs(
    Tensor Q, Tensor K, Tensor V, Tensor Output, int KvLength, int QueryOffset, float Scale,
    ReadOnlyMemory<int> KeyMask = default, Tensor? Lse = null, ReadOnlyMemory<int> SegmentIds = default);

/// <summary>One trained tensor and its gradient and AdamW moments (all f32, one shape).</summary>
public readonly record struct AdamWTensors(Tensor Param, Tensor Grad, Tensor M, Tensor V);

/// <summary>AdamW's per-step scalars as the device kernels take them (one f32 struct, this field order):
/// 1 - lr wd, 1 - b1, b2, 1 - b2, lr / (1 - b1^t), sqrt(1 - b2^t), eps, derived in f64 and rounded once, as
/// torch does.</summary>
public struct AdamWScalars
{
    public float Decay, W1, Beta2, W2, StepSize, Bc2Sqrt, Eps;

    public static AdamWScalars Of(in AdamWParams p) => new()
    {
        Decay = (float)(1 - (double)p.Lr * p.WeightDecay),
        W1 = (float)(1 - (double)p.Beta1),
        Beta2 = p.Beta2,
        W2 = (float)(1 - (double)p.Beta2),
        StepSize = (float)(p.Lr / (1 - Math.Pow(p.Beta1, p.Step))),
        Bc2Sqrt = (float)Math.Sqrt(1 - Math.Pow(p.Beta2, p.Step)),
        Eps = p.Eps,
    };
}

public readonly record struct AdamWParams(float Lr, float Beta1, float Beta2, float Eps, float WeightDecay, int Step);
