// Python semantics of the template operators: == (deep, 1 == 1.0 == True), ordering, in, and
// arithmetic (+ - * / // % **) with int/float promotion, str and list concatenation and repetition,
// and the TypeError or UndefinedError Python would raise otherwise.
namespace Temper.Models.Text;

internal static class TemplateOperators
{
    /// <summary>Raises the error an undefined value carries when it is used as data.</summary>
    public static TemplateValue Defined(TemplateValue v) =>
        v.IsUndefined ? throw new TemplateError(v.UndefinedReason) : v;

    public static bool AreEqual(TemplateValue a, TemplateValue b)
    {
        if (ReferenceEquals(a, b)) return true;
        if (a.IsNumber && b.IsNumber)
            return a.IsIntegral && b.IsIntegral ? a.AsInt == b.AsInt : a.AsDouble == b.AsDouble;
        if (a.Kind != b.Kind) return false;
        switch (a.Kind)
        {
            case ValueKind.Undefined:
            case ValueKind.None: return true;
            case ValueKind.String: return a.AsString == b.AsString;
            case ValueKind.List:
                if (a.IsTuple != b.IsTuple || a.AsList.Count != b.AsList.Count) return false;
                for (var i = 0; i < a.AsList.Count; i++)
                    if (!AreEqual(a.AsList[i], b.AsList[i])) return false;
                return true;
            case ValueKind.Dict:
                if (a.AsDict.Count != b.AsDict.Count) return false;
                foreach (var (key, value) in a.AsDict.Entries)
                    if (!b.AsDict.TryGet(key, out var other) || !AreEqual(value, other)) return false;
                return true;
            default: return ReferenceEquals(a.Reference, b.Reference);
        }
    }

    public static bool Compare(string op, TemplateValue a, TemplateValue b)
    {
        switch (op)
        {
            case "==": return AreEqual(a, b);
            case "!=": return !AreEqual(a, b);
            case "in": return Contains(b, a);
            case "notin": return !Contains(b, a);
        }
        var order = Order(op, a, b);
        return op switch { "<" => order < 0, "<=" => order <= 0, ">" => order > 0, _ => order >= 0 };
    }

    private static int Order(string op, TemplateValue a, TemplateValue b)
    {
        Defined(a);
        Defined(b);
        if (a.IsNumber && b.IsNumber)
            return a.IsIntegral && b.IsIntegral ? a.AsInt.CompareTo(b.AsInt) : a.AsDouble.CompareTo(b.AsDouble);
        if (a.IsString && b.IsString) return string.CompareOrdinal(a.AsString, b.AsString);
        if (a.Kind == ValueKind.List && b.Kind == ValueKind.List && a.IsTuple == b.IsTuple)
        {
            var x = a.AsList;
            var y = b.AsList;
            for (var i = 0; i < Math.Min(x.Count, y.Count); i++)
                if (!AreEqual(x[i], y[i])) return Order(op, x[i], y[i]);
            return x.Count.CompareTo(y.Count);
        }
        throw new TemplateError($"'{op}' not supported between instances of '{a.TypeName}' and '{b.TypeName}'");
    }

    /// <summary>item in container.</summary>
    public static bool Contains(TemplateValue container, TemplateValue item)
    {
        switch (container.Kind)
        {
            case ValueKind.Undefined: return false;
            case ValueKind.String:
                if (!item.IsString)
                    throw new TemplateError($"'in <string>' requires string as left operand, not {item.TypeName}");
                return container.AsString.Contains(item.AsString, StringComparison.Ordinal);
            case ValueKind.List: return container.AsList.Exists(x => AreEqual(x, item));
            case ValueKind.Iterator:
                for (var next = container.AsIterator.Next(); next != null; next = container.AsIterator.Next())
                    if (AreEqual(next, item)) return true;
                return false;
            case ValueKind.Dict:
                if (item.IsUndefined) return false;
                if (!TemplateDict.IsHashable(item)) throw new TemplateError($"unhashable type: '{item.TypeName}'");
                return container.AsDict.ContainsKey(item);
            default: throw new TemplateError($"argument of type '{container.TypeName}' is not iterable");
        }
    }

