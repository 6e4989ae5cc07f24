// The byte-level pushdown automaton of JSON-constrained decoding. A state is an immutable stack of frames
// (a persistent linked list: stepping replaces the top frames and shares the rest, so the mask walk can
// branch from one state into every token without copying or undoing). Step(b) consumes one byte of the
// output and returns the new top (null: the byte is not allowed here); a frame that finishes its value
// hands over to Parent.AfterChild(tag). A number or a literal that could end or go on (12 vs 123) ends
// when the next byte does not continue it, and that byte goes to its parent. anyOf alternatives that
// start with the same byte run side by side (Fork: several stacks, one per live alternative). Whitespace
// is allowed before the value and between JSON tokens, at most MaxWhitespace bytes in a row, so a model
// cannot stall on it; none after the top-level value: there only EOS may come. Strings are checked as UTF-8 (no stray continuation bytes, overlongs or
// surrogates) and escapes as JSON's (a \u escape of a surrogate only as a high-low pair); lengths count code
// points.
// Frames compare by value (Same, Hash) so masks can be cached per state.
namespace Temper.Models.Constrained;

internal abstract class Frame(Frame? parent)
{
    public const int MaxWhitespace = 12;

    public Frame? Parent { get; } = parent;
    private int _hash;

    /// <summary>The new top of the stack after byte b, or null when b may not come here.</summary>
    public abstract Frame? Step(byte b);

    /// <summary>Whether the value this frame reads may end here (more bytes would extend it).</summary>
    public virtual bool CanEnd => false;

    /// <summary>The tag this frame hands its parent when it ends (a key's property index).</summary>
    public virtual int EndTag => 0;

    /// <summary>This frame after its child value ended (the child's tag).</summary>
    public virtual Frame AfterChild(int tag) => throw new InvalidOperationException($"{GetType().Name} has no child");

    /// <summary>Whether the whole output may end here: the stack unwinds through values that may end to the root.</summary>
    public bool Finished
    {
        get
        {
            for (Frame f = this; ;)
            {
                if (f is EndFrame) return true;
                if (!f.CanEnd || f.Parent == null) return false;
                f = f.Parent.AfterChild(f.EndTag);
            }
        }
    }

    // Ends this value and gives b to what follows (a number or literal that b does not continue).
    protected Frame? EndThenStep(byte b) => CanEnd && Parent != null ? Parent.AfterChild(EndTag).Step(b) : null;

    protected static bool IsWhitespace(byte b) => b is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r';

    // Value equality of whole stacks, for the mask cache.
    protected abstract int OwnHash();
    protected abstract bool SameOwn(Frame other);

    public override int GetHashCode()
    {
        if (_hash == 0) _hash = HashCode.Combine(GetType(), OwnHash(), Parent?.GetHashCode() ?? 0) | 1;
        return _hash;
    }

    public bool Same(Frame other)
    {
        Frame? a = this, b = other;
        while (a != null && b != null)
        {
            if (ReferenceEquals(a, b)) return true;
            if (a.GetType() != b.GetType() || a.GetHashCode() != b.GetHashCode() || !a.SameOwn(b)) return false;
            a = a.Parent;
            b = b.Parent;
        }
        return a == null && b == null;
    }

    /// <summary>The frame that starts reading a value of spec (its first byte not read yet); unions are expanded by the caller.</summary>
    public static Frame Start(JsonSpec spec, Frame parent) => spec.Kind switch
    {
        SpecKind.Object => new ObjectFrame(parent, spec, ObjectPhase.Open, 0, -1, 0),
        SpecKind.Array => new ArrayFrame(parent, spec, ArrayPhase.Open, 0, 0),
        SpecKind.String => new StringFrame(parent, spec, StringPhase.Open, 0, 0, 0),
        SpecKind.Number => new NumberFrame(parent, integer: false, NumberPhase.Start),
        SpecKind.Integer => new NumberFrame(parent, integer: true, NumberPhase.Start),
        SpecKind.Literals => new LiteralFrame(parent, spec.Literals!, 0),
        _ => throw new InvalidOperationException($"no start frame for {spec.Kind}"),
    };
}

