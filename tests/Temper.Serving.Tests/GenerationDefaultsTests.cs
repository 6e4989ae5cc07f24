// Request defaults from the model's generation_config.json (vLLM's --generation-config auto): sampling fields and
// max_tokens a request leaves out take the file's values, fields it gives keep theirs, and without the file
// (--generation-config vllm) the OpenAI defaults hold. Also vLLM's ignore_eos and stop_token_ids (joined to the
// model's EOS ids, each checked against the vocabulary) and min_tokens (those ids held back until then).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class GenerationDefaultsTests : IDisposable
{
    private readonly LanguageModel _lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
    private readonly ServedModel _plain, _qwenLike;

    public GenerationDefaultsTests()
    {
        var options = new ServingOptions { BlockSize = 8, Blocks = 16, MaxSequenceLength = 64 };
        _plain = new ServedModel(_lm, [], options) { GenerationDefaults = null };
        _qwenLike = new ServedModel(_lm, [], options)
        {
            GenerationDefaults = new GenerationConfig { DoSample = true, Temperature = 0.7f, TopP = 0.8f, TopK = 20, RepetitionPenalty = 1.05f, MaxNewTokens = 9 },
        };
    }

    public void Dispose()
    {
        _plain.Dispose();
        _qwenLike.Dispose();
        _lm.Dispose();
    }

    private static ServingRequest Parse(ServedModel m, string fields) =>
        OpenAiRequest.Parse(JsonNode.Parse($$"""{"model": "{{m.BaseName}}", "prompt": "hi"{{fields}}}""")!.AsObject(), chat: false, m).Servings[0];

    [Fact]
    public void Left_out_fields_take_the_files_values()
    {
        var s = Parse(_qwenLike, "");
        Assert.Equal((false, 0.7f, 0.8f, 20, 1.05f, 9), (s.Sampling.Greedy, s.Sampling.Temperature, s.Sampling.TopP, s.Sampling.TopK, s.Sampling.RepetitionPenalty, s.MaxNewTokens));
        var given = Parse(_qwenLike, """, "temperature": 1.2, "top_k": 5, "max_tokens": 3""");
        Assert.Equal((1.2f, 0.8f, 5, 3), (given.Sampling.Temperature, given.Sampling.TopP, given.Sampling.TopK, given.MaxNewTokens));
        Assert.True(Parse(_qwenLike, """, "temperature": 0""").Sampling.Greedy);
        var openAi = Parse(_plain, "");
        Assert.Equal((1f, 1f, 0, 1f, 16), (openAi.Sampling.Temperature, openAi.Sampling.TopP, openAi.Sampling.TopK, openAi.Sampling.RepetitionPenalty, openAi.MaxNewTokens));
    }

    [Fact]
    public void Ignore_eos_and_stop_token_ids_reach_the_request()
    {
        Assert.False(Parse(_plain, "").IgnoreEos);
        Assert.True(Parse(_plain, """, "ignore_eos": true""").IgnoreEos);
        var s = Parse(_plain, """, "stop_token_ids": [7, 11]""");
        Assert.Equal([.. _plain.EosIds, 7, 11], s.EosIds);
        foreach (var (fields, expect) in new[]
        {
            (""", "stop_token_ids": [7, 512]""", "'stop_token_ids' has 512, not a token id of this model (0..511)"),
            (""", "stop_token_ids": [1.5]""", "'stop_token_ids' must be an array of token ids"),
            (""", "stop_token_ids": 7""", "'stop_token_ids' must be an array of token ids"),
            (""", "max_tokens": 8, "min_tokens": 9""", "'min_tokens' must be in [0, max_tokens 8] (got 9)"),
        })
            Assert.Contains(expect, Assert.Throws<TemperException>(() => Parse(_plain, fields)).Message);
    }

    // End to end: a greedy completion stops at the first of the given ids, as at EOS.
    [Fact]
    public async Task A_stop_token_id_ends_the_choice_after_min_tokens()
    {
        var cancel = TestContext.Current.CancellationToken;
        var free = (await _plain.Engine.Submit(Parse(_plain, """, "temperature": 0, "max_tokens": 8, "ignore_eos": true""")).CollectAsync(cancel))[0];
        int stopAt = free.Tokens[3];
        int first = free.Tokens.ToList().IndexOf(stopAt);
        var stopped = (await _plain.Engine.Submit(Parse(_plain, $$""", "temperature": 0, "max_tokens": 8, "stop_token_ids": [{{stopAt}}]""")).CollectAsync(cancel))[0];
        Assert.Equal(ServingFinish.Eos, stopped.Finish);
        Assert.Equal(free.Tokens.Take(first), stopped.Tokens.Take(first));
        Assert.True(stopped.Tokens.Count <= first + 1, $"{stopped.Tokens.Count} tokens, the stop id first at {first}");
        // min_tokens holds the stop id back for that many tokens.
        int early = free.Tokens[1];
        var held = (await _plain.Engine.Submit(Parse(_plain, $$""", "temperature": 0, "max_tokens": 8, "min_tokens": 4, "stop_token_ids": [{{early}}]""")).CollectAsync(cancel))[0];
        Assert.DoesNotContain(early, held.Tokens.Take(4));
        Assert.True(held.Tokens.Count >= 4, $"{held.Tokens.Count} tokens");
        int firstEarly = free.Tokens.ToList().IndexOf(early);
        Assert.Equal(free.Tokens.Take(firstEarly), held.Tokens.Take(firstEarly));
    }
}