    public static TemplateValue Negate(TemplateValue v)
    {
        Defined(v);
        if (v.IsIntegral) return TemplateValue.Int(checked(-v.AsInt));
        if (v.Kind == ValueKind.Float) return TemplateValue.Float(-v.AsDouble);
        throw new TemplateError($"bad operand type for unary -: '{v.TypeName}'");
    }

    public static TemplateValue Plus(TemplateValue v)
    {
        Defined(v);
        if (v.IsIntegral) return TemplateValue.Int(v.AsInt);
        if (v.Kind == ValueKind.Float) return v;
        throw new TemplateError($"bad operand type for unary +: '{v.TypeName}'");
    }

    public static TemplateValue Binary(string op, TemplateValue a, TemplateValue b)
    {
        Defined(a);
        Defined(b);
        try
        {
            return op switch
            {
                "+" => Add(a, b),
                "-" => Numeric(op, a, b, (x, y) => checked(x - y), (x, y) => x - y),
                "*" => Multiply(a, b),
                "/" => Divide(a, b),
                "//" => FloorDivide(a, b),
                "%" => a.IsString ? TemplateValue.String(PythonFormat.Percent(a.AsString, b)) : Modulo(a, b),
                "**" => Power(a, b),
                _ => throw new TemplateError($"unknown operator {op}"),
            };
        }
        catch (OverflowException)
        {
            throw new TemplateError($"integer overflow in {PythonRepr.Repr(a)} {op} {PythonRepr.Repr(b)}");
        }
    }

    private static TemplateValue Add(TemplateValue a, TemplateValue b)
    {
        if (a.IsNumber && b.IsNumber) return Numeric("+", a, b, (x, y) => checked(x + y), (x, y) => x + y);
        if (a.IsMarkup || b.IsMarkup)
        {
            // Markup + str escapes the plain side (HTML-safe concatenation); Markup + int is a TypeError.
            if (!a.IsString || !b.IsString) throw Unsupported("+", a, b);
            return TemplateValue.Markup(MarkupText(a) + MarkupText(b));
        }
        if (a.IsString && b.IsString) return TemplateValue.String(a.AsString + b.AsString);
        if (a.Kind == ValueKind.List && b.Kind == ValueKind.List && a.IsTuple == b.IsTuple)
        {
            var items = new List<TemplateValue>(a.AsList);
            items.AddRange(b.AsList);
            return a.IsTuple ? TemplateValue.Tuple(items) : TemplateValue.List(items);
        }
        if (a.IsString || a.Kind == ValueKind.List)
            throw new TemplateError($"can only concatenate {a.TypeName} (not \"{b.TypeName}\") to {a.TypeName}");
        throw Unsupported("+", a, b);
    }

    private static TemplateValue Multiply(TemplateValue a, TemplateValue b)
    {
        if (a.IsNumber && b.IsNumber) return Numeric("*", a, b, (x, y) => checked(x * y), (x, y) => x * y);
        if (b.IsIntegral && (a.IsString || a.Kind == ValueKind.List)) return Repeat(a, b.AsInt);
        if (a.IsIntegral && (b.IsString || b.Kind == ValueKind.List)) return Repeat(b, a.AsInt);
        if (a.IsString || a.Kind == ValueKind.List) throw new TemplateError($"can't multiply sequence by non-int of type '{b.TypeName}'");
        if (b.IsString || b.Kind == ValueKind.List) throw new TemplateError($"can't multiply sequence by non-int of type '{a.TypeName}'");
        throw Unsupported("*", a, b);
    }

    private static string MarkupText(TemplateValue s) => s.IsMarkup ? s.AsString : TemplateFilters.Escape(s.AsString);

