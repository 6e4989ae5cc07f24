// CUDA graphs (CudaGraph over cuStreamBeginCapture / cuGraphLaunch) with two chained Linear launches,
// y1 [n, m1] = 0.5 x [n, k] W1^T and y2 [n, m2] = 2 y1 W2^T, the second reading the first's output:
// nothing runs while capturing (the outputs stay poisoned until Launch), each replay equals the same two
// launches made directly, argument values are the ones copied at capture (neither a later launch with
// other arguments nor rewriting the arguments' storage reaches a replay), and device memory is live (a
// replay after the input buffer was rewritten sees the new contents). A synchronisation or an allocation
// inside a capture fails with one line naming the call and ends the capture, leaving the stream usable;
// the legacy stream cannot be captured. Runs on the CUDA emulator and on a GPU, in a collection of its
// own, never beside other tests' GPU work (a legacy-stream or context sync from another thread would
// invalidate a capture on a real device).
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[CollectionDefinition(DisableParallelization = true)]
public sealed class CudaGraphCollection;

[Trait("Kernels", "cuda")]
[Collection(typeof(CudaGraphCollection))]
public class CudaGraphChecks
{
    private const int N = 3, K = 32, M1 = 24, M2 = 16;

    private static float[] Floats(int n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1);
        return v;
    }

    private static ushort[] Bf16(float[] values)
    {
        var bits = new ushort[values.Length];
        BFloat16.FromSingle(values, bits);
        return bits;
    }

    private static float[] Poison(int n) => Enumerable.Repeat(float.NaN, n).ToArray();

    /// <summary>The two chained launches the tests capture, run once on creation so that the module is loaded
    /// before any capture (loading it is no stream work, and a decode step would not capture it either).</summary>
    private sealed class TwoLinears : IDisposable
    {
        public readonly CudaLinear Linear;
        public readonly CudaDeviceMemory X, W1, W2;

        public TwoLinears(CudaDevice device)
        {
            // One launch per product (the WMMA kernel): the pipelined path adds a conversion launch and
            // allocates its bf16 scratch on first use, which a capture would refuse.
            Linear = new CudaLinear(device) { Pipelined = false };
            X = device.Upload<float>(Floats(N * K, 1));
            W1 = device.Upload<ushort>(Bf16(Floats(M1 * K, 2)));
            W2 = device.Upload<ushort>(Bf16(Floats(M2 * M1, 3)));
            using var y1 = device.Allocate<float>(N * M1);
            using var y2 = device.Allocate<float>(N * M2);
            Run(y1, y2);
            device.Synchronize();
        }

        public void Run(CudaDeviceMemory y1, CudaDeviceMemory y2, float alpha1 = 0.5f, float alpha2 = 2f)
        {
            Linear.Forward(X, new LinearWeight.Bf16(W1), null, y1, N, K, M1, alpha1);
            Linear.Forward(y1, new LinearWeight.Bf16(W2), null, y2, N, M1, M2, alpha2);
        }

        public void Dispose()
        {
            Linear.Dispose();
            X.Dispose();
            W1.Dispose();
            W2.Dispose();
        }
    }

    [Fact]
    public void Replays_run_the_captured_launches_on_the_inputs_current_contents()
    {
        using var device = Gpu.OpenForKernels();
        using var chain = new TwoLinears(device);
        using var y1 = device.Upload<float>(Poison(N * M1));
        using var y2 = device.Upload<float>(Poison(N * M2));
        using var e1 = device.Allocate<float>(N * M1);
        using var e2 = device.Allocate<float>(N * M2);

        using var graph = CudaGraph.Capture(device.Stream, () => chain.Run(y1, y2));
        Assert.Equal(2, graph.NodeCount);
        Assert.Equal(CudaStreamCaptureStatus.None, CudaDriver.CaptureStatus(device.Stream));
        Assert.All(device.Download<float>(y1), v => Assert.True(float.IsNaN(v), "y1 was written during the capture"));
        Assert.All(device.Download<float>(y2), v => Assert.True(float.IsNaN(v), "y2 was written during the capture"));

        float[]? previous = null;
        for (int replay = 0; replay < 3; replay++)
        {
            if (replay > 0) device.CopyToDevice<float>(Floats(N * K, 10 + replay), chain.X); // new input, same buffer
            chain.Run(e1, e2); // the same launches made directly: what the replay must give
            var expected1 = device.Download<float>(e1);
            var expected2 = device.Download<float>(e2);
            if (replay == 0) chain.Run(e1, e2, alpha1: -3f, alpha2: 7f); // other argument values, launched last
            graph.Launch(device.Stream);
            device.Synchronize();
            var actual2 = device.Download<float>(y2);
            Assert.Equal(expected1, device.Download<float>(y1));
            Assert.Equal(expected2, actual2);
            if (previous != null) Assert.NotEqual(previous, actual2); // the replay read the rewritten input
            previous = actual2;
        }
    }

    /// <summary>The driver copies kernelParams at capture: rewriting the launch's argument storage afterwards
    /// (alpha, in place) must not reach the replay. A raw launch of linear_bf16_nt with CudaLinear.Forward's
    /// argument order, since CudaLinear keeps its arguments to itself.</summary>
    [Fact]
    public void A_replay_passes_the_argument_values_copied_at_capture()
    {
        using var device = Gpu.OpenForKernels();
        using var chain = new TwoLinears(device);
        using var module = device.LoadModule(KernelPtx.Read("linear_bf16.ptx"), out _);
        var forward = CudaDriver.GetFunction(module, "linear_bf16_nt");
        using var y = device.Upload<float>(Poison(N * M1));
        var args = new CudaKernelArguments().Add(chain.X).Add(chain.W1).Add(0UL).Add(y).Add(N).Add(K).Add(M1).Add(1f).Add(0)
            .Add(0UL).Add(0UL).Add(0).Add(0).Add(0).Add(0f);
        void Launch() => CudaDriver.Launch(forward, (1, 1, 1), (256, 1, 1), 0, device.Stream, args);
        Launch();
        var expected = device.Download<float>(y);
        device.CopyToDevice<float>(Poison(N * M1), y);

        using var graph = CudaGraph.Capture(device.Stream, Launch);
        System.Runtime.InteropServices.MemoryMarshal.Write(args.Storage.AsSpan(args.Offset(7)), -1f); // alpha, after the capture
        graph.Launch(device.Stream);
        device.Synchronize();
        Assert.Equal(expected, device.Download<float>(y));
    }

    [Theory]
    [InlineData("stream synchronize", "cuStreamSynchronize")]
    [InlineData("context synchronize", "cuCtxSynchronize")]
    [InlineData("allocate", "cuMemAlloc_v2")]
    public void A_call_illegal_in_a_capture_fails_naming_it_and_ends_the_capture(string call, string driverCall)
    {
        using var device = Gpu.OpenForKernels();
        using var chain = new TwoLinears(device);
        using var y1 = device.Upload<float>(Poison(N * M1));
        using var y2 = device.Upload<float>(Poison(N * M2));
        var e = Assert.Throws<CudaException>(() => CudaGraph.Capture(device.Stream, () =>
        {
            chain.Run(y1, y2);
            if (call == "stream synchronize") device.Synchronize();
            else if (call == "context synchronize") CudaDriver.ContextSynchronize();
            else device.Allocate<float>(16).Dispose();
        }));
        Assert.Equal(CudaResult.StreamCaptureUnsupported, e.Result);
        Assert.StartsWith($"CUDA graph capture failed: {driverCall} failed: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);

        Assert.Equal(CudaStreamCaptureStatus.None, CudaDriver.CaptureStatus(device.Stream));
        Assert.All(device.Download<float>(y2), v => Assert.True(float.IsNaN(v), "the discarded capture ran"));
        chain.Run(y1, y2); // the stream works again
        device.Synchronize();
        Assert.All(device.Download<float>(y2), v => Assert.False(float.IsNaN(v), "a launch after the failed capture did not run"));
    }

    /// <summary>The legacy NULL stream (ILGPU's CUDA default stream, which the PTX route borrows) cannot be
    /// captured: docs/DECODE-GRAPHS.md depends on it. The driver's exact status is not asserted.</summary>
    [Fact]
    public void The_legacy_stream_cannot_be_captured()
    {
        using var device = Gpu.OpenForKernels();
        using var legacy = CudaStreamHandle.Borrow(0, device.Context);
        bool ran = false;
        var e = Assert.Throws<CudaException>(() => CudaGraph.Capture(legacy, () => ran = true));
        Assert.StartsWith("cuStreamBeginCapture_v2 failed: ", e.Message, StringComparison.Ordinal);
        Assert.False(ran);
    }

    [Fact]
    public void A_capture_an_ignored_illegal_call_invalidated_fails_at_its_end()
    {
        using var device = Gpu.OpenForKernels();
        using var chain = new TwoLinears(device);
        using var y1 = device.Upload<float>(Poison(N * M1));
        using var y2 = device.Upload<float>(Poison(N * M2));
        var e = Assert.Throws<CudaException>(() => CudaGraph.Capture(device.Stream, () =>
        {
            chain.Run(y1, y2);
            try
            {
                device.Synchronize();
            }
            catch (CudaException) { } // swallowed: the capture is invalidated all the same
        }));
        Assert.Equal(CudaResult.StreamCaptureInvalidated, e.Result);
        Assert.StartsWith("CUDA graph capture failed: cuStreamEndCapture failed: CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(CudaStreamCaptureStatus.None, CudaDriver.CaptureStatus(device.Stream));
    }
}
