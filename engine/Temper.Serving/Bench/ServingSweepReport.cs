// The report of a serving sweep (`temper bench serve-sweep`): throughput by concurrent requests for the
// base model (the cost of serving any one merged adapter) and for each number of adapters mixed in the
// batch, as one self-contained HTML page (a table and an inline SVG chart: x = concurrency on a log
// scale, y = generated tokens/s, one line per adapter count) and a JSON file of the same points.
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Temper.Core;

namespace Temper.Serving.Bench;

/// <summary>One measured point: Adapters 0 is the base model (merged-adapter cost).</summary>
public sealed record ServingSweepPoint(int Concurrency, int Adapters, double TokensPerSecond, double TtftP50Ms, double ItlP50Ms, double ItlP99Ms);

public static class ServingSweepReport
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
    private static readonly string[] Colors = ["#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

    public static string Label(int adapters) => adapters == 0 ? "merged (base model)" : adapters == 1 ? "1 adapter" : $"{adapters} adapters";

    /// <summary>Writes DIR/serve-sweep.html and DIR/serve-sweep.json (each through a temporary file); returns the HTML path.</summary>
    public static string Write(string dir, string title, IReadOnlyList<ServingSweepPoint> points)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, "serve-sweep.json"), JsonSerializer.Serialize(points, Indented));
        var concurrencies = points.Select(p => p.Concurrency).Distinct().Order().ToArray();
        var series = points.Select(p => p.Adapters).Distinct().Order().ToArray();
        var h = new StringBuilder();
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>temper serve sweep</title><style>")
         .Append("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px}")
         .Append("th{background:#f3f3f3}td{text-align:right}</style></head><body>\n")
         .Append("<h1>Serving throughput by concurrent requests and adapters</h1>\n<p>").Append(E(title)).Append("</p>\n")
         .Append(Chart(concurrencies, series, points))
         .Append("\n<table><tr><th>concurrent requests</th>");
        foreach (int a in series) h.Append("<th>").Append(E(Label(a))).Append(" tokens/s (TTFT p50, ITL p50)</th>");
        h.Append("</tr>\n");
        foreach (int c in concurrencies)
        {
            h.Append(CultureInfo.InvariantCulture, $"<tr><td>{c}</td>");
            foreach (int a in series)
                h.Append(points.FirstOrDefault(p => p.Concurrency == c && p.Adapters == a) is { } p
                    ? string.Create(CultureInfo.InvariantCulture, $"<td>{p.TokensPerSecond:F1} ({p.TtftP50Ms:F0} ms, {p.ItlP50Ms:F1} ms)</td>")
                    : "<td></td>");
            h.Append("</tr>\n");
        }
        h.Append("</table>\n</body></html>\n");
        string path = Path.Combine(dir, "serve-sweep.html");
        AtomicFile.WriteAllText(path, h.ToString());
        return path;
    }

    private static string Chart(int[] concurrencies, int[] series, IReadOnlyList<ServingSweepPoint> points)
    {
        const double W = 640, H = 360, L = 64, R = 170, T = 16, B = 40;
        double yMax = Math.Max(1e-9, points.Max(p => p.TokensPerSecond)) * 1.05;
        double X(int c) => concurrencies.Length == 1 ? L + (W - L - R) / 2
            : L + (Math.Log2(c) - Math.Log2(concurrencies[0])) / (Math.Log2(concurrencies[^1]) - Math.Log2(concurrencies[0])) * (W - L - R);
        double Y(double v) => T + (1 - v / yMax) * (H - T - B);
        var s = new StringBuilder();
        s.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">");
        s.Append(CultureInfo.InvariantCulture, $"<rect x=\"{L}\" y=\"{T}\" width=\"{W - L - R}\" height=\"{H - T - B}\" fill=\"none\" stroke=\"#999\"/>");
        foreach (int c in concurrencies)
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(c):F1}\" y=\"{H - B + 16}\" font-size=\"11\" text-anchor=\"middle\">{c}</text>");
        s.Append(CultureInfo.InvariantCulture, $"<text x=\"{(L + W - R) / 2:F1}\" y=\"{H - 6}\" font-size=\"12\" text-anchor=\"middle\">concurrent requests</text>");
        for (int i = 0; i <= 4; i++)
        {
            double v = yMax * i / 4;
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{L - 6}\" y=\"{Y(v) + 4:F1}\" font-size=\"11\" text-anchor=\"end\">{v:G3}</text>");
        }
        s.Append(CultureInfo.InvariantCulture, $"<text x=\"14\" y=\"{(T + H - B) / 2:F1}\" font-size=\"12\" transform=\"rotate(-90 14 {(T + H - B) / 2:F1})\" text-anchor=\"middle\">tokens/s</text>");
        for (int k = 0; k < series.Length; k++)
        {
            string color = Colors[k % Colors.Length];
            var pts = points.Where(p => p.Adapters == series[k]).OrderBy(p => p.Concurrency).ToArray();
            string poly = string.Join(' ', pts.Select(p => string.Create(CultureInfo.InvariantCulture, $"{X(p.Concurrency):F1},{Y(p.TokensPerSecond):F1}")));
            string dash = series[k] == 0 ? " stroke-dasharray=\"6 4\"" : "";
            s.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{poly}\"/>");
            foreach (var p in pts) s.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{X(p.Concurrency):F1}\" cy=\"{Y(p.TokensPerSecond):F1}\" r=\"3\" fill=\"{color}\"/>");
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{W - R + 10}\" y=\"{T + 14 + 18 * k}\" font-size=\"12\" fill=\"{color}\">{E(Label(series[k]))}</text>");
        }
        return s.Append("</svg>").ToString();
    }

    private static string E(string s) => WebUtility.HtmlEncode(s);
}
