// The PTX route (IlgpuBackend.PtxKernels: CUDA C++ kernels from Temper.Kernels.Cuda on ILGPU's buffers
// and stream). Everywhere: a view's device address is its buffer's plus its offset (what the route
// hands the kernels), and the switch stays off on the CPU accelerator unless TEMPER_CUDA_DRIVER names the
// CUDA emulator. On CUDA, and on the CPU accelerator over the emulator (Emulated*: the glue in CI): Linear
// with bf16 weights (forward and input gradient, overwriting and accumulating) through the PTX kernels
// against the exact ILGPU kernels (bf16 rounding of the activations: NMSE <= 1e-5); attention (D = 64, 128;
// GQA, offset, key mask, segments) likewise, the inference forward, the training forward (lse kept) and its
// backward, and the backward without an lse (forward again into scratch) (q, k, v, dO, P and dS rounded to
// bf16: NMSE <= 1e-4); the LoRA linear whose LoRA product joins the PTX kernel's epilogue (r <= 16) or stays
// separate (r > 16); NF4 dequantisation (bit for bit) and the NF4 linear forward (with a bias) and input
// gradient, overwriting and accumulating; paged attention; RMSNorm, SwiGLU, RoPE and AdamW (PtxFusedOpRouteChecks).
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using Temper.Core;
using Temper.Kernels.Ilgpu.Ops;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public class PtxRoutingChecks
{
    [Fact]
    public void A_views_device_address_is_its_buffers_plus_its_offset()
    {
        using var context = Context.Create(b => b.CPU());
        using var accelerator = context.CreateCPUAccelerator(0);
        using var buffer = accelerator.Allocate1D<float>(100);
        ArrayView<float> view = buffer.View;
        Assert.Equal(buffer.NativePtr, Gemm.DeviceAddress(view));
        Assert.Equal(buffer.NativePtr + 5 * sizeof(float), Gemm.DeviceAddress(view.SubView(5, 10)));
        Assert.Equal(buffer.NativePtr + 7 * sizeof(float), Gemm.DeviceAddress(view.SubView(5, 10).SubView(2, 3)));
    }

    [Fact]
    public void Ptx_kernels_stay_off_on_the_cpu_accelerator_without_the_emulator()
    {
        if (Environment.GetEnvironmentVariable(Temper.Cuda.Driver.CudaLibrary.OverrideVariable) is { Length: > 0 } driver)
            Assert.Skip($"TEMPER_CUDA_DRIVER={driver}: the CPU accelerator's PTX route runs on it if it is the emulator (EmulatedPtx* checks)");
        using var be = IlgpuBackend.Create("ilgpu-cpu");
        be.PtxKernels = true;
        Assert.False(be.PtxKernels);
        Assert.False(((IMemoryMeter)be).HoldsBf16ProductCopies); // nor does the memory plan count their scratch
    }
}

