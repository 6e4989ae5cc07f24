// Python's str() and repr() of template values, character by character as CPython prints them:
// {{ 1.0 }} is "1.0", {{ [1, 'a'] }} is "[1, 'a']", {{ none }} is "None", 1e16 is "1e+16".
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal static class PythonRepr
{
    /// <summary>str(value); undefined prints as the empty string.</summary>
    public static string Str(TemplateValue v) => v.Kind switch
    {
        ValueKind.Undefined => "",
        ValueKind.String => v.AsString,
        _ => Repr(v),
    };

    public static string Repr(TemplateValue v)
    {
        switch (v.Kind)
        {
            case ValueKind.Undefined: return "Undefined";
            case ValueKind.None: return "None";
            case ValueKind.Bool: return v.AsBool ? "True" : "False";
            case ValueKind.Int: return v.AsInt.ToString(CultureInfo.InvariantCulture);
            case ValueKind.Float: return Float(v.AsDouble);
            case ValueKind.String: return v.IsMarkup ? "Markup(" + StringRepr(v.AsString) + ")" : StringRepr(v.AsString);
            case ValueKind.List:
                var items = string.Join(", ", v.AsList.Select(Repr));
                if (!v.IsTuple) return "[" + items + "]";
                return v.AsList.Count == 1 ? "(" + items + ",)" : "(" + items + ")";
            case ValueKind.Dict:
                return "{" + string.Join(", ", v.AsDict.Entries.Select(e => Repr(e.Key) + ": " + Repr(e.Value))) + "}";
            case ValueKind.Object: return v.AsObject.Describe();
            case ValueKind.Iterator: return "<" + v.TypeName + " object>";
            default: return "<function " + v.AsCallable.Name + ">";
        }
    }

    /// <summary>float.__repr__: the shortest digits that round-trip, exponent form outside 1e-4..1e16.</summary>
    public static string Float(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";

        // "R" gives the shortest round-trip digits; split them into sign, digits and decimal exponent.
        var shortest = d.ToString("R", CultureInfo.InvariantCulture);
        var negative = shortest.StartsWith('-');
        if (negative) shortest = shortest[1..];
        var exp = 0;
        var ePos = shortest.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exp = int.Parse(shortest[(ePos + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            shortest = shortest[..ePos];
        }
        var dot = shortest.IndexOf('.');
        var intPart = dot >= 0 ? shortest[..dot] : shortest;
        var fracPart = dot >= 0 ? shortest[(dot + 1)..] : "";
        var digits = (intPart + fracPart).TrimStart('0');
        // decpt: the value is 0.DIGITS * 10^decpt
        var leadingZeros = (intPart + fracPart).Length - (intPart + fracPart).TrimStart('0').Length;
        var decpt = intPart.Length + exp - leadingZeros;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";

        var sb = new StringBuilder();
        if (negative) sb.Append('-');
        if (decpt is > -4 and <= 16)
        {
            if (decpt <= 0)
            {
                sb.Append("0.").Append('0', -decpt).Append(digits);
            }
            else if (decpt >= digits.Length)
            {
                sb.Append(digits).Append('0', decpt - digits.Length).Append(".0");
            }
            else
            {
                sb.Append(digits, 0, decpt).Append('.').Append(digits, decpt, digits.Length - decpt);
            }
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            var e = decpt - 1;
            sb.Append('e').Append(e < 0 ? '-' : '+').Append(Math.Abs(e).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>ascii(): repr() with every non-ASCII character escaped.</summary>
    public static string Ascii(TemplateValue v)
    {
        var repr = Repr(v);
        var sb = new StringBuilder(repr.Length);
        for (var i = 0; i < repr.Length; i++)
        {
            int cp = repr[i];
            if (char.IsHighSurrogate(repr[i]) && i + 1 < repr.Length && char.IsLowSurrogate(repr[i + 1])) cp = char.ConvertToUtf32(repr[i], repr[++i]);
            if (cp < 0x80) sb.Append((char)cp);
            else if (cp < 0x100) sb.Append("\\x").Append(cp.ToString("x2", CultureInfo.InvariantCulture));
            else if (cp < 0x10000) sb.Append("\\u").Append(cp.ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append("\\U").Append(cp.ToString("x8", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>str.__repr__: single quotes unless the text has ' and no ".</summary>
    public static string StringRepr(string s)
    {
        var quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder(s.Length + 2);
        sb.Append(quote);
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            if (c == quote || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                var cp = char.ConvertToUtf32(c, s[i + 1]);
                if (IsPrintable(cp)) sb.Append(c).Append(s[i + 1]);
                else sb.Append("\\U").Append(cp.ToString("x8", CultureInfo.InvariantCulture));
                i++;
            }
            else if (IsPrintable(c)) sb.Append(c);
            else if (c < 0x100) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>str.isprintable() for one code point.</summary>
    public static bool IsPrintable(int codePoint)
    {
        if (codePoint == ' ') return true;
        if (codePoint is >= 0xD800 and <= 0xDFFF) return false;
        var cat = CharUnicodeInfo.GetUnicodeCategory(codePoint);
        return cat is not (UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator
            or UnicodeCategory.ParagraphSeparator or UnicodeCategory.SpaceSeparator);
    }

    /// <summary>str.isspace() for one character.</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';
}
