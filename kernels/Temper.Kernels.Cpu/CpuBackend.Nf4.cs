// CpuBackend's NF4 ops (QLoRA base weights): whole-matrix dequantisation, and the fused linear
// forward and input-gradient backward that dequantise slab by slab inside the GEMM (Nf4Linear.cs).
// Each call decodes the block absmax values of its weight first (one f32 per 64 weights).
using Temper.Core;
using Temper.Core.Quantization;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void Nf4Dequantize(Nf4Weight w, Tensor output)
    {
        const string op = "Nf4Dequantize";
        Host(op, w.Codes, w.AbsmaxCodes, w.AbsmaxScales, output);
        F32(op, output);
        Require(output.Shape == w.Shape, op, $"output {Describe(output)} must be f32 {w.Shape} for {w}");
        Cpu.Nf4Dequantize.Run(w.Codes.Bytes, w.BlockAbsmax(), 0, output.Floats);
    }

    public void Nf4Linear(Tensor x, Nf4Weight w, Tensor? bias, Tensor y, bool accumulate = false)
    {
        var (n, k, m) = CheckNf4("Nf4Linear", x, w, bias, y);
        Cpu.Nf4Linear.Forward(x.Floats, w.Codes.Bytes, w.BlockAbsmax(), Floats(bias), y.Floats, n, k, m, accumulate, _threads);
    }

    public void Nf4LinearBackward(Tensor dy, Nf4Weight w, Tensor dx, bool accumulateDx = false)
    {
        var (n, k, m) = CheckNf4("Nf4LinearBackward", dx, w, null, dy);
        Cpu.Nf4Linear.Backward(dy.Floats, w.Codes.Bytes, w.BlockAbsmax(), dx.Floats, n, k, m, accumulateDx, _threads);
    }

    private static (int N, int K, int M) CheckNf4(string op, Tensor x, Nf4Weight w, Tensor? bias, Tensor y)
    {
        Host(op, x, w.Codes, w.AbsmaxCodes, w.AbsmaxScales, bias, y);
        F32(op, x, bias, y);
        Require(x.Shape.Rank >= 1 && w.Shape.Rank == 2 && w.Shape[1] == x.Shape[-1], op, $"x {x.Shape} and {w}: weight must be [M,{(x.Shape.Rank >= 1 ? x.Shape[-1] : 0)}]");
        int k = w.Shape[1], m = w.Shape[0];
        Require(y.Shape == x.Shape.WithLast(m), op, $"{Describe(y)} must be {x.Shape.WithLast(m)} for x {x.Shape} and {w}");
        Require(bias == null || bias.Shape == new Shape(m), op, $"bias {bias?.Shape} must be [{m}] for {w}");
        return (x.Shape.Rows, k, m);
    }
}
