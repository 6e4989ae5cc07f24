// Continuous batching over the paged KV cache. Each step: drain new requests, drop cancelled ones, then
// give every running sequence its next tokens (a decode token, or the next chunk of its prompt) within
// the step's token budget, admitting waiting sequences (prefix-cache hits first) while budget and
// blocks last. A step uses at most as many distinct adapters as the adapters' device tier holds
// (AdapterStack.Slots); rows of other adapters wait a step. Adapters share the KV pool's blocks (the
// stack is attached to the cache): a sequence's adapter is made resident before its blocks are
// reserved, and either running short preempts like blocks do. The adapters of requests left waiting
// after a step is scheduled are prefetched (AdapterStack.Prefetch: read off disk or padded from their
// folders on a background task) while the step computes, so their admission only copies them in. So are
// the prefix-cache blocks their prompts will find in the disk tier (IKvTierStore.PrefetchBlocks, in
// the host tier's room; each sequence's chained prompt hashes are computed at Submit, off the
// stepping thread): their admission's prefix match then only copies them from host memory to the
// device. When blocks run short, the most recently admitted sequence is preempted: swapped (its K/V
// copied to the host tier and its blocks freed; it is readmitted when the pool can take all of them
// back) or recomputed (its blocks freed; it waits again with its prompt + generated tokens, which are
// recomputed when it is readmitted), as ServingOptions.Preemption says. Sequences whose computed length
// reaches their token count get logits; each samples with its own options (Temper.Models.Sampler, which
// keeps the sequence's own state of a JSON constraint: each choice of n has one),
// streams the token, and stops on EOS, a stop string, its token limit or the length limit. A request
// with N > 1 forks its sequence after the prompt (the prompt blocks are shared copy-on-write); one with N > MaxRunning
// is N sequences of one choice from the start (vLLM's child requests), admitted as seats free. A request
// that scores its prompt (PromptLogprobs) gets logits at every prompt position: its prompt is computed
// whole (no prefix-cache hit), in chunks whose logits stay near 128 MB, and each token's log-probability
// given those before it goes to its handle; with 0 new tokens it then finishes. Step()
// runs on one thread at a time: the background loop's (Start) or a test's.
// With ServingOptions.Speculative (prompt lookup, vLLM's "ngram" method), a running sequence with one token
// to compute proposes up to K tokens from its own prompt + output (NgramProposer); the step computes its last
// token and the proposals as one chunk, and row j of its logits (after the last token and proposals 1..j) is
// sampled as plain decoding samples it: the sequence's own Sampler draws from it with proposals 1..j in the
// history (so repetition, frequency and presence penalties and min_tokens count them as output). Proposal
// j+1 is kept while it equals row j's draw; the first draw that differs, or the draw after the last proposal
// (the bonus), is the step's own token. Greedy, that is the argmax test; sampled, it is speculative
// sampling's rule for a deterministic proposer (SpeculativeSampling, q one-hot at x): x is kept with
// probability p(x), and a rejection's token is a draw from p that is not x, i.e. from normalize(max(0, p - q)).
// Every kept or drawn token is the plain sampler's draw from the same history and stream position (one
// uniform a token), so a seed gives the tokens it gives without speculation (up to the rounding of a chunk's
// forward), however the steps are batched and however many tokens each proposes. Each token goes through the
// same stop checks as a sampled one. Only the accepted positions are committed (and so hashed into the prefix
// cache); blocks reserved past them are given back (PagedKvCache.Trim). A JSON constraint speculates too: its state
// moves with each draw, and the draws are exactly the tokens appended.
// Adapters are added and removed at run time (AddAdapter, RemoveAdapter) under the step lock, between
// steps. A sequence names its adapter by index into the stack; a request's name is resolved to an index
// when it leaves the incoming queue, and RemoveAdapter renumbers the indices of the sequences it leaves
// (the stack's later adapters shift down) and ends the sequences of the removed adapter with an error,
// so no sequence ever runs on another adapter than the one it asked for. Each unload of a name changes
// the prefix-cache salt of that name, so a later adapter loaded under it never finds the old one's K/V.
using System.Collections.Concurrent;
using Temper.Core;
using Temper.Models;
using Temper.Models.Speculative;
using Temper.Serving.Kv;
using Temper.Serving.Lora;

