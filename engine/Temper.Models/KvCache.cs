// Per-layer key/value cache for generation: K and V are [B, S, Hkv, D] with capacity S; the first
// Length positions are filled. KeyMask[B, S] marks real tokens (1) and padding (0), so a batch of
// left-padded prompts decodes together. Truncate rolls the cache back (speculative decoding drops the
// rejected tokens' K/V): positions past Length are dead and the next Write overwrites them, so rolling
// back moves no data on any backend (host or ILGPU device tensors alike).
using Temper.Core;

namespace Temper.Models;

public sealed class KvCache : IDisposable
{
    private readonly IBackend _be;
    private readonly Tensor[] _k, _v;
    private readonly int[] _keyMask;

    public KvCache(ModelConfig cfg, IBackend be, int batch, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _be = be;
        Batch = batch;
        Capacity = capacity;
        var shape = new Shape(batch, capacity, cfg.NumKvHeads, cfg.HeadDim);
        _k = new Tensor[cfg.NumLayers];
        _v = new Tensor[cfg.NumLayers];
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            _k[i] = be.Zeros(shape);
            _v[i] = be.Zeros(shape);
        }
        _keyMask = new int[batch * capacity];
    }

    public int Batch { get; }
    public int Capacity { get; }
    /// <summary>Virtual tokens (a prompt-tuning adapter's) at the start of each row; the decoder moves later positions up by this many.</summary>
    public int VirtualTokens { get; set; }
    /// <summary>Positions filled so far (the same for every row; padding fills the gaps).</summary>
    public int Length { get; private set; }

    public Tensor K(int layer) => _k[layer];
    public Tensor V(int layer) => _v[layer];

    /// <summary>Copies k,v [B*T, Hkv*D] of the new tokens into positions Length..Length+T-1 of one layer.</summary>
    public void Write(int layer, Tensor k, Tensor v, int t)
    {
        // The cache viewed as rows [B*S, Hkv*D], the row width of k and v.
        var rows = new Shape(Batch * Capacity, k.Shape[1]);
        var kd = new Tensor(rows, _k[layer].DType, _k[layer].Storage);
        var vd = new Tensor(rows, _v[layer].DType, _v[layer].Storage);
        for (int b = 0; b < Batch; b++)
        {
            _be.CopyRows(k, b * t, kd, b * Capacity + Length, t);
            _be.CopyRows(v, b * t, vd, b * Capacity + Length, t);
        }
    }

    /// <summary>Records the new tokens' mask [B,T] and advances Length by T (after every layer wrote).</summary>
    public void Advance(int t, ReadOnlySpan<int> newMask)
    {
        if (Length + t > Capacity) throw new TemperException($"KV cache full: {Length} + {t} tokens exceed its capacity {Capacity}");
        for (int b = 0; b < Batch; b++)
            for (int i = 0; i < t; i++)
                _keyMask[b * Capacity + Length + i] = newMask.IsEmpty ? 1 : newMask[b * t + i];
        Length += t;
    }

    /// <summary>Forgets every position from <paramref name="length"/> on, as if the cache had never seen them (cache positions:
    /// a prompt-tuning adapter's VirtualTokens count).</summary>
    public void Truncate(int length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length), $"cannot truncate a KV cache of {Length} positions to {length}");
        Length = length;
    }

    /// <summary>The key mask of the first <paramref name="length"/> positions, [B, length], contiguous.</summary>
    public int[] KeyMask(int length)
    {
        var m = new int[Batch * length];
        for (int b = 0; b < Batch; b++) _keyMask.AsSpan(b * Capacity, length).CopyTo(m.AsSpan(b * length));
        return m;
    }

    public void EnsureRoom(int t)
    {
        if (Length + t > Capacity) throw new TemperException($"KV cache full: {Length} + {t} tokens exceed its capacity {Capacity}");
    }

    public void Dispose()
    {
        foreach (var t in _k) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