public abstract class PtxRouteChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    [Theory]
    [InlineData(300, 72, 200)]
    [InlineData(1, 64, 64)]
    [InlineData(7, 13, 5)] // k and m not multiples of 8: CudaLinear's unpipelined kernels
    public void Bf16_linear_through_the_ptx_kernel_matches_the_exact_one(int n, int k, int m)
    {
        var x = Floats(n * k, 1);
        var hw = HostBf16(ToBf16(Floats(m * k, 2), out _), m, k);
        var bias = Floats(m, 3);
        var (y0, dx0) = (Floats(n * m, 12), Floats(n * k, 13));
        float[] Run(bool ptx, bool? sm90 = null)
        {
            B.PtxKernels = ptx;
            Assert.Equal(ptx, B.PtxKernels);
            if (ptx) (B.DeviceContext.PtxLinear!.Sm90, B.DeviceContext.PtxLinear!.Sm90InputGradient) = (sm90, sm90); // true: both products on the sm_90a GEMM
            var y = Zeros(n, m);
            var w = Own(B.FromHost(hw));
            B.Linear(Up(x, n, k), w, Up(bias, m), y);
            var yPlus = Up(y0, n, m);
            B.Linear(Up(x, n, k), w, null, yPlus, accumulate: true);
            var dx = Zeros(n, k);
            B.LinearBackward(y, Up(x, n, k), w, dx, null, null); // dx = y W, the NN product
            var dxPlus = Up(dx0, n, k);
            B.LinearBackward(y, Up(x, n, k), w, dxPlus, null, null, accumulateDx: true);
            return [.. Down(y), .. Down(yPlus), .. Down(dx), .. Down(dxPlus)];
        }
        try
        {
            var exact = Run(false);
            foreach (bool? sm90 in new bool?[] { null, true })
            {
                var viaPtx = Run(true, sm90);
                Close(viaPtx, exact, $"ptx linear {n}x{k}x{m}{(sm90 == true ? ", sm_90a forward and input gradient" : "")}", 1e-5);
                Assert.Contains(viaPtx.Zip(exact), p => p.First != p.Second); // bf16 x: the PTX kernel did run
            }
        }
        finally
        {
            if (B.DeviceContext.PtxLinear is { } linear) (linear.Sm90, linear.Sm90InputGradient) = (null, null);
            B.PtxKernels = false;
        }
    }

    // The fused LM head + cross-entropy and distillation on the PTX route (hidden converted to bf16 once for every chunk's
    // product, Gemm.ActivationsInBf16) against the exact ILGPU kernels, over several vocabulary chunks: losses and
    // gradients within the bf16 rounding of the activations (NMSE <= 1e-4).
    [Fact]
    public void The_memory_meter_says_the_ptx_products_keep_a_bf16_copy_only_while_they_run()
    {
        var meter = (IMemoryMeter)B;
        B.PtxKernels = true;
        try { Assert.True(meter.HoldsBf16ProductCopies); } // MemoryPlanOptions.Bf16ProductCopies for the run's plan
        finally { B.PtxKernels = false; }
        Assert.False(meter.HoldsBf16ProductCopies);
    }

    [Fact]
    public void Lm_head_losses_through_the_ptx_kernels_match_the_exact_ones()
    {
        const int n = 37, c = 72, ct = 64, v = 300;
        var hidden = Floats(n * c, 31);
        var teacher = Floats(n * ct, 32);
        var hHead = HostBf16(ToBf16(Floats(v * c, 33), out _), v, c);
        var hTeacherHead = HostBf16(ToBf16(Floats(v * ct, 34), out _), v, ct);
        var labels = Enumerable.Range(0, n).Select(i => i % 5 == 2 ? -100 : i * 7 % v).ToArray();
        var mask = Enumerable.Range(0, n).Select(i => i % 4 == 1 ? 0 : 1).ToArray();
        float[] Run(bool ptx)
        {
            B.PtxKernels = ptx;
            var (head, teacherHead) = (Own(B.FromHost(hHead)), Own(B.FromHost(hTeacherHead)));
            var (losses, dHidden, kd, kdHidden) = (Zeros(n), Zeros(n, c), Zeros(n), Zeros(n, c));
            B.LmHeadCrossEntropy(Up(hidden, n, c), head, labels, losses, 0.5f, dHidden, null);
            B.LmHeadDistillation(Up(hidden, n, c), head, Up(teacher, n, ct), teacherHead, mask, 2f, false, kd, 0.5f, kdHidden, null);
            return [.. Down(losses), .. Down(dHidden), .. Down(kd), .. Down(kdHidden)];
        }
        int saved = B.VocabChunk;
        try
        {
            B.VocabChunk = 128; // three chunks, the last partial
            var viaPtx = Run(true);
            var exact = Run(false);
            Close(viaPtx, exact, "ptx lm head losses and gradients", 1e-4);
            Assert.Contains(viaPtx.Zip(exact), p => p.First != p.Second); // bf16 hidden: the PTX kernel did run
        }
        finally
        {
            B.VocabChunk = saved;
            B.PtxKernels = false;
        }
    }

    [Theory]
    [InlineData(2, 70, 4, 80, 2, 64, 75, 5, true)]
    [InlineData(1, 66, 2, 66, 1, 128, 66, 0, false)]
    public void Attention_through_the_ptx_kernel_matches_the_exact_one(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool masks)
    {
        var q = Floats(batch * tq * heads * d, 1);
        var k = Floats(batch * s * kvHeads * d, 2);
        var v = Floats(batch * s * kvHeads * d, 3);
        var mask = new int[masks ? batch * kvLength : 0];
        var segments = new int[masks ? batch * kvLength : 0];
        for (int i = 0; i < mask.Length; i++) (mask[i], segments[i]) = (i % kvLength % 7 == 3 ? 0 : 1, i % kvLength < 40 ? 0 : 1);
        var dOut = Floats(batch * tq * heads * d, 4);
        // The inference forward (no lse) and the training forward (lse kept) with its backward, all on the PTX route
        // or all on ILGPU; the backward also without the lse (it runs the forward again).
        (float[] Inference, float[] Out, float[] Dq, float[] Dk, float[] Dv, float[] DqNoLse) Run(bool ptx)
        {
            B.PtxKernels = ptx;
            Assert.Equal(ptx, B.PtxKernels);
            var args = new AttentionArgs(Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), Zeros(batch, tq, heads, d),
                kvLength, offset, 1f / MathF.Sqrt(d), mask, null, segments);
            B.Attention(args);
            var inference = Down(args.Output);
            args = args with { Output = Zeros(batch, tq, heads, d), Lse = Zeros(batch, heads, tq) };
            B.Attention(args);
            var (dq, dk, dv) = (Zeros(batch, tq, heads, d), Zeros(batch, s, kvHeads, d), Zeros(batch, s, kvHeads, d));
            B.AttentionBackward(args, Up(dOut, batch, tq, heads, d), dq, dk, dv);
            var (dq2, dk2, dv2) = (Zeros(batch, tq, heads, d), Zeros(batch, s, kvHeads, d), Zeros(batch, s, kvHeads, d));
            B.AttentionBackward(args with { Lse = null }, Up(dOut, batch, tq, heads, d), dq2, dk2, dv2);
            return (inference, Down(args.Output), Down(dq), Down(dk), Down(dv), Down(dq2));
        }
        try
        {
            var viaPtx = Run(true);
            var exact = Run(false);
            // bf16 q, k, v, dO: NMSE ~1e-5 for dq, dk, dv at these shapes (CudaAttention on the emulator against float64),
            // a few 1e-6 for out; a gradient from mismatched routes (bf16 lse, f32 p) or a wrong kernel is far above.
            Close(viaPtx.Inference, exact.Inference, $"ptx attention inference out d{d}", 1e-4);
            Close(viaPtx.Out, exact.Out, $"ptx attention out d{d}", 1e-4);
            Close(viaPtx.Dq, exact.Dq, $"ptx attention dq d{d}", 1e-4);
            Close(viaPtx.Dk, exact.Dk, $"ptx attention dk d{d}", 1e-4);
            Close(viaPtx.Dv, exact.Dv, $"ptx attention dv d{d}", 1e-4);
            Close(viaPtx.DqNoLse, exact.Dq, $"ptx attention dq without lse d{d}", 1e-4);
            Assert.Contains(viaPtx.Dq.Zip(exact.Dq), p => p.First != p.Second); // bf16 inputs: the PTX kernels did run
            Assert.Contains(viaPtx.Dk.Zip(exact.Dk), p => p.First != p.Second);
        }
        finally
        {
            B.PtxKernels = false;
        }
    }

    // bf16 q, k, v on the PTX route (the forward's _bf16in kernels read them as they are; the backward widens them): the bits
    // of the f32 route's kernels on the same values, forward and backward.
    [Theory]
    [InlineData(2, 70, 4, 80, 2, 64, 75, 5, true)]
    [InlineData(1, 66, 2, 66, 1, 128, 66, 0, false)]
    public void Attention_from_bf16_inputs_through_the_ptx_kernel_gives_the_bits_of_f32_inputs(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool masks)
    {
        ushort[] q = ToBf16(Floats(batch * tq * heads * d, 1), out var qf), k = ToBf16(Floats(batch * s * kvHeads * d, 2), out var kf),
            v = ToBf16(Floats(batch * s * kvHeads * d, 3), out var vf);
        var dOut = Floats(batch * tq * heads * d, 4);
        var mask = new int[masks ? batch * kvLength : 0];
        var segments = new int[masks ? batch * kvLength : 0];
        for (int i = 0; i < mask.Length; i++) (mask[i], segments[i]) = (i % kvLength % 7 == 3 ? 0 : 1, i % kvLength < 40 ? 0 : 1);
        float[][] F32Pass() => AttentionPass(Up(qf, batch, tq, heads, d), Up(kf, batch, s, kvHeads, d), Up(vf, batch, s, kvHeads, d), dOut, kvLength, offset, mask, segments);
        try
        {
            B.PtxKernels = true;
            Assert.True(B.PtxKernels);
            var f32 = F32Pass();
            var bf16 = AttentionPass(UpBf16(q, batch, tq, heads, d), UpBf16(k, batch, s, kvHeads, d), UpBf16(v, batch, s, kvHeads, d), dOut, kvLength, offset, mask, segments);
            for (int i = 0; i < f32.Length; i++) Assert.Equal(f32[i].Select(BitConverter.SingleToInt32Bits), bf16[i].Select(BitConverter.SingleToInt32Bits));
            B.PtxKernels = false;
            var exact = F32Pass();
            Close(bf16[0], exact[0], $"ptx attention from bf16 d{d}", 1e-4);
            Assert.Contains(bf16[0].Zip(exact[0]), p => p.First != p.Second); // bf16 P: the PTX kernel did run
        }
        finally
        {
            B.PtxKernels = false;
        }
    }

    // RoundToBf16 on the PTX route (CudaLinear.ConvertToBf16): BFloat16.FromSingle's bits, at lengths around its 4-wide stores.
    [Fact]
    public void RoundToBf16_through_the_ptx_kernel_gives_the_bits_of_BFloat16()
    {
        try
        {
            B.PtxKernels = true;
            Assert.True(B.PtxKernels);
            foreach (int n in (int[])[1, 3, 4, 5, 67, 1000])
            {
                var x = Floats(n, n);
                x[0] = float.NaN;
                x[n - 1] = BitConverter.Int32BitsToSingle(0x3F818000); // a tie to even, up
                var y = Own(B.Zeros(new Shape(n), DType.BF16));
                B.RoundToBf16(Up(x, n), y);
                using var host = B.ToHost(y);
                Assert.Equal(ToBf16(x, out _), host.Span<ushort>().ToArray());
            }
        }
        finally
        {
            B.PtxKernels = false;
        }
    }

    [Theory]
    [InlineData(300, 72, 200, 16)]
    [InlineData(70, 64, 130, 24)] // above the epilogue's rank: the separate product
    [InlineData(9, 13, 20, 4)] // k not a multiple of 8: the epilogue of CudaLinear's unpipelined kernel
    public void Lora_linear_through_the_ptx_kernel_matches_the_exact_one(int n, int k, int m, int r)
    {
        var x = Floats(n * k, 4);
        var hw = HostBf16(ToBf16(Floats(m * k, 5), out _), m, k);
        var bias = Floats(m, 6);
        var a = Floats(r * k, 7);
        var b = Floats(m * r, 8);
        float[] Run(bool ptx, bool rankKernels = false, bool? sm90 = null, bool? sm90Lora = null)
        {
            B.PtxKernels = ptx;
            B.LoraRankKernels = rankKernels; // xa on CudaLoraRank (opt-in) or ILGPU's GEMM
            // sm90 true: the base on the sm_90a GEMM, then y += s xa B^T on CudaLoraRank, or with sm90Lora in the sm_90a epilogue
            if (ptx) (B.DeviceContext.PtxLinear!.Sm90, B.DeviceContext.PtxLinear!.Sm90Lora) = (sm90, sm90Lora);
            var y = Zeros(n, m);
            var xa = Zeros(n, r);
            B.LoraLinear(Up(x, n, k), Own(B.FromHost(hw)), Up(bias, m), Up(a, r, k), Up(b, m, r), 0.5f, y, xa);
            return [.. Down(y), .. Down(xa)];
        }
        try
        {
            var exact = Run(false);
            foreach (var (rankKernels, sm90, sm90Lora) in new (bool, bool?, bool?)[] { (false, null, null), (true, false, null), (true, true, false), (false, true, true), (true, true, true) })
            {
                var viaPtx = Run(true, rankKernels, sm90, sm90Lora);
                Close(viaPtx, exact, $"ptx lora linear {n}x{k}x{m} r{r}{(rankKernels ? ", CudaLoraRank" : "")}{(sm90 == true ? ", sm_90a base" : "")}{(sm90Lora == true ? " and epilogue" : "")}", 1e-5);
                Assert.Contains(viaPtx.Zip(exact), p => p.First != p.Second);
            }
        }
        finally
        {
            if (B.DeviceContext.PtxLinear is { } linear) (linear.Sm90, linear.Sm90Lora) = (null, null);
            B.PtxKernels = false;
            B.LoraRankKernels = false;
        }
    }

    // The LoRA branch's backward (dB += s dy^T xa, dxa = s dy B, dA += dxa^T x, dx += dxa A) with its rank-r products on
    // CudaLoraRank (LoraRankKernels, opt-in) against ILGPU's GEMMs, accumulating onto nonzero gradients; exact f32 both ways, so only the order of
    // the sums differs.
    [Theory]
    [InlineData(300, 72, 200, 16)]
    [InlineData(70, 130, 64, 3)]
    [InlineData(9, 13, 20, 24)] // above CudaLoraRank's rank: ILGPU's products both ways
    public void Lora_linear_backward_through_the_ptx_kernels_matches_the_exact_one(int n, int k, int m, int r)
    {
        var dy = Floats(n * m, 14);
        var x = Floats(n * k, 15);
        var xa = Floats(n * r, 16);
        var a = Floats(r * k, 17);
        var b = Floats(m * r, 18);
        var dx0 = Floats(n * k, 19);
        var da0 = Floats(r * k, 20);
        var db0 = Floats(m * r, 21);
        float[] Run(bool ptx)
        {
            B.PtxKernels = ptx;
            B.LoraRankKernels = ptx;
            var dx = Up(dx0, n, k);
            var da = Up(da0, r, k);
            var db = Up(db0, m, r);
            B.LoraLinearBackward(Up(dy, n, m), Up(x, n, k), Up(xa, n, r), Up(a, r, k), Up(b, m, r), 0.5f, dx, da, db);
            return [.. Down(dx), .. Down(da), .. Down(db)];
        }
        try
        {
            var viaPtx = Run(true);
            var exact = Run(false);
            Close(viaPtx, exact, $"ptx lora linear backward {n}x{k}x{m} r{r}", 1e-9);
            if (r <= 16) Assert.Contains(viaPtx.Zip(exact), p => p.First != p.Second);
        }
        finally
        {
            B.PtxKernels = false;
            B.LoraRankKernels = false;
        }
    }

    /// <summary>NF4 through the CUDA C++ kernels: dequantisation bit for bit, the linear forward and input
    /// gradient within bf16 bounds of the exact f32 ILGPU kernels (the PTX path rounds x and the weight to bf16).</summary>
    [Theory]
    [InlineData(150, 96, 136)]
    [InlineData(33, 70, 42)]
    public void Nf4_through_the_ptx_kernels_matches_the_exact_ones(int n, int k, int m)
    {
        var x = Floats(n * k, 9);
        var dy = Floats(n * m, 10);
        var (bias, y0, dx0) = (Floats(m, 12), Floats(n * m, 13), Floats(n * k, 14));
        using var host = Temper.Core.Quantization.Nf4Weight.Quantize(Floats(m * k, 11), new Shape(m, k), "w");
        var w = host.To(B);
        (float[] Dequantised, float[] Values) Run(bool ptx)
        {
            B.PtxKernels = ptx;
            var full = Zeros(m, k);
            B.Nf4Dequantize(w, full);
            var y = Zeros(n, m);
            B.Nf4Linear(Up(x, n, k), w, null, y);
            var yPlus = Up(y0, n, m);
            B.Nf4Linear(Up(x, n, k), w, Up(bias, m), yPlus, accumulate: true);
            var dx = Zeros(n, k);
            B.Nf4LinearBackward(Up(dy, n, m), w, dx);
            var dxPlus = Up(dx0, n, k);
            B.Nf4LinearBackward(Up(dy, n, m), w, dxPlus, accumulateDx: true);
            return (Down(full), [.. Down(y), .. Down(yPlus), .. Down(dx), .. Down(dxPlus)]);
        }
        try
        {
            var viaPtx = Run(true);
            var exact = Run(false);
            Assert.Equal(exact.Dequantised, viaPtx.Dequantised);
            Close(viaPtx.Values, exact.Values, $"ptx nf4 linear {n}x{k}x{m}", 1e-5);
            Assert.Contains(viaPtx.Values.Zip(exact.Values), p => p.First != p.Second); // bf16 staging: the PTX kernel did run
        }
        finally
        {
            B.PtxKernels = false;
            if (!ReferenceEquals(w, host)) w.Dispose();
        }
    }
}

