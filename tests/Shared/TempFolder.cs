// Temporary folders a test process makes (model folders written by tests), created under the system's temporary
// folder and deleted when the process exits, so test runs leave nothing behind.
namespace Temper.Tests;

public static class TempFolder
{
    private static readonly List<string> _made = [];

    static TempFolder() => AppDomain.CurrentDomain.ProcessExit += (_, _) =>
    {
        lock (_made)
            foreach (var dir in _made)
                try { Directory.Delete(dir, recursive: true); }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
    };

    /// <summary>A new empty folder named PREFIX-PID-GUID, deleted at exit.</summary>
    public static string Create(string prefix)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"{prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        lock (_made) _made.Add(dir);
        return dir;
    }
}
