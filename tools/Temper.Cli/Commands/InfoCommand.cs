// `temper info`: the backends and devices present, SIMD width and thread count.
using System.CommandLine;
using System.Numerics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Temper.Cli.Commands;

internal static class InfoCommand
{
    public static Command Create()
    {
        var cmd = new Command("info", "Show backends, devices, SIMD width and threads");
        cmd.SetGuardedAction(_ =>
        {
            Console.WriteLine($"temper {typeof(InfoCommand).Assembly.GetName().Version}");
            var ilgpu = Temper.Kernels.Ilgpu.IlgpuBackend.Kinds.Where(Temper.Kernels.Ilgpu.IlgpuBackend.IsAvailable).ToList();
            Console.WriteLine($"backends: cpu{string.Concat(ilgpu.Select(k => ", " + k))}");
            Console.WriteLine($"devices: cpu0 ({Environment.ProcessorCount} logical cores, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture})");
            string isa = Vector512.IsHardwareAccelerated ? "AVX-512" : Avx2.IsSupported ? "AVX2" : Vector128.IsHardwareAccelerated ? "128-bit" : "scalar";
            Console.WriteLine($"simd: {isa}, Vector<float> = {Vector<float>.Count} lanes, FMA {(Fma.IsSupported ? "yes" : "no")}");
            Console.WriteLine($"threads: {Environment.ProcessorCount}");
            Console.WriteLine($"runtime: {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}");
            return 0;
        });
        return cmd;
    }
}
