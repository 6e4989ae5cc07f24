// IlgpuBackend's NF4 ops (QLoRA base weights), over Ops/Nf4.cs and the two small code books (16 and
// 256 f32, uploaded once per device). Dequantize decodes the block absmax values as it goes; the
// linear ops first decode them into a pooled device buffer (one f32 per 64 weights), then the GEMM
// kernels read the packed codes directly. With PTX kernels on, the CUDA C++ kernels do both (Ops/Nf4.cs).
using ILGPU;
using Temper.Core;
using Temper.Core.Quantization;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend
{
    public void Nf4Dequantize(Nf4Weight w, Tensor output)
    {
        const string op = "Nf4Dequantize";
        F32(op, output);
        Require(output.Shape == w.Shape, op, $"output {Describe(output)} must be f32 {w.Shape} for {w}");
        Require(w.Elements <= int.MaxValue - 256, op, $"{w}: more than 2^31 - 256 elements");
        Begin();
        if (_dc.PtxNf4 != null)
        {
            Ops.Nf4.PtxDequantize(_dc, Nf4Codes(op, w), Storage(op, w.AbsmaxCodes).View<byte>(Math.Max(1, w.AbsmaxCodes.Elements)), F(op, w.AbsmaxScales), w.AbsmaxOffset,
                F(op, output), Count(output));
            return;
        }
        Ops.Nf4.Dequantize(_dc, Nf4Codes(op, w), Nf4Blocks(op, w), _dc.Constant("nf4", Nf4CodeBook.Values), F(op, output), Count(output));
    }

    public void Nf4Linear(Tensor x, Nf4Weight w, Tensor? bias, Tensor y, bool accumulate = false)
    {
        const string op = "Nf4Linear";
        var (n, k, m) = CheckNf4(op, x, w, bias, y);
        Begin();
        using var absmax = Nf4Absmax(op, w, out var weights);
        if (_dc.PtxLinear != null) Ops.Nf4.PtxLinear(_dc, false, F(op, x), Nf4Codes(op, w), F(op, absmax), FOpt(op, bias), F(op, y), n, k, m, accumulate);
        else Ops.Nf4.Forward(_dc, F(op, x), weights, FOpt(op, bias), F(op, y), n, k, m, accumulate);
    }

    public void Nf4LinearBackward(Tensor dy, Nf4Weight w, Tensor dx, bool accumulateDx = false)
    {
        const string op = "Nf4LinearBackward";
        var (n, k, m) = CheckNf4(op, dx, w, null, dy);
        Begin();
        using var absmax = Nf4Absmax(op, w, out var weights);
        if (_dc.PtxLinear != null) Ops.Nf4.PtxLinear(_dc, true, F(op, dy), Nf4Codes(op, w), F(op, absmax), null, F(op, dx), n, k, m, accumulateDx);
        else Ops.Nf4.Backward(_dc, F(op, dy), weights, F(op, dx), n, k, m, accumulateDx);
    }

    // The decoded absmax buffer (disposing it returns it to the pool after the queued kernels) and the weight operand over it.
    private Tensor Nf4Absmax(string op, Nf4Weight w, out Ops.Nf4Weights weights)
    {
        var blocks = Nf4Blocks(op, w);
        var absmax = Zeros(new Shape(Math.Max(1, blocks.Count)));
        Ops.Nf4.Absmax(_dc, blocks, F(op, absmax));
        weights = new Ops.Nf4Weights(Nf4Codes(op, w), F(op, absmax), _dc.Constant("nf4", Nf4CodeBook.Values));
        return absmax;
    }

    private ArrayView<byte> Nf4Codes(string op, Nf4Weight w) => Storage(op, w.Codes).View<byte>(Math.Max(1, w.Codes.ByteCount));

    private Ops.Nf4Blocks Nf4Blocks(string op, Nf4Weight w)
    {
        Require(w.AbsmaxScales.DType == DType.F32, op, $"{w}: absmax scales must be f32");
        int blocks = checked((int)w.AbsmaxCodes.Elements);
        var q = Storage(op, w.AbsmaxCodes).View<byte>(Math.Max(1, blocks));
        return new Ops.Nf4Blocks(q, F(op, w.AbsmaxScales), _dc.Constant("dynamic-map", DynamicMap.Values), w.AbsmaxOffset, blocks);
    }

    private (int N, int K, int M) CheckNf4(string op, Tensor x, Nf4Weight w, Tensor? bias, Tensor y)
    {
        F32(op, x, bias, y);
        Require(x.Shape.Rank >= 1 && w.Shape.Rank == 2 && w.Shape[1] == x.Shape[-1], op, $"x {x.Shape} and {w}: weight must be [M,{(x.Shape.Rank >= 1 ? x.Shape[-1] : 0)}]");
        int k = w.Shape[1], m = w.Shape[0];
        Require(y.Shape == x.Shape.WithLast(m), op, $"{Describe(y)} must be {x.Shape.WithLast(m)} for x {x.Shape} and {w}");
        Require(bias == null || bias.Shape == new Shape(m), op, $"bias {bias?.Shape} must be [{m}] for {w}");
        Require((long)x.Shape.Rows * Math.Max(k, m) <= int.MaxValue && (long)m * k <= int.MaxValue, op, $"x {x.Shape}, {w}: more than 2^31 elements in one operand");
        return (x.Shape.Rows, k, m);
    }
}
