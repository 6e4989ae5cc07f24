// Write -> read round trips for every safetensors dtype (bit-exact, metadata included), the layout
// the reference reader requires (8-byte padded header, contiguous data, each tensor aligned to its
// element size), the atomic rename, and the copy-on-write mapping that keeps files unchanged.
using System.Buffers.Binary;
using System.Text;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Tests.SafeTensors;

public class SafetensorsWriterTests
{
    public static TheoryData<DType> SafetensorsDTypes =>
        [DType.F32, DType.BF16, DType.F16, DType.F64, DType.I32, DType.I64, DType.I16, DType.I8, DType.U8, DType.Bool];

    [Theory]
    [MemberData(nameof(SafetensorsDTypes))]
    public void RoundTripsEachDTypeBitExact(DType dtype)
    {
        using var dir = new TempFolder();
        string path = dir.File("one.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["matrix"] = SafetensorsTestFiles.RandomTensor(dtype, new Shape(3, 5), seed: 1),
            ["scalar"] = SafetensorsTestFiles.RandomTensor(dtype, new Shape(), seed: 2),
            ["empty"] = SafetensorsTestFiles.RandomTensor(dtype, new Shape(4, 0), seed: 3),
            ["cube"] = SafetensorsTestFiles.RandomTensor(dtype, new Shape(2, 3, 7), seed: 4),
        };
        SafetensorsWriter.Write(path, tensors);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(tensors.Keys, f.Entries.Select(e => e.Name));
        foreach (var (name, expected) in tensors)
        {
            var got = f.Get(name);
            Assert.Equal(dtype, got.DType);
            Assert.Equal(expected.Shape, got.Shape);
            Assert.True(expected.Bytes.SequenceEqual(got.Bytes), $"{name} bytes differ");
        }
    }

    [Fact]
    public void RoundTripsMixedDTypesAndMetadata()
    {
        using var dir = new TempFolder();
        string path = dir.File("mixed.safetensors");
        var given = SafetensorsDTypes.Select((row, i) => KeyValuePair.Create($"t{i}.{row.Data}", SafetensorsTestFiles.RandomTensor(row.Data, new Shape(3, i + 1), seed: i)))
            .Reverse().ToList(); // narrow dtypes first, so a naive layout would misalign the wide ones
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\" a+b<c>", ["empty"] = "" };
        SafetensorsWriter.Write(path, given, metadata);

        using var f = SafetensorsFile.Open(path);
        Assert.Equal(metadata, f.Metadata);
        Assert.Equal(given.Select(g => g.Key), f.Entries.Select(e => e.Name)); // header keeps the given order
        foreach (var (name, expected) in given)
        {
            var e = f.Entry(name);
            Assert.Equal(0, e.Begin % (expected.DType.Bits() / 8));
            Assert.True(expected.Bytes.SequenceEqual(f.Get(name).Bytes), $"{name} bytes differ");
        }

