// Paged attention forward (decode steps and prefill chunks of many sequences in one call). q[N,H,D]
// token rows; kCache/vCache [Blocks, BlockSize, Hkv, D], f32 or bf16 (their bits); output[N,H,D]. Row n of sequence
// rowSequence[n] sees keys 0..rowKvLength[n]-1; key p lives at slot p % BlockSize of block
// blockTables[s * maxBlocks + p / BlockSize], so the keys are read through the block table, never
// gathered. A unit of work is one row and one kv head (the group of query heads sharing it): scores for
// the group (TensorPrimitives per head), softmax per head in f32 with the max subtracted, then out += p_j v_j. A bf16 row is
// widened exactly (the results are within f32 rounding of the f32 caches' for the same values): with AVX-512 and D a
// multiple of 16 straight into registers, 16 values at a time, each key and value row read once for the whole group
// (measured faster than widening into a scratch row, which other machines and D do). Units are split statically across
// threads (results independent of the count). Scalar reference: Reference/PagedAttentionReference.cs.
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

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
                int units = n * kvHeads;
                StaticPartition.For(units, StaticPartition.Parts(threads, units, (long)units * group * widest * d, 1 << 15), (u0, u1) =>
                {
                    var scores = new float[group * Math.Max(1, widest)];
                    var scratch = new float[d];
                    var acc = new Vector512<float>[group];
                    for (int u = u0; u < u1; u++)
                        Unit((float*)pq, (T*)pk, (T*)pv, (float*)po, tables, maxBlocks, seqs[u / kvHeads], lens[u / kvHeads], u / kvHeads, u % kvHeads, heads, kvHeads, group, d, blockSize, scale, scores, scratch, acc);
                });
            }
        }
    }

    private static unsafe void Unit<T>(float* q, T* k, T* v, float* output, int[] tables, int maxBlocks,
        int seq, int len, int row, int kh, int heads, int kvHeads, int group, int d, int blockSize, float scale, float[] scores, float[] scratch, Vector512<float>[] acc) where T : unmanaged
    {
        int h0 = kh * group;
        float* q0 = q + (long)(row * heads + h0) * d, o = output + (long)(row * heads + h0) * d; // the group's q rows and out rows
        new Span<float>(o, group * d).Clear();
        if (len == 0) return;
        bool fused = typeof(T) == typeof(ushort) && Vector512.IsHardwareAccelerated && d % 16 == 0;
        for (int j = 0; j < len; j++)
        {
            T* key = k + Offset(tables, maxBlocks, seq, j, blockSize, kvHeads, kh, d);
            if (fused) GroupDots(q0, (ushort*)key, d, group, scale, scores, j, len, acc);
            else
            {
                var kf = Row(key, d, scratch);
                for (int g = 0; g < group; g++) scores[g * len + j] = scale * TensorPrimitives.Dot(new ReadOnlySpan<float>(q0 + g * d, d), kf);
            }
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
            T* value = v + Offset(tables, maxBlocks, seq, j, blockSize, kvHeads, kh, d);
            if (fused) GroupUpdate((ushort*)value, o, d, group, scores, j, len);
            else
            {
                var vf = Row(value, d, scratch);
                for (int g = 0; g < group; g++)
                {
                    var og = new Span<float>(o + g * d, d);
                    TensorPrimitives.MultiplyAdd(vf, scores[g * len + j], og, og);
                }
            }
        }
    }

    private static int Offset(int[] tables, int maxBlocks, int seq, int j, int blockSize, int kvHeads, int kh, int d) =>
        ((tables[seq * maxBlocks + j / blockSize] * blockSize + j % blockSize) * kvHeads + kh) * d;

    // Sixteen bf16 values from p widened to f32 (zero-extend, shift by 16).
    private static unsafe Vector512<float> Load16(ushort* p)
    {
        var u = Vector256.Load(p);
        return Vector512.ShiftLeft(Vector512.Create(Vector256.WidenLower(u), Vector256.WidenUpper(u)), 16).AsSingle();
    }

    // scores[g * len + j] = scale * (q_g . key) for the group's heads g, the bf16 key row read once (AVX-512, D a multiple of 16).
    private static unsafe void GroupDots(float* q0, ushort* key, int d, int group, float scale, float[] scores, int j, int len, Vector512<float>[] acc)
    {
        Array.Clear(acc);
        for (int c = 0; c < d; c += 16)
        {
            var kv = Load16(key + c);
            for (int g = 0; g < group; g++) acc[g] = Vector512.FusedMultiplyAdd(Vector512.Load(q0 + g * d + c), kv, acc[g]);
        }
        for (int g = 0; g < group; g++) scores[g * len + j] = scale * Vector512.Sum(acc[g]);
    }

    // o_g += scores[g * len + j] * value for the group's heads g, the bf16 value row read once (AVX-512, D a multiple of 16).
    private static unsafe void GroupUpdate(ushort* value, float* o, int d, int group, float[] scores, int j, int len)
    {
        for (int c = 0; c < d; c += 16)
        {
            var vv = Load16(value + c);
            for (int g = 0; g < group; g++)
            {
                float* og = o + g * d + c;
                Vector512.FusedMultiplyAdd(Vector512.Create(scores[g * len + j]), vv, Vector512.Load(og)).Store(og);
            }
        }
    }

    // A cache row as f32 (the general-D path): the f32 row itself, or the bf16 row widened into scratch.
    private static unsafe ReadOnlySpan<float> Row<T>(T* row, int d, float[] scratch) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return new ReadOnlySpan<float>(row, d);
        fixed (float* dst = scratch) Bf16.Widen((ushort*)row, dst, d);
        return scratch;
    }
}
