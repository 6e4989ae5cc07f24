// A tokenizer's vocabulary as constrained decoding sees it: each token id's bytes in the decoded text
// (byte-level pieces may be part of a UTF-8 char; special tokens have none and are never allowed), the EOS
// ids, and a byte trie over all token byte strings. The trie's nodes are numbered so that a node's children
// are contiguous and sorted by byte; the token ids are listed in lexicographic order of their bytes
// (Order), so the tokens that start with a node's prefix are the range Order[SubtreeLo..SubtreeHi) and those
// that are exactly that prefix come first in it (up to ExactHi). A mask walk visits each node at most once
// per automaton thread; StringSafe/MaxDepth let a string's body take whole subtrees of string content.
using Temper.Models.Text;

namespace Temper.Models.Constrained;

public sealed class TokenVocabulary
{
    /// <summary>Bytes of each token id (null: never allowed: specials, unknown ids, empty tokens).</summary>
    public IReadOnlyList<byte[]?> Tokens { get; }
    public IReadOnlyList<int> EosIds { get; }
    public int Size => Tokens.Count;

    // Trie arrays, indexed by node; node 0 is the root (the empty prefix).
    internal readonly byte[] Edge;          // the byte leading into the node
    internal readonly int[] FirstChild;     // children are FirstChild..FirstChild+ChildCount-1, sorted by Edge
    internal readonly int[] ChildCount;
    internal readonly int[] ExactLo, ExactHi, SubtreeHi;   // ranges into Order: [ExactLo, ExactHi) end here, [ExactLo, SubtreeHi) start here
    internal readonly bool[] StringSafe;    // every token below this node, from here on, is JSON string content (see IsStringContent)
    internal readonly int[] MaxDepth;       // the longest token below this node, in bytes past it
    internal readonly int[] PrefixChars;    // the chars the node's prefix starts (its bytes that are not UTF-8 continuation bytes)
    internal readonly int[] Chars;          // by token id: the chars its bytes start
    internal readonly int[] Order;          // token ids sorted by their bytes

    public TokenVocabulary(IReadOnlyList<byte[]?> tokens, IReadOnlyList<int> eosIds)
    {
        var bytes = tokens.Select(t => t is { Length: > 0 } ? t : null).ToArray();
        Tokens = bytes;
        EosIds = eosIds.Where(id => (uint)id < (uint)tokens.Count).Distinct().ToArray();
        var eos = EosIds.ToHashSet();
        var ids = Enumerable.Range(0, bytes.Length).Where(i => bytes[i] != null && !eos.Contains(i)).ToArray();
        Array.Sort(ids, (a, b) => { int c = bytes[a].AsSpan().SequenceCompareTo(bytes[b]); return c != 0 ? c : a.CompareTo(b); });
        Order = ids;

        var edge = new List<byte> { 0 };
        var first = new List<int> { 0 };
        var count = new List<int> { 0 };
        var exactHi = new List<int> { 0 };
        var exactLo = new List<int> { 0 };
        var subHi = new List<int> { 0 };
        Build(0, 0, 0, ids.Length);
        Edge = [.. edge];
        FirstChild = [.. first];
        ChildCount = [.. count];
        ExactLo = [.. exactLo];
        ExactHi = [.. exactHi];
        SubtreeHi = [.. subHi];
        int n = Edge.Length;
        MaxDepth = new int[n];
        var depthOf = new int[n];
        PrefixChars = new int[n];
        for (int node = 0; node < n; node++) // children always have larger numbers than their parent
            for (int c = FirstChild[node]; c < FirstChild[node] + ChildCount[node]; c++)
            {
                depthOf[c] = depthOf[node] + 1;
                PrefixChars[c] = PrefixChars[node] + ((Edge[c] & 0xC0) != 0x80 ? 1 : 0);
            }
        Chars = bytes.Select(t => t == null ? 0 : t.Count(b => (b & 0xC0) != 0x80)).ToArray();
        for (int node = n - 1; node >= 0; node--)
            for (int c = FirstChild[node]; c < FirstChild[node] + ChildCount[node]; c++) MaxDepth[node] = Math.Max(MaxDepth[node], MaxDepth[c] + 1);
        // StringSafe[node]: every token below, read from the node's depth on, is string content (a token at the node
        // itself trivially is). Each token is checked from each depth on its path: O(length^2) per token.
        StringSafe = new bool[n];
        Array.Fill(StringSafe, true);
        for (int node = 0; node < n; node++)
            for (int i = ExactHi[node]; i < SubtreeHi[node] && StringSafe[node]; i++)
                StringSafe[node] = IsStringContent(bytes[Order[i]].AsSpan(depthOf[node]));

        // Node `node` holds the tokens Order[lo..hi), which share their first `depth` bytes.
        void Build(int node, int depth, int lo, int hi)
        {
            int at = lo;
            while (at < hi && bytes[Order[at]]!.Length == depth) at++;
            exactLo[node] = lo;
            exactHi[node] = at;
            subHi[node] = hi;
            var groups = new List<(byte B, int Lo, int Hi)>();
            for (int i = at; i < hi;)
            {
                byte b = bytes[Order[i]]![depth];
                int j = i + 1;
                while (j < hi && bytes[Order[j]]![depth] == b) j++;
                groups.Add((b, i, j));
                i = j;
            }
            first[node] = edge.Count;
            count[node] = groups.Count;
            foreach (var g in groups)
            {
                edge.Add(g.B);
                first.Add(0);
                count.Add(0);
                exactLo.Add(0);
                exactHi.Add(0);
                subHi.Add(0);
            }
            for (int k = 0; k < groups.Count; k++) Build(first[node] + k, depth + 1, groups[k].Lo, groups[k].Hi);
        }
    }

    /// <summary>The vocabulary of a tokenizer (HfTokenizer.TokenBytes), with the model's EOS ids.</summary>
    public static TokenVocabulary From(HfTokenizer tokenizer, IReadOnlyList<int> eosIds)
    {
        int n = tokenizer.IdLimit;
        var tokens = new byte[]?[n];
        for (int id = 0; id < n; id++) tokens[id] = tokenizer.TokenBytes(id);
        return new TokenVocabulary(tokens, eosIds);
    }

    /// <summary>Nodes of the byte trie (distinct token prefixes, the empty one included).</summary>
    public int TrieNodes => Edge.Length;

    /// <summary>
    /// Whether these bytes, read between two chars of a JSON string, stay inside it: no '"', '\\' or control byte, and
    /// UTF-8 whose chars are whole (no overlongs, surrogates or stray continuation bytes) except possibly the last,
    /// which may be cut short. What StringFrame accepts in its body, so a free string takes such subtrees whole.
    /// </summary>
    internal static bool IsStringContent(ReadOnlySpan<byte> bytes)
    {
        for (int i = 0; i < bytes.Length;)
        {
            byte b = bytes[i];
            if (b < 0x80)
            {
                if (b < 0x20 || b == (byte)'"' || b == (byte)'\\') return false;
                i++;
                continue;
            }
            (int due, int lo, int hi) = Utf8Lead.Of(b);
            if (due == 0) return false;
            i++;
            for (int k = 0; k < due && i < bytes.Length; k++, i++)
            {
                if (bytes[i] < lo || bytes[i] > hi) return false;
                (lo, hi) = (0x80, 0xBF);
            }
        }
        return true;
    }
}
