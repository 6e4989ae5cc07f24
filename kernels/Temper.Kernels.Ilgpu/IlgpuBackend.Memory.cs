// IlgpuBackend's memory meter: the device bytes of live tensors (every tensor this backend allocates,
// weights uploaded by FromHost included; buffers back in the pool's cache are not live), and their peak,
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
}
