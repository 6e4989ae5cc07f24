// The LoRA products with a rank-r side (r <= 16) on the GPU (cuda/lora_rank.cu, embedded as Ptx/lora_rank.ptx), f32:
//   RowsTimesRank:    out[n, r] = alpha X[n, c] W^T (+ out), W(q, j) at w[q * rankStride + j * columnStride]:
//                     xa = x A^T (A [r, K]: RowsTimesRank(x, A, xa, n, K, r, K, 1)) and dxa = scale dy B (B [M, r]:
//                     RowsTimesRank(dy, B, dxa, n, M, r, 1, r, scale)).
//   ColumnsTimesRank: out(j, q) = alpha sum_i Y[i, j] L[i, q] (+ out), out(j, q) at out[j * columnStride + q * rankStride],
//                     Y [n, c], L [n, r]: dA += dxa^T x (ColumnsTimesRank(x, dxa, dA, n, K, r, 1, K, 1, true)) and
//                     dB += scale dy^T xa (ColumnsTimesRank(dy, xa, dB, n, M, r, r, 1, scale, true)). The rows are split
//                     so that the grid fills the GPU; the splits' partial sums are added in order (deterministic).
//   RankTimesRows:    out[n, c] = alpha L[n, r] W (+ out), W(q, j) at w[q * rankStride + j * columnStride]: y += scale xa B^T
//                     (RankTimesRows(xa, B, y, n, M, r, 1, r, scale, true)) and dx += dxa A (RankTimesRows(dxa, A, dx, n, K,
//                     r, K, 1, 1, true)).
// The module is loaded once per device context, on first use.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaLoraRank(CudaDevice device) : IDisposable
{
    /// <summary>The largest rank the kernels take.</summary>
    public const int MaxRank = 16;

    private const int Threads = 256, RowsPerBlock = 32, MinRowsPerSplit = 64;
    private CudaModuleHandle? _module;
    private CudaFunction? _rows, _partial, _reduce, _rankRows;
    private CudaDeviceMemory? _partials; // [splits, c, r], grown as needed
    private int _multiprocessors;

    /// <summary>Device bytes this instance holds of its own (the split partial sums).</summary>
    public long ScratchBytes => _partials?.ByteLength ?? 0;

    public void RowsTimesRank(CudaDeviceMemory x, CudaDeviceMemory w, CudaDeviceMemory output, int n, int c, int rank, long rankStride, long columnStride,
        float alpha = 1f, bool accumulate = false)
    {
        Check(n, c, rank, rankStride, columnStride, "RowsTimesRank");
        CudaLinear.Require(x, 4L * n * c, "x");
        RequireWeights(w, c, rank, rankStride, columnStride);
        CudaLinear.Require(output, 4L * n * rank, "the output");
        if (n == 0) return;
        _rows ??= CudaDriver.GetFunction(Module(), "lora_rows_times_rank");
        var args = new CudaKernelArguments().Add(x).Add(w).Add(output).Add(n).Add(c).Add(rank).Add(rankStride).Add(columnStride).Add(alpha).Add(accumulate ? 1 : 0);
        device.Launch(_rows, ((uint)((n + RowsPerBlock - 1) / RowsPerBlock), 1, 1), (Threads, 1, 1), args);
    }

    public void ColumnsTimesRank(CudaDeviceMemory y, CudaDeviceMemory l, CudaDeviceMemory output, int n, int c, int rank, long columnStride, long rankStride,
        float alpha = 1f, bool accumulate = false)
    {
        Check(n, c, rank, rankStride, columnStride, "ColumnsTimesRank");
        CudaLinear.Require(y, 4L * n * c, "y");
        CudaLinear.Require(l, 4L * n * rank, "l");
        CudaLinear.Require(output, 4L * (Math.Max(c - 1, 0) * columnStride + (rank - 1) * rankStride + 1), "the output");
        if (c == 0) return;
        if (_multiprocessors == 0) _multiprocessors = Math.Max(1, device.MultiprocessorCount);
        int columnBlocks = (c + Threads - 1) / Threads;
        int splits = Math.Clamp(2 * _multiprocessors / columnBlocks, 1, Math.Max(1, n / MinRowsPerSplit));
        int rowsPerSplit = Math.Max(1, (n + splits - 1) / splits);
        splits = Math.Max(1, (n + rowsPerSplit - 1) / rowsPerSplit);
        var partials = CudaScratch.AtLeast<float>(device, ref _partials, (long)splits * c * rank, 1L << 16);
        _partial ??= CudaDriver.GetFunction(Module(), "lora_columns_partial");
        _reduce ??= CudaDriver.GetFunction(Module(), "lora_columns_reduce");
        device.Launch(_partial, ((uint)columnBlocks, (uint)splits, 1), (Threads, 1, 1),
            new CudaKernelArguments().Add(y).Add(l).Add(partials).Add(n).Add(c).Add(rank).Add(rowsPerSplit));
        long elements = (long)c * rank;
        device.Launch(_reduce, (checked((uint)((elements + Threads - 1) / Threads)), 1, 1), (Threads, 1, 1),
            new CudaKernelArguments().Add(partials).Add(output).Add(c).Add(rank).Add(splits).Add(columnStride).Add(rankStride).Add(alpha).Add(accumulate ? 1 : 0));
    }

    public void RankTimesRows(CudaDeviceMemory l, CudaDeviceMemory w, CudaDeviceMemory output, int n, int c, int rank, long rankStride, long columnStride,
        float alpha = 1f, bool accumulate = false)
    {
        Check(n, c, rank, rankStride, columnStride, "RankTimesRows");
        CudaLinear.Require(l, 4L * n * rank, "l");
        RequireWeights(w, c, rank, rankStride, columnStride);
        CudaLinear.Require(output, 4L * n * c, "the output");
        if ((long)n * c == 0) return;
        _rankRows ??= CudaDriver.GetFunction(Module(), "lora_rank_times_rows");
        var args = new CudaKernelArguments().Add(l).Add(w).Add(output).Add(n).Add(c).Add(rank).Add(rankStride).Add(columnStride).Add(alpha).Add(accumulate ? 1 : 0);
        device.Launch(_rankRows, ((uint)((c + Threads - 1) / Threads), (uint)((n + RowsPerBlock - 1) / RowsPerBlock), 1), (Threads, 1, 1), args);
    }

    // W(q, j) at w[q * rankStride + j * columnStride] for q < rank, j < c.
    private static void RequireWeights(CudaDeviceMemory w, int c, int rank, long rankStride, long columnStride) =>
        CudaLinear.Require(w, 4L * ((rank - 1) * rankStride + Math.Max(c - 1, 0) * columnStride + 1), "w");

    private static void Check(int n, int c, int rank, long rankStride, long columnStride, string op)
    {
        if (n < 0 || c < 0 || rank < 1 || rank > MaxRank || rankStride < 0 || columnStride < 0)
            throw new CudaException($"CudaLoraRank.{op}: n and c must be >= 0, the rank 1 to {MaxRank} and the strides >= 0, not n {n}, c {c}, rank {rank}, strides {rankStride}/{columnStride}");
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("lora_rank.ptx"), out _);

    public void Dispose()
    {
        _module?.Dispose();
        _partials?.Dispose();
    }
}
