// metrics.jsonl: one JSON object per line (step, loss, grad_norm, lr, tokens_per_s, and any extra
// figures), flushed after each line so a crash loses nothing. On resume the lines after the
// checkpoint's step are dropped, so the file reads as one uninterrupted run.
using System.Globalization;
using System.Text.Json.Nodes;

namespace Temper.Training.Runs;

public sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter _writer;

    public MetricsLog(string path, int? resumeAfterStep)
    {
        Path = path;
        if (resumeAfterStep is int keep && File.Exists(path))
        {
            var kept = File.ReadAllLines(path).Where(l => l.Length > 0 && (JsonNode.Parse(l)?["step"]?.GetValue<int>() ?? int.MaxValue) <= keep).ToList();
            Core.AtomicFile.WriteAllText(path, kept.Count == 0 ? "" : string.Join("\n", kept) + "\n");
        }
        else if (File.Exists(path)) File.Delete(path);
        _writer = new StreamWriter(path, append: true);
    }

    public string Path { get; }

    public void Write(JsonObject line)
    {
        _writer.WriteLine(line.ToJsonString());
        _writer.Flush();
    }

    public static JsonObject Line(int step, double loss, double gradNorm, double lr, double tokensPerSecond) => new()
    {
        ["step"] = step,
        ["loss"] = Round(loss),
        ["grad_norm"] = Round(gradNorm),
        ["lr"] = lr,
        ["tokens_per_s"] = Math.Round(tokensPerSecond, 1),
    };

    /// <summary>Full precision for values tests compare (double round trip), no NaN in JSON.</summary>
    public static JsonNode? Round(double v) => double.IsFinite(v) ? JsonValue.Create(v) : JsonValue.Create(v.ToString(CultureInfo.InvariantCulture));

    public void Dispose() => _writer.Dispose();
}
