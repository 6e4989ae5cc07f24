// Reads the shared fixtures (written by huggingface/safetensors through PyTorch) and checks names,
// dtypes, shapes, metadata and a few values against what Python reads from the same bytes.
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Tests.SafeTensors;

public class SafetensorsFixtureTests
{
    [Theory]
    [InlineData("llama-tiny", 20, 0xBCC3ECCFu)]
    [InlineData("qwen2-tiny", 27, 0xBAF0F21Eu)]
    public void ReadsModelWeights(string model, int tensors, uint embedRow1Col0Bits)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(model), "model.safetensors"));
        Assert.Equal(tensors, f.Entries.Count);
        Assert.Equal("pt", f.Metadata["format"]);
        var e = f.Entry("model.embed_tokens.weight");
        Assert.Equal(DType.F32, e.DType);
        Assert.Equal(new Shape(512, 64), e.Shape);
        Assert.Equal(512 * 64 * 4, e.ByteLength);

        using var t = f.Get("model.embed_tokens.weight");
        Assert.Equal(new Shape(512, 64), t.Shape);
        Assert.Equal(embedRow1Col0Bits, BitConverter.SingleToUInt32Bits(t.Floats[64]));
        Assert.All(t.ToFloatArray(), v => Assert.True(float.IsFinite(v)));
        Assert.Equal(new Shape(64), f.Get("model.norm.weight").Shape);
    }

    [Theory]
    [InlineData("llama-tiny", 86, 157, 237)]
    [InlineData("qwen2-tiny", 93, 432, 49)]
    public void ReadsReferenceTensors(string model, int tensors, int firstId, int secondId)
    {
        using var f = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(model), "reference.safetensors"));
        Assert.Equal(tensors, f.Entries.Count);
        Assert.Empty(f.Metadata);

        var ids = f.Get("input_ids");
        Assert.Equal(DType.I32, ids.DType);
        Assert.Equal(new Shape(2, 24), ids.Shape);
        Assert.Equal(firstId, ids.Span<int>()[0]);
        Assert.Equal(secondId, ids.Span<int>()[1]);
        Assert.All(ids.Span<int>().ToArray(), id => Assert.InRange(id, 0, 511));

        var labels = f.Get("labels").Span<int>();
        for (int i = 0; i < 8; i++) Assert.Equal(-100, labels[i]);
        Assert.Equal(new Shape(2, 24, 512), f.Entry("logits").Shape);
        Assert.Equal(DType.F32, f.Entry("logits").DType);
    }

    [Fact]
    public void ModelFolderOpensTheSingleFile()
    {
        using var m = SafetensorsModel.Open(Fixtures.Hf("llama-tiny"));
        Assert.Equal(20, m.Names.Count());
        Assert.True(m.Contains("model.layers.1.self_attn.q_proj.weight"));
        Assert.Equal(new Shape(512, 64), m.ShapeOf("model.embed_tokens.weight"));
        Assert.Equal(DType.F32, m.DTypeOf("model.embed_tokens.weight"));
        Assert.Equal(0xBCC3ECCFu, BitConverter.SingleToUInt32Bits(m.Get("model.embed_tokens.weight").Floats[64]));
    }

    // Rewriting a file made by the reference writer in its header order reproduces it byte for byte:
    // same compact JSON, same padding, same contiguous data.
    [Theory]
    [InlineData("llama-tiny", "model.safetensors")]
    [InlineData("qwen2-tiny", "reference.safetensors")]
    [InlineData("llama-tiny", "adapter/adapter_model.safetensors")]
    public void RewritingAReferenceFileIsByteIdentical(string model, string file)
    {
        string source = Path.Combine(Fixtures.Hf(model), file);
        using var dir = new TempFolder();
        string copy = dir.File("copy.safetensors");
        using (var f = SafetensorsFile.Open(source))
            SafetensorsWriter.Write(copy, f.Entries.Select(e => KeyValuePair.Create(e.Name, f.Get(e.Name))), f.Metadata.Count > 0 ? f.Metadata : null);
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(copy));
    }
}