namespace Temper.Serving.Scheduling;

public sealed class ServingEngine : IDisposable
{
    private sealed class Sequence
    {
        public required RequestHandle Handle { get; init; }
        public required int Choice { get; init; }
        public required List<int> Tokens { get; init; }
        public required int PromptLength { get; init; }
        public required Sampler Sampler { get; init; }
        /// <summary>Index into the adapter stack (-1: the base); resolved from the request's name when it leaves the incoming queue.</summary>
        public required int Adapter { get; set; }
        /// <summary>How many times the request's adapter name had been unloaded when it was submitted (see RemoveAdapter).</summary>
        public int AdapterGeneration { get; init; }
        public SequenceBlocks Blocks { get; set; } = new();
        public long AdmitOrder { get; set; }
        /// <summary>Runs one choice of its request: forked from the first sequence, or one of a request fanned out at Submit.</summary>
        public bool Forked { get; set; }
        /// <summary>The prefix-cache keys of Tokens[..HashedTokens - 1] (what MatchPrefix will look up), for prefetching.</summary>
        public ulong[] PrefixHashes { get; set; } = [];
        public int HashedTokens { get; set; }
        /// <summary>Tokens proposed for this step's chunk after the last one (speculation), or null.</summary>
        public int[]? Draft { get; set; }
        public int Generated => Tokens.Count - PromptLength;
    }

    private readonly ConcurrentQueue<Sequence> _incoming = new();
    private readonly LinkedList<Sequence> _waiting = new();
    private readonly List<Sequence> _running = [];
    private readonly Func<IReadOnlyList<int>, string>? _decode;
    private readonly Lock _stepLock = new();
    private readonly Lock _adaptersLock = new();                    // adapter lookups off the stepping thread vs. AddAdapter/RemoveAdapter
    private readonly Dictionary<string, int> _unloads = [];         // adapter name -> times it was unloaded
    private readonly AutoResetEvent _wake = new(false);
    private Thread? _loop;
    private volatile bool _stopping;
    private long _nextId, _admitCounter;
    private long _steps, _prefill, _decodeTokens, _cachedPrefix, _preemptions, _swaps, _recomputations, _finished, _specDrafted, _specAccepted;
    private readonly NgramProposer? _proposer;

    public ServingEngine(Decoder decoder, ServingOptions options, AdapterStack? adapters = null, Func<IReadOnlyList<int>, string>? decode = null)
    {
        Options = options;
        if (options.MaxBatchTokens < 1 || options.MaxRunning < 1) throw new TemperException("serving: MaxBatchTokens and MaxRunning must be >= 1");
        if (options.HostBlocks < 0 || options.DiskBlocks < 0) throw new TemperException("serving: HostBlocks and DiskBlocks must be >= 0");
        if (options.DiskBlocks > 0 && options.DiskFile == null) throw new TemperException("serving: a disk tier (DiskBlocks > 0) needs a DiskFile");
        if (decoder.Weights.VirtualTokenCount > 0) throw new TemperException("serving: a prompt- or prefix-tuning adapter is not served (its virtual tokens are not placed by the batched engine); serve LoRA adapters, or use generate or chat");
        Cache = new PagedKvCache(decoder.Config, decoder.Backend, options.Blocks, options.BlockSize, options.KvCacheDTypeFor(decoder));
        adapters?.Attach(Cache);
        if (options.HostBlocks > 0 || options.DiskBlocks > 0)
        {
            try
            {
                Tiers = new KvTiers(Cache, options.HostBlocks, options.DiskBlocks, options.DiskBlocks > 0 ? options.DiskFile : null);
            }
            catch
            {
                Cache.Dispose();
                throw;
            }
        }
        if (options.Speculative is { } spec)
        {
            if (spec.Draft != null) throw new TemperException("serving: only n-gram (prompt lookup) speculation is served, not a draft model");
            spec.Validate();
            _proposer = new NgramProposer(spec.NgramMin, spec.NgramMax);
        }
        Model = new PagedDecoder(decoder, Cache, adapters);
        _decode = decode;
        MaxSequenceLength = Math.Min(options.MaxSequenceLength ?? decoder.Config.MaxPositions, options.Blocks * options.BlockSize);
        if (decoder.Config.SlidingWindow is int w && MaxSequenceLength > w) MaxSequenceLength = w;
    }

