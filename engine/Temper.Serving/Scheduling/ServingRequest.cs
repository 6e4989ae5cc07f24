// What a client asks the serving engine for, and what streams back: one event per generated token of
// each choice (with its log-probability and the top alternatives when asked), the last one carrying
// why the choice finished.
using Temper.Models;

namespace Temper.Serving.Scheduling;

public sealed record ServingRequest
{
    public required IReadOnlyList<int> PromptIds { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    public SamplingOptions Sampling { get; init; } = new();
    public IReadOnlyList<int> EosIds { get; init; } = [];
    public bool IgnoreEos { get; init; }
    /// <summary>Stop when the decoded completion contains one of these (needs the engine's decode function).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>The adapter the request runs with (null: the base model).</summary>
    public string? Adapter { get; init; }
    /// <summary>-1: no log-probabilities; 0: the chosen token's; k: also the k most likely tokens'.</summary>
    public int TopLogprobs { get; init; } = -1;
    /// <summary>Completions sampled from the one prompt (they share its KV blocks copy-on-write).</summary>
    public int N { get; init; } = 1;
    /// <summary>
    /// -1: none; k &gt;= 0: each prompt token's log-probability given the tokens before it (and the k most likely
    /// there), into RequestHandle.PromptLogprobs (what `echo` with `logprobs` scores, as lm-evaluation-harness
    /// asks). Such a prompt is computed whole, without prefix-cache hits; MaxNewTokens may then be 0.
    /// </summary>
    public int PromptLogprobs { get; init; } = -1;
}

/// <summary>A prompt token's log-probability given the tokens before it, and the most likely tokens there.</summary>
public sealed record PromptTokenLogprob(float Logprob, IReadOnlyList<TokenLogprob> Top);

public enum ServingFinish { Length, Eos, Stop, Cancelled, Error }

public readonly record struct TokenLogprob(int Token, float Logprob);

/// <summary>
/// One event of a choice: a token (Token &gt;= 0) and/or its finish (Finish != null). Timestamp is the
/// Stopwatch tick at which the engine emitted it (latency figures do not depend on when it was read).
/// </summary>
public sealed record StreamEvent(int Choice, int Token, float Logprob, IReadOnlyList<TokenLogprob>? Top, ServingFinish? Finish, string? Error = null)
{
    public long Timestamp { get; init; }
}

public sealed record ChoiceResult(int Choice, IReadOnlyList<int> Tokens, IReadOnlyList<float> Logprobs, ServingFinish Finish);
