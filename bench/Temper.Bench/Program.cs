// Temper's kernel benchmarks (BenchmarkDotNet). Run a subset with a filter, e.g.
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE dotnet run -c Release --project bench/Temper.Bench -- --filter '*Gemm*' --job short
// (bench/README.md says why those two variables are unset and how to install the OpenBLAS peer).
// `-- --gemm-best-of [seconds]` runs the quick best-of GEMM comparison instead (GemmBestOf.cs);
// `-- --train-step [steps] [--profile]` the end-to-end CPU LoRA training step (TrainStep.cs), with a
// per-op time table when --profile is given (engine/Temper.Training/Diagnostics/ProfilingBackend.cs).
using BenchmarkDotNet.Running;
using Temper.Bench;

Console.WriteLine($"cpu: {CpuInfo.ModelName()}, {Environment.ProcessorCount} logical processors");
Console.WriteLine($"peer: {OpenBlas.Describe()}");
if (args.Length > 0 && args[0] == "--gemm-best-of")
{
    GemmBestOf.Run(args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 3);
    return;
}
if (args.Length > 0 && args[0] == "--train-step")
{
    var rest = args.Skip(1).ToArray();
    bool profile = rest.Contains("--profile"), bf16 = rest.Contains("--bf16");
    var steps = rest.Where(a => a is not ("--profile" or "--bf16")).ToArray();
    TrainStep.Run(steps.Length > 0 ? int.Parse(steps[0], System.Globalization.CultureInfo.InvariantCulture) : 3, profile, bf16);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(OpenBlas).Assembly).Run(args);
