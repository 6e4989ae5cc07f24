// Learning-rate schedules as transformers defines them (get_scheduler): a linear warmup from 0 over
// WarmupSteps, then constant, linear decay to 0, or cosine decay to 0 at TotalSteps.
using Temper.Core;

namespace Temper.Training.Optim;

public enum ScheduleKind { Constant, Linear, Cosine }

public sealed record LrSchedule(ScheduleKind Kind, float PeakLr, int WarmupSteps, int TotalSteps)
{
    public static ScheduleKind Parse(string name) => name switch
    {
        "constant" => ScheduleKind.Constant,
        "linear" => ScheduleKind.Linear,
        "cosine" => ScheduleKind.Cosine,
        _ => throw new TemperException($"--lr-scheduler must be constant, linear or cosine, not '{name}'"),
    };

    /// <summary>The learning rate of update number <paramref name="step"/> (0-based).</summary>
    public float At(int step)
    {
        if (step < WarmupSteps) return PeakLr * step / Math.Max(1, WarmupSteps);
        if (Kind == ScheduleKind.Constant) return PeakLr;
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        progress = Math.Clamp(progress, 0, 1);
        return Kind == ScheduleKind.Linear
            ? (float)(PeakLr * (1 - progress))
            : (float)(PeakLr * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }
}
