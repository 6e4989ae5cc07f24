// Temper's kernel benchmarks (BenchmarkDotNet). Run a subset with a filter, e.g.
//   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE dotnet run -c Release --project bench/Temper.Bench -- --filter '*Gemm*' --job short
// (bench/README.md says why those two variables are unset and how to install the OpenBLAS peer).
using BenchmarkDotNet.Running;
using Temper.Bench;

Console.WriteLine($"cpu: {CpuInfo.ModelName()}, {Environment.ProcessorCount} logical processors");
Console.WriteLine($"peer: {OpenBlas.Describe()}");
BenchmarkSwitcher.FromAssembly(typeof(OpenBlas).Assembly).Run(args);
