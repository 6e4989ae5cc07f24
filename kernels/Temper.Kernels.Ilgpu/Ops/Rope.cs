// RoPE (HF rotate_half layout), in place on x[N,H,D]: for row n at position p and i < D/2,
//   x'[i] = x[i] c - x[i + D/2] s,   x'[i + D/2] = x[i + D/2] c + x[i] s,
// with c = cos(p invFreq[i]) scaling and s = sign sin(p invFreq[i]) scaling (sign -1 is backward, the
// transposed rotation). cos/sin come from a device table [P, D/2] per set of frequencies, built on the
// host once with the same f32 angle and MathF.Cos/Sin as the CPU reference (so the two agree bit for
// bit, and no device's fast sin of a large angle is trusted) and grown when a larger position appears.
// The table is a constant of the model like a weight, not a copy of any tensor. One thread per (n,h,i).
// With PTX kernels on (DeviceContext.PtxRope, CUDA), the rotation runs in the CUDA C++ kernel
// (cuda/rope.cu) on the same tables and positions.
using ILGPU;
using ILGPU.Runtime;
using Temper.Core;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Rope
{
    public static void Kernel(Index1D index, ArrayView<float> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin, int heads, int half, float sign)
    {
        int i = index % half, nh = index / half, n = nh / heads;
        int t = positions[n] * half + i;
        float c = cos[t], s = sign * sin[t];
        int o = nh * 2 * half;
        float x1 = x[o + i], x2 = x[o + i + half];
        x[o + i] = x1 * c - x2 * s;
        x[o + i + half] = x2 * c + x1 * s;
    }

    public static void Apply(DeviceContext dc, RopeTables tables, ArrayView<float> x, ReadOnlySpan<int> positions, RopeFrequencies freqs, int heads, float sign)
    {
        int half = freqs.InvFreq.Length;
        if ((long)positions.Length * heads * half == 0) return;
        int maxPos = 0;
        foreach (int p in positions)
        {
            if (p < 0) throw new ArgumentException($"ilgpu Rope: position {p} is negative");
            maxPos = Math.Max(maxPos, p);
        }
        var (cos, sin) = tables.Get(freqs, maxPos);
        var dPos = tables.Positions(positions);
        if (dc.PtxRope is { } ptx)
        {
            using var px = Gemm.Borrow(dc, x);
            using var pp = Gemm.Borrow(dc, dPos);
            using var pc = Gemm.Borrow(dc, cos);
            using var ps = Gemm.Borrow(dc, sin);
            ptx.Apply(px, pp, pc, ps, positions.Length, heads, half, sign);
            return;
        }
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float>>("rope", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, float>(Kernel))
            (positions.Length * heads * half, x, dPos, cos, sin, heads, half, sign);
    }
}

/// <summary>Device cos/sin tables [P, D/2] keyed by the frequencies' values (a few kept, oldest evicted).</summary>
internal sealed class RopeTables(DeviceContext dc) : IDisposable
{
    private const int MaxTables = 4;
    private readonly List<Entry> _entries = [];

    private sealed class Entry(float[] invFreq, float scaling, int positions, MemoryBuffer1D<float, Stride1D.Dense> cos, MemoryBuffer1D<float, Stride1D.Dense> sin)
    {
        public float[] InvFreq { get; } = invFreq;
        public float Scaling { get; } = scaling;
        public int Positions { get; } = positions;
        public MemoryBuffer1D<float, Stride1D.Dense> Cos { get; } = cos;
        public MemoryBuffer1D<float, Stride1D.Dense> Sin { get; } = sin;
    }

    // The last positions uploaded, kept on the device: a training step's 4 x layers Rope calls (q and k,
    // forward and backward) all use one set, so it crosses to the device once instead of each time.
    private int[] _positions = [];
    private MemoryBuffer1D<int, Stride1D.Dense>? _devicePositions;

    /// <summary>Bytes of tables and positions uploaded so far.</summary>
    public long UploadedBytes { get; private set; }

    public ArrayView<int> Positions(ReadOnlySpan<int> positions)
    {
        if (_devicePositions != null && positions.SequenceEqual(_positions)) return _devicePositions.View.SubView(0, positions.Length);
        dc.Stream.Synchronize(); // queued kernels may still read the old positions
        if (_devicePositions == null || _devicePositions.Length < positions.Length)
        {
            _devicePositions?.Dispose();
            _devicePositions = dc.Accelerator.Allocate1D<int>(Math.Max(256, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)positions.Length)));
        }
        _positions = positions.ToArray();
        _devicePositions.View.SubView(0, positions.Length).CopyFromCPU(dc.Stream, positions);
        UploadedBytes += 4L * positions.Length;
        return _devicePositions.View.SubView(0, positions.Length);
    }

    public (ArrayView<float> Cos, ArrayView<float> Sin) Get(RopeFrequencies freqs, int maxPos)
    {
        int idx = _entries.FindIndex(e => e.Scaling == freqs.AttentionScaling && e.InvFreq.AsSpan().SequenceEqual(freqs.InvFreq));
        if (idx >= 0 && _entries[idx].Positions > maxPos) return (_entries[idx].Cos.View, _entries[idx].Sin.View);
        if (idx >= 0)
        {
            Drop(idx);
        }
        else if (_entries.Count == MaxTables)
        {
            Drop(0);
        }
        int positions = (int)Math.Min(int.MaxValue / Math.Max(1, freqs.InvFreq.Length), Math.Max(256, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)maxPos + 1)));
        var e = Build(freqs, positions);
        _entries.Add(e);
        return (e.Cos.View, e.Sin.View);
    }

    private Entry Build(RopeFrequencies freqs, int positions)
    {
        var inv = freqs.InvFreq;
        int half = inv.Length;
        float scaling = freqs.AttentionScaling;
        var cos = new float[(long)positions * half];
        var sin = new float[cos.Length];
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                float angle = p * inv[i];
                cos[p * half + i] = MathF.Cos(angle) * scaling;
                sin[p * half + i] = MathF.Sin(angle) * scaling;
            }
        var acc = dc.Accelerator;
        var dCos = acc.Allocate1D<float>(cos.Length);
        var dSin = acc.Allocate1D<float>(sin.Length);
        dCos.View.CopyFromCPU(dc.Stream, cos);
        dSin.View.CopyFromCPU(dc.Stream, sin);
        UploadedBytes += 8L * cos.Length;
        return new Entry((float[])inv.Clone(), scaling, positions, dCos, dSin);
    }

    private void Drop(int idx)
    {
        // A table being replaced may still be read by queued kernels.
        dc.Stream.Synchronize();
        _entries[idx].Cos.Dispose();
        _entries[idx].Sin.Dispose();
        _entries.RemoveAt(idx);
    }

    public void Dispose()
    {
        _devicePositions?.Dispose();
        _devicePositions = null;
        foreach (var e in _entries)
        {
            e.Cos.Dispose();
            e.Sin.Dispose();
        }
        _entries.Clear();
    }
}
