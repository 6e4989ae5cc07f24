// The CUDA emulator (kernels/Temper.Kernels.Cuda/emu) checked on its own kernels (emu/selftest), so that
// the CUDA C++ kernel checks it runs on the CPU can be trusted: warp shuffles and a shared-memory block
// reduction give the exact sums, dynamic shared memory holds what the block staged and needs the opt-in
// above 48 KB as on the GPU, a barrier only some threads reach fails the launch with a message naming
// it, a race hidden by the index order (a read of shared memory without the barrier after its write, a
// read of another block's output) shows under the reverse and shuffled orders, wgmma (wgmma_ops.cuh, as the emulator reads the PTX ISA) on a 128B-swizzled shared-memory layout gives
// the plain product and not when the layout or a descriptor stride is wrong, a TMA copy (tma_ops.cuh) lands
// its box swizzled and zero-filled past the tensor once its mbarrier's phase completes, and a wrong expect_tx
// or wait parity fails the launch, a launch through cuLaunchKernelEx asked to overlap the kernel before it (programmatic
// dependent launch) runs, also captured in a graph, and fails naming the thread that returned without waiting for that
// kernel, and the module refuses a kernel that has no CPU twin. Runs only on the emulator (test.sh sets
// TEMPER_CUDA_DRIVER); skipped elsewhere, a real GPU included.
using System.Runtime.InteropServices;
using Temper.Cuda.Driver;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class EmulatorChecks
{
    // The emulator binds .entry names to the kernels compiled into it; no PTX body is read.
    private const string SelfTestModule = """
        .version 7.0
        .target sm_80
        .address_size 64
        .visible .entry emu_selftest_block_sum() { ret; }
        .visible .entry emu_selftest_shared_reverse() { ret; }
        .visible .entry emu_selftest_divergent_barrier() { ret; }
        .visible .entry emu_selftest_wgmma() { ret; }
        .visible .entry emu_selftest_tma() { ret; }
        .visible .entry emu_selftest_racy_publish() { ret; }
        .visible .entry emu_selftest_wait_then_copy() { ret; }
        """;

    private static CudaDevice OpenEmulator()
    {
        var device = Gpu.OpenForKernels();
        if (!device.IsEmulated)
        {
            device.Dispose();
            Assert.Skip("not the CUDA emulator (these kernels exist only there)");
        }
        return device;
    }

    [Fact]
    public void Shuffles_and_shared_memory_reduce_exactly()
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var sum = CudaDriver.GetFunction(module, "emu_selftest_block_sum");
        const int n = 1000, threads = 256, blocks = (n + threads - 1) / threads;
        var x = Enumerable.Range(0, n).Select(i => (float)(i % 17)).ToArray(); // small integers: exact sums
        using var dx = device.Upload<float>(x);
        using var dsums = device.Allocate<float>(blocks);
        device.Launch(sum, (blocks, 1, 1), (threads, 1, 1), new CudaKernelArguments().Add(dx).Add(dsums).Add(n));
        var sums = device.Download<float>(dsums);
        for (int b = 0; b < blocks; b++)
            Assert.Equal(x.Skip(b * threads).Take(threads).Sum(), sums[b]);
    }

    [Fact]
    public void Dynamic_shared_memory_is_staged_and_needs_the_opt_in_above_48_KB()
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var reverse = CudaDriver.GetFunction(module, "emu_selftest_shared_reverse");
        const int n = 16 * 1024; // 64 KB of floats
        var src = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
        using var dsrc = device.Upload<float>(src);
        using var ddst = device.Allocate<float>(n);
        var args = new CudaKernelArguments().Add(dsrc).Add(ddst).Add(n);
        var refused = Assert.Throws<CudaException>(() => device.Launch(reverse, (1, 1, 1), (128, 1, 1), args, n * 4));
        Assert.Equal(CudaResult.InvalidValue, refused.Result);
        CudaDriver.SetFunctionAttribute(reverse, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, n * 4);
        device.Launch(reverse, (1, 1, 1), (128, 1, 1), args, n * 4);
        var dst = device.Download<float>(ddst);
        for (int i = 0; i < n; i++) Assert.Equal(src[n - 1 - i], dst[i]);
    }

    [Fact]
    public void A_barrier_only_some_threads_reach_fails_the_launch_by_name()
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var divergent = CudaDriver.GetFunction(module, "emu_selftest_divergent_barrier");
        using var x = device.Allocate<float>(32);
        var e = Assert.Throws<CudaException>(() => device.Launch(divergent, (1, 1, 1), (32, 1, 1), new CudaKernelArguments().Add(x)));
        Assert.Equal(CudaResult.LaunchFailed, e.Result);
        Assert.Contains("emu_selftest_divergent_barrier", e.Message);
        Assert.Contains("barrier deadlock in block (0,0,0): 16 threads wait at __syncthreads, 16 at a warp barrier", e.Message);
    }

    [Fact]
    public void A_launch_that_overlaps_the_kernel_before_needs_every_thread_to_wait_for_it()
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var copy = CudaDriver.GetFunction(module, "emu_selftest_wait_then_copy");
        const int n = 300;
        var src = Enumerable.Range(0, n).Select(i => i * 0.5f).ToArray();
        using var dsrc = device.Upload<float>(src);
        using var ddst = device.Allocate<float>(n);
        CudaKernelArguments Args(int skip) => new CudaKernelArguments().Add(dsrc).Add(ddst).Add(n).Add(skip);
        device.Launch(copy, (3, 1, 1), (128, 1, 1), Args(-1), overlapPrevious: true);
        Assert.Equal(src, device.Download<float>(ddst));

        device.CopyToDevice<float>(new float[n], ddst);
        using (var graph = CudaGraph.Capture(device.Stream, () => device.Launch(copy, (3, 1, 1), (128, 1, 1), Args(-1), overlapPrevious: true)))
        {
            Assert.Equal(new float[n], device.Download<float>(ddst)); // captured, not run
            graph.Launch(device.Stream);
            Assert.Equal(src, device.Download<float>(ddst));
        }

        device.Launch(copy, (3, 1, 1), (128, 1, 1), Args(133)); // a plain launch keeps stream order: no wait needed
        var e = Assert.Throws<CudaException>(() => device.Launch(copy, (3, 1, 1), (128, 1, 1), Args(133), overlapPrevious: true));
        Assert.Equal(CudaResult.LaunchFailed, e.Result);
        Assert.Contains("thread (5,0,0) of block (1,0,0) returned without griddepcontrol.wait", e.Message);
    }

    [Fact]
    public void A_module_with_a_kernel_the_emulator_lacks_is_refused()
    {
        using var device = OpenEmulator();
        var e = Assert.Throws<CudaException>(() => device.LoadModule(EmbeddedPtx.Read("vector_add.ptx"), out _));
        Assert.StartsWith("cuModuleLoadDataEx failed: CUDA_ERROR_INVALID_PTX", e.Message);
        Assert.Contains("vector_add_f32 has no emulated twin", e.Message);
    }

    // wgmma.m64n128k16 over K = 64 from descriptors into the 128B-swizzled layout equals a b^T exactly
    // (small integers, exact in bf16 and f32); an unswizzled layout or a wrong stride byte offset does not.
    [Theory]
    [InlineData(0, true)]
    [InlineData(1, false)]
    [InlineData(2, false)]
    public void Wgmma_from_swizzled_descriptors_is_the_plain_product(int plant, bool equal)
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var wgmma = CudaDriver.GetFunction(module, "emu_selftest_wgmma");
        var rng = new Random(5);
        float[] a = Enumerable.Range(0, 64 * 64).Select(_ => (float)rng.Next(-4, 5)).ToArray();
        float[] b = Enumerable.Range(0, 128 * 64).Select(_ => (float)rng.Next(-4, 5)).ToArray();
        static ushort Bf16(float f) => (ushort)(BitConverter.SingleToUInt32Bits(f) >> 16); // exact for these
        using var da = device.Upload<ushort>(a.Select(Bf16).ToArray());
        using var db = device.Upload<ushort>(b.Select(Bf16).ToArray());
        using var dy = device.Allocate<float>(64 * 128);
        device.Launch(wgmma, (1, 1, 1), (128, 1, 1), new CudaKernelArguments().Add(da).Add(db).Add(dy).Add(plant), (64 + 128) * 128);
        var y = device.Download<float>(dy);
        int wrong = 0;
        for (int r = 0; r < 64; r++)
            for (int c = 0; c < 128; c++)
            {
                float s = 0;
                for (int k = 0; k < 64; k++) s += a[r * 64 + k] * b[c * 64 + k];
                if (y[r * 128 + c] != s) wrong++;
            }
        Assert.Equal(equal, wrong == 0);
        if (!equal) Assert.True(wrong > 64 * 128 / 2, $"a planted bug changes most of y, not {wrong} elements");
    }

    // A bf16 tensor [20 rows, 56 columns] copied in a [16, 64] box at (column 0, row 8): rows 20.. and columns
    // 56.. lie outside it and land as zeros; with the 128B swizzle element (r, e) lands at byte a = 128 r + 2 e
    // with a's bits 4-6 XOR bits 7-9, unswizzled at a. plant: 1 expect_tx 16 bytes short, 2 16 bytes over
    // (the phase never completes: a deadlock), 3 the wait's parity 1 (passes at once: the copy never waited for).
    [Theory]
    [InlineData(CudaTensorMapSwizzle.Bytes128, 0)]
    [InlineData(CudaTensorMapSwizzle.None, 0)]
    [InlineData(CudaTensorMapSwizzle.Bytes128, 1)]
    [InlineData(CudaTensorMapSwizzle.Bytes128, 2)]
    [InlineData(CudaTensorMapSwizzle.Bytes128, 3)]
    public void A_tma_copy_lands_its_swizzled_zero_filled_box_when_its_barrier_counts_it(CudaTensorMapSwizzle swizzle, int plant)
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var tma = CudaDriver.GetFunction(module, "emu_selftest_tma");
        const int rows = 20, cols = 56, boxRows = 16, boxCols = 64, row0 = 8, boxBytes = boxRows * boxCols * 2;
        var t = Enumerable.Range(0, rows * cols).Select(i => (ushort)(i + 1)).ToArray(); // never 0: a zero byte pair is a fill
        using var dt = device.Upload<ushort>(t);
        using var dout = device.Allocate<byte>(boxBytes);
        var map = CudaTensorMaps.Encode2D(dt.Pointer, CudaTensorMapDataType.BFloat16, rows, cols, 2 * cols, boxRows, boxCols, swizzle);
        int expect = plant switch { 1 => boxBytes - 16, 2 => boxBytes + 16, _ => boxBytes };
        var args = new CudaKernelArguments().Add(map).Add(dout).Add(0).Add(row0).Add(expect).Add(plant == 3 ? 1 : 0);
        if (plant != 0)
        {
            var e = Assert.Throws<CudaException>(() => device.Launch(tma, (1, 1, 1), (64, 1, 1), args, 4096));
            Assert.Equal(CudaResult.LaunchFailed, e.Result);
            Assert.Contains(plant == 3 ? "TMA copies in flight" : "32 at an mbarrier", e.Message);
            return;
        }
        device.Launch(tma, (1, 1, 1), (64, 1, 1), args, 4096);
        var landed = device.Download<byte>(dout);
        for (int r = 0; r < boxRows; r++)
            for (int e = 0; e < boxCols; e++)
            {
                int a = 128 * r + 2 * e;
                if (swizzle == CudaTensorMapSwizzle.Bytes128) a ^= ((a >> 7) & 7) << 4;
                int value = row0 + r < rows && e < cols ? t[(row0 + r) * cols + e] : 0;
                Assert.Equal(value, landed[a] | landed[a + 1] << 8);
            }
    }

    // Every kernel check passes under each order (test.sh runs the suite under reverse and shuffle too), and
    // that means something only if a race shows under some order: emu_selftest_racy_publish's reads all come
    // after their writes in index order and not otherwise.
    [Theory]
    [InlineData("forward", true)]
    [InlineData("reverse", false)]
    [InlineData("shuffle:7", false)]
    public unsafe void The_run_order_shows_a_missing_barrier(string schedule, bool ordered)
    {
        using var device = OpenEmulator();
        using var module = device.LoadModule(SelfTestModule, out _);
        var racy = CudaDriver.GetFunction(module, "emu_selftest_racy_publish");
        var library = NativeLibrary.Load(Environment.GetEnvironmentVariable("TEMPER_CUDA_DRIVER")!);
        var setSchedule = (delegate* unmanaged<byte*, void>)NativeLibrary.GetExport(library, "temper_emu_set_schedule");
        const int blocks = 8, threads = 64;
        using var seen = device.Allocate<float>(blocks * threads);
        using var chain = device.Allocate<float>(blocks);
        fixed (byte* s = System.Text.Encoding.ASCII.GetBytes(schedule + "\0")) setSchedule(s);
        try
        {
            device.Launch(racy, (blocks, 1, 1), (threads, 1, 1), new CudaKernelArguments().Add(seen).Add(chain));
        }
        finally
        {
            setSchedule(null);
        }
        bool allSeen = device.Download<float>(seen).All(v => v == 42.0f);
        bool chained = device.Download<float>(chain).Select((v, b) => v == b + 1).All(x => x);
        Assert.Equal(ordered, allSeen);
        Assert.Equal(ordered, chained);
    }
}
