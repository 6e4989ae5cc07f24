// Scores a model on task items: greedy completions of each prompt (batched, left-padded), decoded
// and checked by the task's scorer. Prompts use the same text form the SFT writers produce: the
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

    public static string PromptText(LanguageModel lm, TaskItem item, bool conversational) => conversational
        ? lm.RequireTemplate().Render(new JsonArray(new JsonObject { ["role"] = "user", ["content"] = item.Prompt }), addGenerationPrompt: true)
        : item.Prompt + "\n";
}