    public ServingOptions Options { get; }
    public PagedKvCache Cache { get; }
    /// <summary>The host and disk tiers ServingOptions asked for (null when it asked for none).</summary>
    public KvTiers? Tiers { get; }
    public PagedDecoder Model { get; }
    public AdapterStack? Adapters => Model.Adapters;
    public ModelConfig Config => Model.Decoder.Config;
    public int MaxSequenceLength { get; }
    /// <summary>Most log-probability alternatives a request may ask for (ServingOptions.MaxLogprobs; -1 there: the vocabulary).</summary>
    public int MaxLogprobs => Options.MaxLogprobs < 0 ? Config.VocabSize : Options.MaxLogprobs;

    public ServingStats Stats
    {
        get
        {
            lock (_stepLock)
                return new ServingStats(_steps, _prefill, _decodeTokens, _cachedPrefix, _preemptions, _finished, Cache.CopiedOnWrite, _running.Count,
                    _waiting.Count + _incoming.Count, Cache.Pool.Available, _swaps, _recomputations, _specDrafted, _specAccepted);
        }
    }

    /// <summary>Queues a request; bad requests (empty, too long, unknown adapter, bad options) throw TemperException here.</summary>
    public RequestHandle Submit(ServingRequest r)
    {
        if (r.PromptIds.Count == 0) throw new TemperException("the prompt is empty: give at least one token");
        if (r.MaxNewTokens < (r.PromptLogprobs >= 0 && r.N == 1 ? 0 : 1))
            throw new TemperException($"max tokens must be >= 1 (got {r.MaxNewTokens}; 0 only when scoring the prompt of one choice)");
        if (r.PromptLogprobs > MaxLogprobs) throw new TemperException($"Requested prompt logprobs of {r.PromptLogprobs}, which is greater than max allowed: {MaxLogprobs}");
        if (r.N < 1) throw new TemperException($"n must be >= 1 (got {r.N})");
        if (r.TopLogprobs > MaxLogprobs) throw new TemperException($"Requested sample logprobs of {r.TopLogprobs}, which is greater than max allowed: {MaxLogprobs}");
        if (r.StopStrings.Count > 0 && _decode == null) throw new TemperException("stop strings need a tokenizer");
        r.Sampling.Validate();
        if (r.Sampling.Constraint != null && r.IgnoreEos) throw new TemperException("a JSON constraint ends the output with EOS: it cannot be combined with ignore_eos");
        foreach (int id in r.PromptIds)
            if ((uint)id >= (uint)Config.VocabSize) throw new TemperException($"token id {id} is outside the vocabulary (size {Config.VocabSize})");
        if (r.PromptIds.Count > MaxSequenceLength) // vLLM's words for both
            throw new TemperException($"This model's maximum context length is {MaxSequenceLength} tokens. However, your request has {r.PromptIds.Count} input tokens. Please reduce the length of the input messages.");
        if (r.PromptIds.Count + r.MaxNewTokens > MaxSequenceLength)
            throw new TemperException($"'max_tokens' or 'max_completion_tokens' is too large: {r.MaxNewTokens}. This model's maximum context length is {MaxSequenceLength} tokens and your request has {r.PromptIds.Count} input tokens ({r.MaxNewTokens} > {MaxSequenceLength} - {r.PromptIds.Count}).");
        int adapter = -1, generation = 0;
        if (r.Adapter != null)
        {
            lock (_adaptersLock)
            {
                adapter = Adapters?.IndexOf(r.Adapter) ?? -1;
                if (adapter < 0) throw new TemperException($"unknown adapter '{r.Adapter}'");
                int k = Adapters!.BlocksOf(adapter);                 // the adapter shares the pool: the sequence must fit beside it
                if (Cache.BlocksFor(r.PromptIds.Count + r.MaxNewTokens) + k > Cache.Pool.Count)
                    throw new TemperException($"prompt ({r.PromptIds.Count} tokens) + max tokens ({r.MaxNewTokens}) need more than the {(Cache.Pool.Count - k) * Cache.BlockSize} positions the KV pool holds beside adapter '{r.Adapter}' ({k} blocks)");
                generation = _unloads.GetValueOrDefault(r.Adapter);
            }
        }
        var handle = new RequestHandle(Interlocked.Increment(ref _nextId), r) { OpenChoices = r.N };
        // n choices within MaxRunning: one sequence, forked after its prompt. More (vLLM fans them out into child requests):
        // n sequences of one choice each, admitted as seats free, each with its own prefill (the prefix cache shares the
        // prompt's full blocks) and its choice's seed stream, so a seed gives the choices it gives when they fit at once.
        bool fanOut = r.N > Options.MaxRunning;
        for (int c = 0; c < (fanOut ? r.N : 1); c++)
        {
            var s = NewSequence(handle, c, [.. r.PromptIds], adapter, generation);
            s.Forked = fanOut;
            s.Blocks = new SequenceBlocks { Salt = r.Adapter == null ? 0 : AdapterSalt(r.Adapter, generation) };
            if (Options.PrefixCaching && Cache.Tiers is { DiskBlocks: > 0 }) HashPrefix(s);   // here, off the stepping thread
            _incoming.Enqueue(s);
        }
        _wake.Set();
        return handle;
    }

