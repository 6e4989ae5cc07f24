// Keeps bindings/include/temper.h in step with libtemper's exports: every TEMPER_API declaration has
// an [UnmanagedCallersOnly] method with that EntryPoint and the same parameter and return types (and
// the reverse), every struct matches its C# twin field by field, every enum value by value, and
// TEMPER_VERSION equals the library's version string.
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public unsafe partial class HeaderTests
{
    private static readonly Assembly Library = typeof(LibraryExports).Assembly;

    private static string Header()
    {
        string text = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "bindings", "include", "temper.h"));
        text = BlockComment().Replace(text, " ");
        return LineComment().Replace(text, "");
    }

    private static Dictionary<string, MethodInfo> Exports() =>
        Library.GetTypes().SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .Select(m => (Method: m, Attr: m.GetCustomAttribute<UnmanagedCallersOnlyAttribute>()))
            .Where(x => x.Attr != null)
            .ToDictionary(x => x.Attr!.EntryPoint ?? throw new InvalidOperationException($"{x.Method.Name} has no EntryPoint"), x => x.Method);

    private sealed record CFunction(string Name, string Return, IReadOnlyList<string> Parameters);

    private static List<CFunction> Functions(string header) =>
        Declaration().Matches(header).Select(m =>
        {
            var ps = m.Groups["params"].Value.Trim();
            var list = ps is "void" or "" ? [] : ps.Split(',').Select(p => ParamType(p.Trim())).ToList();
            return new CFunction(m.Groups["name"].Value, Normalize(m.Groups["ret"].Value), list);
        }).ToList();

    // "const int32_t* ids" -> "int32_t*"
    private static string ParamType(string p)
    {
        var m = ParamSplit().Match(p);
        Assert.True(m.Success, $"cannot read parameter '{p}'");
        return Normalize(m.Groups["type"].Value);
    }

    private static string Normalize(string t) =>
        Regex.Replace(Regex.Replace(t.Replace("const", " ", StringComparison.Ordinal), @"\s+", " "), @"\s*\*", "*").Trim();

    private static HashSet<string> Opaque(string header) =>
        Regex.Matches(header, @"typedef\s+struct\s+(\w+)\s+\1\s*;").Select(m => m.Groups[1].Value).ToHashSet();

    private static HashSet<string> Callbacks(string header) =>
        Regex.Matches(header, @"typedef\s+[\w\s\*]+\(\s*\*\s*(\w+)\s*\)").Select(m => m.Groups[1].Value).ToHashSet();

    private static string Pascal(string snake) =>
        string.Concat(snake.Split('_').Select(w => char.ToUpperInvariant(w[0]) + w[1..]));

    private static string Snake(string pascal) =>
        Regex.Replace(pascal, "(?<=[a-z0-9])([A-Z])", "_$1").ToLowerInvariant();

    /// <summary>The managed type a C type must be: names as Type.ToString() gives them.</summary>
    private static string Managed(string c, HashSet<string> opaque, HashSet<string> callbacks)
    {
        if (callbacks.Contains(c)) return "fnptr";
        string baseType = c.TrimEnd('*');
        string stars = c[baseType.Length..];
        if (opaque.Contains(baseType)) return "System.IntPtr" + stars[1..];
        string managed = baseType switch
        {
            "void" => "System.Void",
            "char" => "System.Byte",
            "int" or "int32_t" or "temper_status" => "System.Int32",
            "uint32_t" => "System.UInt32",
            "int64_t" => "System.Int64",
            "uint64_t" => "System.UInt64",
            "size_t" => "System.UIntPtr",
            "float" => "System.Single",
            "double" => "System.Double",
            _ when baseType.StartsWith("temper_", StringComparison.Ordinal) => "Temper.Native." + Pascal(baseType),
            _ => throw new InvalidOperationException($"no managed type for C type '{c}'"),
        };
        return managed + stars;
    }

    private static string Describe(Type t) => t.IsFunctionPointer ? "fnptr" : t.ToString();

    private static string Describe(ParameterInfo p)
    {
        var t = p.GetModifiedParameterType();
        return t.IsFunctionPointer ? "fnptr" : p.ParameterType.ToString();
    }

    [Fact]
    public void Every_header_function_is_exported_with_the_same_signature_and_every_export_is_declared()
    {
        var header = Header();
        var opaque = Opaque(header);
        var callbacks = Callbacks(header);
        var functions = Functions(header);
        var exports = Exports();
        Assert.NotEmpty(functions);

        var problems = new List<string>();
        foreach (var f in functions)
        {
            if (!exports.TryGetValue(f.Name, out var m)) { problems.Add($"{f.Name}: declared in temper.h, not exported"); continue; }
            string wantRet = Managed(f.Return, opaque, callbacks);
            string gotRet = Describe(m.ReturnType);
            if (wantRet != gotRet) problems.Add($"{f.Name}: returns {f.Return} ({wantRet}) in temper.h, {gotRet} in {m.DeclaringType!.Name}.{m.Name}");
            var ps = m.GetParameters();
            if (ps.Length != f.Parameters.Count)
            {
                problems.Add($"{f.Name}: {f.Parameters.Count} parameters in temper.h, {ps.Length} in {m.DeclaringType!.Name}.{m.Name}");
                continue;
            }
            for (int i = 0; i < ps.Length; i++)
            {
                string want = Managed(f.Parameters[i], opaque, callbacks);
                string got = Describe(ps[i]);
                if (want != got) problems.Add($"{f.Name}: parameter {i + 1} is {f.Parameters[i]} ({want}) in temper.h, {got} ({ps[i].Name}) in C#");
            }
        }
        foreach (var name in exports.Keys.Except(functions.Select(f => f.Name)))
            problems.Add($"{name}: exported, not declared in temper.h");
        foreach (var name in exports.Keys.Where(n => !n.StartsWith("temper_", StringComparison.Ordinal)))
            problems.Add($"{name}: exports are named temper_<noun>_<verb>");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void Every_header_struct_matches_its_csharp_struct_field_by_field()
    {
        var header = Header();
        var opaque = Opaque(header);
        var callbacks = Callbacks(header);
        var structs = StructDefinition().Matches(header).ToList();
        Assert.NotEmpty(structs);
        var problems = new List<string>();
        foreach (var s in structs)
        {
            string name = s.Groups["name"].Value;
            var type = Library.GetType("Temper.Native." + Pascal(name));
            if (type == null) { problems.Add($"{name}: no C# struct Temper.Native.{Pascal(name)}"); continue; }
            if (!type.IsValueType || !type.IsLayoutSequential) problems.Add($"{name}: {type} must be a sequential struct");
            var cFields = StructFields(s);
            var fields = InstanceFields(type);
            if (fields.Count != cFields.Count) { problems.Add($"{name}: {cFields.Count} fields in temper.h, {fields.Count} in {type.Name}"); continue; }
            for (int i = 0; i < fields.Count; i++)
            {
                string want = Managed(cFields[i].Type, opaque, callbacks);
                string got = Describe(fields[i].FieldType);
                if (Snake(fields[i].Name) != cFields[i].Name || want != got)
                    problems.Add($"{name}: field {i + 1} is {cFields[i].Type} {cFields[i].Name} ({want}) in temper.h, {got} {fields[i].Name} ({Snake(fields[i].Name)}) in C#");
            }
        }
        var declared = structs.Select(s => "Temper.Native." + Pascal(s.Groups["name"].Value)).ToHashSet();
        foreach (var t in Library.GetTypes().Where(t => t.IsPublic && t.IsValueType && !t.IsEnum && t.Namespace == "Temper.Native"))
            if (!declared.Contains(t.FullName!)) problems.Add($"{t.FullName}: a public ABI struct temper.h does not declare");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    private static List<(string Type, string Name)> StructFields(Match structDefinition) =>
        structDefinition.Groups["body"].Value.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(f => ParamSplit().Match(f)).Select(m => (Type: Normalize(m.Groups["type"].Value), Name: m.Groups["name"].Value)).ToList();

    private static List<FieldInfo> InstanceFields(Type t) =>
        t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).OrderBy(f => f.MetadataToken).ToList();

    // The bytes are the ABI (and struct_size makes a struct's size part of it): each header struct laid out as a C
    // compiler does (each field at the next multiple of its alignment, the size rounded up to the largest
    // alignment; LP64 sizes) against its C# twin's field offsets and size.
    [Fact]
    public void Every_header_struct_has_the_same_offsets_and_size_as_its_csharp_struct()
    {
        var problems = new List<string>();
        foreach (Match s in StructDefinition().Matches(Header()))
        {
            string name = s.Groups["name"].Value;
            var type = Library.GetType("Temper.Native." + Pascal(name));
            var cFields = StructFields(s);
            if (type == null || InstanceFields(type) is not { } fields || fields.Count != cFields.Count) continue;   // reported field by field above
            int offset = 0, maxAlign = 1;
            for (int i = 0; i < fields.Count; i++)
            {
                var (size, align) = cFields[i].Type.EndsWith('*') ? (IntPtr.Size, IntPtr.Size) : cFields[i].Type switch
                {
                    "int32_t" or "uint32_t" or "int" or "float" => (4, 4),
                    "int64_t" or "uint64_t" or "double" => (8, 8),
                    _ => throw new InvalidOperationException($"{name}.{cFields[i].Name}: no C size for {cFields[i].Type}"),
                };
                offset = (offset + align - 1) / align * align;
                maxAlign = Math.Max(maxAlign, align);
                int got = (int)Marshal.OffsetOf(type, fields[i].Name);
                if (got != offset) problems.Add($"{name}.{cFields[i].Name}: offset {offset} in C, {got} in {type.Name}");
                offset += size;
            }
            int cSize = (offset + maxAlign - 1) / maxAlign * maxAlign;
            if (Marshal.SizeOf(type) != cSize) problems.Add($"{name}: {cSize} bytes in C, {Marshal.SizeOf(type)} in {type.Name}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void Every_option_struct_opens_with_struct_size_and_its_default_sets_it()
    {
        var options = StructDefinition().Matches(Header()).Where(s => s.Groups["name"].Value.EndsWith("_options", StringComparison.Ordinal)).ToList();
        Assert.Equal(["temper_model_options", "temper_generate_options", "temper_trainer_options"], options.Select(s => s.Groups["name"].Value));
        Assert.All(options, s => Assert.Equal(("uint32_t", "struct_size"), StructFields(s)[0]));
        Assert.Equal((uint)sizeof(TemperModelOptions), ((delegate* unmanaged<TemperModelOptions>)&ModelExports.ModelOptionsDefault)().StructSize);
        Assert.Equal((uint)sizeof(TemperGenerateOptions), ((delegate* unmanaged<TemperGenerateOptions>)&GenerateExports.GenerateOptionsDefault)().StructSize);
        Assert.Equal((uint)sizeof(TemperTrainerOptions), ((delegate* unmanaged<TemperTrainerOptions>)&TrainerExports.TrainerOptionsDefault)().StructSize);
    }

    [Fact]
    public void Every_header_enum_matches_its_csharp_enum_value_by_value()
    {
        var header = Header();
        var enums = EnumDefinition().Matches(header).ToList();
        Assert.NotEmpty(enums);
        var problems = new List<string>();
        foreach (var e in enums)
        {
            string name = e.Groups["name"].Value;
            var type = Library.GetType("Temper.Native." + Pascal(name));
            if (type == null || !type.IsEnum) { problems.Add($"{name}: no C# enum Temper.Native.{Pascal(name)}"); continue; }
            var c = e.Groups["body"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(x => x.Split('=', StringSplitOptions.TrimEntries)).ToDictionary(x => x[0], x => int.Parse(x[1], System.Globalization.CultureInfo.InvariantCulture));
            var managed = Enum.GetNames(type).ToDictionary(n => CName(name, n), n => Convert.ToInt32(Enum.Parse(type, n), System.Globalization.CultureInfo.InvariantCulture));
            foreach (var (k, v) in c)
                if (!managed.TryGetValue(k, out int mv)) problems.Add($"{name}: {k} has no member in {type.Name}");
                else if (mv != v) problems.Add($"{name}: {k} is {v} in temper.h, {mv} in {type.Name}");
            foreach (var k in managed.Keys.Except(c.Keys)) problems.Add($"{name}: {type.Name} has {k}, temper.h does not");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    // temper_status: TEMPER_OK, TEMPER_E_<NAME>; any other enum temper_<x>_<y>: TEMPER_<X>_<MEMBER>
    // with the enum's last word dropped when it is a generic noun (temper_finish_reason -> TEMPER_FINISH_).
    private static string CName(string enumName, string member)
    {
        string snake = Snake(member).ToUpperInvariant();
        if (enumName == "temper_status") return member == "Ok" ? "TEMPER_OK" : "TEMPER_E_" + snake;
        string prefix = enumName switch
        {
            "temper_finish_reason" => "TEMPER_FINISH_",
            "temper_train_method" => "TEMPER_TRAIN_",
            "temper_lr_schedule" => "TEMPER_LR_",
            _ => enumName.ToUpperInvariant() + "_",
        };
        return prefix + snake;
    }

    [Fact]
    public void Header_version_is_the_library_version()
    {
        var m = Regex.Match(Header(), "#define\\s+TEMPER_VERSION\\s+\"([^\"]+)\"");
        Assert.True(m.Success, "temper.h defines no TEMPER_VERSION");
        Assert.Equal(LibraryExports.Version, m.Groups[1].Value);
    }

    [Fact]
    public void Header_opens_with_a_worked_example_and_states_thread_safety_for_every_function()
    {
        string raw = File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "bindings", "include", "temper.h"));
        int firstDecl = raw.IndexOf("TEMPER_API const char* temper_version", StringComparison.Ordinal);
        Assert.True(raw.IndexOf("Worked example", StringComparison.Ordinal) is >= 0 and var w && w < firstDecl);
        // Each declaration's comment block (the text since the previous declaration) says how it may be called concurrently.
        var decls = Declaration().Matches(raw).ToList();
        var missing = new List<string>();
        for (int i = 0; i < decls.Count; i++)
        {
            int from = i == 0 ? 0 : decls[i - 1].Index + decls[i - 1].Length;
            string doc = raw[from..decls[i].Index];
            if (!Regex.IsMatch(doc, "Thread-safe|TEMPER_E_BUSY|Must not race|Takes the model|Runs the model|Changes the model"))
                missing.Add(decls[i].Groups["name"].Value);
        }
        Assert.True(missing.Count == 0, "no thread-safety statement for: " + string.Join(", ", missing));
    }

    [GeneratedRegex(@"/\*.*?\*/", RegexOptions.Singleline)]
    private static partial Regex BlockComment();

    [GeneratedRegex(@"//[^\n]*")]
    private static partial Regex LineComment();

    [GeneratedRegex(@"TEMPER_API\s+(?<ret>[\w\s\*]+?)\s*\b(?<name>temper_\w+)\s*\((?<params>[^)]*)\)\s*;", RegexOptions.Singleline)]
    private static partial Regex Declaration();

    [GeneratedRegex(@"^(?<type>[\w\s\*]+?[\s\*]+)(?<name>\w+)$", RegexOptions.Singleline)]
    private static partial Regex ParamSplit();

    [GeneratedRegex(@"typedef\s+struct\s+(?<name>\w+)\s*\{(?<body>[^}]*)\}\s*\k<name>\s*;", RegexOptions.Singleline)]
    private static partial Regex StructDefinition();

    [GeneratedRegex(@"typedef\s+enum\s+(?<name>\w+)\s*\{(?<body>[^}]*)\}\s*\k<name>\s*;", RegexOptions.Singleline)]
    private static partial Regex EnumDefinition();
}
