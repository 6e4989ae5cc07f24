// The FMA ceiling of one core: 12 independent AVX-512 (or AVX2) FMA chains with no memory traffic.
// GEMM GFLOP/s read against 2 x this figure (2 cores) says how close a kernel is to the machine's peak.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace Temper.Bench;

[Config(typeof(Config))]
public class FmaPeakBenchmarks
{
    private const long Iterations = 10_000_000;

    private sealed class Config : ManualConfig
    {
        public Config() => AddColumn(new ThroughputColumn("GFLOP/s", _ => Iterations * 12 * 2.0 * (Vector512.IsHardwareAccelerated ? 16 : 8)));
    }

    [Benchmark(Description = "FMA peak, one core")]
    public float Peak() => Vector512.IsHardwareAccelerated ? Peak512() : Peak256();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float Peak512()
    {
        Vector512<float> a = Vector512.Create(1.0000001f), b = Vector512.Create(0.9999999f);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (long i = 0; i < Iterations; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(a, b, c0); c1 = Vector512.FusedMultiplyAdd(a, b, c1); c2 = Vector512.FusedMultiplyAdd(a, b, c2);
            c3 = Vector512.FusedMultiplyAdd(a, b, c3); c4 = Vector512.FusedMultiplyAdd(a, b, c4); c5 = Vector512.FusedMultiplyAdd(a, b, c5);
            c6 = Vector512.FusedMultiplyAdd(a, b, c6); c7 = Vector512.FusedMultiplyAdd(a, b, c7); c8 = Vector512.FusedMultiplyAdd(a, b, c8);
            c9 = Vector512.FusedMultiplyAdd(a, b, c9); c10 = Vector512.FusedMultiplyAdd(a, b, c10); c11 = Vector512.FusedMultiplyAdd(a, b, c11);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float Peak256()
    {
        Vector256<float> a = Vector256.Create(1.0000001f), b = Vector256.Create(0.9999999f);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default,
            c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default;
        for (long i = 0; i < Iterations; i++)
        {
            c0 = Vector256.FusedMultiplyAdd(a, b, c0); c1 = Vector256.FusedMultiplyAdd(a, b, c1); c2 = Vector256.FusedMultiplyAdd(a, b, c2);
            c3 = Vector256.FusedMultiplyAdd(a, b, c3); c4 = Vector256.FusedMultiplyAdd(a, b, c4); c5 = Vector256.FusedMultiplyAdd(a, b, c5);
            c6 = Vector256.FusedMultiplyAdd(a, b, c6); c7 = Vector256.FusedMultiplyAdd(a, b, c7); c8 = Vector256.FusedMultiplyAdd(a, b, c8);
            c9 = Vector256.FusedMultiplyAdd(a, b, c9); c10 = Vector256.FusedMultiplyAdd(a, b, c10); c11 = Vector256.FusedMultiplyAdd(a, b, c11);
        }
        return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
    }
}
