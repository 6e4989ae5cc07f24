// Python string formatting for templates: "%s" % x (printf style, also the format filter) and
// "{} {name:>8}".format(...) with the common format-spec mini-language (fill, align, sign, zero,
// width, precision; types s d f e % x o b c).
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
            var specType = type switch { 's' or 'r' or 'a' => "s", 'i' or 'u' => "d", _ => type.ToString() };
            if (type is 'r' or 'a') value = TemplateValue.String(PythonRepr.Repr(value));
            else if (type == 's') value = TemplateValue.String(PythonRepr.Str(value));
            else if (specType == "d" && value.Kind == ValueKind.Float) value = TemplateValue.Int((long)Math.Truncate(value.AsDouble));
            sb.Append(ApplySpec(value, align + sign + (flags.Contains('#') ? "#" : "") + zero + width + precision + specType));
        }
        if (next < positional.Count && mapping == null)
            throw new TemplateError("not all arguments converted during string formatting");
        return sb.ToString();
    }

    /// <summary>format.format(*args, **kwargs).</summary>
    public static string Format(string format, TemplateArgs args, Func<TemplateValue, string, TemplateValue> getAttr,
        Func<TemplateValue, TemplateValue, TemplateValue> getItem)
    {
        var sb = new StringBuilder();
        var auto = 0;
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
            TemplateValue value;
            if (name.Length == 0) value = args.Find(auto++, "\0") ?? throw new TemplateError("Replacement index out of range for positional args tuple");
            else if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                value = index < args.Positional.Count ? args.Positional[index] : throw new TemplateError($"Replacement index {index} out of range for positional args tuple");
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
            if (conversion == 'r' || conversion == 'a') value = TemplateValue.String(PythonRepr.Repr(value));
            else if (conversion == 's') value = TemplateValue.String(PythonRepr.Str(value));
            sb.Append(ApplySpec(value, spec));
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
                case 'f' or 'F' or '%':
                    var scaled = Math.Abs(type == '%' ? d * 100 : d);
                    body = scaled.ToString((grouping ? "#,0." : "0.") + new string('0', precision ?? 6), CultureInfo.InvariantCulture).TrimEnd('.');
                    if (type == '%') body += "%";
                    break;
                case 'e' or 'E':
                    body = Math.Abs(d).ToString((type == 'e' ? "0." + new string('0', precision ?? 6) + "e+00" : "0." + new string('0', precision ?? 6) + "E+00"), CultureInfo.InvariantCulture);
                    break;
                case '\0' or 'g' or 'G':
                    if (value.IsIntegral && type == '\0') body = Math.Abs(value.AsInt).ToString(grouping ? "#,0" : "0", CultureInfo.InvariantCulture);
                    else if (precision == null) body = PythonRepr.Float(Math.Abs(d));
                    else body = Math.Abs(d).ToString("G" + Math.Max(1, precision.Value), CultureInfo.InvariantCulture);
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

        var signText = negative ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
        var padding = Math.Max(0, width - body.Length - signText.Length);
        return align switch
        {
            '<' => signText + body + new string(fill, padding),
            '^' => new string(fill, padding / 2) + signText + body + new string(fill, padding - padding / 2),
            '=' => signText + new string(fill, padding) + body,
            _ => new string(fill, padding) + signText + body,
        };
    }
}
