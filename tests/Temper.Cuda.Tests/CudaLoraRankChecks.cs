// CudaLoraRank (cuda/lora_rank.cu) against float64 evaluations of the six LoRA products it serves: xa = x A^T and
// dxa = s dy B (RowsTimesRank, both W layouts), dA += dxa^T x and dB += s dy^T xa (ColumnsTimesRank, both output
// layouts), y += s xa B^T and dx += dxa A (RankTimesRows, both W layouts), at ranks 1, 3 and 16, column counts that end in a partial 256-wide chunk, row counts that end in a partial
// block of 32 and split unevenly, with accumulation onto NaN-free starting values or overwriting NaN poison; the
// column sums twice, bit for bit (deterministic); refusals by name. Runs on a GPU and on the CUDA emulator.
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaLoraRankChecks
{
    private static float[] Floats(long n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1);
        return v;
    }

    private static void Close(float[] actual, double[] expected, string what)
    {
        double err = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.False(float.IsNaN(actual[i]), $"{what}[{i}] was not written");
            err += (actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        Assert.True(err / norm < 1e-10, $"{what}: normalised MSE {err / norm:E2}"); // f32 sums: ~1e-14; a wrong index ~1
    }

    [Theory]
    [InlineData(70, 300, 16, true, false)]  // A [r, K]: strides K, 1; a partial second chunk, a partial block of rows
    [InlineData(33, 64, 3, false, true)]    // B [M, r]: strides 1, r
    [InlineData(1, 513, 1, true, true)]
    [InlineData(100, 256, 16, false, false)]
    public void Rows_times_rank_matches_a_float64_evaluation(int n, int c, int rank, bool aLayout, bool accumulate)
    {
        using var device = Gpu.OpenForKernels();
        long rankStride = aLayout ? c : 1, columnStride = aLayout ? 1 : rank;
        var x = Floats((long)n * c, 1);
        var w = Floats((long)rank * c, 2);
        var start = accumulate ? Floats((long)n * rank, 3) : Enumerable.Repeat(float.NaN, n * rank).ToArray();
        const float alpha = 0.75f;
        var expected = new double[n * rank];
        for (int i = 0; i < n; i++)
            for (int q = 0; q < rank; q++)
            {
                double s = 0;
                for (int j = 0; j < c; j++) s += (double)x[(long)i * c + j] * w[q * rankStride + j * columnStride];
                expected[i * rank + q] = alpha * s + (accumulate ? start[i * rank + q] : 0);
            }
        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<float>(w);
        using var dout = device.Upload<float>(start);
        using var lora = new CudaLoraRank(device);
        lora.RowsTimesRank(dx, dw, dout, n, c, rank, rankStride, columnStride, alpha, accumulate);
        device.Synchronize();
        Close(device.Download<float>(dout), expected, "out");
    }

    [Theory]
    [InlineData(300, 70, 16, true, true)]    // dA [r, K]: column stride 1, rank stride K
    [InlineData(1000, 520, 3, false, true)]  // dB [M, r]: column stride r, rank stride 1; three column blocks
    [InlineData(7, 33, 1, true, false)]      // fewer rows than a split's minimum
    [InlineData(4096, 64, 16, false, false)] // many splits
    public void Columns_times_rank_matches_a_float64_evaluation_and_repeats_bit_for_bit(int n, int c, int rank, bool aLayout, bool accumulate)
    {
        using var device = Gpu.OpenForKernels();
        long columnStride = aLayout ? 1 : rank, rankStride = aLayout ? c : 1;
        var y = Floats((long)n * c, 4);
        var l = Floats((long)n * rank, 5);
        var start = accumulate ? Floats((long)c * rank, 6) : Enumerable.Repeat(float.NaN, c * rank).ToArray();
        const float alpha = -1.25f;
        var expected = new double[c * rank];
        for (int j = 0; j < c; j++)
            for (int q = 0; q < rank; q++)
            {
                double s = 0;
                for (int i = 0; i < n; i++) s += (double)y[(long)i * c + j] * l[(long)i * rank + q];
                long at = j * columnStride + q * rankStride;
                expected[at] = alpha * s + (accumulate ? start[at] : 0);
            }
        using var dy = device.Upload<float>(y);
        using var dl = device.Upload<float>(l);
        using var lora = new CudaLoraRank(device);
        float[] Run()
        {
            using var dout = device.Upload<float>(start);
            lora.ColumnsTimesRank(dy, dl, dout, n, c, rank, columnStride, rankStride, alpha, accumulate);
            device.Synchronize();
            return device.Download<float>(dout);
        }
        var first = Run();
        Close(first, expected, "out");
        Assert.Equal(first, Run());
    }

    [Theory]
    [InlineData(70, 300, 16, false, true)]  // y += s xa B^T: B [M, r], strides 1, r; a partial column block and row block
    [InlineData(33, 64, 3, true, true)]     // dx += dxa A: A [r, K], strides K, 1
    [InlineData(1, 513, 1, true, false)]
    [InlineData(100, 256, 16, false, false)]
    public void Rank_times_rows_matches_a_float64_evaluation(int n, int c, int rank, bool aLayout, bool accumulate)
    {
        using var device = Gpu.OpenForKernels();
        long rankStride = aLayout ? c : 1, columnStride = aLayout ? 1 : rank;
        var l = Floats((long)n * rank, 7);
        var w = Floats((long)rank * c, 8);
        var start = accumulate ? Floats((long)n * c, 9) : Enumerable.Repeat(float.NaN, n * c).ToArray();
        const float alpha = 0.5f;
        var expected = new double[n * c];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < c; j++)
            {
                double s = 0;
                for (int q = 0; q < rank; q++) s += (double)l[(long)i * rank + q] * w[q * rankStride + j * columnStride];
                expected[i * c + j] = alpha * s + (accumulate ? start[i * c + j] : 0);
            }
        using var dl = device.Upload<float>(l);
        using var dw = device.Upload<float>(w);
        using var dout = device.Upload<float>(start);
        using var lora = new CudaLoraRank(device);
        lora.RankTimesRows(dl, dw, dout, n, c, rank, rankStride, columnStride, alpha, accumulate);
        device.Synchronize();
        Close(device.Download<float>(dout), expected, "out");
    }

    [Fact]
    public void Ranks_and_sizes_out_of_range_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var small = device.Allocate<float>(16);
        using var lora = new CudaLoraRank(device);
        Assert.Contains("the rank 1 to 16", Assert.Throws<CudaException>(() => lora.RowsTimesRank(small, small, small, 1, 1, 17, 1, 1)).Message);
        Assert.Contains("x holds 64 bytes, the sizes need 128", Assert.Throws<CudaException>(() => lora.RowsTimesRank(small, small, small, 4, 8, 1, 8, 1)).Message);
        Assert.Contains("the output holds 64 bytes", Assert.Throws<CudaException>(() => lora.ColumnsTimesRank(small, small, small, 1, 16, 2, 2, 1)).Message);
    }
}
