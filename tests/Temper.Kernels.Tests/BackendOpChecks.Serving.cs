// Op checks of the serving ops: paged attention against its scalar reference and against contiguous
// attention (IBackend.Attention) over the same keys scattered into shuffled blocks, for decode steps of
// sequences of different lengths and for a prefill chunk after cached tokens; over bf16 caches, the f32 caches' results for
// the same values within f32 rounding (and mixed cache dtypes refused); the gathered LoRA
// linear against its reference and against one LoraLinear per row.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks
{
    /// <summary>K/V [B,S,Hkv,D] scattered into a [Blocks, bs, Hkv, D] cache through shuffled block tables [B, maxBlocks].</summary>
    internal static (float[] KCache, float[] VCache, int[] Tables, int Blocks) Scatter(float[] k, float[] v, int batch, int s, int kvHeads, int d, int bs, int seed)
    {
        int maxBlocks = (s + bs - 1) / bs, blocks = batch * maxBlocks + 3; // spare blocks stay random
        var order = Enumerable.Range(0, blocks).OrderBy(_ => 0).ToArray();
        new Random(seed).Shuffle(order);
        var tables = new int[batch * maxBlocks];
        var kc = Floats(blocks * bs * kvHeads * d, seed + 1, 5f);
        var vc = Floats(blocks * bs * kvHeads * d, seed + 2, 5f);
        int row = kvHeads * d;
        for (int b = 0; b < batch; b++)
            for (int p = 0; p < s; p++)
            {
                int blk = tables[b * maxBlocks + p / bs] = order[b * maxBlocks + p / bs];
                Array.Copy(k, (b * s + p) * row, kc, (blk * bs + p % bs) * row, row);
                Array.Copy(v, (b * s + p) * row, vc, (blk * bs + p % bs) * row, row);
            }
        return (kc, vc, tables, blocks);
    }

    public static TheoryData<int, int, int, int, int> PagedDecodeCases => new()
    {
        // B, H, Hkv, D, block size
        { 3, 4, 2, 16, 4 },   // GQA 2:1
        { 2, 6, 1, 8, 1 },    // MQA, one-token blocks
        { 1, 2, 2, 67, 16 },  // odd head size, one block
        { 4, 9, 3, 64, 5 },   // SmolLM-like heads, blocks not a power of two
    };

    [Theory]
    [MemberData(nameof(PagedDecodeCases))]
    public void PagedAttention_decode_equals_contiguous_attention_and_reference(int batch, int heads, int kvHeads, int d, int bs)
    {
        const int s = 23;
        var lens = Enumerable.Range(0, batch).Select(b => s - 5 * b).ToArray(); // sequences of different lengths
        var q = Floats(batch * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        float scale = 1f / MathF.Sqrt(d);
        // Contiguous: every row is one query at position s-1; keys past a row's length are masked.
        var mask = new int[batch * s];
        for (int b = 0; b < batch; b++) for (int j = 0; j < lens[b]; j++) mask[b * s + j] = 1;
        var contiguous = _b.Zeros(new Shape(batch, 1, heads, d));
        _b.Attention(new AttentionArgs(Up(q, batch, 1, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), contiguous, s, s - 1, scale, mask));

        var (kc, vc, tables, blocks) = Scatter(k, v, batch, s, kvHeads, d, bs, 10 + bs);
        int maxBlocks = (s + bs - 1) / bs;
        var rowSeq = Enumerable.Range(0, batch).ToArray();
        var expected = new float[q.Length];
        PagedAttentionReference.Forward(q, kc, vc, expected, tables, maxBlocks, rowSeq, lens, heads, kvHeads, d, bs, scale);
        var paged = _b.Zeros(new Shape(batch, heads, d));
        _b.PagedAttention(new PagedAttentionArgs(Up(q, batch, heads, d), Up(kc, blocks, bs, kvHeads, d), Up(vc, blocks, bs, kvHeads, d), paged,
            tables, maxBlocks, rowSeq, lens, scale));
        Close(Run(paged), expected, "paged attention vs reference");
        Close(Run(paged), Run(contiguous), "paged attention vs contiguous attention");
    }

    [Fact]
    public void PagedAttention_prefill_chunk_equals_contiguous_attention()
    {
        const int heads = 4, kvHeads = 2, d = 16, bs = 4, offset = 9, tq = 6, s = offset + tq;
        var q = Floats(tq * heads * d, 4, 2f);
        var k = Floats(s * kvHeads * d, 5, 2f);
        var v = Floats(s * kvHeads * d, 6);
        float scale = 1f / MathF.Sqrt(d);
        var contiguous = _b.Zeros(new Shape(1, tq, heads, d));
        _b.Attention(new AttentionArgs(Up(q, 1, tq, heads, d), Up(k, 1, s, kvHeads, d), Up(v, 1, s, kvHeads, d), contiguous, s, offset, scale));
        var (kc, vc, tables, blocks) = Scatter(k, v, 1, s, kvHeads, d, bs, 7);
        var lens = Enumerable.Range(0, tq).Select(i => offset + i + 1).ToArray(); // causal: each query sees up to itself
        var paged = _b.Zeros(new Shape(tq, heads, d));
        _b.PagedAttention(new PagedAttentionArgs(Up(q, tq, heads, d), Up(kc, blocks, bs, kvHeads, d), Up(vc, blocks, bs, kvHeads, d), paged,
            tables, tables.Length, new int[tq], lens, scale));
        Close(Run(paged), Run(contiguous), "paged prefill chunk vs contiguous attention");
    }

    [Theory]
    [MemberData(nameof(PagedDecodeCases))]
    public void PagedAttention_over_bf16_caches_gives_the_f32_caches_results_for_their_values(int batch, int heads, int kvHeads, int d, int bs)
    {
        const int s = 23;
        var lens = Enumerable.Range(0, batch).Select(b => s - 5 * b).ToArray();
        var q = Floats(batch * heads * d, 1, 2f);
        var (kc, vc, tables, blocks) = Scatter(Floats(batch * s * kvHeads * d, 2, 2f), Floats(batch * s * kvHeads * d, 3), batch, s, kvHeads, d, bs, 10 + bs);
        var (kBits, vBits) = (new ushort[kc.Length], new ushort[vc.Length]);
        BFloat16.FromSingle(kc, kBits);
        BFloat16.FromSingle(vc, vBits);
        var (kWide, vWide) = (new float[kc.Length], new float[vc.Length]);
        BFloat16.ToSingle(kBits, kWide);
        BFloat16.ToSingle(vBits, vWide);
        int maxBlocks = (s + bs - 1) / bs;
        var rowSeq = Enumerable.Range(0, batch).ToArray();
        float scale = 1f / MathF.Sqrt(d);
        Tensor Cache(ushort[] bits) => _b.FromHost(Tensor.FromArray<ushort>(new Shape(blocks, bs, kvHeads, d), bits, DType.BF16));
        var fromBf16 = _b.Zeros(new Shape(batch, heads, d));
        _b.PagedAttention(new PagedAttentionArgs(Up(q, batch, heads, d), Cache(kBits), Cache(vBits), fromBf16, tables, maxBlocks, rowSeq, lens, scale));
        var fromWidened = _b.Zeros(new Shape(batch, heads, d));
        _b.PagedAttention(new PagedAttentionArgs(Up(q, batch, heads, d), Up(kWide, blocks, bs, kvHeads, d), Up(vWide, blocks, bs, kvHeads, d), fromWidened, tables, maxBlocks, rowSeq, lens, scale));
        Close(Run(fromBf16), Run(fromWidened), "paged attention, bf16 caches vs f32 caches of their values"); // f32 rounding: the CPU's AVX-512 bf16 path sums in another order
        var expected = new float[q.Length];
        PagedAttentionReference.Forward(q, kWide, vWide, expected, tables, maxBlocks, rowSeq, lens, heads, kvHeads, d, bs, scale);
        Close(Run(fromBf16), expected, "paged attention over bf16 caches vs reference");

        var mixed = Assert.Throws<ArgumentException>(() => _b.PagedAttention(new PagedAttentionArgs(Up(q, batch, heads, d), Cache(kBits), Up(vWide, blocks, bs, kvHeads, d),
            fromBf16, tables, maxBlocks, rowSeq, lens, scale)));
        Assert.Contains("PagedAttention: k cache BF16, v cache F32: need both f32 or both bf16", mixed.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PagedAttention_of_rows_in_runs_of_one_sequence_matches_the_reference(bool bf16)
    {
        // An 11-row prefill chunk of sequence 0 (more than one tile of rows), a decode row of sequence 1, then three rows of
        // sequence 0 again seeing 0, 30 and 5 keys: rows sharing a sequence in any lengths, tiles cut at 8 rows and at every change.
        const int heads = 6, kvHeads = 2, d = 32, bs = 4, s = 40;
        int[] rowSeq = [.. Enumerable.Repeat(0, 11), 1, 0, 0, 0];
        int[] lens = [.. Enumerable.Range(0, 11).Select(i => 20 + i), 33, 0, 30, 5];
        var q = Floats(rowSeq.Length * heads * d, 7, 2f);
        var (kc, vc, tables, blocks) = Scatter(Floats(2 * s * kvHeads * d, 8, 2f), Floats(2 * s * kvHeads * d, 9), 2, s, kvHeads, d, bs, 12);
        if (bf16)
        {
            var bits = new ushort[kc.Length];
            BFloat16.FromSingle(kc, bits);
            BFloat16.ToSingle(bits, kc);
            BFloat16.FromSingle(vc, bits);
            BFloat16.ToSingle(bits, vc);
        }
        float scale = 1f / MathF.Sqrt(d);
        var expected = new float[q.Length];
        PagedAttentionReference.Forward(q, kc, vc, expected, tables, s / bs, rowSeq, lens, heads, kvHeads, d, bs, scale);
        var cacheShape = new Shape(blocks, bs, kvHeads, d);
        var output = _b.Zeros(new Shape(rowSeq.Length, heads, d));
        _b.PagedAttention(new PagedAttentionArgs(Up(q, rowSeq.Length, heads, d), _b.FromHost(Tensor.FromFloatsAs(cacheShape, kc, bf16 ? DType.BF16 : DType.F32)),
            _b.FromHost(Tensor.FromFloatsAs(cacheShape, vc, bf16 ? DType.BF16 : DType.F32)), output, tables, s / bs, rowSeq, lens, scale));
        var got = Run(output);
        Close(got, expected, $"paged attention, rows in runs of one sequence (bf16 caches {bf16})");
        Assert.All(got.AsSpan(12 * heads * d, heads * d).ToArray(), x => Assert.Equal(0f, x)); // the row that sees no key
    }

    [Theory]
    [InlineData(9, 3, 64, 16)]
    [InlineData(9, 3, 32, 4)]
    [InlineData(4, 2, 16, 4)]    // llama-tiny's heads
    [InlineData(14, 2, 16, 3)]   // a group of 7 query heads (two row tiles)
    public void PagedAttention_gives_a_row_the_same_bits_in_any_run_of_its_sequence(int heads, int kvHeads, int d, int bs)
    {
        // A prompt's rows computed as one 13-row chunk, as chunks of 7 and 6, as a 3-row verify and one row at a time (a
        // prefix-cache hit, a speculative verify and decode steps see the same keys), the last on one thread and on four (a
        // row split by kv head): every row the same bits each way.
        const int s = 13;
        var q = Floats(s * heads * d, 21, 2f);
        var (kc, vc, tables, blocks) = Scatter(Floats(s * kvHeads * d, 22, 2f), Floats(s * kvHeads * d, 23), 1, s, kvHeads, d, bs, 24);
        var (kt, vt) = (Up(kc, blocks, bs, kvHeads, d), Up(vc, blocks, bs, kvHeads, d));
        float scale = 1f / MathF.Sqrt(d);
        using var one = Create(1);
        using var four = Create(4);
        float[] Rows(int from, int count, IBackend? on = null)
        {
            var be = on ?? _b;
            var o = be.Zeros(new Shape(count, heads, d));
            be.PagedAttention(new PagedAttentionArgs(Up(q.AsSpan(from * heads * d, count * heads * d).ToArray(), count, heads, d), kt, vt, o, tables, tables.Length,
                new int[count], Enumerable.Range(from + 1, count).ToArray(), scale));
            return be.ToHost(o).ToFloatArray();
        }
        var whole = Rows(0, s);
        float[][] ways = [[.. Rows(0, 7), .. Rows(7, 6)], [.. Rows(0, 10), .. Rows(10, 3)], [.. Enumerable.Range(0, s).SelectMany(r => Rows(r, 1, one))],
            [.. Enumerable.Range(0, s).SelectMany(r => Rows(r, 1, four))]];
        string[] names = ["chunks of 7 and 6", "10 rows and a 3-row verify", "one row at a time on one thread", "one row at a time on four threads"];
        for (int w = 0; w < ways.Length; w++)
            for (int i = 0; i < whole.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(whole[i]) == BitConverter.SingleToInt32Bits(ways[w][i]), $"row {i / (heads * d)}: {ways[w][i]} in {names[w]}, {whole[i]} in the whole chunk");
    }

    [Fact]
    public void PagedAttention_refuses_a_block_outside_the_cache()
    {
        var ex = Assert.Throws<ArgumentException>(() => _b.PagedAttention(new PagedAttentionArgs(_b.Zeros(new Shape(1, 2, 4)), _b.Zeros(new Shape(2, 4, 1, 4)),
            _b.Zeros(new Shape(2, 4, 1, 4)), _b.Zeros(new Shape(1, 2, 4)), new[] { 0, 5 }, 2, new[] { 0 }, new[] { 6 }, 1f)));
        Assert.Contains("PagedAttention", ex.Message);
    }

    [Theory]
    [InlineData(9, 13, 7, 4, 3, false)]
    [InlineData(1, 64, 64, 8, 1, false)]
    [InlineData(17, 33, 160, 16, 8, false)]
    [InlineData(17, 33, 160, 16, 3, true)]   // each adapter's rows contiguous (prefill chunks): computed in place
    public void GatheredLoraLinear_matches_reference_and_per_row_lora(int n, int k, int m, int r, int adapters, bool sorted)
    {
        var x = Floats(n * k, 1);
        var a = Floats(adapters * r * k, 2);
        var b = Floats(adapters * m * r, 3);
        var y0 = Floats(n * m, 4);
        var scales = Enumerable.Range(0, adapters).Select(i => 0.5f + i).ToArray();
        var rowAdapter = Ints(n, 5, adapters + 1).Select(i => i - 1).ToArray(); // -1 = no adapter
        if (sorted) Array.Sort(rowAdapter);
        var expected = (float[])y0.Clone();
        GatheredLoraLinearReference.Forward(x, a, b, scales, rowAdapter, expected, k, m, r);
        var y = Up(y0, n, m);
        _b.GatheredLoraLinear(Up(x, n, k), Up(a, adapters, r, k), Up(b, adapters, m, r), scales, rowAdapter, y);
        var got = Run(y);
        Close(got, expected, "gathered lora vs reference");
        // Each row against LoraLinear with that row's adapter alone (a zero base weight isolates the LoRA term).
        var w = _b.FromHost(T(new float[m * k], m, k));
        for (int i = 0; i < n; i++)
        {
            int ad = rowAdapter[i];
            if (ad < 0)
            {
                Assert.Equal(y0.AsSpan(i * m, m).ToArray(), got.AsSpan(i * m, m).ToArray());
                continue;
            }
            var yi = _b.Zeros(new Shape(1, m));
            _b.LoraLinear(Up(x[(i * k)..((i + 1) * k)], 1, k), w, null, Up(a[(ad * r * k)..((ad + 1) * r * k)], r, k), Up(b[(ad * m * r)..((ad + 1) * m * r)], m, r), scales[ad], yi);
            var want = Run(yi).Select((value, j) => value + y0[i * m + j]).ToArray();
            Close(got.AsSpan(i * m, m), want, $"gathered lora row {i} vs LoraLinear");
        }
    }
}
