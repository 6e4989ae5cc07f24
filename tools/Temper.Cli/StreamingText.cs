// Turns a growing list of generated ids into printable text deltas: decodes the whole list each time
// and emits what is new, holding back a trailing partial UTF-8 character (decoded as U+FFFD).
using Temper.Models.Text;

namespace Temper.Cli;

internal sealed class StreamingText(HfTokenizer tokenizer, bool skipSpecial = true)
{
    private readonly List<int> _ids = [];
    private int _emitted;

    public string Push(int id)
    {
        _ids.Add(id);
        string text = tokenizer.Decode(_ids, skipSpecial);
        if (text.EndsWith('\uFFFD')) return "";
        string delta = _emitted <= text.Length ? text[_emitted..] : "";
        _emitted = text.Length;
        return delta;
    }

    public string Text => tokenizer.Decode(_ids, skipSpecial);
}
