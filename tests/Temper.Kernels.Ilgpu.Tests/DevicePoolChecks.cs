// The tensor pool's out-of-memory path on ILGPU's CPU accelerator, with an allocator that refuses past a byte budget
// (as a full GPU would): a refused allocation frees the cached buffers and succeeds on the second try; with nothing
// cached the refusal reaches the caller; other errors are not taken for a want of memory. The per-call arena tells the
// pool of every buffer it holds (the meter counts them), and after an op that outgrew its buffer it settles at that
// op's size instead of the doubled one.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace Temper.Kernels.Ilgpu.Tests;

public sealed class DevicePoolChecks : IDisposable
{
    private readonly Context _context = Context.Create(b => b.CPU());
    private readonly Accelerator _acc;
    private readonly List<MemoryBuffer1D<byte, Stride1D.Dense>> _made = [];
    private int _refused;

    public DevicePoolChecks() => _acc = _context.CreateCPUAccelerator(0);

    /// <summary>An allocator over the CPU accelerator that throws OutOfMemoryException when the bytes it handed out and
    /// that are not yet disposed would pass <paramref name="budget"/>.</summary>
    private Func<long, MemoryBuffer1D<byte, Stride1D.Dense>> Budgeted(long budget) => bytes =>
    {
        long held = _made.Where(b => !b.IsDisposed).Sum(b => b.Length);
        if (held + bytes > budget)
        {
            _refused++;
            throw new OutOfMemoryException($"budget {budget}: {held} held, {bytes} asked");
        }
        var b = _acc.Allocate1D<byte>(bytes);
        _made.Add(b);
        return b;
    };

    [Fact]
    public void The_arena_is_counted_live_and_settles_at_the_largest_op()
    {
        using var pool = new DevicePool(_acc, capBytes: 1L << 30);
        using var arena = new DeviceArena(_acc, () => false, pool.Hold);
        const long mib = 1 << 20;
        arena.Reset();
        arena.Take<byte>(mib / 2);      // the first buffer: 1 MiB
        arena.Take<byte>(3 * mib);      // outgrows it: 3 MiB, the first kept until the reset
        Assert.Equal(4 * mib, arena.HeldBytes);
        Assert.Equal(4 * mib, pool.LiveBytes);
        arena.Reset();                  // both dropped; the next take allocates the op's 3.5 MiB at once
        Assert.Equal(0, arena.HeldBytes);
        arena.Take<byte>(mib / 2);
        arena.Take<byte>(3 * mib);
        Assert.Equal(7 * mib / 2, arena.HeldBytes);
        Assert.Equal(7 * mib / 2, pool.LiveBytes);
        Assert.Equal(4 * mib, pool.PeakLiveBytes);
        arena.Reset();                  // nothing outgrown: the buffer stays
        Assert.Equal(7 * mib / 2, pool.LiveBytes);
        // An op whose first take outgrows the buffer replaces it at once; a take past a large one adds 1 MiB, not a doubling.
        arena.Take<byte>(8 * mib);
        Assert.Equal(8 * mib, arena.HeldBytes);
        arena.Take<byte>(mib / 4);
        Assert.Equal(9 * mib, arena.HeldBytes);
        Assert.Equal(9 * mib, pool.PeakLiveBytes);
        arena.Reset();
        arena.Take<byte>(mib);          // the op's 8.25 MiB at once
        Assert.Equal(33 * mib / 4, arena.HeldBytes);
    }

    [Fact]
    public void A_refused_allocation_frees_the_cache_and_is_tried_again()
    {
        using var pool = new DevicePool(_acc, capBytes: 1L << 30, Budgeted(3072));
        var a = pool.Rent(1024);
        var b = pool.Rent(1024);
        pool.Return(a);
        pool.Return(b);
        Assert.Equal(2048, pool.CachedBytes);
        var c = pool.Rent(2048); // a size the cache lacks: 2048 cached + 2048 > 3072, refused once, then fits
        Assert.Equal(2048, c.Length);
        Assert.Equal(1, _refused);
        Assert.Equal(0, pool.CachedBytes);
        Assert.True(a.IsDisposed && b.IsDisposed);
        Assert.Equal(2048, pool.LiveBytes);
        pool.Return(c);
    }

    [Fact]
    public void With_nothing_cached_the_refusal_reaches_the_caller()
    {
        using var pool = new DevicePool(_acc, capBytes: 1L << 30, Budgeted(4096));
        var a = pool.Rent(4096);
        var e = Assert.Throws<OutOfMemoryException>(() => pool.Rent(256));
        Assert.Contains("budget 4096", e.Message);
        Assert.Equal(1, _refused); // not tried twice: there was nothing to free
        Assert.Equal(4096, pool.LiveBytes);
        pool.Return(a);
    }

    [Fact]
    public void Only_a_want_of_memory_frees_the_cache()
    {
        int released = 0;
        bool Release() { released++; return true; }
        Assert.Throws<InvalidOperationException>(() =>
            DevicePool.Allocate(256, Release, _ => throw new InvalidOperationException("not memory")));
        Assert.Equal(0, released);
        Assert.True(DevicePool.IsOutOfMemory(new OutOfMemoryException()));
        Assert.False(DevicePool.IsOutOfMemory(new InvalidOperationException("out of memory")));
    }

    public void Dispose()
    {
        foreach (var b in _made) b.Dispose();
        _acc.Dispose();
        _context.Dispose();
    }
}
