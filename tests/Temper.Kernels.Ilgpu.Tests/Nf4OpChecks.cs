// The ILGPU op-check suite, NF4 part: the fused NF4 linear (forward with bias and accumulation, input
// gradient) and whole-matrix dequantisation on the device, against the CPU backend and the scalar
// reference (Temper.Kernels.Cpu.Reference.Nf4Reference), on tiny shapes whose weights end in a partial
// 64-block and an odd nibble; dequantisation also over more than one 256-block of absmax scales. Results must be this backend's device memory.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class Nf4OpChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    [Fact]
    public void Nf4Linear_Forward_And_InputGradient_MatchReference()
    {
        const int n = 3, k = 13, m = 11; // 143 weights: a partial last block and an odd nibble
        var host = Nf4Weight.Quantize(Floats(m * k, 1, 0.05f), new Shape(m, k), "w");
        var absmax = host.BlockAbsmax();
        var packed = host.Codes.Bytes.ToArray();
        var w = Own(host.To(B));
        Assert.Same(B, w.Codes.Storage.Device);
        var x = Floats(n * k, 2);
        var bias = Floats(m, 3);
        var start = Floats(n * m, 4);

        var expected = (float[])start.Clone();
        Nf4Reference.Forward(x, packed, absmax, bias, expected, n, k, m, accumulate: true);
        var y = Up(start, n, m);
        B.Nf4Linear(Up(x, n, k), w, Up(bias, m), y, accumulate: true);
        Close(Down(y), expected, "nf4 linear (bias, accumulate)");
        using var yCpu = Host(start, n, m);
        Cpu.Nf4Linear(Host(x, n, k), host, Host(bias, m), yCpu, accumulate: true);
        Close(Down(y), yCpu.Floats, "nf4 linear vs cpu");

        var dy = Floats(n * m, 5);
        var dxExpected = new float[n * k];
        Nf4Reference.Backward(dy, packed, absmax, dxExpected, n, k, m, accumulateDx: false);
        var dx = Own(B.Zeros(new Shape(n, k)));
        B.Nf4LinearBackward(Up(dy, n, m), w, dx);
        Close(Down(dx), dxExpected, "nf4 linear backward");

        var output = Own(B.Zeros(new Shape(m, k)));
        B.Nf4Dequantize(w, output);
        Bitwise(Down(output), Nf4Reference.Dequantize(packed, absmax, m * k), "nf4 dequantize");
    }

    [Fact]
    public void Nf4Dequantize_SpanningScaleBlocks_MatchesReferenceBitwise()
    {
        const int m = 129, k = 131; // 16899 weights: 265 blocks (two absmax scale blocks), a partial last 256-element tile, block and byte
        using var host = Nf4Weight.Quantize(Floats(m * k, 6, 0.05f), new Shape(m, k), "w");
        var w = Own(host.To(B));
        var output = Own(B.Zeros(new Shape(m, k)));
        B.Nf4Dequantize(w, output);
        var expected = Nf4Reference.Dequantize(host.Codes.Bytes.ToArray(), host.BlockAbsmax(), m * k);
        // CUDA's compiler contracts the absmax decode's multiply and add into one FMA (one rounding, not
        // two: nearer the exact value), so an absmax may differ from the reference's by an ulp and a value,
        // after its own rounding, by up to two. Elsewhere bitwise.
        if (Device.Kind == "cuda") WithinUlps(Down(output), expected, 2, "nf4 dequantize");
        else Bitwise(Down(output), expected, "nf4 dequantize");
    }
}

public sealed class CpuAcceleratorNf4OpChecks(CpuAcceleratorFixture device) : Nf4OpChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaNf4OpChecks(CudaFixture device) : Nf4OpChecks(device), IClassFixture<CudaFixture>;