    private static TemplateValue Repeat(TemplateValue seq, long times)
    {
        if (seq.IsString)
        {
            var text = times <= 0 ? "" : string.Concat(Enumerable.Repeat(seq.AsString, (int)times));
            return seq.IsMarkup ? TemplateValue.Markup(text) : TemplateValue.String(text);
        }
        var items = new List<TemplateValue>();
        for (var i = 0; i < times; i++) items.AddRange(seq.AsList);
        return seq.IsTuple ? TemplateValue.Tuple(items) : TemplateValue.List(items);
    }

    private static TemplateValue Divide(TemplateValue a, TemplateValue b)
    {
        if (!a.IsNumber || !b.IsNumber) throw Unsupported("/", a, b);
        if (b.AsDouble == 0) throw new TemplateError(a.IsIntegral && b.IsIntegral ? "division by zero" : "float division by zero");
        return TemplateValue.Float(a.AsDouble / b.AsDouble);
    }

    private static TemplateValue FloorDivide(TemplateValue a, TemplateValue b)
    {
        if (!a.IsNumber || !b.IsNumber) throw Unsupported("//", a, b);
        if (a.IsIntegral && b.IsIntegral)
        {
            if (b.AsInt == 0) throw new TemplateError("integer division or modulo by zero");
            var q = a.AsInt / b.AsInt;
            if ((a.AsInt % b.AsInt != 0) && ((a.AsInt < 0) != (b.AsInt < 0))) q--;
            return TemplateValue.Int(q);
        }
        if (b.AsDouble == 0) throw new TemplateError("float floor division by zero");
        return TemplateValue.Float(Math.Floor(a.AsDouble / b.AsDouble));
    }

    private static TemplateValue Modulo(TemplateValue a, TemplateValue b)
    {
        if (!a.IsNumber || !b.IsNumber) throw Unsupported("%", a, b);
        if (a.IsIntegral && b.IsIntegral)
        {
            if (b.AsInt == 0) throw new TemplateError("integer modulo by zero");
            var r = a.AsInt % b.AsInt;
            if (r != 0 && (r < 0) != (b.AsInt < 0)) r += b.AsInt;
            return TemplateValue.Int(r);
        }
        if (b.AsDouble == 0) throw new TemplateError("float modulo");
        var m = a.AsDouble % b.AsDouble;
        if (m != 0 && (m < 0) != (b.AsDouble < 0)) m += b.AsDouble;
        return TemplateValue.Float(m);
    }

    private static TemplateValue Power(TemplateValue a, TemplateValue b)
    {
        if (!a.IsNumber || !b.IsNumber) throw Unsupported("** or pow()", a, b);
        if (a.AsDouble == 0 && b.AsDouble < 0) throw new TemplateError("0.0 cannot be raised to a negative power");
        if (a.IsIntegral && b.IsIntegral && b.AsInt >= 0)
        {
            long result = 1, x = a.AsInt;
            for (var e = b.AsInt; e > 0; e >>= 1)
            {
                if ((e & 1) != 0) result = checked(result * x);
                if (e > 1) x = checked(x * x);
            }
            return TemplateValue.Int(result);
        }
        return TemplateValue.Float(Math.Pow(a.AsDouble, b.AsDouble));
    }

    private static TemplateValue Numeric(string op, TemplateValue a, TemplateValue b,
        Func<long, long, long> onInts, Func<double, double, double> onFloats)
    {
        if (!a.IsNumber || !b.IsNumber) throw Unsupported(op, a, b);
        return a.IsIntegral && b.IsIntegral
            ? TemplateValue.Int(onInts(a.AsInt, b.AsInt))
            : TemplateValue.Float(onFloats(a.AsDouble, b.AsDouble));
    }

    private static TemplateError Unsupported(string op, TemplateValue a, TemplateValue b) =>
        new($"unsupported operand type(s) for {op}: '{a.TypeName}' and '{b.TypeName}'");
}
