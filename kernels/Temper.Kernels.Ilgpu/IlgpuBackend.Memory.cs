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

    /// <summary>What Ops.LmHeadCrossEntropy takes from the arena (which then settles at the largest op's size): the labels and four
    /// row statistics [n], the chunk's logits [n, vc], on the pipelined CUDA C++ products the hidden states in bf16 [n, C], and in
    /// one pass a reference [n] and the accumulator [n, C]; each region 256-byte aligned.</summary>
    public static long ArenaLmHeadBytes(int rows, int hidden, int vocab, bool onePass, bool bf16Hidden)
    {
        static long Aligned(long bytes) => (Math.Max(1, bytes) + 255) / 256 * 256;
        long n = rows, vc = Math.Min(vocab, Ops.LmHeadCrossEntropy.AutoChunk(rows, vocab));
        return 5 * Aligned(4 * n) + Aligned(4 * n * vc) + (bf16Hidden ? Aligned(2 * n * hidden) : 0) + (onePass ? Aligned(4 * n) + Aligned(4 * n * hidden) : 0);
    }
}
