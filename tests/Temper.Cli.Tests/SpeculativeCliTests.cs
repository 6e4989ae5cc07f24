// Speculative decoding from the command line: `generate --speculative ngram` and `--draft-model DIR` print plain
// greedy decoding's text and a stats line with the acceptance (on the CPU and on ILGPU's CPU accelerator, whose
// KV cache lives in device buffers); `chat` answers as without speculation; `bench decode` compares plain and
// speculative tokens/s; every bad combination is one line on stderr, exit 2, before or instead of loading.
namespace Temper.Tests;

public class SpeculativeCliTests
{
    private static string Llama => Fixtures.Hf("llama-tiny");

    private static void AssertBadInput(CliResult r, string message)
    {
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.Contains(message, r.Stderr);
    }

    private static readonly string[] Generate = ["generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "the cat sat on the mat. the cat sat on the mat. the cat", "--max-new-tokens", "24", "--ignore-eos"];

    [Theory]
    [InlineData("cpu")]
    [InlineData("ilgpu-cpu")]
    public void Generate_speculative_prints_plain_greedy_text_and_the_acceptance(string device)
    {
        string[] on = ["--device", device, "--dtype", "f32"];
        var plain = TemperCli.Run([.. Generate, .. on]);
        Assert.True(plain.ExitCode == 0, plain.Stderr);
        var ngram = TemperCli.Run([.. Generate, .. on, "--speculative", "ngram", "--num-speculative-tokens", "3", "--ngram-min", "1"]);
        Assert.True(ngram.ExitCode == 0, ngram.Stderr);
        Assert.Equal(plain.Stdout, ngram.Stdout);
        Assert.Matches(@"\[speculative \(ngram\): \d+ verify steps of \d+ target forwards, accepted [1-9]\d*/\d+ proposed \([0-9.]+ ?%\), mean [0-9.]+ accepted tokens per verify step; [0-9.]+ tokens/s with the prefill\]", ngram.Stderr);
        var draft = TemperCli.Run([.. Generate, .. on, "--draft-model", Fixtures.Hf("qwen2-tiny")]);
        Assert.True(draft.ExitCode == 0, draft.Stderr);
        Assert.Equal(plain.Stdout, draft.Stdout);
        Assert.Contains("[speculative (draft): ", draft.Stderr);
    }

    [Fact]
    public void Chat_answers_as_without_speculation()
    {
        string[] args = ["chat", "--model", Fixtures.Hf("qwen2-tiny"), "--max-new-tokens", "8", "--ignore-eos"];
        var plain = TemperCli.RunWithInput("hello hello hello\n\n", args);
        var fast = TemperCli.RunWithInput("hello hello hello\n\n", [.. args, "--speculative", "ngram", "--ngram-min", "1"]);
        Assert.True(fast.ExitCode == 0, fast.Stderr);
        Assert.Equal(plain.Stdout, fast.Stdout);
    }

    [Fact]
    public void Bench_decode_compares_plain_and_speculative_tokens_per_second()
    {
        var r = TemperCli.Run("bench", "decode", "--model", Llama, "--prompt-len", "12", "--prompt-repeat", "4", "--tokens", "8", "--threads", "1", "--speculative", "ngram", "--repeats", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Matches(@"speculative \(ngram, K 4, n-gram 4\.\.2\): decode tokens/s, 1 alternating runs each: plain \[[0-9.]+\], speculative \[[0-9.]+\]", r.Stdout);
        Assert.Matches(@"speculative: median [0-9.]+ tokens/s against plain [0-9.]+ = [0-9.]+x; median of the 1 pairs' ratios [0-9.]+x", r.Stdout);
        Assert.Contains("tokens: ", r.Stdout);
    }

    // The numbers' ranges are the library's (SpeculativeDecodingTests); here one of each, and the combinations.
    [Fact]
    public void Bad_speculative_flags_are_one_line_exit_2()
    {
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "medusa"]), "--speculative must be ngram or draft, not 'medusa'");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "draft"]), "--speculative draft needs --draft-model DIR");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "ngram", "--draft-model", Llama]), "--draft-model is for --speculative draft, not ngram");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "ngram", "--num-speculative-tokens", "0"]), "--num-speculative-tokens must be in 1..16 (got 0)");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "ngram", "--ngram-min", "3", "--ngram-max", "2"]), "--ngram-max must be in --ngram-min (3)..16 (got 2)");
        AssertBadInput(TemperCli.Run([.. Generate, "--num-speculative-tokens", "3"]), "--num-speculative-tokens is for speculative decoding");
        AssertBadInput(TemperCli.Run([.. Generate, "--draft-model", Llama, "--ngram-max", "3"]), "--ngram-max and --ngram-min are for --speculative ngram, not draft");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "ngram", "--graph"]), "--graph cannot take --speculative");
        AssertBadInput(TemperCli.Run([.. Generate, "--speculative", "ngram", "--prompt", "second"]), "--speculative decodes one prompt at a time (got 2)");
        AssertBadInput(TemperCli.Run([.. Generate, "--draft-model", Llama, "--json"]), "--speculative draft cannot be combined with --json/--json-schema");
        AssertBadInput(TemperCli.Run("bench", "decode", "--model", Llama, "--speculative", "ngram", "--profile"), "--profile times one decoding run: leave out --speculative");
    }

    [Fact]
    public void A_draft_model_of_another_vocabulary_is_refused_naming_both_folders()
    {
        string bigger = ScriptedModel.Write(["alpha", "beta"], "{{ messages[0]['content'] }}");
        AssertBadInput(TemperCli.Run([.. Generate, "--draft-model", bigger]), $"draft model {bigger} does not share the vocabulary of {Llama} (");
        // Same size, two pieces' ids swapped: the tokenizers disagree.
        string swapped = TempFolder.Create("temper-swapped-vocab");
        foreach (var f in new[] { "config.json", "model.safetensors", "tokenizer_config.json" }) File.Copy(Path.Combine(Llama, f), Path.Combine(swapped, f));
        var tok = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Llama, "tokenizer.json")))!;
        var vocab = tok["model"]!["vocab"]!.AsObject();
        var (a, b) = (vocab.ElementAt(100).Key, vocab.ElementAt(101).Key);
        (vocab[a], vocab[b]) = ((int)vocab[b]!, (int)vocab[a]!);
        File.WriteAllText(Path.Combine(swapped, "tokenizer.json"), tok.ToJsonString());
        AssertBadInput(TemperCli.Run([.. Generate, "--draft-model", swapped]), $"draft model {swapped} does not share the vocabulary of {Llama} (its tokenizer maps ids to other tokens)");
    }
}
