// Paged attention forward (decode steps and prefill chunks of many sequences in one call). q[N,H,D]
// token rows; kCache/vCache [Blocks, BlockSize, Hkv, D]; output[N,H,D]. Row n of sequence
// rowSequence[n] sees keys 0..rowKvLength[n]-1; key p lives at slot p % BlockSize of block
// blockTables[s * maxBlocks + p / BlockSize], so the keys are read through the block table, never
// gathered. A unit of work is one row and one kv head (the group of query heads sharing it): scores for
// the group (SIMD dot products), softmax per head in f32 with the max subtracted, then out += p_j v_j
// block by block. Units are split statically across threads (results independent of the count).
// The caches are f32 or bf16 (ushort bits: each key and value row widened into a scratch row as it is read,
// so the results are the f32 caches' for the same values).
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Temper.Core;

namespace Temper.Kernels.Cpu;

public static class PagedAttention
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> kCache, ReadOnlySpan<float> vCache, Span<float> output,
        ReadOnlySpan<int> blockTables, int maxBlocks, ReadOnlySpan<int> rowSequence, ReadOnlySpan<int> rowKvLength,
        int heads, int kvHeads, int d, int blockSize, float scale, int threads = 1) =>
        Forward<float>(q, kCache, vCache, output, blockTables, maxBlocks, rowSequence, rowKvLength, heads, kvHeads, d, blockSize, scale, threads);

    /// <summary>The same over bf16 caches (their bits).</summary>
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<ushort> kCache, ReadOnlySpan<ushort> vCache, Span<float> output,
        ReadOnlySpan<int> blockTables, int maxBlocks, ReadOnlySpan<int> rowSequence, ReadOnlySpan<int> rowKvLength,
        int heads, int kvHeads, int d, int blockSize, float scale, int threads = 1) =>
        Forward<ushort>(q, kCache, vCache, output, blockTables, maxBlocks, rowSequence, rowKvLength, heads, kvHeads, d, blockSize, scale, threads);

    private static void Forward<T>(ReadOnlySpan<float> q, ReadOnlySpan<T> kCache, ReadOnlySpan<T> vCache, Span<float> output,
        ReadOnlySpan<int> blockTables, int maxBlocks, ReadOnlySpan<int> rowSequence, ReadOnlySpan<int> rowKvLength,
        int heads, int kvHeads, int d, int blockSize, float scale, int threads) where T : unmanaged
    {
        int n = rowSequence.Length, group = heads / kvHeads;
        long blocks = kCache.Length / Math.Max(1L, (long)blockSize * kvHeads * d);
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || d <= 0 || blockSize <= 0 || maxBlocks <= 0
            || q.Length != (long)n * heads * d || output.Length != q.Length || vCache.Length != kCache.Length
            || kCache.Length != blocks * blockSize * kvHeads * d || rowKvLength.Length != n || blockTables.Length % maxBlocks != 0)
            throw new ArgumentException($"PagedAttention: q {q.Length}, cache {kCache.Length}/{vCache.Length}, output {output.Length}, {n} rows, {rowKvLength.Length} lengths, " +
                $"table {blockTables.Length} do not fit H{heads} Hkv{kvHeads} D{d} block {blockSize} maxBlocks {maxBlocks}");
        int sequences = blockTables.Length / maxBlocks, widest = 0;
        for (int r = 0; r < n; r++)
        {
            int s = rowSequence[r], len = rowKvLength[r];
            if ((uint)s >= (uint)sequences || len < 0 || len > maxBlocks * blockSize)
                throw new ArgumentException($"PagedAttention: row {r} names sequence {s} of {sequences} with {len} keys (at most {maxBlocks * blockSize})");
            for (int b = 0; b < (len + blockSize - 1) / blockSize; b++)
                if ((uint)blockTables[s * maxBlocks + b] >= (ulong)blocks)
                    throw new ArgumentException($"PagedAttention: sequence {s} block {b} is {blockTables[s * maxBlocks + b]}, outside the cache's {blocks} blocks");
            widest = Math.Max(widest, len);
        }
        // Spans cannot enter the parallel lambda: copy the small index arrays, pin the large ones.
        var tables = blockTables.ToArray();
        var seqs = rowSequence.ToArray();
        var lens = rowKvLength.ToArray();
        unsafe
        {
            fixed (float* pq0 = q) fixed (T* pk0 = kCache) fixed (T* pv0 = vCache) fixed (float* po0 = output)
            {
                nint pq = (nint)pq0, pk = (nint)pk0, pv = (nint)pv0, po = (nint)po0;
                long qLen = q.Length, cacheLen = kCache.Length;
                int units = n * kvHeads;
                StaticPartition.For(units, StaticPartition.Parts(threads, units, (long)units * group * widest * d, 1 << 15), (u0, u1) =>
                {
                    var scores = new float[group * Math.Max(1, widest)];
                    var row = typeof(T) == typeof(float) ? null : new float[d];
                    var qs = new ReadOnlySpan<float>((float*)pq, (int)qLen);
                    var ks = new ReadOnlySpan<T>((T*)pk, (int)cacheLen);
                    var vs = new ReadOnlySpan<T>((T*)pv, (int)cacheLen);
                    var os = new Span<float>((float*)po, (int)qLen);
                    for (int u = u0; u < u1; u++)
                        Unit(qs, ks, vs, os, tables, maxBlocks, seqs[u / kvHeads], lens[u / kvHeads], u / kvHeads, u % kvHeads, heads, kvHeads, group, d, blockSize, scale, scores, row);
                });
            }
        }
    }

    // Cache row [offset, offset + d) as f32: the f32 cache's own span, or the bf16 row widened into scratch.
    private static ReadOnlySpan<float> Row<T>(ReadOnlySpan<T> cache, int offset, int d, float[]? scratch) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return MemoryMarshal.Cast<T, float>(cache).Slice(offset, d);
        BFloat16.ToSingle(MemoryMarshal.Cast<T, ushort>(cache).Slice(offset, d), scratch);
        return scratch;
    }

    private static void Unit<T>(ReadOnlySpan<float> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<float> output, int[] tables, int maxBlocks,
        int seq, int len, int row, int kh, int heads, int kvHeads, int group, int d, int blockSize, float scale, float[] scores, float[]? scratch) where T : unmanaged
    {
        int h0 = kh * group;
        var o = output.Slice((row * heads + h0) * d, group * d);
        o.Clear();
        if (len == 0) return;
        for (int j = 0; j < len; j++)
        {
            var key = Row(k, ((tables[seq * maxBlocks + j / blockSize] * blockSize + j % blockSize) * kvHeads + kh) * d, d, scratch);
            for (int g = 0; g < group; g++)
                scores[g * len + j] = scale * TensorPrimitives.Dot(q.Slice((row * heads + h0 + g) * d, d), key);
        }
        for (int g = 0; g < group; g++)
        {
            var sc = scores.AsSpan(g * len, len);
            float max = TensorPrimitives.Max(sc);
            TensorPrimitives.Subtract(sc, max, sc);
            TensorPrimitives.Exp(sc, sc);
            TensorPrimitives.Divide(sc, TensorPrimitives.Sum(sc), sc);
        }
        for (int j = 0; j < len; j++)
        {
            var value = Row(v, ((tables[seq * maxBlocks + j / blockSize] * blockSize + j % blockSize) * kvHeads + kh) * d, d, scratch);
            for (int g = 0; g < group; g++)
            {
                var og = o.Slice(g * d, d);
                TensorPrimitives.MultiplyAdd(value, scores[g * len + j], og, og);
            }
        }
    }
}
