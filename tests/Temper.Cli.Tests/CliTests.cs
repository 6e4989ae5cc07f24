// The CLI contract scripts build on: tokenize --json, template, logits to safetensors, generate,
// and bad input as one line on stderr with exit code 2 and no stack trace.
using System.Text.Json.Nodes;
using Temper.Core.SafeTensors;

namespace Temper.Tests;

public class CliTests
{
    private static string Temp(string name) => Path.Combine(Directory.CreateTempSubdirectory("temper-cli-").FullName, name);

    private static void AssertBadInput(CliResult r, params string[] mentions)
    {
        Assert.Equal(2, r.ExitCode);
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.DoesNotContain("   at ", r.Stderr);
        foreach (var m in mentions) Assert.Contains(m, r.Stderr);
    }

    [Fact]
    public void Info_lists_backend_simd_and_threads()
    {
        var r = TemperCli.Run("info");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("backends: cpu", r.Stdout);
        Assert.Contains("simd:", r.Stdout);
        Assert.Contains("threads:", r.Stdout);
    }

    [Fact]
    public void Tokenize_json_prints_the_reference_ids()
    {
        string dir = Fixtures.Hf("qwen2-tiny");
        var cases = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["tokenize"]!.AsArray();
        foreach (var c in cases.Take(3))
        {
            var r = TemperCli.Run("tokenize", "--model", dir, "--text", c!["text"]!.GetValue<string>(), "--json");
            Assert.Equal(0, r.ExitCode);
            Assert.Equal(c["ids"]!.ToJsonString(), r.Stdout.Trim());
        }
    }

    [Fact]
    public void Template_prints_exactly_the_rendered_text()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var ct = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["chat_template"]!;
        string msgs = Temp("messages.json");
        File.WriteAllText(msgs, ct["messages"]!.ToJsonString());
        var plain = TemperCli.Run("template", "--model", dir, "--messages", msgs);
        Assert.Equal(0, plain.ExitCode);
        Assert.Equal(ct["text"]!.GetValue<string>(), plain.Stdout);
        // The reference renders the generation prompt after the conversation without its last (assistant) turn.
        var head = ct["messages"]!.AsArray().Take(ct["messages"]!.AsArray().Count - 1).Select(m => m!.DeepClone()).ToArray();
        File.WriteAllText(msgs, new JsonArray(head).ToJsonString());
        var gen = TemperCli.Run("template", "--model", dir, "--messages", msgs, "--add-generation-prompt");
        Assert.Equal(ct["text_with_generation_prompt"]!.GetValue<string>(), gen.Stdout);

        // --continue-final-message ends inside the last (assistant) message, as transformers cuts it; template
        // variables are taken as a JSON object, anything else refused in one line.
        File.WriteAllText(msgs, ct["messages"]!.ToJsonString());
        string full = ct["text"]!.GetValue<string>(), last = ct["messages"]!.AsArray()[^1]!["content"]!.GetValue<string>();
        var cont = TemperCli.Run("template", "--model", dir, "--messages", msgs, "--continue-final-message", "--chat-template-kwargs", "{\"enable_thinking\": false}");
        Assert.Equal(0, cont.ExitCode);
        Assert.Equal(full[..(full.LastIndexOf(last, StringComparison.Ordinal) + last.Length)], cont.Stdout);
        var bad = TemperCli.Run("template", "--model", dir, "--messages", msgs, "--chat-template-kwargs", "[1]");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("temper: --chat-template-kwargs must be a JSON object of template variables", bad.Stderr.Trim());

