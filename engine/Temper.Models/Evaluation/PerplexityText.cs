// The text a perplexity run scores, read from a file: a .txt file is one text; a .jsonl file holds one
// {"text": ...} object a line (blank lines skipped), the texts joined with "\n\n" as transformers' guide joins
// wikitext's rows. The text is tokenized once, with the special tokens the tokenizer adds around a single text
// (BOS where its post-processor adds one: HF's tokenizer(text)), and cut to its first maxTokens ids.
// Bad input is one TemperException naming the file (and the line for JSONL).
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Models.Evaluation;

public static class PerplexityText
{
    /// <summary>The file's text: a .txt file whole, a .jsonl file's "text" fields joined with "\n\n".</summary>
    public static string Read(string path)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: data file not found");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is not (".txt" or ".jsonl")) throw new TemperException($"{path}: expected a .txt file (one text) or a .jsonl file (one {{\"text\": ...}} a line), not '{ext}'");
        string content = File.ReadAllText(path);
        if (content.Length == 0) throw new TemperException($"{path}: the file is empty");
        if (ext == ".txt") return content;

        var texts = new List<string>();
        var lines = content.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].TrimEnd('\r');
            if (line.Trim().Length == 0) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new TemperException($"{path}:{i + 1}: not JSON ({e.Message.Split('.')[0]})"); }
            if (node is not JsonObject obj) throw new TemperException($"{path}:{i + 1}: expected a JSON object {{\"text\": ...}}");
            if (obj["text"] is not JsonValue v || !v.TryGetValue(out string? text))
                throw new TemperException($"{path}:{i + 1}: no string \"text\" field");
            texts.Add(text);
        }
        if (texts.Count == 0) throw new TemperException($"{path}: the file has no JSON lines (it is empty)");
        return string.Join("\n\n", texts);
    }

    /// <summary>The file's text tokenized with the tokenizer's special tokens, cut to maxTokens; at least 2 ids.</summary>
    public static int[] Tokenize(string path, string text, HfTokenizer tokenizer, int? maxTokens = null)
    {
        if (maxTokens is < 2) throw new TemperException($"--max-tokens {maxTokens} must be at least 2 (a token is scored from the one before it)");
        var ids = tokenizer.EncodeWithSpecialTokens(text);
        int n = Math.Min(ids.Count, maxTokens ?? int.MaxValue);
        if (n < 2) throw new TemperException($"{path}: the text is {n} token{(n == 1 ? "" : "s")} long; perplexity needs at least 2");
        return ids.Take(n).ToArray();
    }
}
