// Stream capture and CUDA graphs. Between BeginCapture and EndCapture the launches, copies and memsets issued
// to a stream are recorded into a graph instead of running; an instantiated graph replays them all with one
// cuGraphLaunch. A kernel's argument VALUES are copied at capture (every replay passes the same pointers,
// sizes and scalars) while device MEMORY is read when the replay runs, so a value that changes per replay
// (a position, a KV length) must live in a device buffer the kernels read. CudaGraph is the facade:
//   using var graph = CudaGraph.Capture(device.Stream, () => { linear.Forward(...); linear.Forward(...); });
//   graph.Launch(device.Stream);
// A call the driver forbids during a capture (synchronising the capturing stream or the context, cuMemAlloc
// or cuMemFree from the capturing thread, ...) fails; Capture then ends and discards the capture and throws
// one line naming that call, and the stream is usable again.
namespace Temper.Cuda.Driver;

public static unsafe partial class CudaDriver
{
    /// <summary>Starts capturing <paramref name="stream"/> (not the legacy stream 0): its work is recorded, not run.</summary>
    public static void BeginCapture(CudaStreamHandle stream, CudaStreamCaptureMode mode)
    {
        CudaCheck.Ok(CudaImports.cuStreamBeginCapture_v2(Raw(stream), mode));
        GC.KeepAlive(stream);
    }

    /// <summary>Ends the capture <paramref name="stream"/> began (on the same thread unless the mode was
    /// Relaxed) and returns its graph; an invalidated capture throws CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.</summary>
    public static CudaGraphHandle EndCapture(CudaStreamHandle stream)
    {
        nint graph = 0;
        var result = CudaImports.cuStreamEndCapture(Raw(stream), &graph);
        GC.KeepAlive(stream);
        if (result != CudaResult.Success && graph != 0) CudaImports.cuGraphDestroy(graph);
        CudaCheck.Ok(result, nameof(CudaImports.cuStreamEndCapture));
        return new CudaGraphHandle(graph, stream.Context);
    }

    /// <summary>Ends a capture whatever its state and destroys what it recorded (after a failed capture).</summary>
    internal static void DiscardCapture(CudaStreamHandle stream)
    {
        nint graph = 0;
        CudaImports.cuStreamEndCapture(Raw(stream), &graph); // an invalidated capture returns an error and no graph
        if (graph != 0) CudaImports.cuGraphDestroy(graph);
        GC.KeepAlive(stream);
    }

    public static CudaStreamCaptureStatus CaptureStatus(CudaStreamHandle? stream)
    {
        CudaStreamCaptureStatus status;
        CudaCheck.Ok(CudaImports.cuStreamIsCapturing(Raw(stream), &status));
        GC.KeepAlive(stream);
        return status;
    }

    /// <summary>How many nodes (launches, copies, memsets) the graph holds.</summary>
    public static long GraphNodeCount(CudaGraphHandle graph)
    {
        nuint count = 0;
        CudaCheck.Ok(CudaImports.cuGraphGetNodes(Raw(graph), null, &count));
        GC.KeepAlive(graph);
        return (long)count;
    }

    /// <summary>An executable copy of <paramref name="graph"/>; the graph itself may be disposed after.</summary>
    public static CudaGraphExecHandle Instantiate(CudaGraphHandle graph)
    {
        nint exec;
        CudaCheck.Ok(CudaImports.cuGraphInstantiateWithFlags(&exec, Raw(graph), 0));
        GC.KeepAlive(graph);
        return new CudaGraphExecHandle(exec, graph.Context);
    }

    /// <summary>Replays the graph's work on <paramref name="stream"/>, in stream order with its other work.</summary>
    public static void LaunchGraph(CudaGraphExecHandle exec, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuGraphLaunch(Raw(exec), Raw(stream)));
        GC.KeepAlive(exec);
        GC.KeepAlive(stream);
    }
}

/// <summary>The work one callback issues to a stream, captured once and replayed per Launch.</summary>
public sealed class CudaGraph : IDisposable
{
    readonly CudaGraphExecHandle exec;

    CudaGraph(CudaGraphExecHandle exec, long nodeCount)
    {
        this.exec = exec;
        NodeCount = nodeCount;
    }

    /// <summary>The launches, copies and memsets captured.</summary>
    public long NodeCount { get; }

    /// <summary>Runs <paramref name="work"/> with <paramref name="stream"/> capturing, so the work it issues to that
    /// stream is recorded, not run, and returns the instantiated graph. ThreadLocal (the default) forbids unsafe
    /// calls to this thread only; Global forbids them to every thread while the capture runs.</summary>
    public static CudaGraph Capture(CudaStreamHandle stream, Action work, CudaStreamCaptureMode mode = CudaStreamCaptureMode.ThreadLocal)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(work);
        CudaDriver.BeginCapture(stream, mode);
        try
        {
            work();
        }
        catch (Exception e)
        {
            CudaDriver.DiscardCapture(stream);
            if (e is CudaException c) throw new CudaException($"CUDA graph capture failed: {c.Message}; the capture was ended and discarded", c.Result, c);
            throw;
        }
        CudaGraphHandle graph;
        try
        {
            graph = CudaDriver.EndCapture(stream);
        }
        catch (CudaException e) when (e.Result == CudaResult.StreamCaptureInvalidated)
        {
            throw new CudaException($"CUDA graph capture failed: {e.Message}: a call during the capture broke its rules and its error was not thrown", e.Result, e);
        }
        using (graph) return new CudaGraph(CudaDriver.Instantiate(graph), CudaDriver.GraphNodeCount(graph));
    }

    /// <summary>Replays the captured work on <paramref name="stream"/> (asynchronous, like the launches it stands for).</summary>
    public void Launch(CudaStreamHandle stream) => CudaDriver.LaunchGraph(exec, stream);

    public void Dispose() => exec.Dispose();
}
