// JSON-constrained decoding (OpenAI's response_format json_object / json_schema): a compiled JsonSpec over
// a TokenVocabulary. Start() gives one generation's state; at each step the state says which token ids may
// come next (Allowed: a bit per id; EOS only once the value is complete, and then nothing else) and
// advances on the chosen one. The mask is a walk of the vocabulary's byte trie with the automaton
// (JsonFrames): a subtree is entered only while its prefix keeps the output a valid prefix, and a
// string's body takes whole the subtrees that only add string content (that fits its maxLength). Masks are cached per state (states compare by value), in
// the constraint, shared by the generations that use it, up to CacheBytes of them (then the cache restarts).
using System.Collections.Concurrent;
using System.Text.Json;
using Temper.Core;

namespace Temper.Models.Constrained;

public sealed class JsonConstraint
{
    private const int CacheBytes = 8 << 20;   // masks kept per constraint: 8 MB (320 masks of a 200k vocabulary, 16 at least)
    private readonly ConcurrentDictionary<StateKey, ulong[]> _masks = new();
    private readonly int _cacheLimit;

    internal JsonSpec Root { get; }
    public TokenVocabulary Vocabulary { get; }
    /// <summary>What the constraint asks for, for messages: "a JSON object" or "JSON matching the schema".</summary>
    public string Description { get; }

    private JsonConstraint(TokenVocabulary vocabulary, JsonSpec root, string description)
    {
        Vocabulary = vocabulary;
        Root = root;
        Description = description;
        _cacheLimit = Math.Max(16, CacheBytes / Math.Max(8, vocabulary.Size / 8));
        if (vocabulary.EosIds.Count == 0) throw new TemperException("JSON-constrained decoding needs the model's EOS token id (none is known)");
    }

    /// <summary>response_format json_object: any JSON object.</summary>
    public static JsonConstraint ForObject(TokenVocabulary vocabulary) => new(vocabulary, JsonSpec.AnyObject(), "a JSON object");

    /// <summary>response_format json_schema: JSON matching the schema (JsonSchemaCompiler's subset; anything else is a TemperException naming it).</summary>
    public static JsonConstraint ForSchema(TokenVocabulary vocabulary, JsonElement schema) =>
        new(vocabulary, JsonSchemaCompiler.Compile(schema), "JSON matching the schema");

    /// <summary>ForSchema of a schema's JSON text.</summary>
    public static JsonConstraint ForSchema(TokenVocabulary vocabulary, string schemaJson)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(schemaJson); }
        catch (JsonException e) { throw new TemperException($"the JSON schema is not valid JSON: {e.Message}"); }
        using (doc) return ForSchema(vocabulary, doc.RootElement);
    }

    public JsonConstraintState Start() => new(this, [new ValueFrame(EndFrame.Instance, Root, 0)]);

    // The allowed tokens of a state (a bit per token id), computed once per distinct state.
    internal ulong[] Mask(Frame[] stacks)
    {
        var key = new StateKey(stacks);
        if (_masks.TryGetValue(key, out var cached)) return cached;
        var v = Vocabulary;
        var mask = new ulong[(v.Size + 63) / 64];
        foreach (var top in stacks) Walk(0, top, mask);
        if (stacks.Any(s => s.Finished))
            foreach (int eos in v.EosIds) mask[eos >> 6] |= 1UL << eos;
        if (_masks.Count >= _cacheLimit) _masks.Clear();
        _masks.TryAdd(key, mask);
        return mask;
    }

    private void Walk(int node, Frame state, ulong[] mask)
    {
        var v = Vocabulary;
        int end = v.FirstChild[node] + v.ChildCount[node];
        for (int c = v.FirstChild[node]; c < end; c++)
        {
            var next = state.Step(v.Edge[c]);
            if (next is Fork fork) foreach (var alt in fork.Alternatives) Visit(c, alt, mask);
            else if (next != null) Visit(c, next, mask);
        }
    }

    private void Visit(int node, Frame state, ulong[] mask)
    {
        var v = Vocabulary;
        Set(mask, v.ExactLo[node], v.ExactHi[node]);
        if (v.ChildCount[node] == 0) return;
        if (state is StringFrame { InBody: true } s && v.StringSafe[node])
        {
            // Every token below only adds string content: all of it fits when its bytes do (chars <= bytes); else
            // each token's chars past here (its chars less the prefix's) must fit.
            int room = s.RoomLeft;
            if (room >= v.MaxDepth[node]) Set(mask, v.ExactHi[node], v.SubtreeHi[node]);
            else
            {
                int[] order = v.Order, chars = v.Chars;
                int limit = room + v.PrefixChars[node];
                for (int i = v.ExactHi[node]; i < v.SubtreeHi[node]; i++)
                    if (chars[order[i]] <= limit) mask[order[i] >> 6] |= 1UL << order[i];
            }
            return;
        }
        Walk(node, state, mask);
    }

    private void Set(ulong[] mask, int lo, int hi)
    {
        var order = Vocabulary.Order;
        for (int i = lo; i < hi; i++) mask[order[i] >> 6] |= 1UL << order[i];
    }

    // A state (its stacks, in order) as a dictionary key, compared by value.
    private readonly struct StateKey(Frame[] stacks) : IEquatable<StateKey>
    {
        private readonly Frame[] _stacks = stacks;

        public bool Equals(StateKey other)
        {
            if (_stacks.Length != other._stacks.Length) return false;
            for (int i = 0; i < _stacks.Length; i++) if (!_stacks[i].Same(other._stacks[i])) return false;
            return true;
        }

        public override bool Equals(object? obj) => obj is StateKey k && Equals(k);

        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var f in _stacks) h.Add(f.GetHashCode());
            return h.ToHashCode();
        }
    }
}

