// Paged attention forward (decode steps and prefill chunks of many sequences in one call). q[N,H,D]
// token rows; kCache/vCache [Blocks, BlockSize, Hkv, D], f32 or bf16 (their bits, widened exactly); output[N,H,D]. Row n
// of sequence rowSequence[n] sees keys 0..rowKvLength[n]-1; key p lives at slot p % BlockSize of block
// blockTables[s * maxBlocks + p / BlockSize].
// With AVX-512 and D % 16 == 0 every row gets FlashAttention's arithmetic (FlashAttention.cs, AttentionTiles.cs), so a
// row's bits depend only on its query and its keys, never on the rows beside it (a prefill chunk cut anywhere, a prefix
// hit, a speculative verify and a decode step agree bit for bit):
//   - a run of at least MinRun rows of one sequence at consecutive lengths (a prefill chunk, a speculative verify: row i
//     sees one key more than row i - 1) gathers the sequence's keys once into contiguous [keys, Hkv, D] rows and goes through
//     FlashAttention.Forward as one causal block (compute-bound, ~180 GFLOP/s on two cores);
//   - any other row (a unit: one row, every head; one kv head's when rows are fewer than threads) reads its keys through the block table: K^T of 64 keys at a time built
//     by 16 x 16 register transposes, the same 6-row tiles for S = Q K^T and, one cache block at a time with the FMA
//     chains resumed, O = P V.
// Elsewhere (no AVX-512, or D % 16 != 0) a unit is one row and one kv head: TensorPrimitives dots, softmax, out += p_j v_j.
// Units are split statically across threads (results independent of the count). Scalar reference:
// Reference/PagedAttentionReference.cs.
using System.Buffers;
using System.Numerics.Tensors;

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
                bool tiled = AttentionTiles.Supported(d);
                var rest = new List<int>(n); // the rows outside runs
                for (int r0 = 0, r1; r0 < n; r0 = r1)
                {
                    for (r1 = r0 + 1; r1 < n && seqs[r1] == seqs[r0] && lens[r1] == lens[r1 - 1] + 1; r1++) { }
                    if (tiled && r1 - r0 >= MinRun && lens[r0] > 0)
                        Run((float*)pq, (T*)pk, (T*)pv, (float*)po, tables, maxBlocks, seqs[r0], r0, r1 - r0, lens[r0], heads, kvHeads, d, blockSize, scale, threads);
                    else
                        for (int r = r0; r < r1; r++) rest.Add(r);
                }
                // A unit: a row's kv head (its group of query heads); tiled, a whole row (every head, each key row read whole in one
                // pass) unless there are fewer rows than threads (a batch-1 decode step), which then split by kv head.
                int perRow = tiled && rest.Count >= threads ? 1 : kvHeads, units = rest.Count * perRow;
                StaticPartition.For(units, StaticPartition.Parts(threads, units, (long)units * group * widest * d, 1 << 15), (u0, u1) =>
                {
                    int junk = Math.Max(64, d), ktLength = Math.Max(kvHeads * d * 64, blockSize * kvHeads * d);
                    var scores = ArrayPool<float>.Shared.Rent((tiled ? heads : group) * ((Math.Max(1, widest) + 15) & ~15));
                    var scratch = ArrayPool<float>.Shared.Rent(tiled ? ktLength + junk : d);
                    try
                    {
                        fixed (float* sc = scores) fixed (float* kt = scratch)
                            for (int u = u0; u < u1; u++)
                            {
                                int row = rest[u / perRow];
                                int kh0 = perRow == 1 ? 0 : u % kvHeads, kh1 = perRow == 1 ? kvHeads : kh0 + 1;
                                if (tiled) TiledRow((float*)pq, (T*)pk, (T*)pv, (float*)po, tables, maxBlocks, seqs[row], lens[row], row, kh0, kh1, heads, kvHeads, d, blockSize, scale, sc, kt, kt + ktLength);
                                else Unit((float*)pq, (T*)pk, (T*)pv, (float*)po, tables, maxBlocks, seqs[row], lens[row], row, u % kvHeads, heads, kvHeads, group, d, blockSize, scale, scores, scratch);
                            }
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(scores);
                        ArrayPool<float>.Shared.Return(scratch);
                    }
                });
            }
        }
    }

    /// <summary>The fewest rows of a run that take FlashAttention's tiles (both ways give the same bits). PagedAttentionBenchmarks,
    /// 16 runs of R rows at 512 / 2048 keys, FlashAttention against the row path: R = 2 1.29 / 11.3 ms against 0.85 / 5.4;
    /// R = 5 1.42 / 8.5 against 2.14 / 10.1; R = 8 2.94 / 8.8 against 3.92 / 16.3.</summary>
    public const int MinRun = 4;

    // Rows [r0, r0 + count) of sequence seq, row r0 + i seeing keys 0..first + i - 1: the keys gathered into f32 [keys, Hkv, D]
    // rows (a block's bs slots are contiguous in the cache), then FlashAttention.Forward with the run as one causal query
    // block at offset first - 1.
    private static unsafe void Run<T>(float* q, T* k, T* v, float* output, int[] tables, int maxBlocks, int seq, int r0, int count, int first,
        int heads, int kvHeads, int d, int blockSize, float scale, int threads) where T : unmanaged
    {
        int keys = first + count - 1, row = kvHeads * d;
        var kBuffer = ArrayPool<float>.Shared.Rent(keys * row);
        var vBuffer = ArrayPool<float>.Shared.Rent(keys * row);
        try
        {
            fixed (float* kg = kBuffer) fixed (float* vg = vBuffer)
            {
                for (int p = 0; p < keys; p += blockSize)
                {
                    long from = (long)tables[seq * maxBlocks + p / blockSize] * blockSize * row;
                    int n = Math.Min(blockSize, keys - p) * row;
                    Gather(k + from, kg + (long)p * row, n);
                    Gather(v + from, vg + (long)p * row, n);
                }
                long at = (long)r0 * heads * d;
                FlashAttention.Forward(q + at, kg, vg, output + at, null, null, null, 1, count, heads, keys, kvHeads, d, keys, first - 1, scale, threads);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(kBuffer);
            ArrayPool<float>.Shared.Return(vBuffer);
        }
    }

    private static unsafe void Gather<T>(T* src, float* dst, int n) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) Buffer.MemoryCopy(src, dst, (long)n * sizeof(float), (long)n * sizeof(float));
        else Bf16.Widen((ushort*)src, dst, n);
    }

    // One row's kv head kh and its group of query heads (any D, no AVX-512): scores by TensorPrimitives dots, softmax, o += p_j v_j.
    private static unsafe void Unit<T>(float* q, T* k, T* v, float* output, int[] tables, int maxBlocks,
        int seq, int len, int row, int kh, int heads, int kvHeads, int group, int d, int blockSize, float scale, float[] scores, float[] scratch) where T : unmanaged
    {
        int h0 = kh * group;
        float* q0 = q + (long)(row * heads + h0) * d, o = output + (long)(row * heads + h0) * d; // the group's q rows and out rows
        new Span<float>(o, group * d).Clear();
        if (len == 0) return;
        for (int j = 0; j < len; j++)
        {
            var kf = Row(k + Offset(tables, maxBlocks, seq, j, blockSize, kvHeads, kh, d), d, scratch);
            for (int g = 0; g < group; g++) scores[g * len + j] = scale * TensorPrimitives.Dot(new ReadOnlySpan<float>(q0 + g * d, d), kf);
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
            var vf = Row(v + Offset(tables, maxBlocks, seq, j, blockSize, kvHeads, kh, d), d, scratch);
            for (int g = 0; g < group; g++)
            {
                var og = new Span<float>(o + g * d, d);
                TensorPrimitives.MultiplyAdd(vf, scores[g * len + j], og, og);
            }
        }
    }

    // One row's kv heads [kh0, kh1) and their query heads, with FlashAttention's arithmetic (AVX-512, D % 16 == 0), so the row gets the bits a run of its
    // sequence would give it, through the same register tiles: per chunk of 64 keys, each kv head's K^T [D, 64] built in kt
    // (16 key rows read through the block table and transposed in registers; keys past len repeat the last, standing in
    // for FlashAttention's padding columns, masked after), then S = Q K^T for the group's query rows; FlashAttention's
    // softmax of each head's row; then O = P V one cache block at a time, each block's product resuming the FMA chains
    // where the last left them (one chain over the keys in order, as FlashAttention's), and O *= 1 / sum. Each key row is
    // read whole (every kv head) while its 16-key group is transposed. sc holds H rows of (len + 15) & ~15; kt Hkv x D x 64
    // floats (and a bf16 value block widened); junk max(64, D).
    private static unsafe void TiledRow<T>(float* q, T* k, T* v, float* output, int[] tables, int maxBlocks, int seq, int len, int row, int kh0, int kh1,
        int heads, int kvHeads, int d, int blockSize, float scale, float* sc, float* kt, float* junk) where T : unmanaged
    {
        const int Chunk = 64;
        int group = heads / kvHeads, w16 = (len + 15) & ~15;
        long rowStride = (long)kvHeads * d;
        int h0 = kh0 * group, h1 = kh1 * group;
        float* q0 = q + (long)row * heads * d, o = output + (long)row * heads * d;
        if (len == 0)
        {
            new Span<float>(o + (long)h0 * d, (h1 - h0) * d).Clear();
            return;
        }
        var rows = stackalloc nint[16];
        for (int j0 = 0; j0 < w16; j0 += Chunk)
        {
            int cols = Math.Min(Chunk, w16 - j0);
            for (int c0 = 0; c0 < cols; c0 += 16)
            {
                // Key j0 + c0 + i's row, the block table walked without a division per key.
                int first = j0 + c0;
                for (int i = 0, b = first / blockSize, sl = first % blockSize; i < 16; i++)
                {
                    rows[i] = first + i < len ? (nint)(k + ((long)tables[seq * maxBlocks + b] * blockSize + sl) * rowStride) : rows[i - 1];
                    if (++sl == blockSize) { sl = 0; b++; }
                }
                for (int kh = kh0; kh < kh1; kh++)
                    for (int t0 = 0; t0 < d; t0 += 16) AttentionTiles.TransposeRows<T>(rows, kh * d + t0, kt + ((long)kh * d + t0) * Chunk + c0, Chunk);
            }
            GroupProducts(kh0, kh1, group, q0, d, kt, (long)d * Chunk, Chunk, d, cols, sc + j0, w16, junk, resume: false);
        }
        var inv = stackalloc float[heads];
        for (int h = h0; h < h1; h++)
        {
            FlashAttention.Softmax(sc + (long)h * w16, 0, len, w16, null, null, len - 1, scale, out float sum);
            inv[h] = sum > 0 ? 1f / sum : 0;
        }
        for (int p = 0; p < len; p += blockSize)
        {
            int n = Math.Min(blockSize, len - p);
            T* block = v + (long)tables[seq * maxBlocks + p / blockSize] * blockSize * rowStride;
            float* vb = (float*)block;
            if (typeof(T) != typeof(float))
            {
                Bf16.Widen((ushort*)block, kt, (int)(n * rowStride));
                vb = kt;
            }
            GroupProducts(kh0, kh1, group, sc + p, w16, vb, d, (int)rowStride, n, d, o, d, junk, resume: p > 0);
        }
        for (int h = h0; h < h1; h++) AttentionTiles.ScaleRow(o + (long)h * d, d, inv[h]);
    }

    // For each kv head kh in [kh0, kh1), its group of query heads h through AttentionTiles.Product six at a time:
    // C_h = A_h B_kh, A_h at aBase + h * aStride, B_kh at b + kh * bStride (ldb), C_h at cBase + h * cStride; a tile's rows past
    // the group repeat its last A row and write junk.
    private static unsafe void GroupProducts(int kh0, int kh1, int group, float* aBase, long aStride, float* b, long bStride, int ldb,
        int n, int w, float* cBase, long cStride, float* junk, bool resume)
    {
        const int R = AttentionTiles.Rows;
        float** a = stackalloc float*[R];
        float** c = stackalloc float*[R];
        for (int kh = kh0; kh < kh1; kh++)
            for (int g0 = 0; g0 < group; g0 += R)
            {
                for (int r = 0; r < R; r++)
                {
                    int h = kh * group + Math.Min(g0 + r, group - 1);
                    a[r] = aBase + h * aStride;
                    c[r] = g0 + r < group ? cBase + h * cStride : junk;
                }
                AttentionTiles.Product(a, 1, b + kh * bStride, ldb, n, w, c, accumulate: false, resume);
            }
    }

    private static int Offset(int[] tables, int maxBlocks, int seq, int j, int blockSize, int kvHeads, int kh, int d) =>
        ((tables[seq * maxBlocks + j / blockSize] * blockSize + j % blockSize) * kvHeads + kh) * d;

    // A cache row as f32 (the general-D path): the f32 row itself, or the bf16 row widened into scratch.
    private static unsafe ReadOnlySpan<float> Row<T>(T* row, int d, float[] scratch) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return new ReadOnlySpan<float>(row, d);
        fixed (float* dst = scratch) Bf16.Widen((ushort*)row, dst, d);
        return scratch.AsSpan(0, d);
    }
}
