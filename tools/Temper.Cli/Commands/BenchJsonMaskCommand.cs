// `temper bench json-mask (--model DIR | --tiktoken FILE) [--schema FILE] [--document FILE]`: what
// JSON-constrained decoding costs a decode step on a vocabulary: the byte trie's build time, then, walking a
// JSON document token by token (json_object, or the schema's constraint when given), the time of each state's
// mask computed afresh (an empty cache: what a new state costs) and of the same mask from the cache. DIR's
// tokenizer.json is the vocabulary, or a tiktoken file (base64 token per line, rank = line; e.g. o200k_base
// from the Microsoft.ML.Tokenizers.Data.O200kBase package), whose document is cut by longest match. A first
// pass warms the JIT; the figures are the second's.
using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Temper.Core;
using Temper.Models.Constrained;
using Temper.Models.Text;

namespace Temper.Cli.Commands;

internal static class BenchJsonMaskCommand
{
    private const string SampleDocument = """
        {"name": "Zoë Müller", "age": 42, "city": "東京 (Tokyo)", "tags": ["a", "bcd"], "ok": true,
          "bio": "Loves JSON \"quotes\" and emoji 😀; works on decoding.", "score": -12.5e3, "color": "green"}
        """;

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model or tokenizer folder (its tokenizer.json is the vocabulary)" };
        var tiktoken = new Option<string?>("--tiktoken") { Description = "A tiktoken vocabulary file instead (base64 token per line)" };
        var schema = new Option<string?>("--schema") { Description = "Time the constraint of this JSON Schema file (default: json_object)" };
        var document = new Option<string?>("--document") { Description = "The JSON document to walk (default: a built-in one with strings, numbers, an array and non-ASCII text)" };
        var cmd = new Command("json-mask", "Time JSON-constrained decoding's token mask on a vocabulary") { model, tiktoken, schema, document };
        cmd.SetGuardedAction(p =>
        {
            if ((p.GetValue(model) == null) == (p.GetValue(tiktoken) == null)) throw new TemperException("give --model DIR or --tiktoken FILE");
            string doc = p.GetValue(document) is { } d ? File.ReadAllText(d) : SampleDocument;
            string? schemaText = p.GetValue(schema) is { } s ? File.ReadAllText(s) : null;
            var sw = Stopwatch.StartNew();
            (TokenVocabulary vocab, IReadOnlyList<int> ids) = p.GetValue(tiktoken) is { } file ? FromTiktoken(file, doc) : FromModel(p.GetValue(model)!, doc);
            Console.WriteLine($"vocabulary {vocab.Size} tokens, trie {vocab.TrieNodes} nodes, built in {sw.ElapsedMilliseconds} ms");
            JsonConstraint Make() => schemaText == null ? JsonConstraint.ForObject(vocab) : JsonConstraint.ForSchema(vocab, schemaText);
            Make().Start(); // a bad schema fails here, before any timing
            double[] fresh = [], cached = [];
            for (int pass = 0; pass < 2; pass++) (fresh, cached) = Walk(Make, ids);
            Array.Sort(fresh);
            Array.Sort(cached);
            Console.WriteLine($"{(schemaText == null ? "json_object" : "json_schema")}: {ids.Count} states; uncached mask ms: mean {fresh.Average():F2}, median {fresh[fresh.Length / 2]:F2}, "
                + $"p90 {fresh[(int)(fresh.Length * 0.9)]:F2}, max {fresh[^1]:F2}; cached mean {cached.Average() * 1000:F1} us");
            return 0;
        });
        return cmd;
    }

    // Each state along the document: its mask from a fresh constraint (no cache), then again (cached), in ms.
    private static (double[] Fresh, double[] Cached) Walk(Func<JsonConstraint> make, IReadOnlyList<int> ids)
    {
        var fresh = new double[ids.Count];
        var cached = new double[ids.Count];
        var prefix = new List<int>();
        for (int i = 0; i < ids.Count; i++)
        {
            var state = make().Start();
            foreach (int id in prefix) state.Advance(id);
            long t0 = Stopwatch.GetTimestamp();
            if (!state.Allows(ids[i])) throw new TemperException($"the document's token {i} (id {ids[i]}) does not continue the JSON: is it valid for the constraint?");
            fresh[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            t0 = Stopwatch.GetTimestamp();
            state.Allows(ids[i]);
            cached[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            prefix.Add(ids[i]);
        }
        return (fresh, cached);
    }

    private static (TokenVocabulary, IReadOnlyList<int>) FromModel(string dir, string doc)
    {
        var tok = HfTokenizer.Load(dir);
        int eos = tok.EosId ?? throw new TemperException($"{dir}: the tokenizer names no EOS token");
        return (TokenVocabulary.From(tok, [eos]), tok.Encode(doc));
    }

    // A tiktoken file: one base64 token a line (an optional "Capacity: N" first line), id = line; EOS is one more id.
    private static (TokenVocabulary, IReadOnlyList<int>) FromTiktoken(string file, string doc)
    {
        if (!File.Exists(file)) throw new TemperException($"--tiktoken {file}: file not found");
        var tokens = new List<byte[]?>();
        foreach (var line in File.ReadLines(file))
        {
            if (line.StartsWith("Capacity:", StringComparison.Ordinal) || line.Length == 0) continue;
            try { tokens.Add(Convert.FromBase64String(line.Split(' ')[0])); }
            catch (FormatException) { throw new TemperException($"--tiktoken {file}: line {tokens.Count + 1} is not base64"); }
        }
        int eos = tokens.Count;
        tokens.Add(null);
        var byHex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < eos; i++) byHex.TryAdd(Convert.ToHexString(tokens[i]!), i);
        int longest = tokens.Take(eos).Max(t => t!.Length);
        var bytes = Encoding.UTF8.GetBytes(doc);
        var ids = new List<int>();
        for (int at = 0; at < bytes.Length;)
        {
            int n = Math.Min(longest, bytes.Length - at);
            while (n > 0 && !byHex.ContainsKey(Convert.ToHexString(bytes, at, n))) n--;
            if (n == 0) throw new TemperException($"--tiktoken {file}: no token for byte {bytes[at]:X2} of the document");
            ids.Add(byHex[Convert.ToHexString(bytes, at, n)]);
            at += n;
        }
        return (new TokenVocabulary(tokens, [eos]), ids);
    }
}
