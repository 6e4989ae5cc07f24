// A temp folder for data-file tests, deleted on Dispose; Write puts lines into a .jsonl file in it.
namespace Temper.Tests.Data;

public sealed class TempJsonl : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("temper-data-").FullName;

    public string Write(params string[] lines)
    {
        var path = Path.Combine(Dir, Guid.NewGuid().ToString("N")[..8] + ".jsonl");
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}
