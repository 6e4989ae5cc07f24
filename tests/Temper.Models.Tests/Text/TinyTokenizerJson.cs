// Builds small tokenizer.json files for tests. The byte-level one has exactly the 256 byte chars as its
// vocabulary (id = byte value) plus whatever merges a test adds, so the ids of plain text are its UTF-8
// bytes and every other effect (added tokens, normalizers, splits) shows plainly in the id list.
using System.Text;
using System.Text.Json.Nodes;
using Temper.Models.Text;

namespace Temper.Tests.Text;

internal static class TinyTokenizerJson
{
    /// <summary>GPT-2's byte-to-char table, written out here independently of the engine's.</summary>
    public static char ByteChar(byte b)
    {
        int next = 256;
        for (int x = 0; x < 256; x++)
        {
            bool printable = x is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            char c = printable ? (char)x : (char)next++;
            if (x == b) return c;
        }
        throw new InvalidOperationException();
    }

    public static string ByteChars(string text) => new(Encoding.UTF8.GetBytes(text).Select(ByteChar).ToArray());

    public static int[] Bytes(string text) => Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();

    /// <summary>A byte-level BPE: vocab = the 256 byte chars (id = byte) then each merge result in order.</summary>
    public static JsonObject ByteLevel(JsonNode? normalizer = null, JsonNode? preTokenizer = null, JsonArray? addedTokens = null,
        params string[][] merges)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar((byte)b).ToString()] = b;
        int next = 256;
        foreach (var m in merges) vocab[m[0] + m[1]] = next++;
        return new JsonObject
        {
            ["added_tokens"] = addedTokens ?? [],
            ["normalizer"] = normalizer,
            ["pre_tokenizer"] = preTokenizer ?? new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m[0], m[1])).ToArray()),
            },
        };
    }

    public static JsonObject Added(int id, string content, bool special = false, bool lstrip = false, bool rstrip = false,
        bool singleWord = false, bool? normalized = null) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = singleWord, ["lstrip"] = lstrip, ["rstrip"] = rstrip,
        ["normalized"] = normalized ?? !special, ["special"] = special,
    };

    public static HfTokenizer Load(JsonObject tokenizerJson, string? configJson = null) => LoadText(tokenizerJson.ToJsonString(), configJson);

    public static HfTokenizer LoadText(string tokenizerJson, string? configJson = null)
    {
        string dir = Path.Combine(Path.GetTempPath(), "temper-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizerJson);
            if (configJson != null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), configJson);
            return HfTokenizer.Load(dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
