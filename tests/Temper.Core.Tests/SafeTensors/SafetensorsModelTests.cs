// Sharded checkpoints: two shards and a model.safetensors.index.json written here, opened through
// SafetensorsModel by folder and by index file, and each way an index can be wrong.
using Temper.Core;
using Temper.Core.SafeTensors;
using static Temper.Tests.SafeTensors.SafetensorsTestFiles;

namespace Temper.Tests.SafeTensors;

public class SafetensorsModelTests
{
    private const string Shard1 = "model-00001-of-00002.safetensors";
    private const string Shard2 = "model-00002-of-00002.safetensors";

    private static void WriteShards(TempFolder dir)
    {
        SafetensorsWriter.Write(dir.File(Shard1), [
            KeyValuePair.Create("embed", Tensor.FromFloats(new Shape(2, 3), [1, 2, 3, 4, 5, 6])),
            KeyValuePair.Create("norm", Tensor.FromArray(new Shape(2), new ushort[] { 0x3F80, 0x4000 }, DType.BF16)),
        ]);
        SafetensorsWriter.Write(dir.File(Shard2), [
            KeyValuePair.Create("head", Tensor.FromArray(new Shape(3), new int[] { 7, 8, 9 }, DType.I32)),
        ]);
    }

    private static string WriteIndex(TempFolder dir, string weightMap)
    {
        string path = dir.File(SafetensorsModel.IndexFileName);
        File.WriteAllText(path, $"{{\"metadata\":{{\"total_size\":40}},\"weight_map\":{{{weightMap}}}}}");
        return path;
    }

    private const string GoodMap = $"\"embed\":\"{Shard1}\",\"head\":\"{Shard2}\",\"norm\":\"{Shard1}\"";

    [Fact]
    public void OpensShardsThroughTheIndex()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        string index = WriteIndex(dir, GoodMap);
        foreach (string open in new[] { dir.Path, index })
        {
            using var m = SafetensorsModel.Open(open);
            Assert.Equal(["embed", "head", "norm"], m.Names);
            Assert.Equal(2, m.Files.Count);
            Assert.Equal([1f, 2f, 3f, 4f, 5f, 6f], m.Get("embed").ToFloatArray());
            Assert.Equal([7, 8, 9], m.Get("head").Span<int>().ToArray());
            Assert.Equal([1f, 2f], m.Get("norm").ToFloatArray());
            Assert.Equal(DType.BF16, m.DTypeOf("norm"));
            Assert.Equal(new Shape(2, 3), m.ShapeOf("embed"));
            Assert.True(m.Contains("head"));
            Assert.False(m.Contains("missing"));
        }
    }

    [Fact]
    public void OpensASingleFileByPath()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        using var m = SafetensorsModel.Open(dir.File(Shard2));
        Assert.Equal(["head"], m.Names);
    }

    [Fact]
    public void MissingTensorNamesTheTensorAndTheFolder()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        WriteIndex(dir, GoodMap);
        using var m = SafetensorsModel.Open(dir.Path);
        var e = Assert.Throws<TemperException>(() => m.Get("lm_head.weight"));
        Assert.Contains(dir.Path, e.Message, StringComparison.Ordinal);
        Assert.Contains("'lm_head.weight'", e.Message, StringComparison.Ordinal);
        Assert.Contains("not found", e.Message, StringComparison.Ordinal);
        Assert.Throws<TemperException>(() => m.ShapeOf("lm_head.weight"));
    }

    [Fact]
    public void FolderWithoutWeights()
    {
        using var dir = new TempFolder();
        var e = Assert.Throws<TemperException>(() => SafetensorsModel.Open(dir.Path));
        Assert.Contains(dir.Path, e.Message, StringComparison.Ordinal);
        Assert.Contains("no model.safetensors or model.safetensors.index.json", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"weight_map\":{\"a\":", "index is not valid JSON")]
    [InlineData("[]", "index is not a JSON object")]
    [InlineData("{\"metadata\":{}}", "index has no weight_map")]
    [InlineData("{\"weight_map\":[\"a\"]}", "weight_map is not a JSON object")]
    [InlineData("{\"weight_map\":{\"a\":3}}", "'a'", "not a shard file name")]
    [InlineData("{\"weight_map\":{\"a\":\"../x.safetensors\"}}", "'a'", "points outside the folder")]
    public void MalformedIndex(string json, params string[] phrases)
    {
        using var dir = new TempFolder();
        string path = dir.File(SafetensorsModel.IndexFileName);
        File.WriteAllText(path, json);
        AssertRejected(path, () => SafetensorsModel.Open(dir.Path), phrases);
    }

    [Fact]
    public void IndexPointsToAMissingShard()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        string index = WriteIndex(dir, $"\"embed\":\"{Shard1}\",\"head\":\"model-00003-of-00002.safetensors\"");
        AssertRejected(index, () => SafetensorsModel.Open(dir.Path), "'head'", "missing shard 'model-00003-of-00002.safetensors'");
    }

    [Fact]
    public void IndexListsATensorItsShardLacks()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        WriteIndex(dir, $"\"embed\":\"{Shard1}\",\"head\":\"{Shard1}\"");
        var e = AssertRejected(dir.File(Shard1), () => SafetensorsModel.Open(dir.Path), "'head'", "absent from this shard");
        Assert.Contains(SafetensorsModel.IndexFileName, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ABadShardIsReportedWithItsOwnName()
    {
        using var dir = new TempFolder();
        WriteShards(dir);
        File.WriteAllBytes(dir.File(Shard2), [1, 2, 3]);
        WriteIndex(dir, GoodMap);
        AssertRejected(dir.File(Shard2), () => SafetensorsModel.Open(dir.Path), "shorter than the 8-byte header length");
    }
}
