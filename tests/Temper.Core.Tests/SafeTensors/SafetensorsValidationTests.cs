// One test per way a .safetensors file can be malformed, each made by crafting bytes: Open must
// throw a one-line TemperException that names the file (and the tensor, where there is one) and
// says what is wrong.
using Temper.Core.SafeTensors;
using static Temper.Tests.SafeTensors.SafetensorsTestFiles;

namespace Temper.Tests.SafeTensors;

public class SafetensorsValidationTests
{
    private const string Good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";

    private static void Rejects(string header, int dataBytes, params string[] phrases)
    {
        using var dir = new TempFolder();
        string path = Craft(dir, "crafted.safetensors", header, dataBytes);
        AssertRejected(path, () => SafetensorsFile.Open(path).Dispose(), phrases);
    }

    [Fact]
    public void TheWellFormedBaselineOpens()
    {
        using var dir = new TempFolder();
        using var f = SafetensorsFile.Open(Craft(dir, "good.safetensors", Good, 8));
        Assert.Equal(2, f.Get("a").Elements);
    }

    [Fact]
    public void FileShorterThan8Bytes()
    {
        using var dir = new TempFolder();
        string path = dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);
        AssertRejected(path, () => SafetensorsFile.Open(path), "5 bytes", "shorter than the 8-byte header length");
    }

    [Fact]
    public void MissingFile()
    {
        using var dir = new TempFolder();
        string path = dir.File("absent.safetensors");
        AssertRejected(path, () => SafetensorsFile.Open(path), "cannot open");
    }

    [Fact]
    public void HeaderLengthBeyondTheFile()
    {
        using var dir = new TempFolder();
        string path = Craft(dir, "long.safetensors", Good, 8, headerLength: 1000);
        AssertRejected(path, () => SafetensorsFile.Open(path), "header length 1000 exceeds the file");
    }

    [Fact]
    public void HeaderLength2Pow62IsRejectedWithoutAllocating()
    {
        using var dir = new TempFolder();
        string path = Craft(dir, "huge.safetensors", Good, 8, headerLength: 1ul << 62);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<Core.TemperException>(() => SafetensorsFile.Open(path));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("huge.safetensors", e.Message, StringComparison.Ordinal);
        Assert.Contains($"header length {1ul << 62} exceeds the file", e.Message, StringComparison.Ordinal);
        Assert.True(allocated < 1 << 20, $"{allocated} bytes allocated");
    }

    // A header length that fits in the (sparse) file but is over the 100 MB cap.
    [Fact]
    public void HeaderLengthOverTheCap()
    {
        using var dir = new TempFolder();
        string path = dir.File("capped.safetensors");
        using (var s = new FileStream(path, FileMode.CreateNew))
        {
            s.Write(BitConverter.GetBytes(100_000_001ul));
            s.SetLength(100_000_016);
        }
        AssertRejected(path, () => SafetensorsFile.Open(path), "header length 100000001 exceeds the 100000000-byte limit");
    }

    [Fact]
    public void HeaderNotUtf8()
    {
        using var dir = new TempFolder();
        string path = CraftBytes(dir, "latin1.safetensors", [(byte)'{', (byte)'"', 0xFF, 0xFE, (byte)'"', (byte)':', (byte)'1', (byte)'}'], 0);
        AssertRejected(path, () => SafetensorsFile.Open(path), "not valid UTF-8");
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",")]               // truncated
    [InlineData("{\"a\":{\"dtype\":'F32'}}")]                // single quotes
    [InlineData("{\"__metadata__\":{},}")]                  // trailing comma
    [InlineData("{} {}")]                                    // content after the object
    [InlineData("{/*c*/}")]                                  // comment
    [InlineData("")]                                         // empty
    public void HeaderNotJson(string header) => Rejects(header, 0, "not valid JSON");

    [Theory]
    [InlineData("[1,2]")]
    [InlineData("\"text\"")]
    [InlineData("42")]
    public void HeaderNotAnObject(string header) => Rejects(header, 0, "not a JSON object");

    [Theory]
    [InlineData("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "missing dtype")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", "missing shape")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", "missing data_offsets")]
    public void EntryMissingAField(string header, string phrase) => Rejects(header, 8, "'w'", phrase);

    [Theory]
    [InlineData("{\"w\":[1,2]}", "not a JSON object")]
    [InlineData("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", "dtype is Number, not a string")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", "shape is String, not an array")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", "non-integer dimension")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"begin\":0}}}", "data_offsets must be [begin, end]")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", "data_offsets must be [begin, end]")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "duplicate field dtype")]
    public void EntryFieldOfTheWrongJsonType(string header, string phrase) => Rejects(header, 8, "'w'", phrase);

    [Theory]
    [InlineData("F8_E4M3")]
    [InlineData("float32")]
    [InlineData("f32")]
    public void UnknownDType(string dtype) =>
        Rejects($"{{\"w\":{{\"dtype\":\"{dtype}\",\"shape\":[2],\"data_offsets\":[0,8]}}}}", 8, "'w'", $"unknown dtype '{dtype}'");

    [Fact]
    public void NegativeDimension() =>
        Rejects("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "'w'", "negative dimension (-2)");

    [Theory]
    [InlineData("2.5")]
    [InlineData("2.0")]
    [InlineData("2e0")]
    public void NonIntegerDimension(string dim) =>
        Rejects($"{{\"w\":{{\"dtype\":\"F32\",\"shape\":[{dim}],\"data_offsets\":[0,8]}}}}", 8, "'w'", "non-integer dimension");

    [Fact]
    public void DimensionBeyondInt() =>
        Rejects("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296],\"data_offsets\":[0,8]}}", 8, "'w'", "exceeds 2147483647");

    [Theory]
    [InlineData("[8,4]", "has begin after end")]
    [InlineData("[0]", "it has 1 values")]
    [InlineData("[0,4,8]", "it has 3 values")]
    [InlineData("[-8,0]", "two non-negative integers")]
    [InlineData("[0,1.5]", "two non-negative integers")]
    [InlineData("[0,18446744073709551615]", "two non-negative integers")]
    public void MalformedDataOffsets(string offsets, string phrase) =>
        Rejects($"{{\"w\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{offsets}}}}}", 8, "'w'", phrase);

    [Fact]
    public void DataOffsetsOutsideTheDataSection() =>
        Rejects("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "'w'", "data_offsets [0,16] lie outside the data section of 8 bytes");

    [Theory]
    [InlineData("F32", "[3]", "[0,8]", "span 8 bytes but shape [3] of F32 needs 12")]
    [InlineData("BF16", "[2,2]", "[0,4]", "span 4 bytes but shape [2,2] of BF16 needs 8")]
    [InlineData("I64", "[]", "[0,4]", "span 4 bytes but shape [] of I64 needs 8")]
    public void ByteLengthDisagreesWithShape(string dtype, string shape, string offsets, string phrase) =>
        Rejects($"{{\"w\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":{offsets}}}}}", 8, "'w'", phrase);

    [Fact]
    public void ShapeProductOverflows() =>
        Rejects("{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}", 8, "'w'", "overflows a 64-bit byte count");

    [Fact]
    public void ShapeByteCountOverflowsOnlyThroughTheDTypeSize() =>
        Rejects("{\"w\":{\"dtype\":\"F64\",\"shape\":[2147483647,2147483647,2],\"data_offsets\":[0,8]}}", 8, "'w'", "overflows a 64-bit byte count");

    [Fact]
    public void OverlappingTensors() =>
        Rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            16, "'b'", "overlap tensor 'a' [0,8]");

    [Fact]
    public void ATensorInsideAnother() =>
        Rejects("{\"big\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},\"small\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}",
            16, "'small'", "overlap tensor 'big'");

    [Fact]
    public void EmptyTensorsNeverOverlap()
    {
        using var dir = new TempFolder();
        string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}}";
        using var f = SafetensorsFile.Open(Craft(dir, "empty.safetensors", header, 8));
        Assert.Equal(0, f.Get("e").Elements);
    }

    [Fact]
    public void DuplicateTensorNames() =>
        Rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "'a'", "duplicate tensor name");

    [Theory]
    [InlineData("{\"__metadata__\":{\"total\":5}}", "value of 'total' is Number, not a string")]
    [InlineData("{\"__metadata__\":[\"x\"]}", "__metadata__ is not a JSON object")]
    [InlineData("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", "duplicate __metadata__ key 'k'")]
    public void MalformedMetadata(string header, string phrase) => Rejects(header, 0, phrase);

    [Fact]
    public void MessagesStayOneLineWhenANameHoldsANewline() =>
        Rejects("{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "'a\\nb'", "span 8 bytes");

    [Fact]
    public void EntryNamesTheFileAndTheTensorWhenMissing()
    {
        using var dir = new TempFolder();
        string path = Craft(dir, "one.safetensors", Good, 8);
        using var f = SafetensorsFile.Open(path);
        Assert.False(f.Contains("nope"));
        AssertRejected(path, () => f.Entry("nope"), "'nope'", "not in this file");
        AssertRejected(path, () => f.Get("nope"), "'nope'");
    }
}