/// <summary>One generation's place in a JsonConstraint: the live stacks of the automaton (several while anyOf
/// alternatives agree on the output so far), and whether EOS has been chosen.</summary>
public sealed class JsonConstraintState
{
    private Frame[] _stacks;
    private bool _ended;

    internal JsonConstraintState(JsonConstraint constraint, Frame[] stacks)
    {
        Constraint = constraint;
        _stacks = stacks;
    }

    public JsonConstraint Constraint { get; }

    /// <summary>Whether the output so far is a whole value (EOS may come).</summary>
    public bool IsComplete => !_ended && _stacks.Any(s => s.Finished);

    /// <summary>Whether EOS has been chosen: nothing more may come.</summary>
    public bool Ended => _ended;

    /// <summary>An independent copy at the same place (states are immutable underneath, so this is cheap).</summary>
    public JsonConstraintState Clone() => new(Constraint, _stacks) { _ended = _ended };

    /// <summary>Whether the token may come next.</summary>
    public bool Allows(int token) => (uint)token < (uint)Constraint.Vocabulary.Size && !_ended && (Constraint.Mask(_stacks)[token >> 6] & (1UL << token)) != 0;

    /// <summary>The allowed tokens as a bit per token id (bit id &amp; 63 of word id >> 6); shared, do not write to it.</summary>
    public ReadOnlySpan<ulong> Allowed() => _ended ? new ulong[(Constraint.Vocabulary.Size + 63) / 64] : Constraint.Mask(_stacks);

    /// <summary>Sets the logits of disallowed tokens (and of ids past the vocabulary) to -inf; returns how many remain.</summary>
    public int ApplyMask(Span<float> logits)
    {
        var mask = Allowed();
        int allowed = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            if ((i >> 6) < mask.Length && (mask[i >> 6] & (1UL << i)) != 0) allowed++;
            else logits[i] = float.NegativeInfinity;
        }
        if (allowed == 0)
            throw new TemperException(_ended ? "the JSON constraint's output has ended (EOS was chosen)"
                : $"no token of the vocabulary can continue {Constraint.Description} here");
        return allowed;
    }

    /// <summary>Moves past the chosen token; a token the mask did not allow throws.</summary>
    public void Advance(int token)
    {
        var v = Constraint.Vocabulary;
        if (_ended) throw new InvalidOperationException($"token {token} after the constrained output ended");
        if (v.EosIds.Contains(token))
        {
            if (!_stacks.Any(s => s.Finished)) throw new InvalidOperationException($"EOS before {Constraint.Description} is complete");
            _ended = true;
            return;
        }
        var bytes = (uint)token < (uint)v.Size ? v.Tokens[token] : null;
        if (bytes == null || !TryAdvance(bytes)) throw new InvalidOperationException($"token {token} does not continue {Constraint.Description}");
    }

    /// <summary>Moves past these output bytes if they keep it a valid prefix (and returns true); else leaves the state as it was.</summary>
    public bool TryAdvance(ReadOnlySpan<byte> bytes)
    {
        if (_ended) return false;
        var stacks = _stacks;
        foreach (byte b in bytes)
        {
            var next = new List<Frame>(stacks.Length);
            foreach (var s in stacks)
            {
                var r = s.Step(b);
                if (r is Fork f) foreach (var alt in f.Alternatives) AddDistinct(next, alt);
                else if (r != null) AddDistinct(next, r);
            }
            if (next.Count == 0) return false;
            stacks = [.. next];
        }
        _stacks = stacks;
        return true;
    }

    private static void AddDistinct(List<Frame> list, Frame f)
    {
        foreach (var g in list) if (g.Same(f)) return;
        list.Add(f);
    }
}
