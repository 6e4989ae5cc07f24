// A summary column that turns each case's mean time (or its fastest iteration, which shared machines
// disturb least) into a rate: GFLOP/s or GB/s, from the work one operation does (given per case by the
// benchmark class).
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Temper.Bench;

public sealed class ThroughputColumn(string name, Func<BenchmarkCase, double> workPerOp, bool fastest = false) : IColumn
{
    public string Id => nameof(ThroughputColumn) + name;
    public string ColumnName => name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"{name}: work per operation / {(fastest ? "the fastest iteration's time per operation" : "mean time")} (1e9 units per second)";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        var stats = report?.ResultStatistics;
        if (stats == null) return "-";
        double ns = fastest ? stats.Min : stats.Mean;
        return (workPerOp(benchmarkCase) / ns).ToString("F1", System.Globalization.CultureInfo.InvariantCulture); // units per ns = G units/s
    }

    public static string Param(BenchmarkCase c, string name) => c.Parameters[name]?.ToString() ?? "";
}
