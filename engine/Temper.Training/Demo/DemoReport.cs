// OUT/report.html: one self-contained page (no scripts, no external files) with the results table,
// an inline SVG chart per trained stage of its curves from metrics.jsonl (loss, and GRPO's reward or
// DPO's reward margin), the showcase prompts answered side by side by every stage, and the standalone
// command that reruns each stage.
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Tasks;

namespace Temper.Training.Demo;

public static class DemoReport
{
    private static readonly string[] Colors = ["#1f77b4", "#d62728"];

    public static string Write(string outDir, IReadOnlyList<DemoStageResult> results, IReadOnlyList<TaskItem> showcase)
    {
        var h = new StringBuilder();
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>temper demo</title><style>")
         .Append("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}table{border-collapse:collapse;margin:1em 0}")
         .Append("td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}td.n{text-align:right}")
         .Append("code,pre{background:#f6f6f6;font-size:90%}pre{padding:8px;white-space:pre-wrap;word-break:break-all}")
         .Append(".charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;padding:6px}</style></head><body>\n")
         .Append("<h1>temper demo: from a base model to an aligned one</h1>\n")
         .Append("<p>The base was pretrained by Temper on sums in other surface forms (<code>23+58=81</code>, <code>Answer: 81 = 23+58</code>): it has seen the words but not the format. ")
         .Append("SFT teaches the format <code>What is 23+58?</code> &rarr; <code>Answer: 81</code>; DPO prefers that format over the base's habits; ")
         .Append("GRPO rewards correct answers. Every stage is evaluated on held-out sums it never trained on: accuracy, format and length of greedy answers, ")
         .Append("and the mean reward (1 correct, 0.1 right format but wrong sum) of answers sampled at temperature 1, four per prompt, which is what GRPO optimizes.</p>\n");

        h.Append("<h2>Results</h2>\n<table><tr><th>stage</th><th>accuracy</th><th>format</th><th>mean reward (sampled)</th><th>mean length</th><th>steps</th><th>seconds</th></tr>\n");
        foreach (var r in results)
            h.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(r.Stage)}</td><td class=n>{r.Eval.Accuracy:P1}</td><td class=n>{r.Eval.FormatRate:P1}</td><td class=n>{r.SampledReward:F3}</td><td class=n>{r.Eval.MeanLength:F1}</td><td class=n>{r.Steps}</td><td class=n>{r.Seconds:F1}</td></tr>\n");
        h.Append("</table>\n");

        h.Append("<h2>Training curves</h2>\n<div class=\"charts\">\n");
        foreach (var r in results)
        {
            if (r.OutDir == null) continue;
            var metrics = Path.Combine(r.OutDir, "metrics.jsonl");
            if (!File.Exists(metrics)) continue;
            var lines = File.ReadAllLines(metrics).Where(l => l.Length > 0).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
            var series = new List<(string, List<(double, double)>)> { ("loss", Series(lines, "loss")) };
            foreach (var extra in new[] { "reward", "reward_margin" })
                if (lines.Any(l => l.ContainsKey(extra))) { series.Add((extra, Series(lines, extra))); break; }
            h.Append("<div class=\"chart\"><b>").Append(E(r.Stage)).Append("</b><br>").Append(Chart(series)).Append("</div>\n");
        }
        h.Append("</div>\n");

        h.Append("<h2>The same prompts, answered by every stage</h2>\n<table><tr><th>prompt</th><th>expected</th>");
        foreach (var r in results) h.Append("<th>").Append(E(r.Stage)).Append("</th>");
        h.Append("</tr>\n");
        for (int i = 0; i < showcase.Count; i++)
        {
            h.Append("<tr><td>").Append(E(showcase[i].Prompt)).Append("</td><td><code>").Append(E(showcase[i].Completion)).Append("</code></td>");
            foreach (var r in results)
            {
                string a = i < r.Answers.Count ? r.Answers[i] : "";
                string mark = AdditionTask.Score(a, showcase[i]).Correct ? " &#10003;" : "";
                h.Append("<td><code>").Append(E(a.Replace("\n", "\u21b5", StringComparison.Ordinal))).Append("</code>").Append(mark).Append("</td>");
            }
            h.Append("</tr>\n");
        }
        h.Append("</table>\n");

        h.Append("<h2>Reproduce each stage with the standalone verbs</h2>\n");
        foreach (var r in results)
            if (r.Command != null) h.Append("<p>").Append(E(r.Stage)).Append(":</p><pre>").Append(E(r.Command)).Append("</pre>\n");
        h.Append("</body></html>\n");

        string path = Path.Combine(outDir, "report.html");
        AtomicFile.WriteAllText(path, h.ToString());
        return path;
    }

    private static List<(double, double)> Series(List<JsonObject> lines, string key) =>
        lines.Where(l => l[key] is JsonValue v && v.TryGetValue<double>(out _))
             .Select(l => (l["step"]!.GetValue<double>(), l[key]!.GetValue<double>())).ToList();

    // One 420x220 chart; each series gets its own y range (its axis labels in its colour).
    private static string Chart(List<(string Name, List<(double X, double Y)> Points)> series)
    {
        const double W = 420, H = 220, L = 48, R = 48, T = 12, B = 30;
        var s = new StringBuilder();
        s.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">");
        s.Append(CultureInfo.InvariantCulture, $"<rect x=\"{L}\" y=\"{T}\" width=\"{W - L - R}\" height=\"{H - T - B}\" fill=\"none\" stroke=\"#999\"/>");
        var all = series.SelectMany(x => x.Points).ToList();
        if (all.Count == 0) return s.Append("</svg>").ToString();
        double x0 = all.Min(p => p.X), x1 = Math.Max(x0 + 1, all.Max(p => p.X));
        s.Append(CultureInfo.InvariantCulture, $"<text x=\"{L}\" y=\"{H - 8}\" font-size=\"11\">step {x0:G4}</text><text x=\"{W - R}\" y=\"{H - 8}\" font-size=\"11\" text-anchor=\"end\">{x1:G4}</text>");
        for (int k = 0; k < series.Count; k++)
        {
            var (name, pts) = series[k];
            if (pts.Count == 0) continue;
            double y0 = pts.Min(p => p.Y), y1 = pts.Max(p => p.Y);
            if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
            string color = Colors[k % Colors.Length];
            var poly = string.Join(' ', pts.Select(p => string.Create(CultureInfo.InvariantCulture,
                $"{L + (p.X - x0) / (x1 - x0) * (W - L - R):F1},{T + (y1 - p.Y) / (y1 - y0) * (H - T - B):F1}")));
            s.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{poly}\"/>");
            double ax = k == 0 ? L - 4 : W - R + 4;
            string anchor = k == 0 ? "end" : "start";
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{ax}\" y=\"{T + 10}\" font-size=\"11\" fill=\"{color}\" text-anchor=\"{anchor}\">{y1:G3}</text>");
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{ax}\" y=\"{H - B}\" font-size=\"11\" fill=\"{color}\" text-anchor=\"{anchor}\">{y0:G3}</text>");
            s.Append(CultureInfo.InvariantCulture, $"<text x=\"{L + 8 + 110 * k}\" y=\"{T + 16}\" font-size=\"12\" fill=\"{color}\">{E(name)}</text>");
        }
        return s.Append("</svg>").ToString();
    }

    private static string E(string s) => WebUtility.HtmlEncode(s);
}