// The paged attention's PTX route (CUDA only): IlgpuBackend.PagedAttention through the CUDA C++ kernel
// (Temper.Kernels.Cuda.CudaPagedAttention, f32) against the ILGPU kernel on the same inputs: a decode step
// of sequences of different lengths over shuffled blocks (last blocks partial), GQA, a prefill chunk's rows,
// a row that sees no key, and one long row alone (the device splits its keys: FlashDecoding); both f32, so
// NMSE <= 1e-10. A head dim the kernel lacks (D = 32) stays on ILGPU: bitwise equal. With bf16 caches (the _bf16 kernels; the
// ILGPU kernel widening bf16) the same, and each route gives its own f32 results over the caches' widened values bit for bit.
public abstract class PagedAttentionPtxRouteChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    [Theory]
    [InlineData(64, 8, 2, 16, new[] { 300, 45, 16, 0 }, false)]
    [InlineData(128, 4, 1, 32, new[] { 700 }, false)] // one sequence, one kv head: its keys split across blocks
    [InlineData(32, 4, 2, 16, new[] { 90, 7 }, false)] // no PTX kernel for D = 32: ILGPU either way
    [InlineData(64, 8, 2, 16, new[] { 300, 45, 16, 0 }, true)]
    [InlineData(128, 4, 1, 32, new[] { 700 }, true)]
    [InlineData(32, 4, 2, 16, new[] { 90, 7 }, true)]
    public void Paged_attention_through_the_ptx_kernel_matches_the_ilgpu_one(int d, int heads, int kvHeads, int blockSize, int[] lengths, bool bf16Cache)
    {
        int maxBlocks = lengths.Max(l => (l + blockSize - 1) / blockSize) + 1, blocks = lengths.Length * maxBlocks;
        var order = Enumerable.Range(0, blocks).ToArray();
        new Random(3).Shuffle(order);
        var tables = order[..(lengths.Length * maxBlocks)];
        // Rows: each sequence's decode row, and the last three tokens of sequence 0 as a prefill chunk.
        var rowSeq = Enumerable.Range(0, lengths.Length).Concat([0, 0, 0]).ToArray();
        var rowLen = lengths.Concat([Math.Max(0, lengths[0] - 3), Math.Max(0, lengths[0] - 2), Math.Max(0, lengths[0] - 1)]).ToArray();
        int rows = rowSeq.Length;
        var q = Floats(rows * heads * d, 1, 2f);
        var kc = Floats(blocks * blockSize * kvHeads * d, 2, 2f);
        var vc = Floats(blocks * blockSize * kvHeads * d, 3);
        var (kBits, vBits) = (ToBf16(kc, out var kWide), ToBf16(vc, out var vWide));
        float[] Run(bool ptx, bool bf16)
        {
            B.PtxKernels = ptx;
            Assert.Equal(ptx, B.PtxKernels);
            var output = Zeros(rows, heads, d);
            int[] cache = [blocks, blockSize, kvHeads, d];
            B.PagedAttention(new PagedAttentionArgs(Up(q, rows, heads, d), bf16 ? UpBf16(kBits, cache) : Up(bf16Cache ? kWide : kc, cache),
                bf16 ? UpBf16(vBits, cache) : Up(bf16Cache ? vWide : vc, cache), output, tables, maxBlocks, rowSeq, rowLen, 1f / MathF.Sqrt(d)));
            return Down(output);
        }
        try
        {
            var viaPtx = Run(true, bf16Cache);
            var exact = Run(false, bf16Cache);
            if (bf16Cache)
            {
                Bitwise(viaPtx, Run(true, false), $"ptx paged attention d{d}, bf16 caches vs f32 caches of their values");
                Bitwise(exact, Run(false, false), $"ilgpu paged attention d{d}, bf16 caches vs f32 caches of their values");
            }
            if (d is 64 or 128)
            {
                Close(viaPtx, exact, $"ptx paged attention d{d}");
                Assert.Contains(viaPtx.Zip(exact), p => p.First != p.Second); // other summation order: the PTX kernel did run
            }
            else Bitwise(viaPtx, exact, $"paged attention d{d} (ILGPU either way)");
        }
        finally
        {
            B.PtxKernels = false;
        }
    }
}

