// CudaPagedAttention.Forward (cuda/paged_attention.cu) against the scalar reference of the paged op
// (Temper.Kernels.Cpu's PagedAttentionReference, sums in f64): q[N,H,D] token rows of several sequences of
// different lengths (a prefill chunk's rows, decode rows, a row that sees one key, one that sees none)
// over k/v caches [Blocks, BlockSize, Hkv, D] whose blocks are scattered through the pool (a shuffled,
// non-contiguous table), last blocks partial; GQA and MQA, a group of more than 8 query heads (two head
// slices), one key split and several (FlashDecoding's combine, by the last split block of each unit; a second call checks it left its counters at zero). Every pool slot no row may read (free blocks, the unused tail of partial blocks, table entries
// past a sequence's end) holds NaN, and out is poisoned with NaN, so a wrong read or an unwritten element
// fails. Runs on a GPU or on the CUDA emulator (tiny shapes).
using Temper.Cuda.Driver;
using Temper.Kernels.Cpu.Reference;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaPagedAttentionChecks
{
    private static float[] Floats(int n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1);
        return v;
    }

    /// <summary>The pool, tables and rows of one call: sequences of <paramref name="lengths"/> keys on shuffled blocks.</summary>
    private sealed record Case(float[] K, float[] V, int[] Tables, int MaxBlocks, int[] RowSeq, int[] RowLen, int Blocks)
    {
        public static Case Build(int[] lengths, int hkv, int d, int blockSize, int seed)
        {
            int maxBlocks = lengths.Max(l => (l + blockSize - 1) / blockSize) + 1; // a spare table entry past every sequence's end
            int used = lengths.Sum(l => (l + blockSize - 1) / blockSize), blocks = used + 3; // three free blocks
            var order = Enumerable.Range(0, blocks).ToArray();
            new Random(seed).Shuffle(order);
            int rowFloats = hkv * d, free = order[^1];
            var k = Enumerable.Repeat(float.NaN, blocks * blockSize * rowFloats).ToArray();
            var v = Enumerable.Repeat(float.NaN, k.Length).ToArray();
            var tables = Enumerable.Repeat(free, lengths.Length * maxBlocks).ToArray(); // entries past the end name a NaN block
            var keys = Floats(lengths.Sum() * rowFloats, seed + 1);
            var values = Floats(keys.Length, seed + 2);
            for (int s = 0, next = 0, src = 0; s < lengths.Length; s++)
                for (int p = 0; p < lengths[s]; p++, src += rowFloats)
                {
                    if (p % blockSize == 0) tables[s * maxBlocks + p / blockSize] = order[next++];
                    int dst = (tables[s * maxBlocks + p / blockSize] * blockSize + p % blockSize) * rowFloats;
                    Array.Copy(keys, src, k, dst, rowFloats);
                    Array.Copy(values, src, v, dst, rowFloats);
                }
            // Rows: a prefill chunk's last three tokens of sequence 0, the rest decode rows (their whole length),
            // sequence 0 once more seeing only its first 70 keys; in a mixed order.
            var rows = new List<(int Seq, int Len)> { (1, lengths[1]), (0, lengths[0] - 2), (0, lengths[0] - 1), (0, lengths[0]) };
            for (int s = 2; s < lengths.Length; s++) rows.Add((s, lengths[s]));
            rows.Insert(3, (0, Math.Min(70, lengths[0])));
            return new(k, v, tables, maxBlocks, [.. rows.Select(r => r.Seq)], [.. rows.Select(r => r.Len)], blocks);
        }
    }

    // Sequence 0: 150 keys (three key tiles of 64, the last partial; its last block partial for these block
    // sizes); 1: 37 (partial); 2: 64 (whole blocks); 3: one key; 4: none (a row that sees no key).
    private static readonly int[] Lengths = [150, 37, 64, 1, 0];

    [Theory]
    [InlineData(64, 4, 2, 16, 1)]  // GQA 2, one split
    [InlineData(64, 4, 1, 16, 3)]  // MQA, three key splits merged by the last
    [InlineData(128, 8, 2, 8, 0)]  // splits chosen by the wrapper
    [InlineData(64, 10, 1, 16, 2)] // a group of 10 query heads: two head slices (8 + 2), two splits
    [InlineData(128, 2, 2, 32, 1)] // no GQA
    [InlineData(64, 6, 3, 5, 4)]   // blocks of 5 slots (key tiles start mid-block), four splits
    public void Forward_matches_the_scalar_reference(int d, int h, int hkv, int blockSize, int splits)
    {
        using var device = Gpu.OpenForKernels();
        var c = Case.Build(Lengths, hkv, d, blockSize, 10 + d + h + blockSize);
        int rows = c.RowSeq.Length;
        float scale = 3f / MathF.Sqrt(d);
        var q = Floats(rows * h * d, 1);
        var expected = new float[q.Length];
        PagedAttentionReference.Forward(q, c.K, c.V, expected, c.Tables, c.MaxBlocks, c.RowSeq, c.RowLen, h, hkv, d, blockSize, scale);
        var shape = new CudaPagedAttention.Shape(rows, h, hkv, d, c.Blocks, blockSize, Lengths.Length, c.MaxBlocks, c.RowLen.Max(), scale);

        using var dk = device.Upload<float>(c.K);
        using var dv = device.Upload<float>(c.V);
        using var dq = device.Upload<float>(q);
        using var dOut = device.Upload<float>(Enumerable.Repeat(float.NaN, q.Length).ToArray());
        using var dTables = device.Upload<int>(c.Tables);
        using var dSeq = device.Upload<int>(c.RowSeq);
        using var dLen = device.Upload<int>(c.RowLen);
        using var attention = new CudaPagedAttention(device);
        int used = splits == 0 ? attention.Splits(shape) : splits;
        long workspaceBytes = CudaPagedAttention.WorkspaceBytes(shape, used);
        using var workspace = workspaceBytes > 0 ? device.Upload<float>(Enumerable.Repeat(float.NaN, (int)(workspaceBytes / 4)).ToArray()) : null;
        attention.Forward(dq, dk, dv, dOut, dTables, dSeq, dLen, workspace, shape, splits);
        device.Synchronize();
        var output = device.Download<float>(dOut);

        // f32 sums over at most 150 keys against f64: within 2e-5 (outputs are ~0.1); a wrong block, slot,
        // head or a missed rescale gives NaN or errors of 1e-2 and more.
        for (int i = 0; i < output.Length; i++)
        {
            Assert.False(float.IsNaN(output[i]), $"out[{i}] (row {i / (h * d)}, head {i / d % h}) is NaN: unwritten, or a read outside the row's keys");
            Assert.True(Math.Abs(output[i] - expected[i]) <= 2e-5, $"out[{i}] (row {i / (h * d)}, head {i / d % h}) is {output[i]}, the reference {expected[i]}");
        }
        int empty = Array.IndexOf(c.RowLen, 0);
        Assert.All(output.AsSpan(empty * h * d, h * d).ToArray(), x => Assert.Equal(0f, x)); // the row that sees no key: zeros
        // Again on the same instance, out poisoned: with splits the last block of each unit set its counter back to zero,
        // so this call's last blocks merge again (a counter left at splits would leave out NaN).
        device.CopyToDevice<float>(Enumerable.Repeat(float.NaN, q.Length).ToArray(), dOut);
        attention.Forward(dq, dk, dv, dOut, dTables, dSeq, dLen, workspace, shape, splits);
        device.Synchronize();
        Assert.Equal(output, device.Download<float>(dOut));

        // bf16 caches (`--kv-cache-dtype bfloat16`): the bits of the f32 kernel over the same values widened (the NaN slots stay NaN).
        var kBits = Bf16Bits(c.K);
        var vBits = Bf16Bits(c.V);
        device.CopyToDevice<float>(Widen(kBits), dk);
        device.CopyToDevice<float>(Widen(vBits), dv);
        device.CopyToDevice<float>(Enumerable.Repeat(float.NaN, q.Length).ToArray(), dOut);
        attention.Forward(dq, dk, dv, dOut, dTables, dSeq, dLen, workspace, shape, splits);
        device.Synchronize();
        var fromWidened = device.Download<float>(dOut);
        using var dkBits = device.Upload<ushort>(kBits);
        using var dvBits = device.Upload<ushort>(vBits);
        device.CopyToDevice<float>(Enumerable.Repeat(float.NaN, q.Length).ToArray(), dOut);
        attention.Forward(dq, dkBits, dvBits, dOut, dTables, dSeq, dLen, workspace, shape, splits, bf16Cache: true);
        device.Synchronize();
        var fromBf16 = device.Download<float>(dOut);
        for (int i = 0; i < fromBf16.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(fromBf16[i]) == BitConverter.SingleToInt32Bits(fromWidened[i]),
                $"bf16 caches: out[{i}] (row {i / (h * d)}, head {i / d % h}) is {fromBf16[i]}, the f32 kernel over the widened caches {fromWidened[i]}");
        Assert.Contains(fromBf16, x => Math.Abs(x) > 1e-3f); // not all zeros
    }

    private static ushort[] Bf16Bits(float[] x)
    {
        var bits = new ushort[x.Length];
        Temper.Core.BFloat16.FromSingle(x, bits);
        return bits;
    }

    private static float[] Widen(ushort[] bits) => [.. bits.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16))];

    [Fact]
    public void Unsupported_shapes_small_or_unaligned_buffers_and_a_missing_workspace_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var small = device.Allocate<float>(4);
        using var big = device.Allocate<float>(4096);
        using var attention = new CudaPagedAttention(device);
        var d96 = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, big, big, big, null, new(1, 1, 1, 96, 1, 4, 1, 1, 4, 1f)));
        Assert.Contains("head dim 96 is not supported (64 or 128)", d96.Message);
        var gqa = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, big, big, big, null, new(1, 3, 2, 64, 1, 4, 1, 1, 4, 1f)));
        Assert.Contains("3 heads are not a multiple of 2 kv heads", gqa.Message);
        var v = Assert.Throws<CudaException>(() => attention.Forward(big, big, small, big, big, big, big, null, new(1, 2, 1, 64, 2, 4, 1, 2, 8, 1f)));
        Assert.Contains("the v cache holds 16 bytes, the sizes need 2048", v.Message);
        var tables = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, small, big, big, null, new(1, 2, 1, 64, 2, 4, 3, 2, 8, 1f)));
        Assert.Contains("tables holds 16 bytes, the sizes need 24", tables.Message);
        using var shifted = CudaDeviceMemory.Borrow(big.Pointer + 4, 4 * 4095, device.Context);
        var aligned = Assert.Throws<CudaException>(() => attention.Forward(big, big, shifted, big, big, big, big, null, new(1, 2, 1, 64, 2, 4, 1, 2, 8, 1f)));
        Assert.Contains($"the v cache at 0x{shifted.Pointer:x} is not 16-byte aligned", aligned.Message);
        var workspace = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, big, big, big, null, new(1, 2, 1, 64, 2, 4, 1, 2, 8, 1f), splits: 2));
        Assert.Contains("2 key splits need a workspace of 1056 bytes", workspace.Message);
    }
}