/// <summary>Several stacks at once: anyOf alternatives that all accept the bytes so far. Never a stack's top for long:
/// callers expand it (JsonConstraintState keeps a list of stacks).</summary>
internal sealed class Fork(Frame[] alternatives) : Frame(null)
{
    public Frame[] Alternatives { get; } = alternatives;
    public override Frame? Step(byte b) => throw new InvalidOperationException("a fork is expanded, not stepped");
    protected override int OwnHash() => Alternatives.Length;
    protected override bool SameOwn(Frame other) => false;
}

/// <summary>The bottom of every stack: the top-level value has ended; nothing may follow but EOS.</summary>
internal sealed class EndFrame() : Frame(null)
{
    public static readonly EndFrame Instance = new();
    public override Frame? Step(byte b) => null;
    public override Frame AfterChild(int tag) => this;
    protected override int OwnHash() => 0;
    protected override bool SameOwn(Frame other) => true;
}

/// <summary>Before a value: whitespace (counted), then the first byte of one of spec's alternatives.</summary>
internal sealed class ValueFrame(Frame parent, JsonSpec spec, int ws) : Frame(parent)
{
    public JsonSpec Spec { get; } = spec;
    public int Ws { get; } = ws;

    public override Frame? Step(byte b)
    {
        if (IsWhitespace(b)) return Ws < MaxWhitespace ? new ValueFrame(Parent!, Spec, Ws + 1) : null;
        return StepInto(Spec, Parent!, b);
    }

    /// <summary>Starts a value of spec under parent with its first byte b (anyOf: every alternative that takes b; several make a Fork).</summary>
    public static Frame? StepInto(JsonSpec spec, Frame parent, byte b)
    {
        if (spec.Kind != SpecKind.Union) return Start(spec, parent).Step(b);
        List<Frame>? live = null;
        Collect(spec, parent, b, ref live, 0);
        return live == null ? null : live.Count == 1 ? live[0] : new Fork([.. live]);
    }

    private static void Collect(JsonSpec spec, Frame parent, byte b, ref List<Frame>? live, int depth)
    {
        if (depth > 64) throw new InvalidOperationException("anyOf nested too deep"); // the compiler refuses cycles of anyOf/$ref
        if (spec.Kind == SpecKind.Union)
        {
            foreach (var alt in spec.Alternatives) Collect(alt, parent, b, ref live, depth + 1);
            return;
        }
        var f = Start(spec, parent).Step(b);
        if (f is Fork fork) (live ??= []).AddRange(fork.Alternatives);
        else if (f != null) (live ??= []).Add(f);
    }

    protected override int OwnHash() => HashCode.Combine(Spec, Ws);
    protected override bool SameOwn(Frame other) => other is ValueFrame o && o.Spec == Spec && o.Ws == Ws;
}

internal enum ObjectPhase { Open, AfterOpen, BeforeKey, InKey, AfterKey, InValue, AfterValue }

/// <summary>
/// An object: '{', then keys in the spec's order (Next: the first property that may still come; Current: the
/// one whose key or value is being read), ':' and values, ',' between, '}' once no required property remains.
/// A map (spec.MapValues) takes any string keys and never needs more.
/// </summary>
internal sealed class ObjectFrame(Frame? parent, JsonSpec spec, ObjectPhase phase, int next, int current, int ws) : Frame(parent)
{
    public JsonSpec Spec { get; } = spec;
    public ObjectPhase Phase { get; } = phase;
    public int Next { get; } = next;
    public int Current { get; } = current;
    public int Ws { get; } = ws;

    private bool IsMap => Spec.MapValues != null;
    private bool HasKey => IsMap || Next < Spec.Properties.Count;
    private bool MayClose => IsMap || Spec.CanClose(Next);

    private ObjectFrame With(ObjectPhase phase, int next, int current, int ws) => new(Parent, Spec, phase, next, current, ws);

