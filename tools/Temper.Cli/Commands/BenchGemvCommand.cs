// `temper bench gemv [--shape llama-3.2-1b,llama-3.1-8b] [--rows 1] [--reps 50]`: the decode step's bf16
// matrix-vector products alone on a CUDA GPU (CudaGemv, cuda/gemv_bf16.cu) at a model's shapes, C the hidden
// size, F the MLP size, V the vocabulary:
//   qkv  [(H + 2 Hkv) D, C] with the input RMSNorm folded in     o    [C, H D] added to the residual in place
//   gate+up 2 x [F, C] SwiGLU with the post-attention RMSNorm     down [C, F] added to the residual in place
//   lm head [V, C] with the final RMSNorm and the argmax slot
// Each is launched once (warm-up), then --reps times between two events; GB/s = weight bytes / time. The peer,
// in the same run: a device-to-device copy (cuMemcpyDtoDAsync) of the same bytes, whose GB/s counts the bytes
// read and written. Weights are rotated over copies totalling >= 256 MB (the copy reads one and writes the
// next), so neither side is served from L2 (50 MB on an H100), as no decode step is. The summary line adds
// one token's products: layers x (qkv + o + gate/up + down) + lm head, and the tokens/s that bounds.
// Needs a CUDA GPU: without one (or on the CUDA emulator) it is one line and exit 2.
using System.CommandLine;
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class BenchGemvCommand
{
    private const long RingBytes = 256L << 20;

    private enum Kind { Normed, Residual, SwiGlu, Head }

    private sealed record Product(string Name, int N, int K, Kind Kind)
    {
        public long WeightBytes => 2L * N * K * (Kind == Kind.SwiGlu ? 2 : 1);
    }

    private static Product[] Products(ModelConfig c) =>
    [
        new("qkv +norm", (c.NumHeads + 2 * c.NumKvHeads) * c.HeadDim, c.HiddenSize, Kind.Normed),
        new("o +residual", c.HiddenSize, c.NumHeads * c.HeadDim, Kind.Residual),
        new("gate+up swiglu +norm", c.IntermediateSize, c.HiddenSize, Kind.SwiGlu),
        new("down +residual", c.HiddenSize, c.IntermediateSize, Kind.Residual),
        new("lm head +norm +argmax", c.VocabSize, c.HiddenSize, Kind.Head),
    ];

    public static Command Create()
    {
        var shapes = new Option<string>("--shape") { Description = "Model shapes, comma-separated: smollm-135m, llama-3.2-1b, llama-3.1-8b", DefaultValueFactory = _ => "llama-3.2-1b,llama-3.1-8b" };
        var rows = new Option<int>("--rows") { Description = $"Activation rows (sequences decoded together), 1 to {CudaGemv.MaxRows}", DefaultValueFactory = _ => 1 };
        var reps = new Option<int>("--reps") { Description = "Timed launches of each product (after one warm-up)", DefaultValueFactory = _ => 50 };
        var cmd = new Command("gemv", "Decode's bf16 matrix-vector products (CudaGemv) on a CUDA GPU: GB/s of weights read, beside a device copy of the same bytes") { shapes, rows, reps };
        cmd.SetGuardedAction(p =>
        {
            int m = p.GetValue(rows), n = p.GetValue(reps);
            if (m < 1 || m > CudaGemv.MaxRows) throw new TemperException($"bench gemv: --rows must be 1 to {CudaGemv.MaxRows}, not {m}");
            if (n < 1) throw new TemperException($"bench gemv: --reps must be >= 1, not {n}");
            var models = p.GetValue(shapes)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => (Name: s, Config: BenchQLoraCommands.Shape(s))).ToArray();
            using var device = CudaDevice.Open();
            if (device.IsEmulated) throw new TemperException($"bench gemv: the CUDA emulator ({CudaLibrary.OverrideVariable}) runs kernels on the CPU; time them on a GPU");
            using var gemv = new CudaGemv(device);
            Console.WriteLine($"device: {device.Name}, {device.MultiprocessorCount} SMs; rows {m}, {n} reps; weights rotated over >= {RingBytes >> 20} MB");
            foreach (var (name, config) in models)
            {
                double tokenSeconds = 0, tokenBytes = 0;
                foreach (var product in Products(config))
                {
                    var (gemvSeconds, copySeconds) = Time(device, gemv, product, m, n);
                    double bytes = product.WeightBytes, gb = bytes / gemvSeconds / 1e9, copyGb = 2 * bytes / copySeconds / 1e9;
                    string dims = $"[{product.N},{product.K}]{(product.Kind == Kind.SwiGlu ? " x2" : "")}";
                    Console.WriteLine($"{name} {product.Name,-22} {dims,-17} {bytes / 1e6,8:F1} MB {gemvSeconds * 1e3,8:F4} ms {gb,6:F0} GB/s; copy {copyGb,5:F0} GB/s (read + write): {gb / copyGb * 100,3:F0}%");
                    int times = product.Kind == Kind.Head ? 1 : config.NumLayers;
                    tokenSeconds += times * gemvSeconds;
                    tokenBytes += times * bytes;
                }
                Console.WriteLine($"{name} one token's products: {tokenBytes / 1e9:F2} GB in {tokenSeconds * 1e3:F3} ms = {tokenBytes / tokenSeconds / 1e9:F0} GB/s; {1 / tokenSeconds:F0} tokens/s bound (rows {m})");
            }
            return 0;
        });
        return cmd;
    }

    // Seconds per launch of the product and of the copy of its weight bytes, over a ring of weight copies.
    private static (double Gemv, double Copy) Time(CudaDevice device, CudaGemv gemv, Product p, int rows, int reps)
    {
        int copies = (int)Math.Max(2, (RingBytes + p.WeightBytes - 1) / p.WeightBytes);
        var owned = new List<CudaDeviceMemory>();
        CudaDeviceMemory Own(CudaDeviceMemory d)
        {
            owned.Add(d);
            return d;
        }
        try
        {
            var ring = new CudaDeviceMemory[copies];
            for (int i = 0; i < copies; i++)
            {
                ring[i] = Own(device.Allocate<ushort>(p.WeightBytes / 2));
                CudaDriver.SetBytesAsync(ring[i].Pointer, 0x3C, p.WeightBytes, device.Stream); // bf16 0x3C3C, about 0.0115
            }
            var rng = new Random(3);
            float[] Floats(int count) => [.. Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() * 2 - 1))];
            var x = Own(device.Upload<float>(Floats(rows * p.K)));
            var g = Own(device.Upload<float>(Floats(p.K)));
            var y = Own(device.Upload<float>(Floats(rows * p.N)));
            var slots = Own(device.Upload<ulong>(new ulong[rows]));
            void Launch(int i)
            {
                var w = ring[i % copies];
                switch (p.Kind)
                {
                    case Kind.Normed: gemv.Forward(w, x, y, rows, p.N, p.K, g, 1e-5f); break;
                    case Kind.Residual: gemv.Forward(w, x, y, rows, p.N, p.K, residual: y); break;
                    case Kind.Head: gemv.Forward(w, x, y, rows, p.N, p.K, g, 1e-5f, argmax: slots); break;
                    default:
                        var up = CudaDeviceMemory.Borrow(w.Pointer + (ulong)(p.WeightBytes / 2), p.WeightBytes / 2, device.Context);
                        gemv.SwiGlu(w, up, x, y, rows, p.N, p.K, g, 1e-5f);
                        break;
                }
            }
            void Copy(int i) => CudaDriver.CopyDeviceToDeviceAsync(ring[(i + 1) % copies].Pointer, ring[i % copies].Pointer, p.WeightBytes, device.Stream);
            return (DeviceTiming.Seconds(device, reps, Launch), DeviceTiming.Seconds(device, reps, Copy));
        }
        finally
        {
            device.Synchronize();
            foreach (var d in owned) d.Dispose();
        }
    }
}
