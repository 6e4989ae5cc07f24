// IlgpuBackend's memory meter: the device bytes of live tensors (every tensor this backend allocates,
// weights uploaded by FromHost included; buffers back in the pool's cache are not live) and of the per-call
// arena's buffers (scratch such as the LM head's logit chunk and accumulator), and their peak,
// plus what the CUDA C++ kernels hold of their own with PTX kernels on (the Linear's bf16 copy of the
// activations, kept at its largest size). ReservedBytes adds the pool's cached buffers.
using Temper.Core;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend : IMemoryMeter
{
    public long LiveBytes => _pool.LiveBytes + PtxScratchBytes;
    public long PeakBytes => _pool.PeakLiveBytes + PtxScratchBytes;
    public long ReservedBytes => _pool.LiveBytes + _pool.CachedBytes + PtxScratchBytes;
    private long PtxScratchBytes => _dc.PtxLinear?.ScratchBytes ?? 0;
    public void ResetPeak() => _pool.ResetPeak();
    public bool HoldsBf16ProductCopies => _dc.PtxLinear != null;
    public long LmHeadScratchBytes(int rows, int hidden, int vocab, bool onePass) => ArenaLmHeadBytes(rows, hidden, vocab, onePass, _dc.PtxLinear is { Pipelined: true });

    /// <summary>What the LM head + cross-entropy takes from the arena with the automatic chunk (Ops.LmHeadCrossEntropy.ArenaBytes),
    /// which the arena then keeps: <paramref name="bf16Hidden"/> on the pipelined CUDA C++ products.</summary>
    public static long ArenaLmHeadBytes(int rows, int hidden, int vocab, bool onePass, bool bf16Hidden) =>
        Ops.LmHeadCrossEntropy.ArenaBytes(rows, hidden, vocab, onePass, bf16Hidden);
}
