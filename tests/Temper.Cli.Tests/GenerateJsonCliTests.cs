// `temper generate --json` and `--json-schema FILE`: the continuation is a JSON object / JSON matching the
// schema that parses (the random tiny model, greedy and sampled); a bad or unsupported schema, a missing
// file, both flags or --ignore-eos with one are one-line errors (exit 2), refused before the model loads.
using System.Text.Json;

namespace Temper.Tests;

public class GenerateJsonCliTests
{
    private static string Temp(string name) => Path.Combine(Path.GetTempPath(), $"temper-json-cli-{Environment.ProcessId}-{name}");

    private static void AssertBadInput(CliResult r, params string[] mentions)
    {
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        foreach (var m in mentions) Assert.Contains(m, r.Stderr);
    }

    [Fact]
    public void Json_schema_output_parses_and_matches()
    {
        string schema = Temp("schema.json");
        File.WriteAllText(schema, """{"type":"object","properties":{"answer":{"enum":["yes","no"]},"sure":{"type":"boolean"}},"required":["answer","sure"]}""");
        foreach (var sampling in new[] { new[] { "--greedy" }, ["--temperature", "1.2", "--seed", "3"] })
        {
            var r = TemperCli.Run(["generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "Verdict:", "--max-new-tokens", "120", "--json-schema", schema, .. sampling]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Contains("stop: Eos]", r.Stderr);
            Assert.StartsWith("Verdict:", r.Stdout, StringComparison.Ordinal);
            using var doc = JsonDocument.Parse(r.Stdout["Verdict:".Length..]);
            Assert.Contains(doc.RootElement.GetProperty("answer").GetString(), new[] { "yes", "no" });
            Assert.Equal(["answer", "sure"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        }
    }

    [Fact]
    public void Json_output_is_an_object_or_its_start()
    {
        var r = TemperCli.Run("generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "JSON:", "--max-new-tokens", "30", "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        string text = r.Stdout["JSON:".Length..].Trim();
        Assert.StartsWith("{", text, StringComparison.Ordinal);
        if (r.Stderr.Contains("stop: Eos]", StringComparison.Ordinal)) Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
    }

    [Fact]
    public void Bad_schemas_and_flag_mixes_are_one_line_errors()
    {
        string[] args = ["generate", "--model", "/nonexistent/model", "--prompt", "x"];   // refused before the model loads
        string bad = Temp("bad.json");
        File.WriteAllText(bad, """{"type":"string","format":"email"}""");
        AssertBadInput(TemperCli.Run([.. args, "--json-schema", bad]), "bad.json", "the keyword 'format' is not supported");
        File.WriteAllText(bad, "{\"type\":");
        AssertBadInput(TemperCli.Run([.. args, "--json-schema", bad]), "not valid JSON");
        AssertBadInput(TemperCli.Run([.. args, "--json-schema", Temp("missing.json")]), "missing.json: file not found");
        AssertBadInput(TemperCli.Run([.. args, "--json", "--json-schema", bad]), "not both");
        AssertBadInput(TemperCli.Run("generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "x", "--json", "--ignore-eos"), "--ignore-eos");
    }
}