        // The reference reader's rules: header padded with spaces to 8 bytes, data contiguous from 0 to the end of the file.
        byte[] raw = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        Assert.Equal(0ul, headerLength % 8);
        string header = Encoding.UTF8.GetString(raw, 8, (int)headerLength);
        Assert.StartsWith("{\"__metadata__\":", header, StringComparison.Ordinal);
        Assert.EndsWith("}", header.TrimEnd(' '), StringComparison.Ordinal);
        long next = 0;
        foreach (var e in f.Entries.OrderBy(e => e.Begin))
        {
            Assert.Equal(next, e.Begin);
            next = e.End;
        }
        Assert.Equal(raw.Length - 8 - (long)headerLength, next);
    }

    [Fact]
    public void StreamedTensorsWriteTheSameFileOneAtATime()
    {
        using var dir = new TempFolder();
        var given = SafetensorsDTypes.Select((row, i) => KeyValuePair.Create($"t{i}.{row.Data}", SafetensorsTestFiles.RandomTensor(row.Data, new Shape(3, i + 1), seed: i)))
            .Reverse().ToList();
        SafetensorsWriter.Write(dir.File("whole.safetensors"), given);
        var made = new List<int>();
        var entries = given.Select(g => (g.Key, g.Value.Shape, g.Value.DType)).ToList();
        SafetensorsWriter.Write(dir.File("streamed.safetensors"), entries, i =>
        {
            made.Add(i);
            return Tensor.FromArray<byte>(given[i].Value.Shape, given[i].Value.Bytes, given[i].Value.DType, given[i].Key);
        });
        Assert.Equal(File.ReadAllBytes(dir.File("whole.safetensors")), File.ReadAllBytes(dir.File("streamed.safetensors")));
        Assert.Equal(given.Count, made.Distinct().Count()); // each made once, in the data section's order (widest first)
        Assert.Equal(made.OrderByDescending(i => given[i].Value.DType.Bits()).ToList(), made);

        string bad = dir.File("bad.safetensors");
        SafetensorsTestFiles.AssertRejected(bad, () => SafetensorsWriter.Write(bad, [("x", new Shape(2), DType.F32)], _ => Tensor.FromFloats(new Shape(3), [1f, 2f, 3f])),
            "made as F32 [3], announced as F32 [2]");
        Assert.False(File.Exists(bad));
    }

    [Fact]
    public void WritingLeavesNoTemporaryFileAndReplacesAnOldFile()
    {
        using var dir = new TempFolder();
        string path = dir.File("w.safetensors");
        File.WriteAllText(path, "old contents");
        SafetensorsWriter.Write(path, [KeyValuePair.Create("x", Tensor.FromFloats(new Shape(2), [1f, 2f]))]);
        Assert.Equal(["w.safetensors"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        using var f = SafetensorsFile.Open(path);
        Assert.Equal([1f, 2f], f.Get("x").ToFloatArray());
    }

    [Fact]
    public void AFailedWriteLeavesNoTemporaryFile()
    {
        using var dir = new TempFolder();
        string target = dir.File("taken");
        Directory.CreateDirectory(target); // the final rename onto a folder fails
        SafetensorsTestFiles.AssertRejected(target,
            () => SafetensorsWriter.Write(target, [KeyValuePair.Create("x", Tensor.FromFloats(new Shape(1), [1f]))]), "cannot write");
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void RejectsDuplicateReservedAndNf4Names()
    {
        using var dir = new TempFolder();
        string path = dir.File("bad.safetensors");
        var t = Tensor.FromFloats(new Shape(1), [1f]);
        SafetensorsTestFiles.AssertRejected(path, () => SafetensorsWriter.Write(path, [KeyValuePair.Create("a", t), KeyValuePair.Create("a", t)]), "'a'", "given twice");
        SafetensorsTestFiles.AssertRejected(path, () => SafetensorsWriter.Write(path, [KeyValuePair.Create("__metadata__", t)]), "reserved");
        var nf4 = Tensor.Zeros(new Shape(4), DType.NF4);
        SafetensorsTestFiles.AssertRejected(path, () => SafetensorsWriter.Write(path, [KeyValuePair.Create("q", nf4)]), "'q'", "NF4");
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    // Writing into a tensor handed out by Get changes the process's copy only, never the file, and
    // works on a read-only file.
    [Fact]
    public void MappedTensorsAreCopyOnWrite()
    {
        using var dir = new TempFolder();
        string path = dir.File("ro.safetensors");
        SafetensorsWriter.Write(path, [KeyValuePair.Create("x", Tensor.FromFloats(new Shape(4), [1f, 2f, 3f, 4f]))]);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead);
        byte[] before = File.ReadAllBytes(path);
        using (var f = SafetensorsFile.Open(path))
        {
            var x = f.Get("x");
            x.Floats.Fill(-7f);
            Assert.Equal(-7f, x.Floats[3]);
        }
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void TensorsOfAClosedFileThrowRatherThanReadUnmappedMemory()
    {
        using var dir = new TempFolder();
        string path = dir.File("c.safetensors");
        SafetensorsWriter.Write(path, [KeyValuePair.Create("x", Tensor.FromFloats(new Shape(2), [1f, 2f]))]);
        var f = SafetensorsFile.Open(path);
        var x = f.Get("x");
        f.Dispose();
        Assert.Throws<ObjectDisposedException>(() => x.Floats[0]);
        Assert.Throws<ObjectDisposedException>(() => f.Get("x"));
    }
}
