// The tokenizer of a model folder, driven by its tokenizer.json the way HF's `tokenizers` runs it:
//   text -> added tokens cut out (raw, then normalized) -> normalizer -> pre-tokenizer pieces -> BPE ids
//   ids -> token strings (specials optionally dropped) -> decoder chain -> text
// Encode adds no BOS/EOS (HF's add_special_tokens=False) but does turn special tokens written in the
// text into their ids (split_special_tokens=False). BosId/EosId/PadId come from tokenizer_config.json.
using System.Text;
using Temper.Core;

namespace Temper.Models.Text;

public sealed class HfTokenizer
{
    private readonly TokenizerParts _parts;
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly Dictionary<int, AddedToken> _addedById = [];
    private readonly Dictionary<int, string> _vocabById = [];
    private readonly bool _byteLevelVocab;

    private HfTokenizer(TokenizerParts parts, SpecialTokenNames names, string configPath)
    {
        _parts = parts;
        foreach (var (token, id) in parts.Vocab) _vocabById.TryAdd(id, token);
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in parts.AddedTokens)
        {
            _addedById[t.Id] = t;
            added[t.Content] = t.Id;
        }
        AddedTokens = added;
        _rawMatcher = new AddedTokenMatcher(parts.AddedTokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalizedMatcher = new AddedTokenMatcher(parts.AddedTokens.Where(t => t.Normalized)
            .Select(t => (parts.Normalizer?.Normalize(t.Content) ?? t.Content, t)));
        _byteLevelVocab = parts.PreTokenizer.Any(step => step is ByteLevelStep) || parts.Decoder is ByteLevelDecoder;

        var all = new HashSet<string>(parts.Vocab.Keys, StringComparer.Ordinal);
        all.UnionWith(added.Keys);
        VocabSize = all.Count;

        BosId = IdOfNamed(names.Bos, "bos_token", configPath);
        EosId = IdOfNamed(names.Eos, "eos_token", configPath);
        PadId = IdOfNamed(names.Pad, "pad_token", configPath);
    }

    /// <summary>Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json.</summary>
    public static HfTokenizer Load(string dir)
    {
        string jsonPath = Path.Combine(dir, "tokenizer.json");
        var parts = TokenizerArchitecture.Apply(TokenizerJsonReader.Read(jsonPath), dir);
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var names = File.Exists(configPath) ? TokenizerJsonReader.ReadSpecialTokenNames(configPath) : default;
        return new HfTokenizer(parts, names, configPath);
    }

    /// <summary>Distinct tokens of the model vocabulary and the added tokens together (HF's len(tokenizer)).</summary>
    public int VocabSize { get; }

    public int? BosId { get; }
    public int? EosId { get; }
    public int? PadId { get; }

    /// <summary>Every added token, specials included: content -> id.</summary>
    public IReadOnlyDictionary<string, int> AddedTokens { get; }

    public int? TokenToId(string token) =>
        AddedTokens.TryGetValue(token, out int id) || _parts.Vocab.TryGetValue(token, out id) ? id : null;

