// The tensor-core matrix products (GemmTensorCore: TF32 mma.sync, CUDA only) against the CPU reference:
// Linear forward with bias and accumulation and its input gradient, with bf16 and NF4 weights, at shapes
// that end in partial tiles and partial 32-deep slices. TF32 keeps 10 mantissa bits of the f32
// activations, so the bound is a normalised MSE of 1e-6 (f32 kernels: 1e-10); each result must also
// differ from the exact kernel's somewhere, which shows the tensor-core path really ran.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public sealed class TensorCoreChecks(CudaFixture device) : DeviceOpChecks(device), IClassFixture<CudaFixture>
{
    private const double Tf32Nmse = 1e-6;

    /// <summary>The backend as this test left it (DeviceOpChecks' B would turn tensor cores off).</summary>
    protected override IlgpuBackend B => Device.Backend;

    private IlgpuBackend WithTensorCores(bool on)
    {
        var b = Device.Backend;
        b.TensorCores = on;
        Assert.Equal(on, b.TensorCores);
        return b;
    }

    private static bool DiffersSomewhere(float[] a, float[] b) => a.Where((v, i) => BitConverter.SingleToInt32Bits(v) != BitConverter.SingleToInt32Bits(b[i])).Any();

    [Theory]
    [InlineData(70, 75, 130)]
    [InlineData(1, 64, 64)]
    public void Bf16_linear_forward_and_input_gradient_on_tensor_cores(int n, int k, int m)
    {
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var hw = HostBf16(ToBf16(w, out w), m, k);
        var bias = Floats(m, 3);
        var y0 = Floats(n * m, 4);
        var dy = Floats(n * m, 5);
        var expected = (float[])y0.Clone();
        LinearReference.Forward(x, w, bias, expected, n, k, m, accumulate: true);
        var dxExpected = new float[n * k];
        LinearReference.Backward(dy, x, w, dxExpected, null, null, n, k, m, accumulateDx: false);

        float[] Run(bool tensorCores, out float[] dx)
        {
            var b = WithTensorCores(tensorCores);
            var y = Up(y0, n, m);
            var wd = Own(b.FromHost(hw));
            b.Linear(Up(x, n, k), wd, Up(bias, m), y, accumulate: true);
            var tdx = Zeros(n, k);
            b.LinearBackward(Up(dy, n, m), Up(x, n, k), wd, tdx, null, null);
            dx = Down(tdx);
            return Down(y);
        }
        var yTc = Run(true, out var dxTc);
        var yExact = Run(false, out var dxExact);
        Close(yTc, expected, $"tensor-core linear {n}x{k}x{m}", Tf32Nmse);
        Close(dxTc, dxExpected, $"tensor-core linear dx {n}x{k}x{m}", Tf32Nmse);
        Close(yExact, expected, "exact linear");
        Assert.True(DiffersSomewhere(yTc, yExact) && DiffersSomewhere(dxTc, dxExact), "the tensor-core results equal the exact kernel's bit for bit: did the tensor-core path run?");
    }

    [Fact]
    public void Nf4_linear_on_tensor_cores()
    {
        const int n = 33, k = 100, m = 70;
        using var host = Nf4Weight.Quantize(Floats(m * k, 6, 0.05f), new Shape(m, k), "w");
        var absmax = host.BlockAbsmax();
        var packed = host.Codes.Bytes.ToArray();
        var x = Floats(n * k, 7);
        var expected = new float[n * m];
        Nf4Reference.Forward(x, packed, absmax, null, expected, n, k, m, accumulate: false);
        var b = WithTensorCores(true);
        var wd = Own(host.To(b));
        var y = Zeros(n, m);
        b.Nf4Linear(Up(x, n, k), wd, null, y);
        Close(Down(y), expected, "tensor-core nf4 linear", Tf32Nmse);
    }
}
