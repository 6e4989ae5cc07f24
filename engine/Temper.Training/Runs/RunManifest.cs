// manifest.json: the lineage of a run — model path and hash, data SHA-256 and line count, every
// hyper-parameter, Temper version, start time — so a behaviour change can be tied to its data.
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Training.Runs;

public static class RunManifest
{
    public static void Write(string dir, string kind, string modelDir, JsonObject data, JsonObject hyper)
    {
        var m = new JsonObject
        {
            ["kind"] = kind,
            ["temper_version"] = typeof(RunManifest).Assembly.GetName().Version?.ToString(),
            ["created_utc"] = DateTime.UtcNow.ToString("O"),
            ["model"] = new JsonObject { ["path"] = Path.GetFullPath(modelDir), ["sha256"] = HashModel(modelDir) },
            ["data"] = data,
            ["hyperparameters"] = hyper,
            ["machine"] = new JsonObject { ["os"] = Environment.OSVersion.ToString(), ["cores"] = Environment.ProcessorCount },
        };
        AtomicFile.WriteAllText(Path.Combine(dir, "manifest.json"), m.ToJsonString(new() { WriteIndented = true }));
    }

    /// <summary>SHA-256 over config.json and every *.safetensors file of the folder, in name order.</summary>
    public static string HashModel(string dir)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var files = Directory.GetFiles(dir, "*.safetensors").Append(Path.Combine(dir, "config.json")).Where(File.Exists).OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal);
        var buffer = new byte[1 << 20];
        foreach (var f in files)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(f)));
            using var s = File.OpenRead(f);
            int read;
            while ((read = s.Read(buffer)) > 0) sha.AppendData(buffer, 0, read);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    public static string HashFile(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));
}
