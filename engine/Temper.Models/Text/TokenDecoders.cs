// The decoders of tokenizer.json. Like HF's decode_chain, each step takes the list of token strings
// and returns a new list; the tokenizer joins the final list. Supported: ByteLevel, Metaspace,
// ByteFallback, Fuse, Strip, Replace, and a Sequence of these (flattened by the reader).
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal abstract class TokenDecoder
{
    public abstract List<string> DecodeChain(List<string> tokens);
}

/// <summary>Byte alphabet chars back to bytes, all tokens read as one UTF-8 string (bad bytes -> U+FFFD).</summary>
internal sealed class ByteLevelDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens) ByteLevelAlphabet.AppendBytes(token, bytes);
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

/// <summary>"Metaspace": the replacement char becomes a space, except in the first token when a prefix
/// was prepended (HF drops every replacement char of that token).</summary>
internal sealed class MetaspaceDecoder(char replacement, bool prefixWasPrepended) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string token = tokens[i];
            result.Add(i == 0 && prefixWasPrepended
                ? token.Replace(replacement.ToString(), "", StringComparison.Ordinal)
                : token.Replace(replacement, ' '));
        }
        return result;
    }
}

/// <summary>"ByteFallback": runs of &lt;0xNN&gt; tokens become the UTF-8 text they spell, or one U+FFFD
/// per byte when that is not valid UTF-8.</summary>
internal sealed class ByteFallbackDecoder : TokenDecoder
{
    private static readonly UTF8Encoding _strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByteToken(token, out byte b))
            {
                pending.Add(b);
                continue;
            }
            Flush(pending, result);
            result.Add(token);
        }
        Flush(pending, result);
        return result;
    }

    public static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out value);
    }

    private static void Flush(List<byte> pending, List<string> result)
    {
        if (pending.Count == 0) return;
        try
        {
            result.Add(_strictUtf8.GetString(pending.ToArray()));
        }
        catch (DecoderFallbackException)
        {
            for (int i = 0; i < pending.Count; i++) result.Add("\uFFFD");
        }
        pending.Clear();
    }
}

/// <summary>"Fuse": all tokens into one string.</summary>
internal sealed class FuseDecoder : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>"Strip": up to <c>start</c> leading and <c>stop</c> trailing copies of a char off each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        foreach (var token in tokens)
        {
            int from = 0;
            while (from < start && from < token.Length && token[from] == content) from++;
            int to = token.Length;
            while (token.Length - to < stop && to > from && token[to - 1] == content) to--;
            result.Add(token[from..to]);
        }
        return result;
    }
}

/// <summary>"Replace": a literal string or regex replaced in each token.</summary>
internal sealed class ReplaceDecoder(string? literal, CodePointRegex? regex, string content) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens) =>
        tokens.Select(t => ReplaceNormalizer.ReplaceAll(t, literal, regex, content)).ToList();
}

internal sealed class DecoderSequence(IReadOnlyList<TokenDecoder> steps) : TokenDecoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var step in steps) tokens = step.DecodeChain(tokens);
        return tokens;
    }
}