    // The prefix-cache salt of an adapter's sequences: its name, and how often the name was unloaded before.
    private static ulong AdapterSalt(string name, int generation)
    {
        ulong salt = BlockPool.ChainHash(0, name.Select(ch => (int)ch).ToArray());
        return generation == 0 ? salt : BlockPool.ChainHash(salt, [generation]);
    }

    /// <summary>The names of the adapters requests may name now.</summary>
    public IReadOnlyList<string> AdapterNames
    {
        get
        {
            lock (_adaptersLock) return Adapters?.Names ?? [];
        }
    }

    /// <summary>
    /// Adds an adapter at run time, between steps (the stack checks it fits the model and the tiers, and
    /// throws TemperException otherwise; the caller then still owns <paramref name="adapter"/>).
    /// </summary>
    public void AddAdapter(string name, LoraAdapter adapter)
    {
        var stack = Adapters ?? throw new TemperException("this engine serves no adapters");
        lock (_stepLock)
            lock (_adaptersLock)
                stack.Add(name, adapter);
    }

    /// <summary>
    /// Removes an adapter at run time, between steps: its waiting and running sequences end with an error
    /// (they never continue on another adapter), the others' indices follow the stack's shift.
    /// </summary>
    public void RemoveAdapter(string name)
    {
        var stack = Adapters ?? throw new TemperException("this engine serves no adapters");
        lock (_stepLock)
        {
            Admit();
            lock (_adaptersLock)
            {
                int i = stack.IndexOf(name);
                if (i < 0) throw new TemperException($"adapter '{name}' is not loaded");
                foreach (var s in _running.Where(s => s.Adapter == i).ToArray()) Finish(s, ServingFinish.Error, $"adapter '{name}' was unloaded while the request ran");
                foreach (var s in _waiting.Where(s => s.Adapter == i).ToArray())
                {
                    _waiting.Remove(s);
                    Finish(s, ServingFinish.Error, $"adapter '{name}' was unloaded while the request waited");
                }
                foreach (var s in _running.Concat(_waiting))
                    if (s.Adapter > i) s.Adapter--;
                stack.Remove(name);
                _unloads[name] = _unloads.GetValueOrDefault(name) + 1;
            }
        }
    }

    // Moves submitted sequences to the waiting queue, resolving their adapter names (an adapter unloaded since
    // the request was submitted ends it; one loaded again under the name is another adapter).
    private void Admit()
    {
        while (_incoming.TryDequeue(out var s))
        {
            if (s.Handle.Request.Adapter is string name)
            {
                s.Adapter = Adapters!.IndexOf(name);
                if (s.Adapter < 0 || _unloads.GetValueOrDefault(name) != s.AdapterGeneration)
                {
                    Finish(s, ServingFinish.Error, $"adapter '{name}' was unloaded before the request started");
                    continue;
                }
            }
            _waiting.AddLast(s);
        }
    }

    private Sequence NewSequence(RequestHandle h, int choice, List<int> tokens, int adapter, int generation = 0) => new()
    {
        Handle = h, Choice = choice, Tokens = tokens, PromptLength = h.Request.PromptIds.Count, Adapter = adapter, AdapterGeneration = generation,
        Sampler = new Sampler(h.Request.Sampling with { Seed = h.Request.Sampling.Seed + (ulong)choice }),
    };