// On CUDA: RMSNorm (forward with rstd, backward with dWeight accumulated), SwiGLU, RoPE (forward and
// backward, HF rotate_half on the ILGPU op's tables) and AdamW (two steps, one tensor and many in one launch) through the CUDA C++ kernels
// (cuda/rmsnorm.cu, swiglu.cu, rope.cu, adamw.cu) against the ILGPU kernels: all f32, so within the f32
// tolerance (NMSE <= 1e-10); row lengths with and without 16-byte loads.
public abstract class PtxFusedOpRouteChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    private float[] Both(Func<float[]> run, bool ptx)
    {
        B.PtxKernels = ptx;
        Assert.Equal(ptx, B.PtxKernels);
        return run();
    }

    private void Compare(Func<float[]> run, string what)
    {
        try
        {
            var viaPtx = Both(run, true);
            var exact = Both(run, false);
            Close(viaPtx, exact, what);
        }
        finally
        {
            B.PtxKernels = false;
        }
    }

    [Theory]
    [InlineData(5, 70)]
    [InlineData(3, 1024)]
    [InlineData(96, 128)] // Qwen3's head norms: a row per head of q or k
    public void Rms_norm_through_the_ptx_kernels_matches_the_ilgpu_one(int rows, int c)
    {
        var x = Floats(rows * c, 1, 2f);
        var w = Floats(c, 2);
        var dy = Floats(rows * c, 3);
        var dw0 = Floats(c, 4);
        Compare(() =>
        {
            var (y, rstd, dx, dw, dxAcc) = (Zeros(rows, c), Zeros(rows), Zeros(rows, c), Up(dw0, c), Up(Floats(rows * c, 5), rows, c));
            B.RmsNorm(Up(x, rows, c), Up(w, c), 1e-5f, y, rstd);
            B.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), rstd, dx, dw);
            B.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), rstd, dxAcc, null, accumulateDx: true);
            var (sum, ya, ra) = (Up(dy, rows, c), Zeros(rows, c), Zeros(rows)); // the residual add and the norm: sum over its b
            B.AddRmsNorm(Up(x, rows, c), sum, sum, Up(w, c), 1e-5f, ya, ra);
            return [.. Down(y), .. Down(rstd), .. Down(dx), .. Down(dw), .. Down(dxAcc), .. Down(sum), .. Down(ya), .. Down(ra)];
        }, $"ptx rmsnorm {rows}x{c}");
    }

    [Fact]
    public void Swiglu_through_the_ptx_kernels_matches_the_ilgpu_one()
    {
        int n = 7, f = 150;
        var (gate, up, dy) = (Floats(n * f, 5, 6f), Floats(n * f, 6), Floats(n * f, 7));
        Compare(() =>
        {
            var (y, dGate, dUp, inPlace, dUp2) = (Zeros(n, f), Zeros(n, f), Zeros(n, f), Up(dy, n, f), Zeros(n, f));
            B.SwiGlu(Up(gate, n, f), Up(up, n, f), y);
            B.SwiGluBackward(Up(dy, n, f), Up(gate, n, f), Up(up, n, f), dGate, dUp);
            B.SwiGluBackward(inPlace, Up(gate, n, f), Up(up, n, f), inPlace, dUp2); // dGate over dy
            // the bf16 forms: gate and up kept rounded, y rebuilt from them, the backward on them
            var (gk, uk) = (Own(B.Zeros(new Shape(n, f), DType.BF16)), Own(B.Zeros(new Shape(n, f), DType.BF16)));
            var (yr, yb, dGb, dUb) = (Zeros(n, f), Zeros(n, f), Zeros(n, f), Zeros(n, f));
            B.SwiGluRounded(Up(gate, n, f), Up(up, n, f), yr, gk, uk);
            B.SwiGlu(gk, uk, yb);
            B.SwiGluBackward(Up(dy, n, f), gk, uk, dGb, dUb);
            return [.. Down(y), .. Down(dGate), .. Down(dUp), .. Down(inPlace), .. Down(dUp2), .. Down(gk), .. Down(uk), .. Down(yr), .. Down(yb), .. Down(dGb), .. Down(dUb)];
        }, "ptx swiglu");
    }

    [Theory]
    [InlineData(64)]
    [InlineData(12)] // half = 6: single floats
    public void Rope_through_the_ptx_kernel_matches_the_ilgpu_one(int d)
    {
        int[] positions = [3, 0, 300, 3];
        int heads = 2;
        // d = 64 with YaRN's frequencies, whose tables carry an attention factor (1.14) into the kernel.
        var freqs = d == 64 ? RopeFrequencies.Yarn(d, 10000, 4, 64) : RopeFrequencies.Default(d, 10000);
        var x = Floats(positions.Length * heads * d, 8);
        Compare(() =>
        {
            var t = Up(x, positions.Length, heads, d);
            B.Rope(t, positions, freqs);
            var forward = Down(t);
            B.RopeBackward(t, positions, freqs);
            return [.. forward, .. Down(t)];
        }, $"ptx rope d{d}");
    }

    [Fact]
    public void Adamw_through_the_ptx_kernel_matches_the_ilgpu_one()
    {
        int n = 5003;
        var (p0, g, m0, v0) = (Floats(n, 9), Floats(n, 10), Floats(n, 11, 0.1f), Floats(n, 12, 0.01f));
        for (int i = 0; i < n; i++) v0[i] = Math.Abs(v0[i]);
        Compare(() =>
        {
            var (p, grad, m, v) = (Up(p0, n), Up(g, n), Up(m0, n), Up(v0, n));
            B.AdamWStep(p, grad, m, v, new AdamWParams(1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1));
            B.AdamWStep(p, grad, m, v, new AdamWParams(1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 2));
            return [.. Down(p), .. Down(m), .. Down(v)];
        }, "ptx adamw");
    }

    [Fact]
    public void Adamw_steps_over_many_tensors_in_one_launch_match_the_ilgpu_ones()
    {
        int[] lengths = [5003, 7, 4096];
        var inputs = lengths.Select((n, t) => (P: Floats(n, 20 + t), G: Floats(n, 30 + t), M: Floats(n, 40 + t, 0.1f), V: Floats(n, 50 + t, 0.01f).Select(Math.Abs).ToArray())).ToArray();
        Compare(() =>
        {
            var tensors = lengths.Select((n, t) => new AdamWTensors(Up(inputs[t].P, n), Up(inputs[t].G, n), Up(inputs[t].M, n), Up(inputs[t].V, n))).ToArray();
            B.AdamWSteps(tensors, new AdamWParams(1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1));
            B.AdamWSteps(tensors, new AdamWParams(1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 2)); // the device table reused
            return [.. tensors.SelectMany(t => Down(t.Param).Concat(Down(t.M)).Concat(Down(t.V)))];
        }, "ptx adamw multi-tensor");
    }
}

