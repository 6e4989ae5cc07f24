// Splits a chat completion's text into reasoning and answer, as vLLM's --reasoning-parser does, so that
// clients get the thinking in message.reasoning_content (delta.reasoning_content when streaming) and the
// answer in content:
//   qwen3        Qwen3: reasoning is the text between <think> and </think>; without both tags the whole
//                text is content (streaming: after <think> the deltas are reasoning until </think>).
//   deepseek_r1  DeepSeek-R1 and its distilled Qwen/Llama models, whose chat template opens <think> in the
//                prompt: everything before </think> is reasoning (a leading <think> dropped), the rest
//                content; without </think> the whole text is reasoning.
// The tags are plain text (both families' tokenizers mark them non-special, so decoding keeps them).
// Streaming holds back a tail that could still become a tag, so a tag split across tokens never leaks.
using Temper.Core;

namespace Temper.Serving.Http;

public sealed class ReasoningParser
{
    public static readonly string[] Names = ["qwen3", "deepseek_r1"];

    internal ReasoningParser(string name, string start, string end, bool startsInside)
    {
        Name = name;
        Start = start;
        End = end;
        StartsInside = startsInside;
    }

    public string Name { get; }
    internal string Start { get; }
    internal string End { get; }
    /// <summary>deepseek_r1: the text begins inside the reasoning (the prompt opened the tag).</summary>
    internal bool StartsInside { get; }

    public static ReasoningParser Create(string name) => name switch
    {
        "qwen3" => new(name, "<think>", "</think>", startsInside: false),
        "deepseek_r1" => new(name, "<think>", "</think>", startsInside: true),
        _ => throw new TemperException($"--reasoning-parser '{name}' is not one of {string.Join(", ", Names)}"),
    };

    /// <summary>The whole text's (reasoning, content); either may be null, as vLLM returns them.</summary>
    public (string? Reasoning, string? Content) Split(string text)
    {
        if (!StartsInside && (!text.Contains(Start, StringComparison.Ordinal) || !text.Contains(End, StringComparison.Ordinal))) return (null, text);
        int s = text.IndexOf(Start, StringComparison.Ordinal);
        string rest = s >= 0 ? text[(s + Start.Length)..] : text;
        int e = rest.IndexOf(End, StringComparison.Ordinal);
        if (e < 0) return StartsInside ? (rest, null) : (null, text);
        string content = rest[(e + End.Length)..];
        return (rest[..e], content.Length == 0 ? null : content);
    }

    /// <summary>A splitter for one streamed choice.</summary>
    public Stream NewStream() => new(this);

    public sealed class Stream(ReasoningParser p)
    {
        private enum State { Before, Inside, After }

        private State _state = p.StartsInside ? State.Inside : State.Before;
        private string _pending = "";
        private bool _reasoningStarted;

        /// <summary>The (reasoning, content) parts of the next text delta (either may be empty); <paramref name="last"/>
        /// (the choice has finished) also gives back everything held.</summary>
        public (string Reasoning, string Content) Push(string delta, bool last = false) => Run(_pending + delta, final: last);

        /// <summary>What is still held back, once the choice has finished.</summary>
        public (string Reasoning, string Content) Finish() => Run(_pending, final: true);

        private (string, string) Run(string text, bool final)
        {
            var reasoning = new System.Text.StringBuilder();
            var content = new System.Text.StringBuilder();
            _pending = "";
            while (text.Length > 0)
            {
                if (_state == State.After)
                {
                    content.Append(text);
                    break;
                }
                // Before: content until Start. Inside: reasoning until End (and, deepseek_r1, a leading Start dropped).
                bool dropLeadingStart = _state == State.Inside && p.StartsInside && !_reasoningStarted;
                string tag = _state == State.Before ? p.Start : p.End;
                var output = _state == State.Before ? content : reasoning;
                if (dropLeadingStart && text.TrimStart().StartsWith(p.Start, StringComparison.Ordinal))
                {
                    text = text.TrimStart()[p.Start.Length..];
                    _reasoningStarted = true;
                    continue;
                }
                int at = text.IndexOf(tag, StringComparison.Ordinal);
                if (at >= 0)
                {
                    output.Append(text[..at]);
                    text = text[(at + tag.Length)..];
                    _state = _state == State.Before ? State.Inside : State.After;
                    _reasoningStarted = true;
                    continue;
                }
                int hold = final ? 0 : Math.Max(TextStream.HeldTail(text, tag), dropLeadingStart ? HeldLeadingStart(text) : 0);
                output.Append(text[..^hold]);
                _pending = text[^hold..];
                if (_state == State.Inside && text.Length > hold && text[..^hold].Trim().Length > 0) _reasoningStarted = true;
                break;
            }
            return (reasoning.ToString(), content.ToString());
        }

        // deepseek_r1 before any reasoning: hold whitespace plus a prefix of Start (it may be the opening tag to drop).
        private int HeldLeadingStart(string text)
        {
            string t = text.TrimStart();
            return p.Start.StartsWith(t, StringComparison.Ordinal) ? text.Length : 0;
        }
    }
}