    /// <summary>Runs one scheduling step; false when there was nothing to do.</summary>
    public bool Step()
    {
        lock (_stepLock)
        {
            Admit();
            foreach (var s in _running.Where(s => s.Handle.IsCancelled).ToArray()) Finish(s, ServingFinish.Cancelled);
            for (var node = _waiting.First; node != null;)
            {
                var next = node.Next;
                if (node.Value.Handle.IsCancelled)
                {
                    _waiting.Remove(node);
                    Finish(node.Value, ServingFinish.Cancelled);
                }
                node = next;
            }
            // Rows of one adapter side by side: the gathered LoRA op then runs each adapter's rows in place.
            var items = Schedule().OrderBy(i => i.Seq.Adapter).ToList();
            // Adapters of requests still waiting come up from disk or their folders while this step computes.
            if (Adapters != null)
                foreach (var s in _waiting)
                    if (s.Adapter >= 0) Adapters.Prefetch(s.Adapter);
            // So do the cached prefix blocks their prompts will find on disk.
            if (Options.PrefixCaching && Cache.Tiers is { DiskBlocks: > 0 } tiers) tiers.PrefetchBlocks(WantedBlocks(tiers));
            if (items.Count == 0) return false;
            try
            {
                Run(items);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                foreach (var (s, _) in items) Finish(s, ServingFinish.Error, e.Message);
            }
            _steps++;
            return true;
        }
    }

    private List<(Sequence Seq, int Count)> Schedule()
    {
        var items = new List<(Sequence, int)>();
        int budget = Options.MaxBatchTokens;
        // A step uses at most as many adapters as the device tier holds; other rows wait a step.
        var stepAdapters = new HashSet<int>();
        bool AdapterFits(Sequence s) => s.Adapter < 0 || stepAdapters.Contains(s.Adapter) || stepAdapters.Count < Adapters!.Slots;
        bool AdapterResident(Sequence s) => s.Adapter < 0 || Adapters!.TryAcquire(s.Adapter);
        void Unpin(Sequence s)
        {
            if (s.Adapter >= 0 && !stepAdapters.Contains(s.Adapter)) Adapters!.Unpin(s.Adapter); // its slot and blocks may go to others
        }
        Adapters?.BeginStep();
        foreach (var s in _running.ToArray())
        {
            if (budget == 0) break;
            if (!_running.Contains(s)) continue; // preempted below by an earlier sequence
            if (!AdapterFits(s)) continue;
            int chunk = Chunk(s, budget);
            var draft = Propose(s, chunk, budget);
            if (draft.Length > 0 && !(AdapterResident(s) && Cache.Reserve(s.Blocks, s.Blocks.Length + chunk + draft.Length))) draft = [];
            chunk += draft.Length;
            bool ok;
            while (!(ok = AdapterResident(s) && Cache.Reserve(s.Blocks, s.Blocks.Length + chunk)))
            {
                var victim = _running[^1];
                Preempt(victim);
                if (victim == s) break;
            }
            if (!ok)
            {
                Unpin(s);
                continue;
            }
            if (s.Adapter >= 0) stepAdapters.Add(s.Adapter);
            s.Draft = draft.Length > 0 ? draft : null;
            items.Add((s, chunk));
            budget -= chunk;
        }
        // At most MaxRunning sequences run (vLLM's max_num_seqs): a request of n choices not yet forked counts as n.
        static int Width(Sequence s) => s.Forked ? 1 : s.Handle.Request.N;
        int seats = Options.MaxRunning - _running.Sum(Width);
        while (budget > 0 && _waiting.First is { } node && Width(node.Value) <= seats)
        {
            var s = node.Value;
            if (!AdapterFits(s)) break;
            if (s.Blocks.Length == 0 && Options.PrefixCaching && s.Handle.Request.PromptLogprobs < 0) // a scored prompt is computed whole
            {
                int hit = Cache.MatchPrefix(s.Blocks, s.Tokens.ToArray().AsSpan(0, s.Tokens.Count - 1));
                _cachedPrefix += hit;
            }
            int chunk = Chunk(s, budget);
            bool ok = AdapterResident(s) && (s.Blocks.SwappedBlocks > 0
                ? Cache.Pool.Available >= Cache.BlocksFor(s.Blocks.Length + chunk) && Cache.SwapIn(s.Blocks) && Cache.Reserve(s.Blocks, s.Blocks.Length + chunk)
                : Cache.Reserve(s.Blocks, s.Blocks.Length + chunk));
            if (!ok)
            {
                if (s.Blocks.SwappedBlocks == 0) Cache.Free(s.Blocks); // a prefix match, given back; a swapped copy stays
                Unpin(s);
                break;
            }
            _waiting.RemoveFirst();
            s.AdmitOrder = ++_admitCounter;
            _running.Add(s);
            seats -= Width(s);
            if (s.Adapter >= 0) stepAdapters.Add(s.Adapter);
            items.Add((s, chunk));
            budget -= chunk;
        }
        return items;
    }