        // --chat-template (vLLM's flag, shared with generate --chat, chat and serve) replaces the model's template: inline, its \n a newline.
        var own = TemperCli.Run("template", "--model", dir, "--messages", msgs, "--chat-template", @"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}");
        Assert.Equal(0, own.ExitCode);
        Assert.Equal(string.Concat(ct["messages"]!.AsArray().Select(m => $"{m!["role"]}: {m["content"]}\n")), own.Stdout);
        var notChat = TemperCli.Run("generate", "--model", dir, "--prompt", "hi", "--chat-template", "{{ x }}");
        Assert.Equal("temper: --chat-template is for --chat", notChat.Stderr.Trim());
        var unparsed = TemperCli.Run("generate", "--model", dir, "--prompt", "hi", "--chat", "--chat-template", "{% if %}");
        Assert.Equal(2, unparsed.ExitCode);
        Assert.StartsWith("temper: --chat-template:1: ", unparsed.Stderr.Trim());
    }

    [Fact]
    public void Logits_writes_the_reference_logits_with_adapter()
    {
        string dir = Fixtures.Hf("qwen2-tiny");
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = reference.Get("input_ids");
        int t = ids.Shape[1];
        var rows = ids.Span<int>().ToArray().Chunk(t).Select(r => new JsonArray(r.Select(x => (JsonNode)x).ToArray())).ToArray();
        string idsFile = Temp("ids.json"), outFile = Temp("logits.safetensors");
        File.WriteAllText(idsFile, new JsonArray(rows).ToJsonString());
        var r = TemperCli.Run("logits", "--model", dir, "--adapter", Path.Combine(dir, "adapter"), "--ids", idsFile, "--out", outFile);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var got = SafetensorsFile.Open(outFile);
        var logits = got.Get("logits");
        Assert.Equal(new Temper.Core.Shape(2, t, 512), logits.Shape);
        var want = reference.Get("lora.logits").Floats;
        var have = logits.Floats;
        float maxRef = 0, maxErr = 0;
        for (int i = 0; i < want.Length; i++) { maxRef = Math.Max(maxRef, Math.Abs(want[i])); maxErr = Math.Max(maxErr, Math.Abs(want[i] - have[i])); }
        Assert.True(maxErr <= 1e-4 * maxRef, $"max error {maxErr}");
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void Logits_on_the_ilgpu_cpu_accelerator_match_transformers(string model)
    {
        string dir = Fixtures.Hf(model);
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = reference.Get("input_ids");
        int t = ids.Shape[1];
        string idsFile = Temp("ids.json"), outFile = Temp("logits.safetensors");
        File.WriteAllText(idsFile, new JsonArray(ids.Span<int>().ToArray().Chunk(t).Select(r => (JsonNode)new JsonArray(r.Select(x => (JsonNode)x).ToArray())).ToArray()).ToJsonString());
        var r = TemperCli.Run("logits", "--model", dir, "--ids", idsFile, "--out", outFile, "--device", "ilgpu-cpu", "--dtype", "f32");
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var got = SafetensorsFile.Open(outFile);
        var want = reference.Get("logits").Floats;
        var have = got.Get("logits").Floats;
        float maxRef = 0, maxErr = 0;
        for (int i = 0; i < want.Length; i++) { maxRef = Math.Max(maxRef, Math.Abs(want[i])); maxErr = Math.Max(maxErr, Math.Abs(want[i] - have[i])); }
        Assert.True(maxErr <= 1e-4 * maxRef, $"max error {maxErr}");
    }

    [Fact]
    public void Unknown_device_is_refused()
    {
        string ids = Temp("ids.json");
        File.WriteAllText(ids, "[[1,2,3]]");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", ids, "--out", Temp("y.safetensors"), "--device", "tpu"), "--device must be cpu, cuda, opencl or ilgpu-cpu, not 'tpu'");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", ids, "--out", Temp("y.safetensors"), "--device", "cpu", "--kernels", "ptx"), "--kernels ptx runs CUDA C++ kernels: it needs --device cuda, not cpu");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", ids, "--out", Temp("y.safetensors"), "--kernels", "fast"), "--kernels must be auto, ilgpu or ptx, not 'fast'");
    }

    [Fact]
    public void Chat_keeps_the_conversation_until_an_empty_line()
    {
        var r = TemperCli.RunWithInput("hello\nand again\n\n", "chat", "--model", Fixtures.Hf("qwen2-tiny"), "--max-new-tokens", "3", "--ignore-eos");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(2, r.Stderr.Split("> ").Length - 2); // two answered turns, then the prompt that read the empty line
    }

    [Fact]
    public void Generate_streams_the_requested_number_of_tokens()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var r = TemperCli.Run("generate", "--model", dir, "--prompt", "Return", "--greedy", "--max-new-tokens", "5", "--ignore-eos");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.StartsWith("Return", r.Stdout);
        Assert.Contains("[5 tokens, stop: Length]", r.Stderr);
    }

    // --prompt-file FILE and - (standard input) give what --prompt gives; none of them, a missing or empty file: exit 2.
    [Fact]
    public void Generate_reads_prompts_from_files_and_standard_input()
    {
        string[] args = ["generate", "--model", Fixtures.Hf("llama-tiny"), "--greedy", "--max-new-tokens", "6", "--ignore-eos"];
        var inline = TemperCli.Run([.. args, "--prompt", "Return of the\nking"]);
        Assert.True(inline.ExitCode == 0, inline.Stderr);
        string file = Temp("prompt.txt");
        File.WriteAllText(file, "Return of the\nking\n");
        Assert.Equal(inline.Stdout, TemperCli.Run([.. args, "--prompt-file", file]).Stdout);
        Assert.Equal(inline.Stdout, TemperCli.RunWithInput("Return of the\nking\n", [.. args, "-f", "-"]).Stdout);
        var batch = TemperCli.Run([.. args, "--prompt", "a b", "--prompt-file", file]);
        Assert.True(batch.ExitCode == 0, batch.Stderr);
        Assert.Contains("--- prompt 1", batch.Stdout);
        AssertBadInput(TemperCli.Run(args), "give a prompt: --prompt TEXT or --prompt-file FILE");
        AssertBadInput(TemperCli.Run([.. args, "--prompt-file", Temp("missing.txt")]), "missing.txt: file not found");
        string empty = Temp("empty.txt");
        File.WriteAllText(empty, "\n");
        AssertBadInput(TemperCli.Run([.. args, "--prompt-file", empty]), "the prompt is empty");
    }

    [Fact]
    public void Generate_passes_the_penalties_to_the_sampler()
    {
        string[] Run(params string[] extra) => [.. TemperCli.Run(["generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "Return", "--greedy", "--max-new-tokens", "16", "--ignore-eos", .. extra]).Stdout.Split('\n')];
        var plain = Run();
        Assert.NotEqual(plain, Run("--presence-penalty", "2"));
        Assert.NotEqual(plain, Run("--frequency-penalty", "2"));
        Assert.Equal(plain, Run("--frequency-penalty", "0", "--presence-penalty", "0"));
    }

    [Fact]
    public void Missing_model_folder_is_one_line_exit_2()
        => AssertBadInput(TemperCli.Run("logits", "--model", "/nonexistent/model", "--ids", "/nonexistent/ids.json", "--out", Temp("x.safetensors")), "/nonexistent/");

    [Fact]
    public void Malformed_ids_file_names_the_file()
    {
        string f = Temp("ids.json");
        File.WriteAllText(f, "[[1,2,3],[4,5");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", f, "--out", Temp("x.safetensors")), f, "malformed JSON");
    }

    [Fact]
    public void Ragged_ids_and_out_of_vocab_ids_are_named()
    {
        string f = Temp("ids.json");
        File.WriteAllText(f, "[[1,2,3],[4,5]]");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", f, "--out", Temp("x.safetensors")), "row 1 has 2 values");
        File.WriteAllText(f, "[[1,2,9999]]");
        AssertBadInput(TemperCli.Run("logits", "--model", Fixtures.Hf("llama-tiny"), "--ids", f, "--out", Temp("x.safetensors")), "9999", "vocabulary");
    }

    [Fact]
    public void Unknown_option_and_bad_sampling_values_exit_2()
    {
        AssertBadInput(TemperCli.Run("tokenize", "--model", Fixtures.Hf("llama-tiny"), "--text", "x", "--frobnicate"), "--frobnicate");
        AssertBadInput(TemperCli.Run("generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "x", "--top-p", "1.5"), "--top-p");
        AssertBadInput(TemperCli.Run("generate", "--model", Fixtures.Hf("llama-tiny"), "--prompt", "x", "--presence-penalty", "2.5"), "--presence-penalty must be in [-2, 2]");
    }

    [Fact]
    public void Verbose_adds_the_stack_trace()
    {
        var r = TemperCli.Run("tokenize", "--model", "/nonexistent/tok", "--text", "x", "--verbose");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("   at ", r.Stderr);
    }
}