    public override Frame? Step(byte b)
    {
        switch (Phase)
        {
            case ObjectPhase.Open:
                return b == '{' ? With(ObjectPhase.AfterOpen, Next, -1, 0) : null;
            case ObjectPhase.AfterOpen:
            case ObjectPhase.BeforeKey:
            case ObjectPhase.AfterValue:
                if (IsWhitespace(b)) return Ws < MaxWhitespace ? With(Phase, Next, Current, Ws + 1) : null;
                if (b == '}' && Phase != ObjectPhase.BeforeKey && MayClose) return Parent!.AfterChild(0);
                if (b == ',' && Phase == ObjectPhase.AfterValue && HasKey) return With(ObjectPhase.BeforeKey, Next, -1, 0);
                if (b == '"' && Phase != ObjectPhase.AfterValue && HasKey)
                {
                    var inKey = With(ObjectPhase.InKey, Next, -1, 0);
                    if (IsMap) return new StringFrame(inKey, JsonSpec.FreeString, StringPhase.Body, 0, 0, 0);
                    var keys = Spec.KeysFrom(Next);
                    int node = keys.Child(0, b);
                    return node < 0 ? null : new LiteralFrame(inKey, keys, node);
                }
                return null;
            case ObjectPhase.AfterKey:
                if (IsWhitespace(b)) return Ws < MaxWhitespace ? With(Phase, Next, Current, Ws + 1) : null;
                if (b != ':') return null;
                return new ValueFrame(With(ObjectPhase.InValue, Next, Current, 0), IsMap ? Spec.MapValues! : Spec.Properties[Current].Value, 0);
            default:
                return null;
        }
    }

    public override Frame AfterChild(int tag) => Phase switch
    {
        ObjectPhase.InKey => With(ObjectPhase.AfterKey, Next, IsMap ? -1 : tag, 0),
        ObjectPhase.InValue => With(ObjectPhase.AfterValue, IsMap ? 0 : Current + 1, -1, 0),
        _ => throw new InvalidOperationException($"object frame in phase {Phase} has no child"),
    };

    protected override int OwnHash() => HashCode.Combine(Spec, Phase, Next, Current, Ws);
    protected override bool SameOwn(Frame other) =>
        other is ObjectFrame o && o.Spec == Spec && o.Phase == Phase && o.Next == Next && o.Current == Current && o.Ws == Ws;
}

internal enum ArrayPhase { Open, AfterOpen, InValue, AfterValue }

/// <summary>An array: '[', items separated by ',', ']' once Count reaches MinItems; no ',' at MaxItems. Without a
/// MaxItems the count stops at MinItems (it matters no more), so long arrays share their states.</summary>
internal sealed class ArrayFrame(Frame? parent, JsonSpec spec, ArrayPhase phase, int count, int ws) : Frame(parent)
{
    public JsonSpec Spec { get; } = spec;
    public ArrayPhase Phase { get; } = phase;
    public int Count { get; } = count;
    public int Ws { get; } = ws;

    public override Frame? Step(byte b)
    {
        switch (Phase)
        {
            case ArrayPhase.Open:
                return b == '[' ? new ArrayFrame(Parent, Spec, ArrayPhase.AfterOpen, 0, 0) : null;
            case ArrayPhase.AfterOpen:
            case ArrayPhase.AfterValue:
                if (IsWhitespace(b)) return Ws < MaxWhitespace ? new ArrayFrame(Parent, Spec, Phase, Count, Ws + 1) : null;
                if (b == ']') return Count >= Spec.MinItems ? Parent!.AfterChild(0) : null;
                if (Phase == ArrayPhase.AfterValue)
                    return b == ',' && Count < Spec.MaxItems ? new ValueFrame(new ArrayFrame(Parent, Spec, ArrayPhase.InValue, Count, 0), Spec.Items!, 0) : null;
                return Spec.MaxItems > 0 ? ValueFrame.StepInto(Spec.Items!, new ArrayFrame(Parent, Spec, ArrayPhase.InValue, Count, 0), b) : null;
            default:
                return null;
        }
    }

    public override Frame AfterChild(int tag)
    {
        int count = Spec.MaxItems == int.MaxValue ? Math.Min(Count + 1, Spec.MinItems) : Count + 1;
        return new ArrayFrame(Parent, Spec, ArrayPhase.AfterValue, count, 0);
    }

    protected override int OwnHash() => HashCode.Combine(Spec, Phase, Count, Ws);
    protected override bool SameOwn(Frame other) => other is ArrayFrame o && o.Spec == Spec && o.Phase == Phase && o.Count == Count && o.Ws == Ws;
}

internal enum StringPhase { Open, Body, Escape, Hex, PairSlash, PairU, LowHex, Utf8 }

