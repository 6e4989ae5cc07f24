// IlgpuBackend's memory meter: the device bytes of live tensors (every tensor this backend allocates,
// weights uploaded by FromHost included; buffers back in the pool's cache are not live), and their peak.
using Temper.Core;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend : IMemoryMeter
{
    public long LiveBytes => _pool.LiveBytes;
    public long PeakBytes => _pool.PeakLiveBytes;
    public void ResetPeak() => _pool.ResetPeak();
}
