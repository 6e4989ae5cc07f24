// CudaDecodeGraph.Profile: each part of a decode step's GPU time, from a second captured graph holding an
// external event record node (cuEventRecordWithFlags, CU_EVENT_RECORD_EXTERNAL) after each part, so the
// times carry no launch overhead; parts are summed over layers per step. Its launches never overlap (DependentLaunch
// aside): each part is timed alone.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed partial class CudaDecodeGraph
{
    /// <summary>The GPU time of each part of a step (ms per step, summed over layers, with its calls per step),
    /// from <paramref name="steps"/> steps of a second graph that holds an event record node after each part
    /// (CU_EVENT_RECORD_EXTERNAL), so the times carry no launch overhead. The steps are real decode steps:
    /// Position advances as with Step.</summary>
    public IReadOnlyList<(string Part, int Calls, double Ms)> Profile(int steps)
    {
        if (_promptLengths.Length == 0) throw new InvalidOperationException("CudaDecodeGraph: Start the rows before profiling");
        if (_graph == null) Step(); // the uncaptured first step loads the modules
        if (steps < 1 || Position + steps > Capacity - 1)
            throw new ArgumentOutOfRangeException(nameof(steps), $"{steps} profiled steps from position {Position} pass the capacity of {Capacity} positions");
        if (_profile == null)
        {
            var labels = new List<string>();
            var events = new List<CudaEventHandle> { _device.CreateEvent() };
            int marks = 3 + 6 * _layers.Length;
            for (int i = 0; i < marks; i++) events.Add(_device.CreateEvent());
            Overlap(false); // each part timed alone, between its events
            try
            {
                var graph = CudaGraph.Capture(_device.Stream, () =>
                {
                    CudaDriver.RecordEventExternal(events[0], _device.Stream);
                    LaunchStep(label =>
                    {
                        labels.Add(label);
                        CudaDriver.RecordEventExternal(events[labels.Count], _device.Stream);
                    });
                });
                _profile = (graph, events, labels);
            }
            finally
            {
                Overlap(true);
            }
        }
        var (g, ev, names) = _profile.Value;
        var totals = new Dictionary<string, (int Calls, double Ms)>();
        for (int step = 0; step < steps; step++)
        {
            g.Launch(_device.Stream);
            Position++;
            _device.Synchronize();
            for (int i = 0; i < names.Count; i++)
            {
                var (calls, ms) = totals.GetValueOrDefault(names[i]);
                totals[names[i]] = (step == 0 ? calls + 1 : calls, ms + CudaDriver.ElapsedMilliseconds(ev[i], ev[i + 1]));
            }
        }
        return [.. names.Distinct().Select(n => (n, totals[n].Calls, totals[n].Ms / steps))];
    }
}
