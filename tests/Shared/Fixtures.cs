// Locates ../shared/fixtures (beside the clone, as CI lays it out) from any test's working folder.
namespace Temper.Tests;

public static class Fixtures
{
    private static readonly Lazy<string> _root = new(Find);

    /// <summary>Absolute path of the shared fixtures folder.</summary>
    public static string Root => _root.Value;

    /// <summary>Transformers fixtures made by tests/reference/ that are still owed (no machine with torch has run the script
    /// yet), each with its script: tests that read them are skipped, not failed, until tests/fixtures/hf holds them.</summary>
    private static readonly Dictionary<string, string> Owed = new()
    {
        // make_moe_lora_reference.py needs transformers 4.46..4.57 (per-expert nn.Linear); the GPU machine has 5.17.
        ["llama-tiny-bnb4"] = "make_bnb_reference.py", // needs bitsandbytes, which the GPU machine lacks
        ["mixtral-tiny-lora"] = "make_moe_lora_reference.py", ["qwen2-moe-tiny-lora"] = "make_moe_lora_reference.py",
    };

    /// <summary>A transformers reference model folder: ../shared/fixtures/hf/NAME, else tests/fixtures/hf/NAME.</summary>
    public static string Hf(string model)
    {
        string shared = Path.Combine(Root, "hf", model);
        if (Directory.Exists(shared)) return shared;
        string own = Path.Combine(RepoRoot, "tests", "fixtures", "hf", model);
        if (Directory.Exists(own)) return own;
        if (Owed.TryGetValue(model, out var script))
            Xunit.Assert.Skip($"{model}: its transformers fixture is owed (run tests/reference/{script} where torch is; see bench/gpu/lease.sh, step reference-fixtures)");
        return shared;
    }
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