    /// <summary>
    /// The blocks the waiting sequences' prefix matches will take from the slower tiers, in admission
    /// order: each prompt's keys up to the first one no tier holds, less those on the device; at most as
    /// many as the device pool has.
    /// </summary>
    private List<ulong> WantedBlocks(IKvTierStore tiers)
    {
        var wanted = new List<ulong>();
        foreach (var s in _waiting)
        {
            if (wanted.Count >= Cache.Pool.Count) break;
            if (s.Blocks.Length != 0 || s.Blocks.SwappedBlocks > 0) continue;
            if (s.HashedTokens != s.Tokens.Count) HashPrefix(s);
            foreach (ulong h in s.PrefixHashes)
            {
                if (Cache.Pool.Contains(h)) continue;
                if (!tiers.Contains(h)) break;
                wanted.Add(h);
            }
        }
        return wanted;
    }

    /// <summary>Keys of the tokens MatchPrefix matches (all but the last, which must be computed for logits).</summary>
    private void HashPrefix(Sequence s)
    {
        s.PrefixHashes = Cache.PrefixHashes(s.Blocks.Salt, s.Tokens.ToArray().AsSpan(0, s.Tokens.Count - 1));
        s.HashedTokens = s.Tokens.Count;
    }

    private void Preempt(Sequence s)
    {
        bool swap = (Options.Preemption ?? (Cache.Tiers is { CanSwap: true } ? PreemptionMode.Swap : PreemptionMode.Recompute)) == PreemptionMode.Swap;
        if (swap && Cache.SwapOut(s.Blocks)) _swaps++;
        else
        {
            Cache.Free(s.Blocks);
            _recomputations++;
        }
        _running.Remove(s);
        var node = _waiting.First;
        while (node != null && node.Value.AdmitOrder != 0 && node.Value.AdmitOrder < s.AdmitOrder) node = node.Next;
        if (node == null) _waiting.AddLast(s);
        else _waiting.AddBefore(node, s);
        _preemptions++;
    }

    // Up to K tokens a running sequence with one token to compute proposes from its prompt + output, within the step's
    // budget, its token limit (the bonus token included) and the length limit; none when speculation is off.
    private int[] Propose(Sequence s, int chunk, int budget)
    {
        var r = s.Handle.Request;
        if (_proposer == null || chunk != 1 || s.Generated < 1) return [];
        int k = Math.Min(Options.Speculative!.NumTokens, Math.Min(budget - 1, Math.Min(r.MaxNewTokens - s.Generated - 1, MaxSequenceLength - s.Tokens.Count - 1)));
        if (k < 1) return [];
        var draft = new int[k];
        int n = _proposer.Propose(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(s.Tokens), s.PromptLength, draft);
        return draft[..n];
    }

