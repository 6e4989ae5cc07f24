// `temper bench decode --graph`: batch-1 greedy decoding through CudaDecodeGraph (Temper's CUDA kernels,
// each step one captured CUDA graph, no ILGPU) on CUDA device 0, with bf16 weights (a --model folder's
// converted at load, or the random --shape). Prints prefill (fed through the graph one token a step) and
// decode tokens/s, the kernels a step holds, the weight bytes a token reads and the effective weight
// bandwidth, and holds it against the device's peak DRAM bandwidth (memory clock x bus width, the roofline)
// and, as the peer in the same run, a device-to-device copy's bandwidth (bytes read + written per second).
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class BenchDecodeGraph
{
    public static int Run(ParseResult p, Option<string?> model, string shape, int promptLen, int tokens, int threads)
    {
        var cpu = new CpuBackend(threads);
        ModelConfig cfg;
        ModelWeights weights;
        LanguageModel? lm = null;
        string what;
        if (p.GetValue(model) is string dir)
        {
            lm = LanguageModel.Load(dir, cpu, weightDType: DType.BF16);
            (cfg, weights, what) = (lm.Config, lm.Decoder.Weights, dir);
        }
        else
        {
            cfg = BenchQLoraCommands.Shape(shape);
            weights = ModelWeights.Random(cfg, cpu, seed: 1, DType.BF16, parallel: true);
            what = $"random {shape}-shaped model (bf16 weights)";
        }
        using var ownedModel = lm;
        using var ownedWeights = lm == null ? weights : null;
        using var device = CliOptions.OpenCudaDevice("--graph");
        using var graph = GraphDecoding.Build(device, cfg, weights, rows: 1, capacity: promptLen + tokens + 1);
        var rng = new Random(7);
        int[] prompt = [.. Enumerable.Range(0, promptLen).Select(_ => rng.Next(cfg.VocabSize))];
        graph.Generate([prompt], maxNew: 2); // warm-up: module loads, the capture, page-in

        graph.Start([prompt]);
        var sw = Stopwatch.StartNew();
        graph.Step(promptLen - 1);
        graph.Wait();
        double prefill = sw.Elapsed.TotalSeconds;
        sw.Restart();
        graph.Step(tokens);
        graph.Wait();
        double decode = Math.Max(1e-9, sw.Elapsed.TotalSeconds);

        double perSecond = tokens / decode;
        long weightBytes = graph.WeightBytesPerStep;
        double effective = weightBytes * perSecond;
        double peak = PeakBandwidth(device);
        double copy = CopyBandwidth(device, Math.Min(weightBytes, 1L << 30));
        Console.WriteLine($"model: {what}");
        Console.WriteLine($"backend: CUDA graph decode on {device.Name}{(device.IsEmulated ? " (times are the CPU's)" : "")}, {graph.StepNodes} kernels a step");
        Console.WriteLine($"prefill: {promptLen - 1} of the {promptLen} prompt tokens in {prefill * 1000:F1} ms = {(promptLen - 1) / Math.Max(1e-9, prefill):F1} tokens/s (one a step; the last feeds the first decode step)");
        Console.WriteLine($"decode: {tokens} tokens in {decode * 1000:F1} ms = {perSecond:F2} tokens/s (batch 1), {decode * 1000 / tokens:F3} ms/token");
        Console.WriteLine($"weights read per token: {weightBytes / 1e6:F1} MB; effective weight bandwidth {effective / 1e9:F1} GB/s");
        Console.WriteLine($"roofline: peak DRAM bandwidth {peak / 1e9:F0} GB/s (memory clock x bus width): {100 * effective / peak:F1}% of it");
        Console.WriteLine($"peer: device-to-device copy {copy / 1e9:F0} GB/s (read + written): weight reads at {100 * effective / copy:F1}% of it");
        return 0;
    }

    // Bytes per second the DRAM interface moves at its peak: memory clock (kHz) x 2 (double data rate) x bus width (bits) / 8.
    private static double PeakBandwidth(CudaDevice device) =>
        2.0 * device.Attribute(CudaDeviceAttribute.MemoryClockRate) * 1000.0 * device.Attribute(CudaDeviceAttribute.GlobalMemoryBusWidth) / 8.0;

    // A device-to-device copy of `bytes`, best of 5 after a warm-up, timed with events: bytes read + written per second.
    private static double CopyBandwidth(CudaDevice device, long bytes)
    {
        using var a = device.Allocate<byte>(bytes);
        using var b = device.Allocate<byte>(bytes);
        using var start = device.CreateEvent();
        using var end = device.CreateEvent();
        CudaDriver.CopyDeviceToDeviceAsync(b.Pointer, a.Pointer, bytes, device.Stream);
        double best = double.MaxValue;
        for (int i = 0; i < 5; i++)
        {
            device.Record(start);
            CudaDriver.CopyDeviceToDeviceAsync(b.Pointer, a.Pointer, bytes, device.Stream);
            device.Record(end);
            device.Synchronize();
            best = Math.Min(best, CudaDriver.ElapsedMilliseconds(start, end) / 1000.0);
        }
        return 2.0 * bytes / Math.Max(1e-9, best);
    }
}
