// Paged attention. q[N,H,D] token rows of several sequences; k/v caches [Blocks, BlockSize, Hkv, D];
// out[N,H,D]. Row n of sequence seq[n] sees keys 0..len[n]-1; key p lives at slot p % BlockSize of block
// tables[seq * MaxBlocks + p / BlockSize]. One thread per (row, head): a pass for the max score, then a
// pass accumulating exp(s - max) v into out through the block table, normalised at the end; f32 arithmetic over
// f32 or bf16 caches (ICacheValues: the same kernel reading floats or widening bf16 bits).
// With PTX kernels on (IlgpuBackend.PtxKernels, CUDA), D = 64 or 128 and 16-byte aligned caches (whole
// pools are) the call goes to the CUDA C++
// kernel instead (Temper.Kernels.Cuda.CudaPagedAttention: f32 too, one block per row and kv head for the
// whole GQA group, keys split across blocks for few long rows) on the accelerator's own stream.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal struct PagedAttentionDims
{
    public int H, Hkv, D, BlockSize, MaxBlocks;
    public float Scale;
}

/// <summary>A cache's values as f32, by element index.</summary>
internal interface ICacheValues
{
    float this[int i] { get; }
}

internal readonly struct F32Cache(ArrayView<float> values) : ICacheValues
{
    private readonly ArrayView<float> _values = values;
    public float this[int i] => _values[i];
}

internal readonly struct Bf16Cache(ArrayView<ushort> bits) : ICacheValues
{
    private readonly ArrayView<ushort> _bits = bits;
    public float this[int i] => Interop.IntAsFloat((uint)_bits[i] << 16);
}

internal static class PagedAttention
{
    private static int KeyOffset(ArrayView<int> tables, PagedAttentionDims a, int seq, int p, int kh) =>
        ((tables[seq * a.MaxBlocks + p / a.BlockSize] * a.BlockSize + p % a.BlockSize) * a.Hkv + kh) * a.D;

    public static void Kernel<TCache>(Index1D index, ArrayView<float> q, TCache k, TCache v, ArrayView<float> output,
        ArrayView<int> tables, ArrayView<int> rowSeq, ArrayView<int> rowLen, PagedAttentionDims a) where TCache : struct, ICacheValues
    {
        int row = index / a.H, h = index % a.H, kh = h / (a.H / a.Hkv), d = a.D, qo = index * d;
        int seq = rowSeq[row], len = rowLen[row];
        for (int t = 0; t < d; t++) output[qo + t] = 0;
        if (len == 0) return;
        float max = float.NegativeInfinity;
        for (int j = 0; j < len; j++)
        {
            int ko = KeyOffset(tables, a, seq, j, kh);
            float s = 0;
            for (int t = 0; t < d; t++) s += q[qo + t] * k[ko + t];
            max = IntrinsicMath.Max(max, a.Scale * s);
        }
        float sum = 0;
        for (int j = 0; j < len; j++)
        {
            int ko = KeyOffset(tables, a, seq, j, kh);
            float s = 0;
            for (int t = 0; t < d; t++) s += q[qo + t] * k[ko + t];
            float p = MathF.Exp(a.Scale * s - max);
            sum += p;
            for (int t = 0; t < d; t++) output[qo + t] += p * v[ko + t];
        }
        float inv = 1f / sum;
        for (int t = 0; t < d; t++) output[qo + t] *= inv;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output,
        ReadOnlySpan<int> tables, ReadOnlySpan<int> rowSeq, ReadOnlySpan<int> rowLen, PagedAttentionDims a) =>
        Forward(dc, q, k, v, new F32Cache(k), new F32Cache(v), "paged_attention", output, tables, rowSeq, rowLen, a);

    /// <summary>The same over bf16 caches (their bits).</summary>
    public static void Forward(DeviceContext dc, ArrayView<float> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<float> output,
        ReadOnlySpan<int> tables, ReadOnlySpan<int> rowSeq, ReadOnlySpan<int> rowLen, PagedAttentionDims a) =>
        Forward(dc, q, k, v, new Bf16Cache(k), new Bf16Cache(v), "paged_attention.bf16", output, tables, rowSeq, rowLen, a);

    private static void Forward<T, TCache>(DeviceContext dc, ArrayView<float> q, ArrayView<T> k, ArrayView<T> v, TCache kValues, TCache vValues, string name,
        ArrayView<float> output, ReadOnlySpan<int> tables, ReadOnlySpan<int> rowSeq, ReadOnlySpan<int> rowLen, PagedAttentionDims a)
        where T : unmanaged where TCache : struct, ICacheValues
    {
        var dTables = dc.Arena.Upload(tables);
        var dSeq = dc.Arena.Upload(rowSeq);
        var dLen = dc.Arena.Upload(rowLen);
        if (dc.PtxPagedAttention is { } ptx && (a.D == 64 || a.D == 128) && Gemm.DeviceAddress(k) % 16 == 0 && Gemm.DeviceAddress(v) % 16 == 0)
        {
            PtxForward(dc, ptx, q, k, v, output, dTables, dSeq, dLen, tables.Length / a.MaxBlocks, rowLen, a);
            return;
        }
        int threads = rowSeq.Length * a.H;
        if (threads == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, TCache, TCache, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, PagedAttentionDims>>(name,
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, TCache, TCache, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, PagedAttentionDims>(Kernel))
            (threads, q, kValues, vValues, output, dTables, dSeq, dLen, a);
    }

    /// <summary>Forward through the CUDA C++ kernel (f32 or bf16 caches by T), its split workspace (if any) from the arena.</summary>
    private static void PtxForward<T>(DeviceContext dc, Temper.Kernels.Cuda.CudaPagedAttention ptx, ArrayView<float> q, ArrayView<T> k, ArrayView<T> v,
        ArrayView<float> output, ArrayView<int> tables, ArrayView<int> rowSeq, ArrayView<int> rowLen, int sequences, ReadOnlySpan<int> hostRowLen, PagedAttentionDims a)
        where T : unmanaged
    {
        int rows = hostRowLen.Length, maxLen = 0;
        foreach (int len in hostRowLen) maxLen = Math.Max(maxLen, len);
        var shape = new Temper.Kernels.Cuda.CudaPagedAttention.Shape(rows, a.H, a.Hkv, a.D, (int)(k.Length / ((long)a.BlockSize * a.Hkv * a.D)), a.BlockSize,
            sequences, a.MaxBlocks, maxLen, a.Scale);
        int splits = ptx.Splits(shape);
        long workspaceBytes = Temper.Kernels.Cuda.CudaPagedAttention.WorkspaceBytes(shape, splits);
        using var dq = Gemm.Borrow(dc, q);
        using var dk = Gemm.Borrow(dc, k);
        using var dv = Gemm.Borrow(dc, v);
        using var dOut = Gemm.Borrow(dc, output);
        using var dTables = Gemm.Borrow(dc, tables);
        using var dSeq = Gemm.Borrow(dc, rowSeq);
        using var dLen = Gemm.Borrow(dc, rowLen);
        using var workspace = workspaceBytes > 0 ? Gemm.Borrow(dc, dc.Arena.Take<float>(workspaceBytes / 4)) : null;
        ptx.Forward(dq, dk, dv, dOut, dTables, dSeq, dLen, workspace, shape, splits, bf16Cache: typeof(T) == typeof(ushort));
    }
}