public sealed class CudaPtxRoutingChecks(CudaFixture device) : PtxRouteChecks(device), IClassFixture<CudaFixture>;
public sealed class CudaPagedAttentionPtxRoutingChecks(CudaFixture device) : PagedAttentionPtxRouteChecks(device), IClassFixture<CudaFixture>;
public sealed class CudaPtxFusedOpRoutingChecks(CudaFixture device) : PtxFusedOpRouteChecks(device), IClassFixture<CudaFixture>;

// The same checks on ILGPU's CPU accelerator with the CUDA emulator as the driver (test.sh's emulated suite:
// TEMPER_CUDA_DRIVER set, -trait "Ptx=emulated"; skipped otherwise): the routing glue (addresses, offsets,
// argument order, shapes, the choice of route) runs for real in CI; speed and tensor-core rounding stay GPU-owed.
[Trait("Ptx", "emulated"), Collection(EmulatedPtxCollection.Name)]
public sealed class EmulatedPtxRoutingChecks(EmulatedPtxFixture device) : PtxRouteChecks(device);
[Trait("Ptx", "emulated"), Collection(EmulatedPtxCollection.Name)]
public sealed class EmulatedPagedAttentionPtxRoutingChecks(EmulatedPtxFixture device) : PagedAttentionPtxRouteChecks(device);
[Trait("Ptx", "emulated"), Collection(EmulatedPtxCollection.Name)]
public sealed class EmulatedPtxFusedOpRoutingChecks(EmulatedPtxFixture device) : PtxFusedOpRouteChecks(device);
