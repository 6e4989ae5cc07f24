// llama.cpp's SentencePiece vocabulary ("llama") both ways, on SpmTiny's tokenizer beside llama-tiny's weights: the
// metadata (model, scores = -(lowest rank of a merge making the token) with 0 for chars and bytes, types 2 unk / 3
// control / 6 byte, add_space_prefix, no merges) read back by the tests' own GgufFile; llama.cpp's llm_tokenizer_spm
// (written out here from src/llama-vocab.cpp: join the adjacent pair whose concatenation is a token of highest score,
// leftmost on ties; leftovers as <0xNN>; a space before each fragment at the start or after a special token) run on
// the file's tokens and scores gives Temper's ids, everywhere for the older Prepend/Replace normalizer and apart from
// the documented space differences for Metaspace; export -> import gives SpmConverter's merges back and the same ids;
// a file with other scores (shuffled) imports to merges that join pairs in llama.cpp's order for those scores;
// refusals of what llama.cpp's SPM vocabulary cannot say. (Against llama.cpp itself: docs/GGUF.md.)
using System.Text;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Text;

namespace Temper.Tests;

public class GgufSpmTests
{
    private static string Export(string modelDir)
    {
        using var lm = LanguageModel.Load(modelDir, new CpuBackend());
        string path = Path.Combine(TempFolder.Create("temper-gguf-spm"), "model.gguf");
        GgufExport.Save(path, lm, lm.Decoder.Backend, "f32");
        return path;
    }

    [Fact]
    public void Metadata_is_llama_cpp_s_spm_vocabulary()
    {
        var (vocab, merged, merges) = SpmTiny.Build();
        var g = new GgufFile(Export(SpmTiny.Folder()));
        Assert.Equal("llama", g.Get<string>("tokenizer.ggml.model"));
        Assert.Equal("default", g.Get<string>("tokenizer.ggml.pre"));
        Assert.True(g.Get<bool>("tokenizer.ggml.add_space_prefix"));
        Assert.False(g.Metadata.ContainsKey("tokenizer.ggml.merges"));
        var tokens = g.Get<object[]>("tokenizer.ggml.tokens").Cast<string>().ToArray();
        Assert.Equal(512, tokens.Length);
        Assert.Equal(vocab, tokens.Take(vocab.Count));
        var types = g.Get<object[]>("tokenizer.ggml.token_type").Select(Convert.ToInt32).ToArray();
        Assert.Equal([2, 3, 3], types[..3]);
        Assert.All(types[3..259], t => Assert.Equal(6, t));
        Assert.All(types[259..vocab.Count], t => Assert.Equal(1, t));
        Assert.All(types[vocab.Count..], t => Assert.Equal(5, t));
        var scores = g.Get<object[]>("tokenizer.ggml.scores").Cast<float>().ToArray();
        int first = vocab.Count - merged.Count, rank = 0;
        Assert.All(scores[..first], s => Assert.Equal(0f, s));
        for (int i = 0; i < merged.Count; i++)
        {
            Assert.Equal(-rank, scores[first + i]); // merges are in token order, so a token's first merge comes after all earlier tokens' merges
            Assert.True(merged[i].Splits > 0);
            rank += merged[i].Splits;
        }
        Assert.Equal(merges.Count, rank);
        Assert.Equal(0u, g.Get<uint>("tokenizer.ggml.unknown_token_id"));
        Assert.Equal(1u, g.Get<uint>("tokenizer.ggml.bos_token_id"));
        Assert.Equal(2u, g.Get<uint>("tokenizer.ggml.eos_token_id"));
        Assert.True(g.Get<bool>("tokenizer.ggml.add_bos_token"));
        Assert.False(g.Get<bool>("tokenizer.ggml.add_eos_token"));
    }

