// A small check for hand-written PTX without ptxas: the header (.version, .target, .address_size 64),
// balanced braces, every %reg<N> used within its declared count, and every branch target defined.
// It catches the slips hand-written PTX is prone to; the JIT on a GPU is still the real judge.
using System.Text.RegularExpressions;

namespace Temper.Cuda.Tests;

static partial class PtxLint
{
    public static List<string> Problems(string ptx)
    {
        var problems = new List<string>();
        string code = CommentRegex().Replace(ptx, "");
        foreach (var header in new[] { ".version 7.0", ".target sm_80", ".address_size 64" })
            if (!code.Contains(header, StringComparison.Ordinal)) problems.Add($"missing '{header}'");
        if (code.Count(c => c == '{') != code.Count(c => c == '}')) problems.Add("unbalanced braces");

        var declared = new Dictionary<string, int>();
        foreach (Match m in RegDeclRegex().Matches(code)) declared[m.Groups[1].Value] = int.Parse(m.Groups[2].Value);
        string body = RegDeclRegex().Replace(code, "");
        foreach (Match m in RegUseRegex().Matches(body))
        {
            string prefix = m.Groups[1].Value;
            int index = int.Parse(m.Groups[2].Value);
            if (!declared.TryGetValue(prefix, out int count)) problems.Add($"%{prefix}{index} used but %{prefix} is not declared");
            else if (index >= count) problems.Add($"%{prefix}{index} used but only %{prefix}<{count}> declared");
        }

        var labels = LabelRegex().Matches(code).Select(m => m.Groups[1].Value).ToHashSet();
        foreach (Match m in BranchRegex().Matches(code))
            if (!labels.Contains(m.Groups[1].Value)) problems.Add($"branch to undefined label {m.Groups[1].Value}");
        return problems;
    }

    /// <summary>The .entry names with their parameter counts.</summary>
    public static Dictionary<string, int> Entries(string ptx) =>
        EntryRegex().Matches(ptx).ToDictionary(m => m.Groups[1].Value, m => ParamRegex().Count(m.Groups[2].Value));

    [GeneratedRegex(@"//[^\n]*")] private static partial Regex CommentRegex();
    [GeneratedRegex(@"\.reg\s+\.\w+\s+%([a-z]+)<(\d+)>;")] private static partial Regex RegDeclRegex();
    [GeneratedRegex(@"%([a-z]+)(\d+)\b")] private static partial Regex RegUseRegex();
    [GeneratedRegex(@"^\s*([A-Za-z_$][\w$]*):", RegexOptions.Multiline)] private static partial Regex LabelRegex();
    [GeneratedRegex(@"\bbra(?:\.uni)?\s+([A-Za-z_$][\w$]*)\s*;")] private static partial Regex BranchRegex();
    [GeneratedRegex(@"\.visible\s+\.entry\s+(\w+)\s*\(([^)]*)\)")] private static partial Regex EntryRegex();
    [GeneratedRegex(@"\.param\s")] private static partial Regex ParamRegex();
}
