// `temper bench decode --graph [--rows N] [--profile]`: batch-1 (or N rows in lockstep) greedy decoding
// through CudaDecodeGraph (Temper's CUDA kernels, each step one captured CUDA graph, no ILGPU) on CUDA
// device 0, with bf16 weights (a --model folder's converted at load, or the random --shape). Prints prefill
// (CudaDecodeGraph.Prefill: chunks through the GEMM and flash-attention kernels) and decode tokens/s, the kernels a step holds, the weight bytes a token reads and the effective weight
// bandwidth, and holds it against the device's peak DRAM bandwidth (memory clock x bus width, the roofline)
// and, as the peer in the same run, a device-to-device copy's bandwidth (bytes read + written per second).
// --profile adds each part of a step's GPU time (CudaDecodeGraph.Profile). TEMPER_DECODE_PDL=1 launches each kernel of a
// step to overlap the one before (CudaDecodeGraph.DependentLaunch; compute capability 9.0).
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cuda;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class BenchDecodeGraph
{
    public static int Run(ParseResult p, Option<string?> model, string shape, int promptLen, int tokens, int threads, bool profile, int rows)
    {
        if (rows < 1 || rows > CudaGemv.MaxRows) throw new TemperException($"--rows must be 1 to {CudaGemv.MaxRows}, not {rows}");
        var (decoder, lm, what) = BenchCommand.ModelOrRandom(p, model, new CpuBackend(threads), shape, DType.BF16);
        using var owned = lm;
        var cfg = decoder.Config;
        using var device = CliOptions.OpenCudaDevice("--graph decodes");
        using var graph = GraphDecoding.Build(device, cfg, decoder.Weights, rows, capacity: promptLen + tokens + 1);
        var rng = new Random(7);
        int[][] prompts = [.. Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, promptLen).Select(_ => rng.Next(cfg.VocabSize)).ToArray())];
        graph.Generate(prompts, maxNew: 2); // warm-up: module loads, the capture, page-in
        graph.Start(prompts);
        graph.Prefill();                    // and the prefill's modules (their PTX JIT-compiled)

        graph.Start(prompts);
        var sw = Stopwatch.StartNew();
        graph.Prefill();
        graph.Wait();
        double prefill = sw.Elapsed.TotalSeconds;
        graph.Step(promptLen - 1 - graph.Position);
        sw.Restart();
        graph.Step(tokens);
        graph.Wait();
        double decode = Math.Max(1e-9, sw.Elapsed.TotalSeconds);

        double perSecond = tokens / decode; // steps (tokens of each row) per second
        long weightBytes = graph.WeightBytesPerStep;
        double effective = weightBytes * perSecond;
        double peak = PeakBandwidth(device);
        double copy = CopyBandwidth(device, Math.Min(weightBytes, 1L << 30));
        Console.WriteLine($"model: {what}");
        Console.WriteLine($"backend: CUDA graph decode on {device.Name}{(device.IsEmulated ? " (times are the CPU's)" : "")}, {graph.StepNodes} kernels a step, "
            + (graph.DependentLaunch ? "each overlapping the one before (programmatic dependent launch)" : $"each after the one before ({CudaDecodeGraph.DependentLaunchVariable}=1 overlaps them on compute capability 9.0)"));
        Console.WriteLine($"prefill: {rows} x {promptLen - 1} of the {promptLen} prompt tokens in {prefill * 1000:F1} ms = {rows * (promptLen - 1) / Math.Max(1e-9, prefill):F1} tokens/s (chunks of {CudaDecodeGraph.PrefillChunk} through the GEMM and flash-attention kernels; the last token feeds the first decode step)");
        Console.WriteLine(rows == 1
            ? $"decode: {tokens} tokens in {decode * 1000:F1} ms = {perSecond:F2} tokens/s (batch 1), {decode * 1000 / tokens:F3} ms/token"
            : $"decode: {rows} x {tokens} tokens in {decode * 1000:F1} ms = {rows * perSecond:F2} tokens/s ({rows} rows in lockstep), {decode * 1000 / tokens:F3} ms/step");
        Console.WriteLine($"weights read per step: {weightBytes / 1e6:F1} MB; effective weight bandwidth {effective / 1e9:F1} GB/s");
        Console.WriteLine(peak > 0
            ? $"roofline: peak DRAM bandwidth {peak / 1e9:F0} GB/s (memory clock x bus width): {100 * effective / peak:F1}% of it"
            : "roofline: the driver reports no memory clock (see nvidia-smi's clocks.max.mem); hold the bandwidth against the copy below");
        Console.WriteLine($"peer: device-to-device copy {copy / 1e9:F0} GB/s (read + written): weight reads at {100 * effective / copy:F1}% of it");
        if (profile) PrintProfile(graph, prompts, tokens);
        return 0;
    }

    // --profile: the GPU time of each part of a step over the same decode, from a graph with an event after each part.
    private static void PrintProfile(CudaDecodeGraph graph, int[][] prompts, int tokens)
    {
        graph.Start(prompts);
        graph.Prefill();
        int steps = Math.Min(tokens, 64);
        IReadOnlyList<(string Part, int Calls, double Ms)> parts;
        try
        {
            parts = graph.Profile(steps);
        }
        catch (CudaException e)
        {
            Console.WriteLine($"step profile: not available here ({e.Message})");
            return;
        }
        double total = parts.Sum(x => x.Ms);
        Console.WriteLine($"step profile ({steps} decode steps of a graph with an event after each part; GPU time, no launch overhead):");
        Console.WriteLine("| part | calls/step | ms/step | share of step |");
        Console.WriteLine("| --- | ---: | ---: | ---: |");
        foreach (var (part, calls, ms) in parts.OrderByDescending(x => x.Ms))
            Console.WriteLine($"| {part} | {calls} | {ms:F4} | {100 * ms / Math.Max(1e-12, total):F1}% |");
        Console.WriteLine($"| total | {parts.Sum(x => x.Calls)} | {total:F4} | 100% |");
    }

    // Bytes per second the DRAM interface moves at its peak: memory clock (kHz) x 2 (double data rate) x bus width (bits) / 8;
    // 0 where the driver does not report them (the attributes are deprecated in recent CUDA releases).
    private static double PeakBandwidth(CudaDevice device)
    {
        try
        {
            return 2.0 * device.Attribute(CudaDeviceAttribute.MemoryClockRate) * 1000.0 * device.Attribute(CudaDeviceAttribute.GlobalMemoryBusWidth) / 8.0;
        }
        catch (CudaException)
        {
            return 0;
        }
    }

    // A device-to-device copy of `bytes`, 5 after a warm-up (DeviceTiming): bytes read + written per second.
    private static double CopyBandwidth(CudaDevice device, long bytes)
    {
        using var a = device.Allocate<byte>(bytes);
        using var b = device.Allocate<byte>(bytes);
        double seconds = DeviceTiming.Seconds(device, 5, _ => CudaDriver.CopyDeviceToDeviceAsync(b.Pointer, a.Pointer, bytes, device.Stream));
        return 2.0 * bytes / Math.Max(1e-9, seconds);
    }
}
