// Message helpers shared by the safetensors reader, index and writer: every failure is one
// TemperException line that starts with the file and, where there is one, names the tensor.
namespace Temper.Core.SafeTensors;

internal static class SafetensorsErrors
{
    /// <summary>"path: problem".</summary>
    public static TemperException InFile(string path, string problem) =>
        new(OneLine($"{path}: {problem}"));

    /// <summary>"path: tensor 'name': problem".</summary>
    public static TemperException InTensor(string path, string tensor, string problem) =>
        new(OneLine($"{path}: tensor '{tensor}': {problem}"));

    // Names come from untrusted headers; a newline in one must not split the message.
    public static string OneLine(string s) => s.Replace("\r", "\\r", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
