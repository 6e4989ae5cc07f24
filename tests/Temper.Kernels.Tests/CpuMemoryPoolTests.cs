// CpuBackend's tensor pool (HostBufferPool): a freed tensor's array is handed to the next tensor of its
// size class, Zeros clears it, Uninitialized does not (NaN under PoisonMemory), a tensor disposed
// twice (through two views) goes back once, live tensors never share an array (also from several
// threads at once), the free lists stay under the cap, and the meter's live/reserved figures follow.
using System.Runtime.InteropServices;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Kernels.Tests;

public sealed class CpuMemoryPoolTests
{
    private static byte[] ArrayOf(Tensor t)
    {
        Assert.True(MemoryMarshal.TryGetArray<byte>(((HostStorage)t.Storage).Memory, out var segment));
        return segment.Array!;
    }

    [Fact]
    public void A_freed_tensor_is_reused_and_Zeros_clears_it()
    {
        using var be = new CpuBackend(1);
        var t = be.Zeros(new Shape(10, 100));
        t.Floats.Fill(3f);
        var array = ArrayOf(t);
        t.Dispose();
        Assert.True(be.PooledBytes >= 4000);
        var (hits, misses) = be.PoolCounts;
        using var z = be.Zeros(new Shape(10, 101)); // 4040 bytes: the same size class as 4000
        Assert.Same(array, ArrayOf(z));
        Assert.Equal((hits + 1, misses), be.PoolCounts);
        Assert.Equal(0, be.PooledBytes);
        Assert.All(z.Floats.ToArray(), v => Assert.Equal(0f, v));
        Assert.Equal(new Shape(10, 101), z.Shape);
        Assert.Equal(4040, z.Storage.ByteLength);
    }

    [Fact]
    public void Another_size_class_is_not_served_from_a_freed_array()
    {
        using var be = new CpuBackend(1);
        var t = be.Zeros(new Shape(1000));
        var array = ArrayOf(t);
        t.Dispose();
        using var big = be.Zeros(new Shape(1300)); // 5200 bytes: class 5632, not 4000's 4096
        Assert.NotSame(array, ArrayOf(big));
        Assert.Equal(4096, be.PooledBytes);
    }

    [Fact]
    public void Uninitialized_reuses_without_clearing_and_poison_shows_unwritten_memory()
    {
        using var be = new CpuBackend(1);
        var t = be.Zeros(new Shape(64));
        t.Floats.Fill(5f);
        t.Dispose();
        using (var u = be.Uninitialized(new Shape(64)))
        {
            Assert.Equal(5f, u.Floats[63]);  // the old contents: not cleared for an output an op overwrites whole
        }
        be.PoisonMemory = true;
        using var p = be.Uninitialized(new Shape(64));
        Assert.All(p.Floats.ToArray(), v => Assert.True(float.IsNaN(v)));
        var freed = be.Zeros(new Shape(8));
        var view = new Tensor(new Shape(2, 4), DType.F32, freed.Storage);
        freed.Dispose();
        Assert.True(float.IsNaN(view.Floats[0])); // a read after Dispose shows
    }

    [Fact]
    public void A_tensor_disposed_through_two_views_goes_back_once_and_live_tensors_never_share_an_array()
    {
        using var be = new CpuBackend(1);
        var t = be.Zeros(new Shape(4, 16));
        var view = new Tensor(new Shape(64), DType.F32, t.Storage);
        t.Dispose();
        view.Dispose();
        Assert.Equal(256, be.PooledBytes);
        var live = Enumerable.Range(0, 6).Select(_ => be.Zeros(new Shape(64))).ToList();
        Assert.Equal(6, live.Select(ArrayOf).Distinct().Count());
        Assert.Equal((1, 6), be.PoolCounts); // t's array once, five fresh ones
        live[2].Dispose();
        live[4].Dispose();
        live.Add(be.Uninitialized(new Shape(64)));
        live.Add(be.Zeros(new Shape(64)));
        live.Add(be.Zeros(new Shape(64)));
        var alive = live.Where((_, i) => i != 2 && i != 4).ToList();
        Assert.Equal(alive.Count, alive.Select(ArrayOf).Distinct().Count());
        foreach (var x in live) x.Dispose();
    }

    [Fact]
    public void The_free_lists_stay_under_the_cap()
    {
        using var be = new CpuBackend(1);
        be.PoolCapBytes = 10_000;
        var ts = Enumerable.Range(0, 5).Select(_ => be.Zeros(new Shape(1000))).ToList(); // 4096-byte arrays
        foreach (var t in ts) t.Dispose();
        Assert.Equal(8192, be.PooledBytes); // two fit under 10000, the other three go to the GC
        be.PoolCapBytes = 4096;             // lowering the cap below what is held drops it all
        Assert.Equal(0, be.PooledBytes);
        be.PoolCapBytes = 0;
        var a = be.Zeros(new Shape(1000));
        var array = ArrayOf(a);
        a.Dispose();
        Assert.Equal(0, be.PooledBytes);
        using var b = be.Zeros(new Shape(1000));
        Assert.NotSame(array, ArrayOf(b));
    }

    [Fact]
    public void The_meter_counts_live_tensors_and_reserves_the_pool()
    {
        using var be = new CpuBackend(1);
        var t = be.Zeros(new Shape(10, 100));
        Assert.Equal(4000, be.LiveBytes);
        Assert.Equal(4096, be.ReservedBytes);
        t.Dispose();
        Assert.Equal(0, be.LiveBytes);
        Assert.Equal(4000, be.PeakBytes);
        Assert.Equal(4096, be.ReservedBytes); // held by the pool
        be.ResetPeak();
        using var u = be.Uninitialized(new Shape(1000));
        Assert.Equal(4000, be.PeakBytes);
        Assert.Equal(4096, be.ReservedBytes);
        be.TrimPool();
        Assert.Equal(4096, be.ReservedBytes);  // the live one's
    }

    [Fact]
    public void Tensors_allocated_and_freed_from_several_threads_never_alias()
    {
        using var be = new CpuBackend(1);
        int failures = 0;
        Parallel.For(0, 4, thread =>
        {
            for (int round = 0; round < 300; round++)
            {
                float mark = thread * 1000 + round;
                var ts = new[] { be.Uninitialized(new Shape(100 + round % 3)), be.Zeros(new Shape(100)), be.Uninitialized(new Shape(300)) };
                foreach (var t in ts) t.Floats.Fill(mark);
                Thread.Yield();
                foreach (var t in ts)
                    if (t.Floats.ToArray().Any(v => v != mark)) Interlocked.Increment(ref failures);
                foreach (var t in ts) t.Dispose();
            }
        });
        Assert.Equal(0, failures);
        Assert.Equal(0, be.LiveBytes);
        var (hits, misses) = be.PoolCounts;
        Assert.True(hits > 10 * misses, $"{hits} hits, {misses} misses");
    }
}
