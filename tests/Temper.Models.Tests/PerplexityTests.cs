// Perplexity (Temper.Models.Evaluation): one window over a fixture row equals exp(mean NLL) computed in float64
// from transformers' logits; strided and disjoint windows score every token but the first exactly once, each
// NLL equal to -log softmax (float64) of the logits a plain forward over the window that scores it gives at the
// token before it; the batch size leaves every NLL alone; llama.cpp's +/-; every bad input refused in one line.
// Tolerance: a token's NLL is a difference of two logits' functions, so 2 x the logits' 1e-4 x max|ref|.
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Evaluation;

namespace Temper.Tests;

public class PerplexityTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    /// <summary>-log softmax(logits[row])[target] in float64.</summary>
    private static double Nll(ReadOnlySpan<float> logits, int row, int v, int target)
    {
        var r = logits.Slice(row * v, v);
        double max = double.NegativeInfinity;
        foreach (float x in r) max = Math.Max(max, x);
        double sum = 0;
        foreach (float x in r) sum += Math.Exp(x - max);
        return max + Math.Log(sum) - r[target];
    }

    private static float MaxAbs(ReadOnlySpan<float> x)
    {
        float m = 0;
        foreach (float f in x) m = Math.Max(m, Math.Abs(f));
        return m;
    }

    [Theory, MemberData(nameof(Models))]
    public void One_window_matches_transformers_logits_in_float64(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var idsT = r.Get("input_ids");
        var all = idsT.Span<int>().ToArray();
        int b = idsT.Shape[0], t = idsT.Shape[1], v = lm.Config.VocabSize;
        var logits = r.Get("logits").Floats;
        double tol = 2e-4 * MaxAbs(logits);
        for (int row = 0; row < b; row++)
        {
            var ids = all.AsSpan(row * t, t);
            var res = Perplexity.Evaluate(lm.Decoder, ids, ctx: t, stride: t, batchSize: 1);
            Assert.Equal(1, res.Windows);
            Assert.Equal(t - 1, res.Tokens);
            double sum = 0;
            for (int j = 1; j < t; j++)
            {
                double reference = Nll(logits, row * t + j - 1, v, ids[j]);
                Assert.True(Math.Abs(res.TokenNlls[j] - reference) <= tol, $"row {row} token {j}: NLL {res.TokenNlls[j]} vs transformers {reference}");
                sum += reference;
            }
            double mean = sum / (t - 1);
            Assert.True(Math.Abs(res.Nll - mean) <= tol, $"mean NLL {res.Nll} vs {mean}");
            Assert.True(Math.Abs(res.Ppl / Math.Exp(mean) - 1) <= Math.Exp(tol) - 1, $"ppl {res.Ppl} vs {Math.Exp(mean)}");
            Assert.True(res.Ppl > 1 && res.PplStderr > 0);
        }
    }

    // (ctx, stride): overlapping windows, a stride of 1, disjoint windows with a shorter last one, one window
    // longer than the text, and disjoint windows whose last would hold a single token.
    public static TheoryData<int, int> Strides => new() { { 10, 3 }, { 6, 1 }, { 7, 7 }, { 64, 64 }, { 47, 47 }, { 12, 11 } };

    [Theory, MemberData(nameof(Strides))]
    public void Every_token_but_the_first_is_scored_once_from_a_plain_forward_over_its_window(int ctx, int stride)
    {
        string dir = Fixtures.Hf("llama-tiny");
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var ids = r.Get("input_ids").Span<int>().ToArray(); // both rows, one text of 48 tokens
        int l = ids.Length, v = lm.Config.VocabSize;
        var res = Perplexity.Evaluate(lm.Decoder, ids, ctx, stride, batchSize: 1);
        Assert.Equal(l - 1, res.Tokens);
        Assert.True(double.IsNaN(res.TokenNlls[0]));

        // The window that scores token j, by the guide's rule written out here: overlapping windows score j in the
        // first window that ends after it; disjoint ones score it from the window holding j - 1.
        int WindowOf(int j) => stride == ctx ? (j - 1) / ctx : j < ctx ? 0 : (j - ctx) / stride + 1;
        int windows = WindowOf(l - 1) + 1;
        Assert.Equal(windows, res.Windows);
        var cache = new Dictionary<int, float[]>();
        double sum = 0;
        for (int j = 1; j < l; j++)
        {
            int k = WindowOf(j), begin = k * stride, end = Math.Min(begin + ctx, l);
            Assert.InRange(j - 1, begin, end - 1);
            if (!cache.TryGetValue(k, out var logits))
            {
                using var x = lm.Logits(ids[begin..end], 1);
                cache[k] = logits = x.Floats.ToArray();
            }
            double reference = Nll(logits, j - 1 - begin, v, ids[j]);
            double tol = 2e-4 * MaxAbs(logits);
            Assert.True(Math.Abs(res.TokenNlls[j] - reference) <= tol, $"token {j} (window {k} [{begin},{end})): NLL {res.TokenNlls[j]} vs {reference}");
            sum += res.TokenNlls[j];
        }
        Assert.Equal(sum / (l - 1), res.Nll, 12);
        Assert.Equal(Math.Exp(res.Nll), res.Ppl, 12);
    }

    [Theory]
    [InlineData(10, 3)]
    [InlineData(7, 7)]
    public void The_batch_size_leaves_every_nll_alone(int ctx, int stride)
    {
        string dir = Fixtures.Hf("qwen2-tiny");
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var one = Perplexity.Evaluate(lm.Decoder, ids, ctx, stride, batchSize: 1);
        var progress = new List<PerplexityProgress>();
        var four = Perplexity.Evaluate(lm.Decoder, ids, ctx, stride, batchSize: 4, progress.Add);
        Assert.Equal(one.Tokens, four.Tokens);
        Assert.Equal(one.Windows, four.Windows);
        for (int j = 1; j < ids.Length; j++) Assert.True(Math.Abs(one.TokenNlls[j] - four.TokenNlls[j]) <= 1e-5 * (1 + one.TokenNlls[j]), $"token {j}: {one.TokenNlls[j]} vs {four.TokenNlls[j]}");
        // fewer passes than windows, the last one reporting everything
        Assert.InRange(progress.Count, 2, one.Windows - 1);
        Assert.Equal((one.Windows, one.Windows, one.Tokens), (progress[^1].WindowsDone, progress[^1].Windows, progress[^1].TokensScored));
        Assert.Equal(four.Ppl, progress[^1].RunningPpl, 9);
    }

    [Fact]
    public void The_error_estimate_is_llama_cpp_s()
    {
        double[] nlls = [0.5, 1.25, 2.0, 0.75, 3.5];
        var (nll, ppl, err) = Perplexity.Summarise(nlls);
        // llama.cpp's perplexity.cpp: nll2 = mean(x^2) - mean(x)^2; +/- = sqrt(nll2 / (count - 1)) * ppl
        double mean = nlls.Average(), nll2 = nlls.Select(x => x * x).Average() - mean * mean;
        Assert.Equal(mean, nll, 12);
        Assert.Equal(Math.Exp(mean), ppl, 12);
        Assert.Equal(Math.Sqrt(nll2 / (nlls.Length - 1)) * Math.Exp(mean), err!.Value, 12);
        Assert.Null(Perplexity.Summarise([1.0]).PplStderr);
    }

    private static string Write(string name, string content)
    {
        string path = Path.Combine(TempFolder.Create("temper-ppl"), name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void Jsonl_texts_are_joined_with_a_blank_line_and_tokenized_once_with_specials()
    {
        var tok = Temper.Models.Text.HfTokenizer.Load(Fixtures.Hf("llama-tiny"));
        string jsonl = Write("d.jsonl", "{\"text\": \"23+58=81\"}\n\n{\"text\": \"It is 81.\", \"id\": 3}\r\n");
        Assert.Equal("23+58=81\n\nIt is 81.", PerplexityText.Read(jsonl));
        string txt = Write("d.txt", "23+58=81\n\nIt is 81.");
        Assert.Equal(PerplexityText.Read(jsonl), PerplexityText.Read(txt));
        var ids = PerplexityText.Tokenize(txt, PerplexityText.Read(txt), tok);
        Assert.Equal(tok.EncodeWithSpecialTokens("23+58=81\n\nIt is 81."), ids);
        Assert.Equal(ids[..3], PerplexityText.Tokenize(txt, PerplexityText.Read(txt), tok, maxTokens: 3));
    }

    private static void Refused(Action act, params string[] parts)
    {
        var e = Assert.Throws<TemperException>(act);
        Assert.DoesNotContain('\n', e.Message);
        foreach (var part in parts) Assert.Contains(part, e.Message);
    }

    [Fact]
    public void Bad_files_are_refused_naming_the_file_and_line()
    {
        string missing = Path.Combine(TempFolder.Create("temper-ppl"), "none.txt");
        Refused(() => PerplexityText.Read(missing), missing, "not found");
        string empty = Write("empty.txt", "");
        Refused(() => PerplexityText.Read(empty), empty, "empty");
        string blank = Write("blank.jsonl", "\n  \n");
        Refused(() => PerplexityText.Read(blank), blank, "empty");
        string notJson = Write("a.jsonl", "{\"text\": \"a\"}\n{\"text\": oops}\n");
        Refused(() => PerplexityText.Read(notJson), notJson + ":2:", "not JSON");
        string noText = Write("b.jsonl", "{\"text\": \"a\"}\n\n{\"prompt\": \"a\"}\n");
        Refused(() => PerplexityText.Read(noText), noText + ":3:", "\"text\"");
        string numberText = Write("c.jsonl", "{\"text\": 5}\n");
        Refused(() => PerplexityText.Read(numberText), numberText + ":1:", "string \"text\"");
        string list = Write("d.jsonl", "[\"text\"]\n");
        Refused(() => PerplexityText.Read(list), list + ":1:", "object");
        string csv = Write("e.csv", "text\n");
        Refused(() => PerplexityText.Read(csv), csv, ".txt");

        var tok = Temper.Models.Text.HfTokenizer.Load(Fixtures.Hf("llama-tiny"));
        string one = Write("one.txt", "a");
        Assert.Single(tok.EncodeWithSpecialTokens("a"));
        Refused(() => PerplexityText.Tokenize(one, PerplexityText.Read(one), tok), one, "at least 2");
        string two = Write("two.txt", "23+58=81");
        Refused(() => PerplexityText.Tokenize(two, PerplexityText.Read(two), tok, maxTokens: 1), "--max-tokens", "at least 2");
    }

    [Fact]
    public void Bad_windows_are_refused()
    {
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        int[] ids = [5, 6, 7, 8, 9, 10];
        int max = lm.Config.MaxPositions;
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids, 1, 1, 1), "--ctx 1", "at least 2");
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids, max + 1, 4, 1), $"--ctx {max + 1}", "max_position_embeddings", max.ToString());
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids, 4, 0, 1), "--stride 0", "1..ctx");
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids, 4, 5, 1), "--stride 5", "1..ctx (4)");
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids, 4, 2, 0), "--batch-size 0", "at least 1");
        Refused(() => Perplexity.Evaluate(lm.Decoder, ids.AsSpan(0, 1), 4, 2, 1), "1 token", "at least 2");
        Refused(() => Perplexity.Evaluate(lm.Decoder, [5, lm.Config.VocabSize], 4, 2, 1), "outside the model's vocabulary");
    }

    [Fact]
    public void A_lora_on_lm_head_is_refused_not_ignored()
    {
        // The fused LM-head cross-entropy takes the head's plain weight; an adapter view on it would be skipped.
        var be = new CpuBackend();
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), be);
        var head = lm.Decoder.Weights.LmHead;
        using var a = be.FromHost(Tensor.FromFloats(new Shape(2, head.In), new float[2 * head.In]));
        using var bMat = be.FromHost(Tensor.FromFloats(new Shape(head.Out, 2), new float[head.Out * 2]));
        head.Lora = new LoraView(a, bMat, 1f);
        Refused(() => Perplexity.Evaluate(lm.Decoder, [5, 6, 7, 8], 4, 4, 1), head.Name, "a LoRA", "not supported");
        head.Lora = null;
        Assert.Equal(3, Perplexity.Evaluate(lm.Decoder, [5, 6, 7, 8], 4, 4, 1).Tokens);
    }
}
