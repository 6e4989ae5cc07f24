// A training run's metrics.jsonl as the tests read it: one JSON object per logged step, in order.
using System.Text.Json.Nodes;

namespace Temper.Tests;

internal static class RunMetrics
{
    /// <summary>Every line of DIR/metrics.jsonl (blank lines skipped).</summary>
    public static JsonObject[] Read(string dir) =>
        File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject()).ToArray();

    /// <summary>The first logged step of DIR/metrics.jsonl.</summary>
    public static JsonObject First(string dir) => JsonNode.Parse(File.ReadLines(Path.Combine(dir, "metrics.jsonl")).First())!.AsObject();
}
