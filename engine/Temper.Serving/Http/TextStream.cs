// Turns one choice's growing token list into text deltas for streaming: decodes the whole list each
// time (special tokens skipped, but for those it is told to keep), holds back a trailing partial UTF-8 character (decoded as U+FFFD) and
// any tail that could still become a stop string, and cuts the text before the first stop string
// (OpenAI leaves the stop sequence out of the completion).
using Temper.Models.Text;

namespace Temper.Serving.Http;

public sealed class TextStream(HfTokenizer tokenizer, IReadOnlyList<string> stops, IReadOnlyCollection<int>? keep = null)
{
    private readonly List<int> _ids = [];
    private readonly int _holdBack = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;
    private int _emitted;

    /// <summary>The text the new token makes safe to send (maybe empty).</summary>
    public string Push(int id)
    {
        _ids.Add(id);
        string text = Cut(Decode());
        int safe = Math.Max(_emitted, text.Length - _holdBack);
        if (text.Length > 0 && text[^1] == '\uFFFD') safe = Math.Min(safe, text.Length - 1);
        return Take(text, Math.Max(_emitted, safe));
    }

    /// <summary>The rest of the text once the choice has finished.</summary>
    public string Finish() => Take(Text, Text.Length);

    /// <summary>The whole completion text so far (cut before a stop string).</summary>
    public string Text => Cut(Decode());

    // Special tokens skipped, except those kept (a tool call parser's marker, such as Mistral's [TOOL_CALLS]).
    private string Decode() => keep == null ? tokenizer.Decode(_ids, skipSpecialTokens: true)
        : tokenizer.Decode(_ids.Where(id => !tokenizer.IsSpecial(id) || keep.Contains(id)), skipSpecialTokens: false);

    private string Take(string text, int upTo)
    {
        upTo = Math.Min(upTo, text.Length);
        if (upTo <= _emitted) return "";
        string delta = text[_emitted..upTo];
        _emitted = upTo;
        return delta;
    }

    private string Cut(string text)
    {
        int cut = text.Length;
        foreach (var s in stops)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0) cut = Math.Min(cut, i);
        }
        return text[..cut];
    }

    /// <summary>The length of the longest tail of <paramref name="text"/> that is a proper prefix of <paramref name="tag"/>
    /// (it may still become the tag, so a streamed parser holds it back).</summary>
    internal static int HeldTail(string text, string tag)
    {
        for (int n = Math.Min(tag.Length - 1, text.Length); n > 0; n--)
            if (text.EndsWith(tag[..n], StringComparison.Ordinal)) return n;
        return 0;
    }
}