    // A speculative chunk computed: row j of logits [1 + drafts, V] follows the last token and proposals 1..j. Each row
    // is sampled in turn by the sequence's Sampler over the history so far (the sequence, then the proposals kept);
    // proposals are kept while they equal the draw of the row before them, their K/V committed (the rest's blocks
    // given back), then they and the draw that ended the run are appended token by token, stopping where a stop
    // condition says. A JSON constraint's state moves with each draw, and every draw is a token appended, so it stays
    // the appended text's; a draw the constraint cannot make fails the sequence after the proposals kept before it.
    private void Verify(Sequence s, int[] draft, ReadOnlySpan<float> logits)
    {
        int v = Config.VocabSize, accepted = 0, next;
        string? error = null;
        var tokens = new int[s.Tokens.Count + draft.Length];
        s.Tokens.CopyTo(tokens);
        draft.CopyTo(tokens, s.Tokens.Count);
        while (true)
        {
            try
            {
                next = s.Sampler.Next(logits.Slice(accepted * v, v), tokens.AsSpan(0, s.Tokens.Count + accepted), s.PromptLength);
            }
            catch (TemperException e) // as in Sample: no token of the vocabulary continues the JSON constraint
            {
                (error, next) = (e.Message, -1);
                break;
            }
            if (accepted == draft.Length || next != draft[accepted]) break;
            accepted++;
        }
        _specDrafted += draft.Length;
        _specAccepted += accepted;
        Cache.Commit(s.Blocks, tokens, s.Tokens.Count + accepted);
        Cache.Trim(s.Blocks);
        for (int j = 0; j < accepted; j++)
            if (Append(s, draft[j], logits.Slice(j * v, v))) return;
        if (error != null) Finish(s, ServingFinish.Error, error);
        else Append(s, next, logits.Slice(accepted * v, v));
    }

    private void Run(List<(Sequence Seq, int Count)> items)
    {
        var step = items.Select(i => new StepItem(i.Seq.Blocks, [.. i.Seq.Tokens.GetRange(i.Seq.Blocks.Length, i.Count - (i.Seq.Draft?.Length ?? 0)), .. i.Seq.Draft ?? []],
            i.Seq.Blocks.Length, i.Seq.Adapter, i.Seq.Blocks.Length + i.Count == i.Seq.Tokens.Count, AllLogits: ScoresPrompt(i.Seq) || i.Seq.Draft != null)).ToArray();
        var logits = Model.Forward(step);
        int v = Config.VocabSize, row = 0;
        for (int i = 0; i < items.Count; i++)
        {
            var (s, count) = items[i];
            if (s.Draft is { } draft)
            {
                s.Draft = null;
                _decodeTokens += count;
                Verify(s, draft, logits.AsSpan(row * v, count * v));
                row += count;
                continue;
            }
            bool decode = s.Blocks.Length >= s.PromptLength;
            Cache.Commit(s.Blocks, s.Tokens.ToArray(), s.Blocks.Length + count);
            if (decode) _decodeTokens += count;
            else _prefill += count;
            if (step[i].AllLogits) ScorePrompt(s, step[i].Start, count, logits.AsSpan(row * v, count * v));
            row += step[i].LogitRows;
            if (!step[i].WantLogits) continue;
            var l = logits.AsSpan((row - 1) * v, v);
            if (s.Handle.Request.MaxNewTokens == 0)
            {
                Finish(s, ServingFinish.Length); // prompt scoring only
                continue;
            }
            if (s.Handle.Request.N > 1 && !s.Forked)
            {
                s.Forked = true;
                for (int c = 1; c < s.Handle.Request.N; c++)
                {
                    var child = NewSequence(s.Handle, c, [.. s.Tokens], s.Adapter);
                    child.Forked = true;
                    child.Blocks = Cache.Fork(s.Blocks);
                    child.AdmitOrder = ++_admitCounter;
                    _running.Add(child);
                    Sample(child, l);
                }
            }
            Sample(s, l);
        }
    }

    // The tokens of s the step computes: what is left of them, within the budget; a scored prompt's chunk also
    // keeps its logits (a row of V floats a token) to about 128 MB.
    private int Chunk(Sequence s, int budget)
    {
        int chunk = Math.Min(s.Tokens.Count - s.Blocks.Length, budget);
        return ScoresPrompt(s) ? Math.Min(chunk, Math.Max(1, (1 << 25) / Config.VocabSize)) : chunk;
    }

    // A sequence whose request scores its prompt and whose prompt is not all computed yet.
    private static bool ScoresPrompt(Sequence s) => s.Handle.Request.PromptLogprobs >= 0 && s.Blocks.Length < s.PromptLength;

