// The paged KV cache's bookkeeping: allocation and freeing, copy-on-write of a forked sequence's
// partly filled block, prefix-cache registration and lookup by chained hash (a different prefix gives a
// different key), eviction of the least recently freed cached block, and refusal when the pool is short.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;

namespace Temper.Serving.Tests;

public sealed class PagedKvCacheTests
{
    private static readonly ModelConfig Cfg = ModelConfig.Load(ServingFixtures.Model);

    private static Tensor Rows(int n, int width, float start) =>
        Tensor.FromFloats(new Shape(n, width), Enumerable.Range(0, n * width).Select(i => start + i).ToArray());

    [Fact]
    public void Reserve_allocates_blocks_and_free_returns_them()
    {
        using var cache = new PagedKvCache(Cfg, new CpuBackend(1), blocks: 6, blockSize: 4);
        var s = new SequenceBlocks();
        Assert.True(cache.Reserve(s, 9));
        Assert.Equal(3, s.Blocks.Count);
        Assert.Equal(3, cache.Pool.Available);
        Assert.False(cache.Reserve(s, 30)); // needs 8 blocks in all
        Assert.Equal(3, s.Blocks.Count);
        cache.Free(s);
        Assert.Equal(6, cache.Pool.Available);
    }

    [Fact]
    public void Fork_shares_blocks_and_the_first_write_copies_the_partial_block()
    {
        using var cache = new PagedKvCache(Cfg, new CpuBackend(1), blocks: 8, blockSize: 4);
        int w = cache.RowWidth;
        var parent = new SequenceBlocks();
        int[] tokens = [5, 6, 7, 8, 9, 10];
        Assert.True(cache.Reserve(parent, 6));
        using (var k = Rows(6, w, 0))
        using (var v = Rows(6, w, 1000))
            for (int l = 0; l < cache.Layers; l++) cache.Write(l, parent, 0, k, v, 0, 6);
        cache.Commit(parent, tokens, 6);
        var child = cache.Fork(parent);
        Assert.Equal(parent.Blocks, child.Blocks);
        Assert.Equal(2, cache.Pool.RefCount(parent.Blocks[1]));
        Assert.True(cache.Reserve(child, 7)); // writes slot 2 of the shared second block: copy it
        Assert.NotEqual(parent.Blocks[1], child.Blocks[1]);
        Assert.Equal(parent.Blocks[0], child.Blocks[0]); // the full first block stays shared
        Assert.Equal(1, cache.CopiedOnWrite);
        var rows = cache.KRows(0).Floats;
        for (int slot = 0; slot < 2; slot++)
            Assert.Equal(rows.Slice((parent.Blocks[1] * 4 + slot) * w, w).ToArray(), rows.Slice((child.Blocks[1] * 4 + slot) * w, w).ToArray());
    }

    [Fact]
    public void Full_blocks_are_found_by_prefix_and_evicted_least_recently_freed_first()
    {
        using var cache = new PagedKvCache(Cfg, new CpuBackend(1), blocks: 4, blockSize: 2);
        int[] a = [1, 2, 3, 4, 5], b = [9, 9, 3, 4, 5];
        var s = new SequenceBlocks();
        Assert.True(cache.Reserve(s, 5));
        cache.Commit(s, a, 5);
        Assert.Equal(2, cache.Pool.Cached); // two full blocks; the fifth token's block is partial
        var blocks = s.Blocks.ToArray();
        cache.Free(s);

        var hit = new SequenceBlocks();
        Assert.Equal(4, cache.MatchPrefix(hit, a));
        Assert.Equal(blocks[..2], hit.Blocks);
        cache.Free(hit);
        var miss = new SequenceBlocks();
        Assert.Equal(0, cache.MatchPrefix(miss, b)); // same second block, different prefix: a different key
        var otherAdapter = new SequenceBlocks { Salt = 77 };
        Assert.Equal(0, cache.MatchPrefix(otherAdapter, a)); // same tokens under another adapter: other K/V

        var evicted = new List<int>();
        cache.Pool.OnEvict = (blk, _) => evicted.Add(blk);
        var big = new SequenceBlocks();
        Assert.True(cache.Reserve(big, 8)); // takes the two empty blocks, then evicts the two cached ones
        Assert.Equal(blocks[..2], evicted);
        Assert.Equal(0, cache.Pool.Cached);
    }
}
