// CudaSwiGlu (cuda/swiglu.cu) against SwiGLU evaluated here in f64: y from the forward, dGate and dUp from
// the backward, for an element count that is not a multiple of 4 (the single-float tail), several blocks,
// gate values large enough to saturate the sigmoid both ways, and outputs one float off 16-byte alignment
// (the single-float path). Outputs are poisoned with NaN first, each with a guard element past its end.
// The bf16 forms: ForwardRounded's kept gate and up must be BFloat16.FromSingle's bits (NaN and ties included) and its y
// the f64 SwiGLU of those rounded values; ForwardBf16 on them gives the same y bits, BackwardBf16 the f64 gradients at them;
// with the bf16 tensors one element off 8-byte alignment too (the single-element path).
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;
using static Temper.Cuda.Tests.CudaRmsNormChecks;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaSwiGluChecks
{
    [Theory]
    [InlineData(2051, false)] // 3 blocks, a tail of 3
    [InlineData(64, true)]    // outputs one float off alignment
    public void Forward_and_backward_match_an_f64_evaluation(int n, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        using var swiglu = new CudaSwiGlu(device);
        var r = new Random(n);
        float[] Rand(float scale) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale)];
        var gate = Rand(6f);
        gate[0] = 90f;  // exp(-g) underflows
        gate[1] = -90f; // exp(-g) overflows to infinity: silu = -0
        var up = Rand(2f);
        var dy = Rand(1f);
        int shift = unaligned ? 1 : 0;
        using var dg = device.Upload<float>(gate);
        using var du = device.Upload<float>(up);
        using var ddy = device.Upload<float>(dy);
        using var yBuf = Poisoned(device, n + shift + 1);
        using var dGateBuf = Poisoned(device, n + shift + 1);
        using var dUpBuf = Poisoned(device, n + shift + 1);
        swiglu.Forward(dg, du, Offset(device, yBuf, shift, n), n);
        swiglu.Backward(ddy, dg, du, Offset(device, dGateBuf, shift, n), Offset(device, dUpBuf, shift, n), n);
        var y = device.Download<float>(yBuf);
        var dGate = device.Download<float>(dGateBuf);
        var dUp = device.Download<float>(dUpBuf);
        for (int i = 0; i < n; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            Near(y[i + shift], g * sig * up[i], $"y[{i}]");
            Near(dUp[i + shift], dy[i] * g * sig, $"dUp[{i}]");
            Near(dGate[i + shift], dy[i] * up[i] * sig * (1 + g * (1 - sig)), $"dGate[{i}]");
        }
        Assert.True(float.IsNaN(y[n + shift]) && float.IsNaN(dGate[n + shift]) && float.IsNaN(dUp[n + shift]), "a kernel wrote past n");
    }

    [Theory]
    [InlineData(2051, 0)] // 3 blocks, a tail of 3
    [InlineData(64, 1)]   // the bf16 tensors one element (2 bytes) off their 8-byte alignment
    public void Bf16_forms_round_as_bfloat16_and_match_an_f64_evaluation(int n, int shift)
    {
        using var device = Gpu.OpenForKernels();
        using var swiglu = new CudaSwiGlu(device);
        var r = new Random(n + 7);
        float[] Rand(float scale) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale)];
        var gate = Rand(6f);
        gate[0] = 90f;
        gate[1] = -90f;
        gate[2] = BitConverter.Int32BitsToSingle(0x3F808000); // halfway between two bf16: rounds to the even one, 0x3F80
        gate[3] = BitConverter.Int32BitsToSingle(0x3F818000); // halfway: rounds up to the even 0x3F82
        var up = Rand(2f);
        up[4] = float.NaN;
        var dy = Rand(1f);
        var gateBits = new ushort[n];
        var upBits = new ushort[n];
        BFloat16.FromSingle(gate, gateBits);
        BFloat16.FromSingle(up, upBits);
        using var dg = device.Upload<float>(gate);
        using var du = device.Upload<float>(up);
        using var ddy = device.Upload<float>(dy);
        using var gateBuf = device.Upload<ushort>(Enumerable.Repeat((ushort)0x7FC1, n + shift + 1).ToArray()); // NaN guards
        using var upBuf = device.Upload<ushort>(Enumerable.Repeat((ushort)0x7FC1, n + shift + 1).ToArray());
        using var yRounded = Poisoned(device, n + 1);
        using var yBf16 = Poisoned(device, n + 1);
        using var dGateBuf = Poisoned(device, n + 1);
        using var dUpBuf = Poisoned(device, n + 1);
        var gateKept = CudaDeviceMemory.Borrow(gateBuf.Pointer + (ulong)(2 * shift), 2L * n, device.Context);
        var upKept = CudaDeviceMemory.Borrow(upBuf.Pointer + (ulong)(2 * shift), 2L * n, device.Context);
        swiglu.ForwardRounded(dg, du, yRounded, gateKept, upKept, n);
        swiglu.ForwardBf16(gateKept, upKept, yBf16, n);
        swiglu.BackwardBf16(ddy, gateKept, upKept, dGateBuf, dUpBuf, n);
        var gotGate = device.Download<ushort>(gateBuf);
        var gotUp = device.Download<ushort>(upBuf);
        var y = device.Download<float>(yRounded);
        var y2 = device.Download<float>(yBf16);
        var dGate = device.Download<float>(dGateBuf);
        var dUp = device.Download<float>(dUpBuf);
        Assert.Equal((ushort)0x3F80, gotGate[2 + shift]);
        Assert.Equal((ushort)0x3F82, gotGate[3 + shift]);
        for (int i = 0; i < n; i++)
        {
            Assert.True(gotGate[i + shift] == gateBits[i] && gotUp[i + shift] == upBits[i],
                $"kept [{i}]: {gotGate[i + shift]:X4}/{gotUp[i + shift]:X4}, BFloat16.FromSingle gives {gateBits[i]:X4}/{upBits[i]:X4}");
            Assert.Equal(BitConverter.SingleToInt32Bits(y[i]), BitConverter.SingleToInt32Bits(y2[i]));
            if (i == 4)
            {
                Assert.True(float.IsNaN(y[i]) && float.IsNaN(dGate[i]), "a NaN up stays NaN");
                continue;
            }
            double g = BFloat16.ToSingle(gateBits[i]), u = BFloat16.ToSingle(upBits[i]), sig = 1 / (1 + Math.Exp(-g));
            Near(y[i], g * sig * u, $"y[{i}]");
            Near(dUp[i], dy[i] * g * sig, $"dUp[{i}]");
            Near(dGate[i], dy[i] * u * sig * (1 + g * (1 - sig)), $"dGate[{i}]");
        }
        Assert.True(gotGate[n + shift] == 0x7FC1 && gotUp[n + shift] == 0x7FC1 && (shift == 0 || gotGate[0] == 0x7FC1), "a kernel wrote outside the kept tensors");
        Assert.True(float.IsNaN(y[n]) && float.IsNaN(y2[n]) && float.IsNaN(dGate[n]) && float.IsNaN(dUp[n]), "a kernel wrote past n");
    }
}
