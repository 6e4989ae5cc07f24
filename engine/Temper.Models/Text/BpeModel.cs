// The BPE model of tokenizer.json: vocabulary + ranked merges, applied to one pre-tokenized piece at a
// time. The merging itself is Microsoft.ML.Tokenizers' BpeTokenizer (a port of HF's); what it lacks is
// done here: `ignore_merges` (a piece already in the vocabulary is one token, as in Llama 3) and
// `byte_fallback` (a char outside the vocabulary becomes its UTF-8 bytes as <0xNN> tokens, as in
// Llama 2 and Mistral). Pieces arrive already in the vocabulary's alphabet (byte-level or '▁').
using System.Globalization;
using Microsoft.ML.Tokenizers;

namespace Temper.Models.Text;

internal sealed class BpeModel
{
    private readonly BpeTokenizer _merger;
    private readonly Dictionary<string, int> _vocab;
    private readonly bool _ignoreMerges;
    private readonly bool _byteFallback;
    private readonly int? _unknownId;
    private readonly bool _fuseUnknown;

    public BpeModel(Dictionary<string, int> vocab, List<(string Left, string Right)> merges, string? unknownToken,
        bool fuseUnknown, bool ignoreMerges, bool byteFallback, string? continuingSubwordPrefix, string? endOfWordSuffix)
    {
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        _byteFallback = byteFallback;
        _fuseUnknown = fuseUnknown;
        if (unknownToken != null)
        {
            if (!vocab.TryGetValue(unknownToken, out int unk))
                throw new NotSupportedException($"unk_token '{unknownToken}' is not in model.vocab");
            _unknownId = unk;
        }
        if (byteFallback && (continuingSubwordPrefix != null || endOfWordSuffix != null))
            throw new NotSupportedException("byte_fallback together with continuing_subword_prefix or end_of_word_suffix is not supported");

        foreach (var (left, right) in merges)
            if (left.Contains(' ', StringComparison.Ordinal) || right.Contains(' ', StringComparison.Ordinal))
                throw new NotSupportedException($"merge ['{left}', '{right}'] holds a space, which Microsoft.ML.Tokenizers' BPE cannot take");
        try
        {
            _merger = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges.Select(m => m.Left + " " + m.Right),
                // Unknown chars are handled here when byte_fallback is on, else by the merger.
                UnknownToken = byteFallback ? null : unknownToken,
                FuseUnknownTokens = fuseUnknown,
                ContinuingSubwordPrefix = continuingSubwordPrefix,
                EndOfWordSuffix = endOfWordSuffix,
            });
        }
        catch (InvalidOperationException e)
        {
            throw new NotSupportedException($"the BPE model is inconsistent: {e.Message}", e);
        }
    }

    public void Encode(string piece, List<int> ids)
    {
        if (piece.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(piece, out int whole))
        {
            ids.Add(whole);
            return;
        }
        if (!_byteFallback)
        {
            ids.AddRange(_merger.EncodeToIds(piece, considerPreTokenization: false, considerNormalization: false));
            return;
        }
        EncodeWithByteFallback(piece, ids);
    }

    // No merge can involve a char missing from the vocabulary, so the piece is cut at those chars:
    // the runs in between merge on their own; each missing char becomes <0xNN> tokens (or unk).
    private void EncodeWithByteFallback(string piece, List<int> ids)
    {
        int runStart = 0;
        bool previousWasUnknown = false;
        for (int i = 0; i < piece.Length;)
        {
            int width = char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]) ? 2 : 1;
            string ch = piece.Substring(i, width);
            if (_vocab.ContainsKey(ch))
            {
                previousWasUnknown = false;
                i += width;
                continue;
            }
            if (i > runStart) ids.AddRange(_merger.EncodeToIds(piece[runStart..i], false, false));
            if (TryByteTokens(ch, out var byteIds))
            {
                ids.AddRange(byteIds);
                previousWasUnknown = false;
            }
            else if (_unknownId is int unk && !(previousWasUnknown && _fuseUnknown))
            {
                ids.Add(unk);
                previousWasUnknown = true;
            }
            i += width;
            runStart = i;
        }
        if (runStart < piece.Length) ids.AddRange(_merger.EncodeToIds(piece[runStart..], false, false));
    }

    private bool TryByteTokens(string ch, out List<int> byteIds)
    {
        byteIds = [];
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(ch))
        {
            if (!_vocab.TryGetValue(string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>"), out int id)) return false;
            byteIds.Add(id);
        }
        return true;
    }
}
