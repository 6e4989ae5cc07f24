// Scores a model on task items: greedy completions of each prompt (batched, left-padded), decoded
// and checked by the task's scorer; and the mean reward of sampled completions (what RL optimizes:
// several seeded samples per prompt at a temperature, so a model that is right greedily but unsure
// scores below one that is right with confidence). Prompts use the same text form the SFT writers produce: the
// plain "Q\n" prompt, or the user turn rendered with the chat template's generation prompt.
using System.Text.Json.Nodes;
using Temper.Models;

namespace Temper.Training.Tasks;

public static class TaskEvaluator
{
    public static (TaskEvaluation Summary, IReadOnlyList<string> Completions) Evaluate(LanguageModel lm, IReadOnlyList<TaskItem> items, bool conversational, int maxNewTokens = 12, int batchSize = 32)
    {
        var tok = lm.RequireTokenizer();
        var prompts = items.Select(i => (IReadOnlyList<int>)tok.Encode(PromptText(lm, i, conversational))).ToList();
        var gen = new Generator(lm.Decoder);
        var options = new GenerationOptions { MaxNewTokens = maxNewTokens, EosIds = lm.EosIds() };
        var completions = new List<string>();
        for (int s = 0; s < prompts.Count; s += batchSize)
            foreach (var r in gen.Generate(prompts.Skip(s).Take(batchSize).ToList(), options))
                completions.Add(tok.Decode(r.GeneratedIds, skipSpecialTokens: true));
        return (AdditionTask.Evaluate(items.Zip(completions)), completions);
    }

    /// <summary>Mean task reward of <paramref name="samples"/> completions per item sampled at <paramref name="temperature"/> (seeded).</summary>
    public static double SampledReward(LanguageModel lm, IReadOnlyList<TaskItem> items, bool conversational, int samples, float temperature, ulong seed, int maxNewTokens = 12, int batchSize = 64)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        var tok = lm.RequireTokenizer();
        var repeated = items.SelectMany(i => Enumerable.Repeat(i, samples)).ToList();
        var prompts = repeated.Select(i => (IReadOnlyList<int>)tok.Encode(PromptText(lm, i, conversational))).ToList();
        var gen = new Generator(lm.Decoder);
        double total = 0;
        for (int s = 0; s < prompts.Count; s += batchSize)
        {
            var options = new GenerationOptions
            {
                MaxNewTokens = maxNewTokens, EosIds = lm.EosIds(),
                Sampling = new SamplingOptions { Greedy = false, Temperature = temperature, Seed = seed + (ulong)s },
            };
            var results = gen.Generate(prompts.Skip(s).Take(batchSize).ToList(), options);
            for (int j = 0; j < results.Count; j++)
                total += AdditionTask.Score(tok.Decode(results[j].GeneratedIds, skipSpecialTokens: true), repeated[s + j]).Reward;
        }
        return repeated.Count == 0 ? 0 : total / repeated.Count;
    }

    public static string PromptText(LanguageModel lm, TaskItem item, bool conversational) => conversational
        ? lm.RequireTemplate().Render(new JsonArray(new JsonObject { ["role"] = "user", ["content"] = item.Prompt }), addGenerationPrompt: true)
        : item.Prompt + "\n";
}