    // Rows [start, start + count) of the prompt just computed: row j predicts token start + j + 1.
    private static void ScorePrompt(Sequence s, int start, int count, ReadOnlySpan<float> logits)
    {
        int v = logits.Length / count;
        for (int j = 0; j < count && start + j + 1 < s.PromptLength; j++)
        {
            var (lp, top) = Logprobs(logits.Slice(j * v, v), s.Tokens[start + j + 1], s.Handle.Request.PromptLogprobs);
            s.Handle.SetPromptLogprob(start + j + 1, new PromptTokenLogprob(lp, top));
        }
    }

    private void Sample(Sequence s, ReadOnlySpan<float> logits)
    {
        int id;
        try
        {
            id = s.Sampler.Next(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(s.Tokens), s.PromptLength);
        }
        catch (TemperException e) // a JSON constraint no token of the vocabulary can continue: this sequence fails, not the step's others
        {
            Finish(s, ServingFinish.Error, e.Message);
            return;
        }
        Append(s, id, logits);
    }

    // Appends a chosen token (its row of logits for log-probabilities), streams it and finishes the sequence when
    // a stop condition holds; true when it finished.
    private bool Append(Sequence s, int id, ReadOnlySpan<float> logits)
    {
        var r = s.Handle.Request;
        s.Tokens.Add(id);
        float lp = 0;
        TokenLogprob[]? top = null;
        if (r.TopLogprobs >= 0) (lp, top) = Logprobs(logits, id, r.TopLogprobs);
        ServingFinish? finish = null;
        if (!r.IgnoreEos && r.EosIds.Contains(id)) finish = ServingFinish.Eos;
        else if (r.StopStrings.Count > 0 && s.Generated >= r.Sampling.MinTokens && r.StopStrings.Any(_decode!(s.Tokens.GetRange(s.PromptLength, s.Generated)).Contains)) finish = ServingFinish.Stop;
        else if (s.Generated >= r.MaxNewTokens || s.Tokens.Count >= MaxSequenceLength) finish = ServingFinish.Length;
        s.Handle.Emit(new StreamEvent(s.Choice, id, lp, top, finish));
        if (finish is { } f) Finish(s, f, emit: false);
        return finish != null;
    }

    private static (float, TokenLogprob[]) Logprobs(ReadOnlySpan<float> logits, int chosen, int k)
    {
        float max = float.NegativeInfinity;
        foreach (float x in logits) max = Math.Max(max, x);
        double sum = 0;
        foreach (float x in logits) sum += Math.Exp(x - max);
        float lse = max + (float)Math.Log(sum);
        var ids = Sampler.LargestIds(logits, k); // one pass, not a sort of V
        var top = new TokenLogprob[ids.Length];
        for (int i = 0; i < ids.Length; i++) top[i] = new TokenLogprob(ids[i], logits[ids[i]] - lse);
        return (logits[chosen] - lse, top);
    }

    private void Finish(Sequence s, ServingFinish f, string? error = null, bool emit = true)
    {
        Cache.Free(s.Blocks);
        _running.Remove(s);
        if (emit) s.Handle.Emit(new StreamEvent(s.Choice, -1, 0, null, f, error));
        // Choices not yet forked never run: a cancelled or failed parent closes them too.
        int closes = s.Forked || s.Handle.Request.N == 1 ? 1 : s.Handle.OpenChoices;
        s.Handle.OpenChoices -= closes;
        if (s.Handle.OpenChoices <= 0)
        {
            s.Handle.Complete();
            _finished++;
        }
    }

    /// <summary>Starts the background loop that steps whenever there is work.</summary>
    public void Start()
    {
        if (_loop != null) return;
        _loop = new Thread(() =>
        {
            while (!_stopping)
                if (!Step()) _wake.WaitOne(20);
        }) { IsBackground = true, Name = "temper-serving" };
        _loop.Start();
    }

    public void Dispose()
    {
        _stopping = true;
        _wake.Set();
        _loop?.Join();
        lock (_stepLock)
        {
            foreach (var s in _running.ToArray()) Finish(s, ServingFinish.Cancelled);
            foreach (var s in _waiting) Finish(s, ServingFinish.Cancelled);
            _waiting.Clear();
        }
        Adapters?.DiscardPrefetches();                // reads of the disk tier end before it goes
        Tiers?.Dispose();                             // (it ends its own KV block reads first)
        Cache.Dispose();
        _wake.Dispose();
    }
}
