// A submitted request as its client sees it: the stream of token events (completed when every choice
// has finished), cancellation, and timestamps for latency figures.
using System.Threading.Channels;

namespace Temper.Serving.Scheduling;

public sealed class RequestHandle
{
    private readonly Channel<StreamEvent> _events = Channel.CreateUnbounded<StreamEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly PromptTokenLogprob?[]? _promptLogprobs;
    private volatile bool _cancelled;

    internal RequestHandle(long id, ServingRequest request)
    {
        Id = id;
        Request = request;
        _promptLogprobs = request.PromptLogprobs >= 0 ? new PromptTokenLogprob?[request.PromptIds.Count] : null;
    }

    public long Id { get; }
    /// <summary>Stopwatch tick of submission.</summary>
    public long SubmittedAt { get; } = System.Diagnostics.Stopwatch.GetTimestamp();
    public ServingRequest Request { get; }
    public ChannelReader<StreamEvent> Events => _events.Reader;
    /// <summary>
    /// With ServingRequest.PromptLogprobs &gt;= 0, entry i scores prompt token i (entry 0, which nothing
    /// precedes, stays null); complete once the stream has given its first event.
    /// </summary>
    public IReadOnlyList<PromptTokenLogprob?>? PromptLogprobs => _promptLogprobs;
    public bool IsCancelled => _cancelled;
    /// <summary>Stops the request at the next step; its choices finish as Cancelled.</summary>
    public void Cancel() => _cancelled = true;

    internal int OpenChoices { get; set; }
    internal void SetPromptLogprob(int position, PromptTokenLogprob p) => _promptLogprobs![position] = p;
    internal void Emit(StreamEvent e) => _events.Writer.TryWrite(e with { Timestamp = System.Diagnostics.Stopwatch.GetTimestamp() });
    internal void Complete() => _events.Writer.TryComplete();

    /// <summary>Reads the stream to its end and gathers each choice's tokens.</summary>
    public async Task<IReadOnlyList<ChoiceResult>> CollectAsync(CancellationToken cancel = default)
    {
        var tokens = new SortedDictionary<int, (List<int> Ids, List<float> Logprobs, ServingFinish Finish)>();
        await foreach (var e in Events.ReadAllAsync(cancel).ConfigureAwait(false))
        {
            if (!tokens.TryGetValue(e.Choice, out var c)) tokens[e.Choice] = c = ([], [], ServingFinish.Length);
            if (e.Token >= 0)
            {
                c.Ids.Add(e.Token);
                c.Logprobs.Add(e.Logprob);
            }
            if (e.Finish is { } f) tokens[e.Choice] = (c.Ids, c.Logprobs, f);
            if (e.Error != null) throw new InvalidOperationException(e.Error);
        }
        return tokens.Select(kv => new ChoiceResult(kv.Key, kv.Value.Ids, kv.Value.Logprobs, kv.Value.Finish)).ToArray();
    }
}