    // llama.cpp's llama_vocab::impl::tokenize for an SPM vocabulary, with parse_special and no BOS: specials are cut out
    // first (longest first), each text fragment gets a space in front when it starts the text or follows a special,
    // spaces become '▁', then llm_tokenizer_spm_session::tokenize.
    private static List<int> LlamaCpp(string[] tokens, float[] scores, int[] types, string text)
    {
        var id = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++) id[tokens[i]] = i;
        var specials = Enumerable.Range(0, tokens.Length).Where(i => types[i] is 2 or 3 or 4).OrderByDescending(i => tokens[i].Length).ToList();
        var output = new List<int>();
        bool previousSpecial = true;
        int start = 0;
        while (start <= text.Length)
        {
            int at = text.Length, which = -1;
            foreach (var s in specials)
            {
                int k = text.IndexOf(tokens[s], start, StringComparison.Ordinal);
                if (k >= 0 && k < at) (at, which) = (k, s);
            }
            if (at > start)
            {
                string fragment = ((previousSpecial ? " " : "") + text[start..at]).Replace(' ', '\u2581');
                Spm(fragment, id, scores, output);
                previousSpecial = false;
            }
            if (which < 0) break;
            output.Add(which);
            previousSpecial = true;
            start = at + tokens[which].Length;
        }
        return output;
    }

    private static void Spm(string text, Dictionary<string, int> id, float[] scores, List<int> output)
    {
        var symbols = new List<string>();
        for (int i = 0; i < text.Length; i += char.IsSurrogatePair(text, i) ? 2 : 1) symbols.Add(char.ConvertFromUtf32(char.ConvertToUtf32(text, i)));
        while (true)
        {
            int best = -1;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (id.TryGetValue(symbols[i] + symbols[i + 1], out int t) && (best < 0 || scores[t] > scores[id[symbols[best] + symbols[best + 1]]]))
                    best = i;
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        foreach (var s in symbols)
            if (id.TryGetValue(s, out int t)) output.Add(t);
            else output.AddRange(Encoding.UTF8.GetBytes(s).Select(b => id[$"<0x{b:X2}>"]));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Llama_cpp_s_spm_algorithm_on_the_file_gives_temper_s_ids(bool legacyNormalizer)
    {
        string dir = SpmTiny.Folder(legacyNormalizer);
        var tok = HfTokenizer.Load(dir);
        var g = new GgufFile(Export(dir));
        var tokens = g.Get<object[]>("tokenizer.ggml.tokens").Cast<string>().ToArray();
        var scores = g.Get<object[]>("tokenizer.ggml.scores").Cast<float>().ToArray();
        var types = g.Get<object[]>("tokenizer.ggml.token_type").Select(Convert.ToInt32).ToArray();
        int space = Array.IndexOf(tokens, "\u2581");
        foreach (var text in SpmTiny.Texts)
        {
            var temper = tok.Encode(text).ToList();
            var llama = LlamaCpp(tokens, scores, types, text);
            if (legacyNormalizer || !(text.StartsWith(' ') || text.Contains("<s>") || text.Contains("</s>")))
                Assert.True(temper.SequenceEqual(llama), $"'{text}': Temper [{string.Join(",", temper)}], llama.cpp [{string.Join(",", llama)}]");
            else if (text.StartsWith(' '))
                Assert.Equal([space, .. temper], llama); // Metaspace keeps " x" as '▁x'; llama.cpp prepends one more
            else
                Assert.NotEqual(temper, llama);          // Metaspace "first": no '▁' after a special token; llama.cpp adds one
        }
        Assert.Contains(SpmTiny.Texts, t => tok.Encode(t).Any(i => i is >= 3 and < 259)); // some text falls back to bytes
    }

    // The import spells the pre-processing as Llama 2's tokenizer.json (Prepend/Replace normalizer), which is what
    // llama.cpp does: it gives llama.cpp's ids on every text, and the original's where the original agrees with llama.cpp.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Export_then_import_gives_the_same_ids_and_spm_converter_s_merges(bool legacyNormalizer)
    {
        string dir = SpmTiny.Folder(legacyNormalizer), back = TempFolder.Create("temper-gguf-spm-back"), gguf = Export(dir);
        GgufImport.Save(gguf, back, "auto");
        var a = HfTokenizer.Load(dir);
        var b = HfTokenizer.Load(back);
        var g = new GgufFile(gguf);
        var tokens = g.Get<object[]>("tokenizer.ggml.tokens").Cast<string>().ToArray();
        var scores = g.Get<object[]>("tokenizer.ggml.scores").Cast<float>().ToArray();
        var types = g.Get<object[]>("tokenizer.ggml.token_type").Select(Convert.ToInt32).ToArray();
        foreach (var text in SpmTiny.Texts)
        {
            Assert.Equal(LlamaCpp(tokens, scores, types, text), b.Encode(text));
            if (!legacyNormalizer && (text.StartsWith(' ') || text.Contains("<s>") || text.Contains("</s>"))) continue;
            Assert.Equal(a.EncodeWithSpecialTokens(text), b.EncodeWithSpecialTokens(text));
            Assert.Equal(a.Decode(a.Encode(text)), b.Decode(b.Encode(text)));
        }
        var merges = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(back, "tokenizer.json")))!["model"]!["merges"]!.AsArray()
            .Select(m => (m![0]!.GetValue<string>(), m[1]!.GetValue<string>())).ToList();
        Assert.Equal(SpmTiny.Build().Merges, merges);
    }

    // A file whose scores are not Temper's (as llama.cpp's converter copies SentencePiece's own, in another order):
    // the merges the import rebuilds from them make Temper's tokenizer join pairs in llama.cpp's order.
    [Fact]
    public void Imported_merges_follow_the_file_s_scores()
    {
        string gguf = Export(SpmTiny.Folder(legacyNormalizer: true)), back = TempFolder.Create("temper-gguf-spm-back");
        var g = new GgufFile(gguf);
        var tokens = g.Get<object[]>("tokenizer.ggml.tokens").Cast<string>().ToArray();
        var types = g.Get<object[]>("tokenizer.ggml.token_type").Select(Convert.ToInt32).ToArray();
        var random = new Random(11);
        var scores = types.Select(t => t == 1 ? -(float)random.Next(1, 100000) : 0f).ToArray();
        var bytes = File.ReadAllBytes(gguf);
        var key = Encoding.UTF8.GetBytes("tokenizer.ggml.scores");
        int at = bytes.AsSpan().IndexOf(key) + key.Length + 4 + 4; // value type (array), element type (f32), then the count
        Assert.Equal((ulong)tokens.Length, BitConverter.ToUInt64(bytes, at));
        for (int i = 0; i < scores.Length; i++) BitConverter.GetBytes(scores[i]).CopyTo(bytes, at + 8 + 4 * i);
        File.WriteAllBytes(gguf, bytes);
        GgufImport.Save(gguf, back, "auto");
        var original = HfTokenizer.Load(SpmTiny.Folder(legacyNormalizer: true));
        var imported = HfTokenizer.Load(back);
        foreach (var text in SpmTiny.Texts)
            Assert.Equal(LlamaCpp(tokens, scores, types, text), imported.Encode(text));
        Assert.Contains(SpmTiny.Texts, t => !original.Encode(t).SequenceEqual(imported.Encode(t))); // the order did change something
    }

    private static string Refusal(string dir)
    {
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var e = Assert.Throws<TemperException>(() => GgufExport.Save(Path.Combine(TempFolder.Create("temper-gguf-spm"), "m.gguf"), lm, lm.Decoder.Backend, "f32"));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void What_llama_cpp_s_spm_vocabulary_cannot_say_is_refused()
    {
        Assert.Contains("SentencePiece's pre-processing", Refusal(SpmTiny.Folder(edit: t => t["pre_tokenizer"]!["split"] = true)));
        Assert.Contains("<0x41> is missing", Refusal(SpmTiny.Folder(edit: t =>
        {
            var vocab = t["model"]!["vocab"]!.AsObject();
            vocab["<0x41>x"] = vocab["<0x41>"]!.GetValue<int>();
            vocab.Remove("<0x41>");
        })));
        Assert.Contains("ignore_merges", Refusal(SpmTiny.Folder(edit: t => t["model"]!["ignore_merges"] = true)));
    }
}
