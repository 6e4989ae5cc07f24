// How the op benches (bench ops, attention, nf4) time one backend call: once as a warm-up (JIT, kernel
// compilation, pool), then reps times between two device synchronisations; seconds per call.
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Ilgpu;

namespace Temper.Cli.Commands;

internal static class OpTimer
{
    public static double Seconds(IBackend be, int reps, Action op)
    {
        op();
        (be as IlgpuBackend)?.Synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) op();
        (be as IlgpuBackend)?.Synchronize();
        return sw.Elapsed.TotalSeconds / reps;
    }
}
