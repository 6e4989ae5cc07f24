// CpuBackend's allocation meter: every tensor made by Zeros is counted while it lives (its storage's
// Dispose, once however many views dispose it, takes it off), and the peak is kept. Tensors the CPU
// backend shares rather than allocates (FromHost returns the host tensor itself) are not counted.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend : IMemoryMeter
{
    private long _liveBytes, _peakBytes;
    private readonly Lock _meterLock = new();

    public long LiveBytes => Interlocked.Read(ref _liveBytes);
    public long PeakBytes => Interlocked.Read(ref _peakBytes);

    public void ResetPeak()
    {
        lock (_meterLock) _peakBytes = _liveBytes;
    }

    private Tensor CountedZeros(Shape shape, DType dtype)
    {
        long bytes = dtype.ByteCount(shape.Elements);
        if (bytes > Array.MaxLength) throw new TemperException($"a host tensor of {bytes} bytes exceeds the 2 GiB single-buffer limit");
        var array = GC.AllocateArray<byte>((int)bytes, pinned: true);
        lock (_meterLock)
        {
            _liveBytes += bytes;
            if (_liveBytes > _peakBytes) _peakBytes = _liveBytes;
        }
        return new Tensor(shape, dtype, new HostStorage(array, new Release(this, bytes)));
    }

    private sealed class Release(CpuBackend owner, long bytes) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            lock (owner._meterLock) owner._liveBytes -= bytes;
        }
    }
}
