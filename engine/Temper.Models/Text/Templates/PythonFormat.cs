// Python string formatting for templates: "%s" % x (printf style, also the format filter) and
// "{} {name:>8}".format(...) with the common format-spec mini-language (fill, align, sign, zero,
// width, precision; types s d f e g % x o b c; conversions !r !s !a), with the TypeError Python raises on a mismatch.
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal static class PythonFormat
{
    /// <summary>format % args.</summary>
    public static string Percent(string format, TemplateValue args)
    {
        var positional = args.Kind == ValueKind.List && args.IsTuple ? args.AsList : [args];
        var mapping = args.Kind == ValueKind.Dict ? args.AsDict : null;
        var next = 0;
        var sb = new StringBuilder();
        for (var i = 0; i < format.Length; i++)
        {
            var c = format[i];
            if (c != '%') { sb.Append(c); continue; }
            if (++i >= format.Length) throw new TemplateError("incomplete format");
            TemplateValue? keyed = null;
            if (format[i] == '(')
            {
                var close = format.IndexOf(')', i);
                if (close < 0 || mapping == null) throw new TemplateError("format requires a mapping");
                var key = format[(i + 1)..close];
                if (!mapping.TryGet(key, out var found)) throw new TemplateError($"KeyError: '{key}'");
                keyed = found;
                i = close + 1;
            }
            var flagsStart = i;
            while (i < format.Length && format[i] is '-' or '+' or ' ' or '#' or '0') i++;
            var flags = format[flagsStart..i];
            var widthStart = i;
            while (i < format.Length && char.IsAsciiDigit(format[i])) i++;
            var width = format[widthStart..i];
            var precision = "";
            if (i < format.Length && format[i] == '.')
            {
                var p = ++i;
                while (i < format.Length && char.IsAsciiDigit(format[i])) i++;
                precision = "." + (i == p ? "0" : format[p..i]);
            }
            if (i >= format.Length) throw new TemplateError("incomplete format");
            var type = format[i];
            if (type == '%') { sb.Append('%'); continue; }
            TemplateValue value;
            if (keyed != null) value = keyed;
            else if (next < positional.Count) value = positional[next++];
            else throw new TemplateError("not enough arguments for format string");

            var align = flags.Contains('-') ? "<" : (type is 's' or 'r' or 'a' or 'c' ? ">" : "");
            var sign = flags.Contains('+') ? "+" : flags.Contains(' ') ? " " : "";
            var zero = flags.Contains('0') && !flags.Contains('-') && type is not ('s' or 'r' or 'a' or 'c') ? "0" : "";
            CheckPercentOperand(type, value);
            var specType = type switch { 's' or 'r' or 'a' => "s", 'i' or 'u' => "d", _ => type.ToString() };
            if (type is 'r' or 'a' or 's') value = Converted(type, value);
            else if (specType == "d" && value.Kind == ValueKind.Float)
            {
                if (double.IsNaN(value.AsDouble)) throw new TemplateError("cannot convert float NaN to integer");
                if (double.IsInfinity(value.AsDouble)) throw new TemplateError("cannot convert float infinity to integer");
                value = TemplateValue.Int((long)Math.Truncate(value.AsDouble));
            }
            sb.Append(ApplySpec(value, align + sign + (flags.Contains('#') ? "#" : "") + zero + width + precision + specType));
        }
        // A dict, or any other non-tuple with __getitem__ (a list), may go partly or wholly unused.
        if (next < positional.Count && mapping == null && !(args.Kind == ValueKind.List && !args.IsTuple))
            throw new TemplateError("not all arguments converted during string formatting");
        return sb.ToString();
    }

    /// <summary>Python's r / a / s conversion ("%r", "{!a}", ...): repr, ascii or str of the value; any other char leaves it.</summary>
    private static TemplateValue Converted(char conversion, TemplateValue value) => conversion switch
    {
        'r' => TemplateValue.String(PythonRepr.Repr(value)),
        'a' => TemplateValue.String(PythonRepr.Ascii(value)),
        's' => TemplateValue.String(PythonRepr.Str(value)),
        _ => value,
    };

    /// <summary>The TypeError Python raises for "%d" % "text" and the like.</summary>
    private static void CheckPercentOperand(char type, TemplateValue value)
    {
        if (type is 'd' or 'i' or 'u' && !value.IsNumber)
            throw new TemplateError($"%{type} format: a real number is required, not {value.TypeName}");
        if (type is 'x' or 'X' or 'o' && !value.IsIntegral)
            throw new TemplateError($"%{type} format: an integer is required, not {value.TypeName}");
        if (type is 'e' or 'E' or 'f' or 'F' or 'g' or 'G' && !value.IsNumber)
            throw new TemplateError($"must be real number, not {value.TypeName}");
        if (type == 'c' && !value.IsIntegral && !(value.IsString && TemplateAccess.CodePoints(value.AsString).Count == 1))
            throw new TemplateError("%c requires int or char");
    }

    /// <summary>format.format(*args, **kwargs), as the sandbox's string.Formatter does it.</summary>
    public static string Format(string format, TemplateArgs args, Func<TemplateValue, string, TemplateValue> getAttr,
        Func<TemplateValue, TemplateValue, TemplateValue> getItem)
    {
        var sb = new StringBuilder();
        var auto = 0;
        var manual = false;
        for (var i = 0; i < format.Length; i++)
        {
            var c = format[i];
            if (c == '}')
            {
                if (i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
                throw new TemplateError("Single '}' encountered in format string");
            }
            if (c != '{') { sb.Append(c); continue; }
            if (i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            var close = format.IndexOf('}', i);
            if (close < 0) throw new TemplateError("Single '{' encountered in format string");
            var field = format[(i + 1)..close];
            i = close;
            var spec = "";
            var colon = field.IndexOf(':');
            if (colon >= 0) { spec = field[(colon + 1)..]; field = field[..colon]; }
            var conversion = '\0';
            var bang = field.IndexOf('!');
            if (bang >= 0) { conversion = field[bang + 1]; field = field[..bang]; }

            var nameEnd = 0;
            while (nameEnd < field.Length && field[nameEnd] is not ('.' or '[')) nameEnd++;
            var name = field[..nameEnd];
            // string.Formatter: "{}" numbers automatically, "{0}" manually, and the two do not mix.
            if (field.Length == 0 ? manual : auto > 0 && field.All(char.IsAsciiDigit))
                throw new TemplateError("cannot switch from manual field specification to automatic field numbering");
            if (field.Length > 0 && field.All(char.IsAsciiDigit)) manual = true;
            TemplateValue value;
            if (name.Length == 0) value = auto < args.Positional.Count ? args.Positional[auto++] : throw new TemplateError("tuple index out of range");
            else if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                value = index < args.Positional.Count ? args.Positional[index] : throw new TemplateError("tuple index out of range");
            else value = args.Find(-1, name) ?? throw new TemplateError($"KeyError: '{name}'");
            for (var j = nameEnd; j < field.Length;)
            {
                if (field[j] == '.')
                {
                    var k = ++j;
                    while (j < field.Length && field[j] is not ('.' or '[')) j++;
                    value = getAttr(value, field[k..j]);
                }
                else
                {
                    var end = field.IndexOf(']', j);
                    var key = field[(j + 1)..end];
                    value = getItem(value, int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out var n)
                        ? TemplateValue.Int(n) : TemplateValue.String(key));
                    j = end + 1;
                }
            }
            sb.Append(ApplySpec(Converted(conversion, value), spec));
        }
        return sb.ToString();
    }

    /// <summary>format(value, spec) for the common subset of the format-spec mini-language.</summary>
    public static string ApplySpec(TemplateValue value, string spec)
    {
        if (spec.Length == 0) return PythonRepr.Str(value);
        var i = 0;
        var fill = ' ';
        var align = '\0';
        if (spec.Length >= 2 && spec[1] is '<' or '>' or '^' or '=') { fill = spec[0]; align = spec[1]; i = 2; }
        else if (spec[0] is '<' or '>' or '^' or '=') { align = spec[0]; i = 1; }
        var sign = '-';
        if (i < spec.Length && spec[i] is '+' or '-' or ' ') sign = spec[i++];
        var alternate = false;
        if (i < spec.Length && spec[i] == '#') { alternate = true; i++; }
        if (i < spec.Length && spec[i] == '0') { if (align == '\0') { fill = '0'; align = '='; } i++; }
        var widthStart = i;
        while (i < spec.Length && char.IsAsciiDigit(spec[i])) i++;
        var width = i > widthStart ? int.Parse(spec[widthStart..i], CultureInfo.InvariantCulture) : 0;
        var grouping = false;
        if (i < spec.Length && spec[i] is ',' or '_') { grouping = true; i++; }
        int? precision = null;
        if (i < spec.Length && spec[i] == '.')
        {
            var p = ++i;
            while (i < spec.Length && char.IsAsciiDigit(spec[i])) i++;
            precision = int.Parse(spec[p..i], CultureInfo.InvariantCulture);
        }
        var type = i < spec.Length ? spec[i++] : '\0';
        if (i != spec.Length) throw new TemplateError($"Invalid format specifier '{spec}'");

        string body;
        var negative = false;
        if (value.IsString || type == 's')
        {
            if (!value.IsString) throw new TemplateError($"Unknown format code 's' for object of type '{value.TypeName}'");
            body = precision is { } p && p < value.AsString.Length ? value.AsString[..p] : value.AsString;
            if (align == '\0') align = '<';
        }
        else if (value.IsNumber)
        {
            if (type == '\0' && value.Kind == ValueKind.Bool && precision == null && align == '\0' && width == 0)
                return PythonRepr.Str(value);
            var d = value.AsDouble;
            negative = value.IsIntegral ? value.AsInt < 0 : double.IsNegative(d);
            if (value.IsIntegral && type == '\0' && precision != null)
                throw new TemplateError("Precision not allowed in integer format specifier");
            if (!double.IsFinite(d) && type is 'f' or 'F' or 'e' or 'E' or 'g' or 'G' or '%' or '\0')
                type = type == '%' ? '%' : char.IsUpper(type) ? 'G' : 'g';
            switch (type)
            {
                case 'd' or 'n':
                    if (!value.IsIntegral) throw new TemplateError($"Unknown format code 'd' for object of type 'float'");
                    body = Math.Abs(value.AsInt).ToString(grouping ? "#,0" : "0", CultureInfo.InvariantCulture);
                    break;
                case 'x' or 'X' or 'o' or 'b' or 'c':
                    if (!value.IsIntegral) throw new TemplateError($"Unknown format code '{type}' for object of type 'float'");
                    var n = Math.Abs(value.AsInt);
                    body = type switch
                    {
                        'x' => n.ToString("x", CultureInfo.InvariantCulture),
                        'X' => n.ToString("X", CultureInfo.InvariantCulture),
                        'o' => Convert.ToString(n, 8),
                        'b' => Convert.ToString(n, 2),
                        _ => char.ConvertFromUtf32((int)value.AsInt),
                    };
                    if (alternate && type != 'c') body = "0" + (type == 'X' ? 'X' : type) + body;
                    if (type == 'c') negative = false;
                    break;
                case 'f' or 'F' or '%' when double.IsFinite(d):
                    // Standard "F"/"N" formats round the exact binary value as Python does ("0.0" custom ones round to 15 digits first).
                    var scaled = Math.Abs(type == '%' ? d * 100 : d);
                    body = scaled.ToString((grouping ? "N" : "F") + (precision ?? 6), CultureInfo.InvariantCulture);
                    if (alternate && precision == 0) body += ".";
                    if (type == '%') body += "%";
                    break;
                case 'e' or 'E':
                    var (digits, exponent) = Scientific(Math.Abs(d), precision ?? 6);
                    if (alternate && precision == 0) digits += ".";
                    body = digits + ExponentSuffix(exponent);
                    if (type == 'E') body = body.ToUpperInvariant();
                    break;
                case '%':
                    body = (double.IsNaN(d) ? "nan" : "inf") + "%";
                    break;
                case '\0' or 'g' or 'G':
                    if (value.IsIntegral && type == '\0') body = Math.Abs(value.AsInt).ToString(grouping ? "#,0" : "0", CultureInfo.InvariantCulture);
                    else if (!double.IsFinite(d)) body = double.IsNaN(d) ? "nan" : "inf";
                    else if (type == '\0' && precision == null) body = PythonRepr.Float(Math.Abs(d));
                    else body = GeneralFloat(Math.Abs(d), precision ?? 6, alternate, keepPoint: type == '\0');
                    if (type == 'G') body = body.ToUpperInvariant();
                    break;
                default:
                    throw new TemplateError($"Unknown format code '{type}' for object of type '{value.TypeName}'");
            }
            if (align == '\0') align = '>';
        }
        else
        {
            body = PythonRepr.Str(value);
            if (align == '\0') align = '<';
        }

        var signText = negative && !(double.IsNaN(value.AsDouble) && !value.IsString) ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
        var padding = Math.Max(0, width - body.Length - signText.Length);
        return align switch
        {
            '<' => signText + body + new string(fill, padding),
            '^' => new string(fill, padding / 2) + signText + body + new string(fill, padding - padding / 2),
            '=' => signText + new string(fill, padding) + body,
            _ => new string(fill, padding) + signText + body,
        };
    }

    /// <summary>
    /// Python's "g" presentation of a non-negative finite float: <paramref name="precision"/> significant
    /// digits, fixed notation for exponents -4..precision-1 and "1.5e-05" style otherwise, trailing
    /// zeros dropped unless '#'; with no presentation type ("{:.3}") fixed notation keeps one decimal.
    /// </summary>
    private static string GeneralFloat(double d, int precision, bool alternate, bool keepPoint)
    {
        var p = Math.Max(1, precision);
        var (digits, exp) = Scientific(d, p - 1);
        string mantissa, suffix;
        if (exp >= -4 && exp < p)
        {
            mantissa = d.ToString("F" + (p - 1 - exp), CultureInfo.InvariantCulture);
            suffix = "";
        }
        else
        {
            mantissa = digits;
            suffix = ExponentSuffix(exp);
        }
        if (!alternate && mantissa.Contains('.')) mantissa = mantissa.TrimEnd('0').TrimEnd('.');
        if (alternate && !mantissa.Contains('.')) mantissa += ".";
        if (keepPoint && suffix.Length == 0 && !mantissa.Contains('.')) mantissa += ".0";
        return mantissa + suffix;
    }

    /// <summary>d as "d.ddd" (<paramref name="decimals"/> after the point) times 10^exponent, correctly rounded.</summary>
    private static (string Digits, int Exponent) Scientific(double d, int decimals)
    {
        var text = d.ToString("E" + decimals, CultureInfo.InvariantCulture);
        var e = text.IndexOf('E');
        return (text[..e], int.Parse(text[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture));
    }

    /// <summary>Python's exponent: "e+06", "e-05", "e+100".</summary>
    private static string ExponentSuffix(int exponent) =>
        "e" + (exponent < 0 ? "-" : "+") + Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture);
}
