// `temper serve` and `temper bench serve` as a user runs them: the server starts on a free port, names
// its address, answers /v1/models with the base (by each --served-model-name, with --max-model-len) and a bare --adapter DIR named after its folder (and, with
// --allow-runtime-lora, an adapter loaded through POST /v1/load_lora_adapter); with
// host and disk tiers it names them, makes its disk file in --disk-dir and completes; bad tool and
// speculation flags (a draft model, which serve does not take, included) are one line and exit 2, and so are vLLM's
// flags out of range (--max-model-len above the model's positions, --max-num-seqs, --max-logprobs, a served name twice, a
// --chat-template that is no file and no template, or does not parse); --served-model-name takes several names; a
// missing adapter folder is one line and exit 2; the bench prints throughput, latency and tier figures,
// adapters moving device -> host -> disk and back beside the KV blocks; an adapter larger than a tier
// is one line naming it and exit 2; `--temperature T` samples the bench's requests (beside speculation too), a
// temperature of 0 one line and exit 2; `bench serve-sweep` measures every (concurrency, adapters) point plus
// the base model and writes its chart and JSON, and refuses a bad count in one line; --kv-cache-dtype bfloat16 halves a KV block's
// bytes (a bad value one line); the bench serves a
// mixture-of-experts model (MoeTiny's Qwen2-MoE) with its random adapters on every projection, the router, experts and
// shared expert included, each taking the blocks of all of them.
using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Temper.Tests;

public sealed class ServeCliTests
{
    private static string Model => Fixtures.Hf("llama-tiny");

    /// <summary>`temper bench serve` on the fixture: that many requests of a prompt length and token count over that many adapters, and more flags.</summary>
    private static CliResult BenchServe(int requests, int promptLen, int tokens, int adapters, params string[] more) =>
        TemperCli.Run(["bench", "serve", "--model", Model, "--requests", $"{requests}", "--prompt-len", $"{promptLen}", "--tokens", $"{tokens}", "--adapters", $"{adapters}", .. more]);

    /// <summary>Asserts that a run succeeded and printed every one of <paramref name="lines"/> (each a piece of its output); returns its output.</summary>
    private static string AssertPrinted(CliResult r, params string[] lines)
    {
        Assert.True(r.ExitCode == 0, r.Stderr);
        foreach (string line in lines) Assert.Contains(line, r.Stdout);
        return r.Stdout;
    }

