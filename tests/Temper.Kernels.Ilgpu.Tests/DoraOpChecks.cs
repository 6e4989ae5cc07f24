// The DoRA ops on ILGPU (DoraNorm over f32 and bf16 weights, rows shorter and longer than a group, DoraScale with and without bias and in place,
// DoraMagnitudeBackward) against the CPU backend and the f64 references, at tiny shapes (a launch on the
// CPU accelerator is not free). Instantiated per device like IlgpuOpChecks.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class DoraOpChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    [Theory]
    [InlineData(5, 13, 3, false)]
    [InlineData(4, 20, 2, true)]
    [InlineData(3, 300, 2, false)] // rows longer than a group: its threads stride them
    public void DoraNorm_matches_cpu_and_reference(int m, int k, int r, bool bf16)
    {
        var w = Floats(m * k, 1);
        var hw = bf16 ? HostBf16(Check.ToBf16(w, out w), m, k) : Host(w, m, k);
        var a = Floats(r * k, 2);
        var b = Floats(m * r, 3);
        var expected = new float[m];
        DoraNormReference.Compute(w, a, b, 1.5f, expected, m, k, r);
        var cpu = Tensor.Zeros(new Shape(m));
        Cpu.DoraNorm(hw, Host(a, r, k), Host(b, m, r), 1.5f, cpu);
        var norm = Zeros(m);
        B.DoraNorm(Own(B.FromHost(hw)), Up(a, r, k), Up(b, m, r), 1.5f, norm);
        Close(Down(norm), expected, "dora norm vs reference");
        Close(Down(norm), cpu.Floats, "dora norm vs cpu");
    }

    [Theory]
    [InlineData(3, 7, true)]
    [InlineData(5, 4, false)]
    public void DoraScale_and_MagnitudeBackward_match_reference(int n, int m, bool bias)
    {
        var z = Floats(n * m, 1);
        var mag = Floats(m, 2).Select(v => 1 + 0.5f * v).ToArray();
        var norm = Floats(m, 3).Select(v => 0.5f + Math.Abs(v)).ToArray();
        var b = bias ? Floats(m, 4) : null;
        var expected = new float[n * m];
        DoraScaleReference.Forward(z, mag, norm, b, expected, n, m);
        var y = Zeros(n, m);
        B.DoraScale(Up(z, n, m), Up(mag, m), Up(norm, m), b == null ? null : Up(b, m), y);
        Close(Down(y), expected, "dora scale");
        var inPlace = Up(z, n, m);
        B.DoraScale(inPlace, Up(mag, m), Up(norm, m), b == null ? null : Up(b, m), inPlace);
        Close(Down(inPlace), expected, "dora scale in place");

        var dy = Floats(n * m, 5);
        var dm = Floats(m, 6);
        var tdm = Up(dm, m);
        DoraScaleReference.MagnitudeBackward(dy, z, norm, dm, n, m);
        B.DoraMagnitudeBackward(Up(dy, n, m), Up(z, n, m), Up(norm, m), tdm);
        Close(Down(tdm), dm, "dora dm");
    }
}

public sealed class CpuAcceleratorDoraOpChecks(CpuAcceleratorFixture device) : DoraOpChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaDoraOpChecks(CudaFixture device) : DoraOpChecks(device), IClassFixture<CudaFixture>;
