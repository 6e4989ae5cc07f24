// Sequence-level distillation (the path DeepSeek-R1's small models took): the teacher answers each
// prompt (greedy, or sampled with a seed), the answers are written as prompt/completion JSONL beside
// the run (OUT/distill_data.jsonl, so the data is inspectable and the run reproducible), and the
// student is fine-tuned on them with the SFT recipe. Teacher and student must share a tokenizer.
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Trainers;

namespace Temper.Training.Distill;

public sealed record DistillOptions(string TeacherDir, string PromptsPath, int MaxNewTokens = 64, SamplingOptions? Sampling = null);

public sealed class SequenceDistiller(SftOptions student, DistillOptions d, IBackend backend)
{
    private static readonly JsonSerializerOptions Line = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    /// <summary>Writes the teacher's answers to OUT/distill_data.jsonl; returns that path.</summary>
    public string GenerateData()
    {
        if (!File.Exists(d.PromptsPath)) throw new TemperException($"{d.PromptsPath}: prompt file not found");
        using var teacher = LanguageModel.Load(d.TeacherDir, backend);
        var tok = teacher.RequireTokenizer();
        var rows = new List<(JsonNode Prompt, string Text)>();
        var lines = File.ReadAllLines(d.PromptsPath);
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            JsonObject o;
            try { o = JsonNode.Parse(lines[i]) as JsonObject ?? throw new TemperException($"{d.PromptsPath}:{i + 1}: not a JSON object"); }
            catch (JsonException e) { throw new TemperException($"{d.PromptsPath}:{i + 1}: not valid JSON: {e.Message.Split('\n')[0]}"); }
            var prompt = o["prompt"] ?? throw new TemperException($"{d.PromptsPath}:{i + 1}: missing field \"prompt\"");
            string text = prompt is JsonArray msgs ? teacher.RequireTemplate().Render(msgs, addGenerationPrompt: true)
                : prompt.GetValueKind() == JsonValueKind.String ? prompt.GetValue<string>()
                : throw new TemperException($"{d.PromptsPath}:{i + 1}: \"prompt\" must be text or a list of messages");
            rows.Add((prompt, text));
        }
        if (rows.Count == 0) throw new TemperException($"{d.PromptsPath}: no prompts");
        var gen = new Generator(teacher.Decoder);
        var options = new GenerationOptions { MaxNewTokens = d.MaxNewTokens, Sampling = d.Sampling ?? new SamplingOptions(), EosIds = teacher.EosIds() };
        string path = Path.Combine(student.OutDir, "distill_data.jsonl");
        Directory.CreateDirectory(student.OutDir);
        var output = new List<string>();
        for (int s = 0; s < rows.Count; s += 16)
        {
            var part = rows.Skip(s).Take(16).ToList();
            var results = gen.Generate(part.Select(r => (IReadOnlyList<int>)tok.Encode(r.Text)).ToList(), options);
            for (int j = 0; j < part.Count; j++)
            {
                string answer = tok.Decode(results[j].GeneratedIds, skipSpecialTokens: true);
                if (answer.Length == 0) { OnWarning?.Invoke($"{d.PromptsPath}: the teacher gave an empty answer to prompt {s + j + 1}; skipped"); continue; }
                JsonNode completion = part[j].Prompt is JsonArray
                    ? new JsonArray(new JsonObject { ["role"] = "assistant", ["content"] = answer })
                    : JsonValue.Create(answer);
                output.Add(new JsonObject { ["prompt"] = part[j].Prompt.DeepClone(), ["completion"] = completion }.ToJsonString(Line));
            }
        }
        AtomicFile.WriteAllText(path, string.Join("\n", output) + "\n");
        return path;
    }

    public SftResult Run(CancellationToken cancel = default)
    {
        string data = GenerateData();
        // A text answer whose first token merges with the prompt's last cannot be labelled exactly; such
        // lines are skipped and counted (SftTrainer warns with the count) rather than failing the run.
        var trainer = new SftTrainer(student with { DataPath = data, SkipBadLines = true }, backend) { OnStep = OnStep, OnWarning = OnWarning };
        return trainer.Run(cancel);
    }
}
