// The message of an argument check, formatted only when the check fails. A backend checks every op's
// shapes on every call (hundreds of calls a decode step), and an ordinary interpolated string would build
// its message, tensor descriptions and all, each time: `Require(ok, op, $"x {x.Shape} ...")` with a
// parameter of this type skips the holes entirely while ok is true (as Debug.Assert's handler does).
using System.Runtime.CompilerServices;

namespace Temper.Core;

[InterpolatedStringHandler]
public ref struct CheckMessage
{
    private DefaultInterpolatedStringHandler _text;

    /// <summary>Called by the compiler with the check's outcome: the holes are evaluated only when it failed.</summary>
    public CheckMessage(int literalLength, int formattedCount, bool ok, out bool failed)
    {
        failed = !ok;
        _text = failed ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
    }

    public void AppendLiteral(string s) => _text.AppendLiteral(s);

    public void AppendFormatted<T>(T value) => _text.AppendFormatted(value);

    public void AppendFormatted<T>(T value, string? format) => _text.AppendFormatted(value, format);

    /// <summary>The formatted message (empty when the check passed).</summary>
    public string ToStringAndClear() => _text.ToStringAndClear();
}
