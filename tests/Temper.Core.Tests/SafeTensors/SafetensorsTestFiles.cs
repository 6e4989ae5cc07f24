// Helpers for the safetensors tests: a temporary folder that deletes itself, hand-crafted files
// ([u64 LE header length][header bytes][data bytes]) and the assertion every bad-input test makes.
using System.Buffers.Binary;
using System.Text;
using Temper.Core;

namespace Temper.Tests.SafeTensors;

public sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "temper-st-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }
    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
    }
}

public static class SafetensorsTestFiles
{
    /// <summary>Writes a file with <paramref name="header"/> as its JSON and <paramref name="dataBytes"/> zero bytes after it.</summary>
    public static string Craft(TempFolder folder, string name, string header, int dataBytes, ulong? headerLength = null) =>
        CraftBytes(folder, name, Encoding.UTF8.GetBytes(header), dataBytes, headerLength);

    public static string CraftBytes(TempFolder folder, string name, byte[] header, int dataBytes, ulong? headerLength = null)
    {
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (int i = 0; i < dataBytes; i++) bytes[8 + header.Length + i] = (byte)(i * 7 + 1);
        string path = folder.File(name);
        System.IO.File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Asserts a one-line TemperException naming the file and containing every phrase.</summary>
    public static TemperException AssertRejected(string file, Action open, params string[] phrases)
    {
        var e = Assert.Throws<TemperException>(open);
        Assert.Contains(System.IO.Path.GetFileName(file), e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        foreach (var p in phrases) Assert.Contains(p, e.Message, StringComparison.Ordinal);
        return e;
    }

    /// <summary>A host tensor of the given dtype and shape filled with seeded random bytes (NaN payloads included).</summary>
    public static Tensor RandomTensor(DType dtype, Shape shape, int seed)
    {
        var t = Tensor.Zeros(shape, dtype);
        new Random(seed).NextBytes(t.Bytes);
        return t;
    }
}
