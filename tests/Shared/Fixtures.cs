// Locates ../shared/fixtures (beside the clone, as CI lays it out) from any test's working folder.
namespace Temper.Tests;

public static class Fixtures
{
    private static readonly Lazy<string> _root = new(Find);

    /// <summary>Absolute path of the shared fixtures folder.</summary>
    public static string Root => _root.Value;

    public static string Hf(string model) => Path.Combine(Root, "hf", model);
    public static string Tokenizer(string name) => Path.Combine(Root, "tokenizers", name);

    /// <summary>The repository root (the folder holding Engine.sln).</summary>
    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Engine.sln"))) return d.FullName;
            throw new DirectoryNotFoundException("Engine.sln not found above " + AppContext.BaseDirectory);
        }
    }

    private static string Find()
    {
        var env = Environment.GetEnvironmentVariable("TEMPER_FIXTURES");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return env;
        var candidate = Path.Combine(RepoRoot, "..", "shared", "fixtures");
        if (Directory.Exists(candidate)) return Path.GetFullPath(candidate);
        throw new DirectoryNotFoundException($"shared fixtures not found at {candidate} (set TEMPER_FIXTURES)");
    }
}