    public IReadOnlyList<int> Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (var raw in _rawMatcher.Split(text))
        {
            if (raw.Id is int rawId) { ids.Add(rawId); continue; }
            string normalized = _parts.Normalizer?.Normalize(raw.Text) ?? raw.Text;
            foreach (var segment in _normalizedMatcher.Split(normalized))
            {
                if (segment.Id is int id) { ids.Add(id); continue; }
                EncodeSegment(new PreToken(segment.Text, raw.Start == 0 && segment.Start == 0), ids);
            }
        }
        return ids;
    }

    /// <summary>
    /// Encode with the special tokens tokenizer.json's post_processor adds around a single text (HF's tokenizer(text),
    /// add_special_tokens=True: e.g. Llama 3's &lt;|begin_of_text|&gt; first).
    /// </summary>
    public IReadOnlyList<int> EncodeWithSpecialTokens(string text) =>
        [.. _parts.SingleTemplate.Prefix, .. Encode(text), .. _parts.SingleTemplate.Suffix];

    private void EncodeSegment(PreToken segment, List<int> ids)
    {
        var pieces = new List<PreToken> { segment };
        foreach (var step in _parts.PreTokenizer)
        {
            var next = new List<PreToken>(pieces.Count * 2);
            foreach (var piece in pieces) step.Apply(piece, next);
            pieces = next;
        }
        foreach (var piece in pieces) _parts.Model.Encode(piece.Text, ids);
    }

    /// <summary>Whether the id is an added token marked special (skipped by Decode with skipSpecialTokens).</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (!(skipSpecialTokens && added.Special)) tokens.Add(added.Content);
            }
            else if (_vocabById.TryGetValue(id, out var token)) tokens.Add(token);
            // HF skips ids it does not know.
        }
        if (_parts.Decoder == null) return string.Join(' ', tokens);
        return string.Concat(_parts.Decoder.DecodeChain(tokens));
    }

    /// <summary>
    /// The text one token stands for, for display: an added token's content; a byte-level piece as its
    /// bytes read as UTF-8, any byte that is not part of a whole char shown as &lt;0xNN&gt;; otherwise the
    /// piece with the metaspace '▁' shown as a space.
    /// </summary>
    public string TokenToString(int id)
    {
        if (_addedById.TryGetValue(id, out var added)) return added.Content;
        if (!_vocabById.TryGetValue(id, out var piece))
            throw new ArgumentOutOfRangeException(nameof(id), $"token id {id} is not in the vocabulary");
        if (!_byteLevelVocab) return piece.Replace('\u2581', ' ');
        var bytes = new List<byte>();
        ByteLevelAlphabet.AppendBytes(piece, bytes);
        return DescribeBytes(bytes.ToArray());
    }

    /// <summary>Whether <paramref name="other"/> gives every id the same piece and the same added tokens (a speculative
    /// decoding draft model must: its token ids are the target's).</summary>
    public bool SameVocabulary(HfTokenizer other) =>
        _vocabById.Count == other._vocabById.Count && _addedById.Count == other._addedById.Count
        && _vocabById.All(e => other._vocabById.TryGetValue(e.Key, out var piece) && piece == e.Value)
        && _addedById.All(e => other._addedById.TryGetValue(e.Key, out var t) && t.Content == e.Value.Content);

    /// <summary>One more than the largest token id (ids below it without a token have no bytes).</summary>
    public int IdLimit => Math.Max(_vocabById.Count == 0 ? 0 : _vocabById.Keys.Max() + 1, _addedById.Count == 0 ? 0 : _addedById.Keys.Max() + 1);

    /// <summary>
    /// The bytes a token adds to the decoded text in the middle of a sequence (JSON-constrained decoding reads
    /// them): a byte-level piece's bytes (possibly part of a UTF-8 char), a byte-fallback &lt;0xNN&gt; token's one
    /// byte, a metaspace piece's text with '▁' as a space, a non-special added token's content; null for special
    /// tokens (dropped when decoding with skipSpecialTokens) and ids without a token.
    /// </summary>
    public byte[]? TokenBytes(int id)
    {
        if (_addedById.TryGetValue(id, out var added)) return added.Special ? null : Encoding.UTF8.GetBytes(added.Content);
        if (!_vocabById.TryGetValue(id, out var piece)) return null;
        if (_byteLevelVocab)
        {
            var bytes = new List<byte>(piece.Length);
            ByteLevelAlphabet.AppendBytes(piece, bytes);
            return bytes.ToArray();
        }
        if (ByteFallbackDecoder.TryParseByteToken(piece, out byte b)) return [b];
        return Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
    }

    // Whole UTF-8 chars as text, stray bytes as <0xNN>.
    private static string DescribeBytes(byte[] bytes)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < bytes.Length;)
        {
            var status = Rune.DecodeFromUtf8(bytes.AsSpan(i), out var rune, out int consumed);
            if (status == System.Buffers.OperationStatus.Done)
            {
                sb.Append(rune.ToString());
                i += consumed;
            }
            else
            {
                sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"<0x{bytes[i]:X2}>");
                i++;
            }
        }
        return sb.ToString();
    }

    private int? IdOfNamed(string? name, string key, string configPath)
    {
        if (name == null) return null;
        return TokenToId(name) ?? throw new TemperException($"{configPath}: {key} '{name}' is not a token of tokenizer.json");
    }
}