/// <summary>
/// A string: '"', then chars (UTF-8, checked byte by byte: Aux = continuation bytes still due, Lo/Hi in Extra for the
/// next one), escapes (\" \\ \/ \b \f \n \r \t, \uXXXX: Aux = hex digits read, surrogates only in pairs) and the closing '"' once Length
/// reaches MinLength. Length is counted only when the spec limits it, so a free string's plain chars leave the
/// state as it was (the same object), and the mask walk takes subtrees of string content whole (TokenVocabulary.StringSafe).
/// </summary>
internal sealed class StringFrame(Frame parent, JsonSpec spec, StringPhase phase, int length, int aux, int extra) : Frame(parent)
{
    public JsonSpec Spec { get; } = spec;
    public StringPhase Phase { get; } = phase;
    public int Length { get; } = length;
    public int Aux { get; } = aux;
    public int Extra { get; } = extra;

    private StringFrame With(StringPhase phase, int length, int aux = 0, int extra = 0) => new(Parent!, Spec, phase, length, aux, extra);

    // One more code point: null past MaxLength; past MinLength the count no longer matters without a MaxLength.
    private int Counted() => !Spec.TracksLength ? 0 : Spec.MaxLength == int.MaxValue ? Math.Min(Length + 1, Spec.MinLength) : Length + 1;
    private bool Room => Length < Spec.MaxLength;