    [Fact]
    public async Task Serve_starts_on_a_free_port_and_lists_models()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "temper.dll"), "serve", "--model", Model, "--adapter", Path.Combine(Model, "adapter"), "--port", "0", "--threads", "1", "--allow-runtime-lora",
            "--served-model-name", "llama-tiny", "tiny2", "--max-model-len", "64" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            var line = await p.StandardOutput.ReadLineAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
            Assert.NotNull(line);
            Assert.StartsWith("serving llama-tiny, tiny2, adapter on http://127.0.0.1:", line);
            string v1 = line.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal));
            using var http = new HttpClient();
            var models = JsonNode.Parse(await http.GetStringAsync(new Uri(v1 + "/models"), TestContext.Current.CancellationToken))!;
            Assert.Equal(["llama-tiny", "tiny2", "adapter"], models["data"]!.AsArray().Select(m => (string?)m!["id"]));
            Assert.Equal(64, (int)models["data"]![0]!["max_model_len"]!);
            Assert.EndsWith(", runtime LoRA updating on); Ctrl+C stops", line);
            Assert.Contains(", KV cache f32", line); // auto: the fixture's f32 weights
            var load = new JsonObject { ["lora_name"] = "rt", ["lora_path"] = Path.Combine(Model, "adapter") };
            using var r = await http.PostAsync(new Uri(v1 + "/load_lora_adapter"), new StringContent(load.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);
            Assert.True(r.IsSuccessStatusCode, await r.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
            models = JsonNode.Parse(await http.GetStringAsync(new Uri(v1 + "/models"), TestContext.Current.CancellationToken))!;
            Assert.Equal(["llama-tiny", "tiny2", "adapter", "rt"], models["data"]!.AsArray().Select(m => (string?)m!["id"]));
        }
        finally
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        }
    }

    [Fact]
    public async Task Serve_with_host_and_disk_tiers_answers_a_completion()
    {
        // A device pool of 24 blocks of 4 positions (the adapter takes 18), a host tier of 20, a disk tier of 64 in a folder of
        // the test's: the server names its tiers, makes the disk file there and completes on the adapter.
        string dir = Path.Combine(Path.GetTempPath(), $"temper-serve-tiers-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "temper.dll"), "serve", "--model", Model, "--adapter", Path.Combine(Model, "adapter"), "--port", "0", "--threads", "1",
            "--block-size", "4", "--kv-blocks", "24", "--host-blocks", "20", "--disk-blocks", "64", "--disk-dir", dir })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            var cancel = TestContext.Current.CancellationToken;
            var line = await p.StandardOutput.ReadLineAsync(cancel).AsTask().WaitAsync(TimeSpan.FromSeconds(60), cancel);
            Assert.NotNull(line);
            Assert.Contains("KV tiers: host 20 blocks, disk 64 blocks in " + dir, line);
            Assert.Single(Directory.GetFiles(dir, "temper-kv-*.bin"));
            string v1 = line.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal));
            using var http = new HttpClient();
            var body = new JsonObject { ["model"] = "adapter", ["prompt"] = "Once upon a time", ["max_tokens"] = 5, ["temperature"] = 0 };
            using var r = await http.PostAsync(new Uri(v1 + "/completions"), new StringContent(body.ToJsonString(), System.Text.Encoding.UTF8, "application/json"), cancel);
            string text = await r.Content.ReadAsStringAsync(cancel);
            Assert.True(r.IsSuccessStatusCode, text);
            var choice = JsonNode.Parse(text)!["choices"]![0]!;
            Assert.Equal("length", (string?)choice["finish_reason"]);
            Assert.Equal(5, (int)JsonNode.Parse(text)!["usage"]!["completion_tokens"]!);
        }
        finally
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync(TestContext.Current.CancellationToken);
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("--tool-call-parser pythonic --enable-auto-tool-choice", "--tool-call-parser 'pythonic' is not one of hermes, llama3_json, mistral")]
    [InlineData("--enable-auto-tool-choice", "--enable-auto-tool-choice needs --tool-call-parser")]
    [InlineData("--speculative draft", "serve: --speculative draft (a draft model) is not served; use --speculative ngram")]
    [InlineData("--num-speculative-tokens 3", "--num-speculative-tokens is for speculative decoding: add --speculative ngram or --draft-model DIR")]
    [InlineData("--speculative ngram --num-speculative-tokens 40", "--num-speculative-tokens must be in 1..16 (got 40)")]
    public void Serve_with_bad_tool_flags_is_one_line_and_exit_2(string flags, string message)
    {
        var r = TemperCli.Run(["serve", "--model", Model, .. flags.Split(' ')]);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: " + message, r.Stderr.Trim());
    }

    [Fact]
    public void Serve_refuses_bad_vllm_flags_at_startup_in_one_line()
    {
        foreach (var (flags, message) in new (string[], string)[]
        {
            (["--max-model-len", "300"], $"--max-model-len 300 is greater than the model's max_position_embeddings 256 ({Path.Combine(Model, "config.json")})"),
            (["--max-num-seqs", "0"], "--max-num-seqs must be >= 1 (got 0)"),
            (["--kv-cache-dtype", "fp8"], "--kv-cache-dtype must be auto, bfloat16 or float32, not 'fp8'"),
            (["--max-logprobs", "-2"], "--max-logprobs must be >= 0, or -1 for the vocabulary (got -2)"),
            (["--served-model-name", "a", "a"], "--served-model-name: 'a' is given twice"),
            (["--chat-template", "missing.jinja"], "--chat-template 'missing.jinja': no such file, and no inline template either (it has no '{{' or '{%')"),
            (["--chat-template", "{% for m in messages %}{{ m.content }"], "--chat-template:1: "),
        })
        {
            var r = TemperCli.Run(["serve", "--model", Model, "--port", "0", .. flags]);
            Assert.Equal(2, r.ExitCode);
            Assert.StartsWith("temper: " + message, r.Stderr.Trim());
            Assert.Single(r.Stderr.Trim().Split('\n'));
        }
    }

    [Fact]
    public void Serve_with_a_missing_adapter_folder_is_one_line_and_exit_2()
    {
        var r = TemperCli.Run("serve", "--model", Model, "--adapter", "x=/nonexistent/adapter");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: --adapter x: folder '/nonexistent/adapter' not found", r.Stderr.Trim());
    }

    [Fact]
    public void Bench_serve_prints_throughput_latency_and_tiers()
    {
        // A device pool of 30 blocks of 16 positions holds one bench adapter (18 blocks) beside the KV, a host
        // tier of 20 blocks holds one more, a disk tier the rest: the mixed run pushes adapters down to disk
        // and brings them back.
        string stdout = AssertPrinted(BenchServe(4, 8, 4, 2, "--threads", "1", "--kv-blocks", "30", "--host-blocks", "20", "--disk-blocks", "64"),
            "16 tokens in", "TTFT p50", "inter-token p50", "device: hits", "2 adapters vs 1:");
        var mixed = stdout[stdout.IndexOf("2 adapters ", StringComparison.Ordinal)..];
        string disk = mixed.Split('\n').First(l => l.TrimStart().StartsWith("disk:", StringComparison.Ordinal));
        Assert.Matches(@"adapters: hits [1-9]\d*, misses \d+, in [1-9]\d* B, out [1-9]\d* B", disk);
        Assert.Matches(@"prefetched \d+ \(\d+ ready when needed, \d+ dropped, \d+ held, \d+ skipped for lack of host room\), prefetch stall saved \d+\.\d\d ms, left \d+\.\d\d ms; adapters", disk); // KV block prefetches
    }

    [Fact]
    public void Bench_serve_runs_a_mixture_of_experts_model_with_adapters_beside_its_experts()
    {
        // Qwen2-MoE (a dense layer 0, a sparse layer 1 with a shared expert): the random adapters (rank 16 by default) take
        // every layer projection, the dense MLP, router, experts, shared expert and its gate included.
        var m = MoeTiny.Qwen2Moe;
        var r = TemperCli.Run("bench", "serve", "--model", m.Folder, "--requests", "3", "--prompt-len", "6", "--tokens", "3", "--adapters", "2", "--threads", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("2 adapters vs 1:", r.Stdout);
        Assert.Contains("9 tokens in", r.Stdout);
        var tiers = System.Text.RegularExpressions.Regex.Match(r.Stdout, @"blocks of (\d+) B of f32 K/V \(each adapter takes (\d+)\)");
        Assert.True(tiers.Success, r.Stdout);
        long block = long.Parse(tiers.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        long bytes = m.Shapes().Where(w => w.Shape.Length == 2 && w.Name.StartsWith("model.layers.", StringComparison.Ordinal)).Sum(w => 16L * (w.Shape[0] + w.Shape[1]) * sizeof(float));
        Assert.Equal((bytes + block - 1) / block, long.Parse(tiers.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Bench_serve_with_a_bf16_kv_cache_takes_blocks_of_half_the_bytes()
    {
        static long BlockBytes(string stdout)
        {
            var m = System.Text.RegularExpressions.Regex.Match(stdout, @"blocks of (\d+) B of (\w+) K/V");
            Assert.True(m.Success, stdout);
            return long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * (m.Groups[2].Value == "bf16" ? 2 : 1);
        }
        string bf16 = AssertPrinted(BenchServe(2, 8, 3, 0, "--threads", "1", "--kv-cache-dtype", "bfloat16"), "of bf16 K/V", "6 tokens in");
        string f32 = AssertPrinted(BenchServe(2, 8, 3, 0, "--threads", "1"), "of f32 K/V", "6 tokens in");
        Assert.Equal(BlockBytes(f32), BlockBytes(bf16)); // bf16's bytes doubled: the f32 block's
        var bad = BenchServe(1, 4, 1, 0, "--kv-cache-dtype", "half");
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("temper: --kv-cache-dtype must be auto, bfloat16 or float32, not 'half'", bad.Stderr.Trim());
    }

    [Fact]
    public void Bench_serve_with_an_adapter_larger_than_the_host_tier_is_one_line_and_exit_2()
    {
        var r = BenchServe(1, 4, 1, 1, "--threads", "1", "--host-blocks", "2");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("temper: adapter 'ad0' takes ", r.Stderr.Trim());
        Assert.EndsWith("more than the whole host tier (2 blocks)", r.Stderr.Trim());
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void Bench_serve_samples_at_a_temperature_beside_speculation()
    {
        AssertPrinted(BenchServe(3, 8, 5, 0, "--threads", "1", "--temperature", "0.8", "--speculative", "ngram", "--ngram-min", "1"),
            "sampled at temperature 0.8", "base+ngram   15 tokens in", "ngram speculation (K 4, n-grams 1..4):");
        var zero = BenchServe(1, 4, 1, 0, "--temperature", "0");
        Assert.Equal(2, zero.ExitCode);
        Assert.Equal("temper: --temperature must be > 0 (got 0); leave it out for greedy requests", zero.Stderr.Trim());
    }

    [Fact]
    public void Bench_serve_sweep_measures_every_point_and_writes_the_chart()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"temper-sweep-test-{Guid.NewGuid():N}");
        try
        {
            var r = TemperCli.Run("bench", "serve-sweep", "--model", Model, "--concurrency", "2,1", "--adapters", "2", "--prompt-len", "6", "--tokens", "3",
                "--threads", "1", "--out", dir);
            AssertPrinted(r, "concurrency    1, merged (base model)", "concurrency    1, 2 adapters", "concurrency    2, merged (base model)", "concurrency    2, 2 adapters");
            var points = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "serve-sweep.json")))!.AsArray();
            Assert.Equal(4, points.Count);
            Assert.All(points, q => Assert.True(q!["TokensPerSecond"]!.GetValue<double>() > 0));
            string html = File.ReadAllText(Path.Combine(dir, "serve-sweep.html"));
            Assert.Contains("<svg", html);
            Assert.Equal(2, html.Split("<polyline").Length - 1); // one line per series: merged, 2 adapters
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Bench_serve_sweep_refuses_a_bad_count_in_one_line()
    {
        var r = TemperCli.Run("bench", "serve-sweep", "--model", Model, "--concurrency", "1,0");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: --concurrency: '0' is not a count >= 1", r.Stderr.Trim());
    }
}
