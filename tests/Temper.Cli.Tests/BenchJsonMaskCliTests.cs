// `temper bench json-mask`: times the token mask on a tokenizer's vocabulary (json_object and a schema); a
// document the constraint refuses, or neither/both vocabulary sources, is a one-line error (exit 2).
namespace Temper.Tests;

public class BenchJsonMaskCliTests
{
    [Fact]
    public void Times_the_mask_along_a_document_and_refuses_bad_input()
    {
        var r = TemperCli.Run("bench", "json-mask", "--model", Fixtures.Hf("qwen2-tiny"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("vocabulary 512 tokens", r.Stdout);
        Assert.Contains("json_object:", r.Stdout);
        Assert.Contains("uncached mask ms: mean", r.Stdout);

        string schema = Path.Combine(Path.GetTempPath(), $"temper-json-mask-{Environment.ProcessId}.json");
        File.WriteAllText(schema, """{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}""");
        var refused = TemperCli.Run("bench", "json-mask", "--model", Fixtures.Hf("qwen2-tiny"), "--schema", schema); // the sample document has no "a"
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("does not continue the JSON", refused.Stderr);
        Assert.Equal(2, TemperCli.Run("bench", "json-mask").ExitCode);
    }
}
