// Python's json.dumps, byte for byte, for the tojson filter as transformers defines it
// (ensure_ascii=False by default, optional indent, separators and sort_keys).
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal static class PythonJson
{
    /// <param name="indent">null for one line; otherwise the text repeated per nesting level.</param>
    /// <param name="itemSeparator">null for the default: ", " on one line, "," when indenting.</param>
    public static string Dumps(TemplateValue value, string? indent = null, string? itemSeparator = null,
        string keySeparator = ": ", bool sortKeys = false, bool ensureAscii = false)
    {
        var sb = new StringBuilder();
        var writer = new Writer(sb, indent, itemSeparator ?? (indent == null ? ", " : ","), keySeparator, sortKeys, ensureAscii);
        writer.Write(value, 0);
        return sb.ToString();
    }

    private sealed record Writer(StringBuilder Sb, string? Indent, string ItemSep, string KeySep, bool SortKeys, bool EnsureAscii)
    {
        public void Write(TemplateValue v, int level)
        {
            switch (v.Kind)
            {
                case ValueKind.None: Sb.Append("null"); break;
                case ValueKind.Bool: Sb.Append(v.AsBool ? "true" : "false"); break;
                case ValueKind.Int: Sb.Append(v.AsInt.ToString(CultureInfo.InvariantCulture)); break;
                case ValueKind.Float: Sb.Append(FloatText(v.AsDouble)); break;
                case ValueKind.String: WriteString(v.AsString); break;
                case ValueKind.List: WriteList(v.AsList, level); break;
                case ValueKind.Dict: WriteDict(v.AsDict, level); break;
                default:
                    var name = v.Kind == ValueKind.Undefined ? "Undefined" : v.TypeName;
                    throw new TemplateError($"Object of type {name} is not JSON serializable");
            }
        }

        private void WriteList(List<TemplateValue> items, int level)
        {
            if (items.Count == 0) { Sb.Append("[]"); return; }
            Sb.Append('[');
            for (var i = 0; i < items.Count; i++)
            {
                if (i > 0) Sb.Append(ItemSep);
                NewLine(level + 1);
                Write(items[i], level + 1);
            }
            NewLine(level);
            Sb.Append(']');
        }

        private void WriteDict(TemplateDict dict, int level)
        {
            if (dict.Count == 0) { Sb.Append("{}"); return; }
            var entries = dict.Entries.Select(e => (Key: KeyText(e.Key), e.Value)).ToList();
            if (SortKeys) entries.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
            Sb.Append('{');
            for (var i = 0; i < entries.Count; i++)
            {
                if (i > 0) Sb.Append(ItemSep);
                NewLine(level + 1);
                WriteString(entries[i].Key);
                Sb.Append(KeySep);
                Write(entries[i].Value, level + 1);
            }
            NewLine(level);
            Sb.Append('}');
        }

        private void NewLine(int level)
        {
            if (Indent == null) return;
            Sb.Append('\n');
            for (var i = 0; i < level; i++) Sb.Append(Indent);
        }

        private static string KeyText(TemplateValue key) => key.Kind switch
        {
            ValueKind.String => key.AsString,
            ValueKind.Int => key.AsInt.ToString(CultureInfo.InvariantCulture),
            ValueKind.Float => FloatText(key.AsDouble),
            ValueKind.Bool => key.AsBool ? "true" : "false",
            ValueKind.None => "null",
            _ => throw new TemplateError($"keys must be str, int, float, bool or None, not {key.TypeName}"),
        };

        private static string FloatText(double d) =>
            double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" :
            double.IsNegativeInfinity(d) ? "-Infinity" : PythonRepr.Float(d);

        private void WriteString(string s)
        {
            Sb.Append('"');
            foreach (var c in s)
            {
                switch (c)
                {
                    case '"': Sb.Append("\\\""); break;
                    case '\\': Sb.Append("\\\\"); break;
                    case '\n': Sb.Append("\\n"); break;
                    case '\r': Sb.Append("\\r"); break;
                    case '\t': Sb.Append("\\t"); break;
                    case '\b': Sb.Append("\\b"); break;
                    case '\f': Sb.Append("\\f"); break;
                    default:
                        if (c < 0x20 || (EnsureAscii && c > 0x7e))
                            Sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else Sb.Append(c);
                        break;
                }
            }
            Sb.Append('"');
        }
    }
}