    public override Frame? Step(byte b)
    {
        switch (Phase)
        {
            case StringPhase.Open:
                return b == '"' ? With(StringPhase.Body, 0) : null;
            case StringPhase.Body:
                if (b == '"') return Length >= Spec.MinLength ? Parent!.AfterChild(0) : null;
                if (b < 0x20) return null;
                if (!Room) return null;
                if (b == '\\') return With(StringPhase.Escape, Length);
                if (b < 0x80) return Spec.TracksLength ? With(StringPhase.Body, Counted()) : this;
                (int due, int lo, int hi) = Utf8Lead.Of(b);
                return due == 0 ? null : With(StringPhase.Utf8, Counted(), due, (lo << 8) | hi);
            case StringPhase.Utf8:
                if (b < Extra >> 8 || b > (Extra & 0xFF)) return null;
                return Aux == 1 ? With(StringPhase.Body, Length) : With(StringPhase.Utf8, Length, Aux - 1, (0x80 << 8) | 0xBF);
            case StringPhase.Escape:
                if (b == 'u') return With(StringPhase.Hex, Length, 0, 0);
                return b is (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t'
                    ? With(StringPhase.Body, Counted()) : null;
            case StringPhase.Hex:
            case StringPhase.LowHex:
                // Extra = the value so far. A high surrogate (\uD800..\uDBFF) must be followed by \u and a low one
                // (\uDC00..\uDFFF, LowHex); a low one alone is refused.
                int digit = HexValue(b);
                if (digit < 0) return null;
                bool low = Phase == StringPhase.LowHex;
                if (low && Aux == 0 && digit != 0xD) return null;
                if (Aux == 1 && Extra == 0xD && (low ? digit < 0xC : digit >= 0xC)) return null;
                int value = (Extra << 4) | digit;
                if (Aux < 3) return With(Phase, Length, Aux + 1, value);
                if (low) return With(StringPhase.Body, Length);
                return value is >= 0xD800 and <= 0xDBFF ? With(StringPhase.PairSlash, Counted()) : With(StringPhase.Body, Counted());
            case StringPhase.PairSlash:
                return b == '\\' ? With(StringPhase.PairU, Length) : null;
            case StringPhase.PairU:
                return b == 'u' ? With(StringPhase.LowHex, Length, 0, 0) : null;
            default:
                return null;
        }
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>In the body, between chars: plain ASCII keeps the state (free string) or only counts (limited one).</summary>
    public bool InBody => Phase == StringPhase.Body;

    /// <summary>How many more plain chars fit.</summary>
    public int RoomLeft => Spec.MaxLength == int.MaxValue ? int.MaxValue : Spec.MaxLength - Length;

    protected override int OwnHash() => HashCode.Combine(Spec, Phase, Length, Aux, Extra);
    protected override bool SameOwn(Frame other) =>
        other is StringFrame o && o.Spec == Spec && o.Phase == Phase && o.Length == Length && o.Aux == Aux && o.Extra == Extra;
}

internal enum NumberPhase { Start, Minus, Zero, Int, Dot, Frac, E, ESign, Exp }

/// <summary>A number as JSON writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; an integer has neither fraction nor exponent.</summary>
internal sealed class NumberFrame(Frame parent, bool integer, NumberPhase phase) : Frame(parent)
{
    public bool Integer { get; } = integer;
    public NumberPhase Phase { get; } = phase;

    public override bool CanEnd => Phase is NumberPhase.Zero or NumberPhase.Int or NumberPhase.Frac or NumberPhase.Exp;

    private NumberFrame To(NumberPhase p) => p == Phase ? this : new NumberFrame(Parent!, Integer, p);

    public override Frame? Step(byte b)
    {
        bool digit = b is >= (byte)'0' and <= (byte)'9';
        switch (Phase)
        {
            case NumberPhase.Start:
            case NumberPhase.Minus:
                if (b == '-' && Phase == NumberPhase.Start) return To(NumberPhase.Minus);
                return b == '0' ? To(NumberPhase.Zero) : digit ? To(NumberPhase.Int) : null;
            case NumberPhase.Zero:
            case NumberPhase.Int:
                if (digit && Phase == NumberPhase.Int) return this;
                if (!Integer && b == '.') return To(NumberPhase.Dot);
                if (!Integer && b is (byte)'e' or (byte)'E') return To(NumberPhase.E);
                return EndThenStep(b);
            case NumberPhase.Dot:
                return digit ? To(NumberPhase.Frac) : null;
            case NumberPhase.Frac:
                if (digit) return this;
                if (b is (byte)'e' or (byte)'E') return To(NumberPhase.E);
                return EndThenStep(b);
            case NumberPhase.E:
                if (b is (byte)'+' or (byte)'-') return To(NumberPhase.ESign);
                return digit ? To(NumberPhase.Exp) : null;
            case NumberPhase.ESign:
                return digit ? To(NumberPhase.Exp) : null;
            case NumberPhase.Exp:
                return digit ? this : EndThenStep(b);
            default:
                return null;
        }
    }

    protected override int OwnHash() => HashCode.Combine(Integer, Phase);
    protected override bool SameOwn(Frame other) => other is NumberFrame o && o.Integer == Integer && o.Phase == Phase;
}

/// <summary>One of a set of literal texts (enum, const, true/false/null, an object's allowed keys): Node in their
/// trie. A text that ends where another goes on (1 and 12) ends when the next byte does not continue it.</summary>
internal sealed class LiteralFrame(Frame parent, LiteralTrie trie, int node) : Frame(parent)
{
    public LiteralTrie Trie { get; } = trie;
    public int Node { get; } = node;

    public override bool CanEnd => Trie.Tag(Node) >= 0;
    public override int EndTag => Trie.Tag(Node);

    public override Frame? Step(byte b)
    {
        int child = Trie.Child(Node, b);
        if (child < 0) return EndThenStep(b);
        if (Trie.Tag(child) >= 0 && !Trie.HasChildren(child)) return Parent!.AfterChild(Trie.Tag(child));
        return new LiteralFrame(Parent!, Trie, child);
    }

    protected override int OwnHash() => HashCode.Combine(Trie, Node);
    protected override bool SameOwn(Frame other) => other is LiteralFrame o && o.Trie == Trie && o.Node == Node;
}

/// <summary>A UTF-8 lead byte: how many continuation bytes follow, and the range of the first one (no overlongs, no
/// surrogates, at most U+10FFFF); due 0 for a byte that cannot lead.</summary>
internal static class Utf8Lead
{
    public static (int Due, int Lo, int Hi) Of(byte b) => b switch
    {
        >= 0xC2 and <= 0xDF => (1, 0x80, 0xBF),
        0xE0 => (2, 0xA0, 0xBF),
        0xED => (2, 0x80, 0x9F),
        >= 0xE1 and <= 0xEF => (2, 0x80, 0xBF),
        0xF0 => (3, 0x90, 0xBF),
        >= 0xF1 and <= 0xF3 => (3, 0x80, 0xBF),
        0xF4 => (3, 0x80, 0x8F),
        _ => (0, 0, 0),
    };
}
