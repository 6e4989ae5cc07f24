// Op checks of the serving ops on ILGPU: paged attention (a decode step of sequences of different
// lengths and a prefill chunk, over keys in shuffled blocks) and the gathered LoRA linear (rows mixing
// adapters and rows with none) against the CPU backend and the scalar references. Tiny shapes.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class IlgpuServingOpChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    [Fact]
    public void PagedAttention_matches_cpu_and_reference()
    {
        const int heads = 4, kvHeads = 2, d = 8, bs = 3, blocks = 9, maxBlocks = 4;
        // Three rows: two decode rows of sequences 0 and 1, one prefill row of sequence 1 seeing fewer keys.
        int[] tables = [4, 0, 7, 2, 8, 1, 5, 3];
        int[] rowSeq = [0, 1, 1], lens = [10, 12, 5];
        var q = Floats(3 * heads * d, 1, 2f);
        var kc = Floats(blocks * bs * kvHeads * d, 2, 2f);
        var vc = Floats(blocks * bs * kvHeads * d, 3);
        float scale = 1f / MathF.Sqrt(d);
        var expected = new float[q.Length];
        PagedAttentionReference.Forward(q, kc, vc, expected, tables, maxBlocks, rowSeq, lens, heads, kvHeads, d, bs, scale);
        var cpuOut = Tensor.Zeros(new Shape(3, heads, d));
        Cpu.PagedAttention(new PagedAttentionArgs(Host(q, 3, heads, d), Host(kc, blocks, bs, kvHeads, d), Host(vc, blocks, bs, kvHeads, d), cpuOut, tables, maxBlocks, rowSeq, lens, scale));
        var output = Zeros(3, heads, d);
        B.PagedAttention(new PagedAttentionArgs(Up(q, 3, heads, d), Up(kc, blocks, bs, kvHeads, d), Up(vc, blocks, bs, kvHeads, d), output, tables, maxBlocks, rowSeq, lens, scale));
        Close(Down(output), expected, "ilgpu paged attention vs reference");
        Close(Down(output), cpuOut.Floats, "ilgpu paged attention vs cpu");

        // bf16 caches: the CPU backend's bf16 results, and the device's own over f32 caches of the same values bit for bit.
        var (kBits, vBits) = (ToBf16(kc, out var kWide), ToBf16(vc, out var vWide));
        var cpuBf16 = Tensor.Zeros(new Shape(3, heads, d));
        Cpu.PagedAttention(new PagedAttentionArgs(Host(q, 3, heads, d), HostBf16(kBits, blocks, bs, kvHeads, d), HostBf16(vBits, blocks, bs, kvHeads, d), cpuBf16, tables, maxBlocks, rowSeq, lens, scale));
        var bf16 = Zeros(3, heads, d);
        B.PagedAttention(new PagedAttentionArgs(Up(q, 3, heads, d), UpBf16(kBits, blocks, bs, kvHeads, d), UpBf16(vBits, blocks, bs, kvHeads, d), bf16, tables, maxBlocks, rowSeq, lens, scale));
        var widened = Zeros(3, heads, d);
        B.PagedAttention(new PagedAttentionArgs(Up(q, 3, heads, d), Up(kWide, blocks, bs, kvHeads, d), Up(vWide, blocks, bs, kvHeads, d), widened, tables, maxBlocks, rowSeq, lens, scale));
        Close(Down(bf16), cpuBf16.Floats, "ilgpu paged attention vs cpu, bf16 caches");
        Bitwise(Down(bf16), Down(widened), "ilgpu paged attention, bf16 caches vs f32 caches of their values");
        Assert.True(Nmse(Down(bf16), Down(output)) > 1e-12, "the bf16 caches gave the f32 caches' output: were they rounded?");
    }

    [Fact]
    public void PagedAttention_decode_equals_contiguous_attention_on_the_device()
    {
        const int batch = 2, heads = 4, kvHeads = 2, d = 8, s = 11, bs = 4, maxBlocks = 3;
        int[] lens = [11, 6];
        var q = Floats(batch * heads * d, 4, 2f);
        var k = Floats(batch * s * kvHeads * d, 5, 2f);
        var v = Floats(batch * s * kvHeads * d, 6);
        float scale = 1f / MathF.Sqrt(d);
        var mask = new int[batch * s];
        for (int b = 0; b < batch; b++) for (int j = 0; j < lens[b]; j++) mask[b * s + j] = 1;
        var contiguous = Zeros(batch, 1, heads, d);
        B.Attention(new AttentionArgs(Up(q, batch, 1, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), contiguous, s, s - 1, scale, mask));
        // The same keys in blocks [5, 1, 3] (sequence 0) and [0, 4, 2] (sequence 1) of a 6-block cache.
        int[] tables = [5, 1, 3, 0, 4, 2];
        int row = kvHeads * d;
        var kc = new float[6 * bs * row];
        var vc = new float[6 * bs * row];
        for (int b = 0; b < batch; b++)
            for (int p = 0; p < s; p++)
            {
                int dst = (tables[b * maxBlocks + p / bs] * bs + p % bs) * row;
                Array.Copy(k, (b * s + p) * row, kc, dst, row);
                Array.Copy(v, (b * s + p) * row, vc, dst, row);
            }
        var paged = Zeros(batch, heads, d);
        B.PagedAttention(new PagedAttentionArgs(Up(q, batch, heads, d), Up(kc, 6, bs, kvHeads, d), Up(vc, 6, bs, kvHeads, d), paged, tables, maxBlocks, new[] { 0, 1 }, lens, scale));
        Close(Down(paged), Down(contiguous), "ilgpu paged attention vs ilgpu contiguous attention");
    }

    [Fact]
    public void GatheredLoraLinear_matches_cpu_and_reference()
    {
        const int n = 7, k = 12, m = 10, r = 4, adapters = 3;
        var x = Floats(n * k, 1);
        var a = Floats(adapters * r * k, 2);
        var b = Floats(adapters * m * r, 3);
        var y0 = Floats(n * m, 4);
        float[] scales = [0.5f, 2f, -1f];
        int[] rowAdapter = [2, -1, 0, 1, 2, 0, -1];
        var expected = (float[])y0.Clone();
        GatheredLoraLinearReference.Forward(x, a, b, scales, rowAdapter, expected, k, m, r);
        var cpuY = Host((float[])y0.Clone(), n, m);
        Cpu.GatheredLoraLinear(Host(x, n, k), Host(a, adapters, r, k), Host(b, adapters, m, r), scales, rowAdapter, cpuY);
        var y = Up(y0, n, m);
        B.GatheredLoraLinear(Up(x, n, k), Up(a, adapters, r, k), Up(b, adapters, m, r), scales, rowAdapter, y);
        var got = Down(y);
        Close(got, expected, "ilgpu gathered lora vs reference");
        Close(got, cpuY.Floats, "ilgpu gathered lora vs cpu");
        Assert.Equal(y0.AsSpan(m, m).ToArray(), got.AsSpan(m, m).ToArray()); // a row without an adapter is untouched
    }
}

public sealed class CpuAcceleratorServingOpChecks(CpuAcceleratorFixture device) : IlgpuServingOpChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaServingOpChecks(CudaFixture device) : IlgpuServingOpChecks(device), IClassFixture<CudaFixture>;
