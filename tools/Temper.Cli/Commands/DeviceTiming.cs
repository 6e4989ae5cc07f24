// Seconds per launch of some stream-ordered GPU work, timed with two events around `reps` launches after one
// warm-up launch (launch(0)); launch(i) gets the launch's index. Shared by the benches that time on a
// CUDA device through Temper.Cuda (bench gemv, bench decode --graph).
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Cli.Commands;

internal static class DeviceTiming
{
    public static double Seconds(CudaDevice device, int reps, Action<int> launch)
    {
        using var start = device.CreateEvent();
        using var end = device.CreateEvent();
        launch(0);
        device.Record(start);
        for (int i = 1; i <= reps; i++) launch(i);
        device.Record(end);
        CudaDriver.EventSynchronize(end);
        return CudaDriver.ElapsedMilliseconds(start, end) / 1e3 / reps;
    }
}
