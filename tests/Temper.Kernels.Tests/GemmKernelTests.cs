// The CPU GEMM's micro-kernels (AVX-512 in its 12x32 and M <= 16 24x16 tiles, AVX2, scalar: each forced in
// turn) and the GEMV against the reference, at shapes that hit every edge tile and every blocking loop (K
// past KC, M past MC, N past NC; an f32 b read in place and, at M 128, packed because of its row stride; an a
// read in place and, at K 1024, packed because of its row stride; 12-row tiles short of rows run as 4-row
// strips, read in place when whole, as at N 40 and 64),
// the second reduction segment against the joined product, and the determinism property: the same bits with
// 1, 2 and 3 threads.
using System.Runtime.Intrinsics.X86;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

using System.Runtime.Intrinsics;

namespace Temper.Kernels.Tests;

public class GemmKernelTests
{
    public static TheoryData<GemmKernel, int, int, int> Cases()
    {
        var d = new TheoryData<GemmKernel, int, int, int>();
        (int, int, int)[] shapes = [(1, 1, 1), (7, 13, 5), (33, 65, 17), (64, 64, 64), (130, 70, 200), (12, 32, 32), (13, 33, 31),
            (25, 900, 40), (20, 8, 400), (1600, 3, 40), (300, 100, 16), (50, 700, 9), (24, 30, 16), (49, 5, 1),
            (40, 50, 128), (30, 400, 832), (26, 1024, 40)];
        foreach (var kernel in new[] { GemmKernel.Avx512, GemmKernel.Avx2, GemmKernel.Scalar })
            foreach (var (n, k, m) in shapes) d.Add(kernel, n, k, m);
        return d;
    }

    private static bool Supported(GemmKernel k) => k switch
    {
        GemmKernel.Avx512 => Avx512F.IsSupported,
        GemmKernel.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        _ => true,
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Gemm_MatchesReference(GemmKernel kernel, int n, int k, int m)
    {
        Assert.SkipUnless(Supported(kernel), $"{kernel} is not supported on this CPU");
        var x = Floats(n * k, 1);
        var wb = ToBf16(Floats(m * k, 2));
        var w = Widen(wb);
        var y0 = Floats(n * m, 3);
        var expected = (float[])y0.Clone();
        LinearReference.Forward(x, w, default, expected, n, k, m, accumulate: true);

        var y = (float[])y0.Clone();
        Gemm.Multiply(x, w, y, n, k, m, threads: 2, kernel);
        Close(y, expected, $"{kernel} f32 {n}x{k}x{m}");

        var yb = (float[])y0.Clone();
        Gemm.Multiply(x, wb, yb, n, k, m, threads: 2, kernel);
        Bitwise(yb, y, $"{kernel} bf16 vs f32 {n}x{k}x{m}");
    }

    // The backward forms: NN (y += a[N,K] b[K,M]) and TN (y += a[K,N]^T b[K,M]), through the transposes.
    [Theory]
    [MemberData(nameof(Cases))]
    public void GemmNN_And_TN_MatchReference(GemmKernel kernel, int n, int k, int m)
    {
        Assert.SkipUnless(Supported(kernel), $"{kernel} is not supported on this CPU");
        var a = Floats(n * k, 1);
        var bb = ToBf16(Floats(k * m, 2));
        var b = Widen(bb);
        var aT = Transpose(a, n, k); // [K,N]
        var bT = Transpose(b, k, m); // [M,K]: the NT form's weight
        var y0 = Floats(n * m, 3);
        var expected = (float[])y0.Clone();
        LinearReference.Forward(a, bT, default, expected, n, k, m, accumulate: true);

        var nn = (float[])y0.Clone();
        Gemm.MultiplyNN(a, b, nn, n, k, m, threads: 2, kernel);
        Close(nn, expected, $"{kernel} NN {n}x{k}x{m}");
        var nnb = (float[])y0.Clone();
        Gemm.MultiplyNN(a, bb, nnb, n, k, m, threads: 2, kernel);
        Bitwise(nnb, nn, $"{kernel} NN bf16 vs f32 {n}x{k}x{m}");
        var tn = (float[])y0.Clone();
        Gemm.MultiplyTN(aT, b, tn, n, k, m, threads: 2, kernel);
        Bitwise(tn, nn, $"{kernel} TN vs NN {n}x{k}x{m}");
    }

    // y += [x | x2] [w | w2]^T through the second segment equals the GEMM of the joined matrices (the same sums
    // in the same order when K fits one KC block; within rounding past it), f32 and bf16 w.
    [Theory]
    [MemberData(nameof(Cases))]
    public void GemmSecondSegment_MatchesJoinedProduct(GemmKernel kernel, int n, int k, int m)
    {
        Assert.SkipUnless(Supported(kernel), $"{kernel} is not supported on this CPU");
        foreach (int k2 in new[] { 1, 16, Gemm.KC })
        {
            var x = Floats(n * k, 1);
            var x2 = Floats(n * k2, 4);
            var wb = ToBf16(Floats(m * k, 2));
            var w = Widen(wb);
            var w2 = Floats(m * k2, 5);
            var (xj, wj) = (Join(x, x2, n, k, k2), Join(w, w2, m, k, k2));
            var y0 = Floats(n * m, 3);
            var expected = (float[])y0.Clone();
            LinearReference.Forward(xj, wj, default, expected, n, k + k2, m, accumulate: true);

            var y = (float[])y0.Clone();
            Gemm.Multiply(x, w, default, x2, w2, y, n, k, k2, m, threads: 2, kernel);
            Close(y, expected, $"{kernel} segment f32 {n}x{k}+{k2}x{m}");
            if (k + k2 <= Gemm.KC)
            {
                var joined = (float[])y0.Clone();
                Gemm.Multiply(xj, wj, joined, n, k + k2, m, threads: 2, kernel);
                Bitwise(y, joined, $"{kernel} segment vs joined {n}x{k}+{k2}x{m}");
            }
            var yb = (float[])y0.Clone();
            Gemm.Multiply(x, default, wb, x2, w2, yb, n, k, k2, m, threads: 3, kernel);
            Bitwise(yb, y, $"{kernel} segment bf16 (3 threads) vs f32 (2) {n}x{k}+{k2}x{m}");
        }
    }

    // overwrite: c's old contents (NaN here) are ignored, and the result has the bits of zeroing c and adding,
    // in every form, the second segment and the in-place b included.
    [Theory]
    [MemberData(nameof(Cases))]
    public void Gemm_Overwrite_EqualsZeroedThenAdded(GemmKernel kernel, int n, int k, int m)
    {
        Assert.SkipUnless(Supported(kernel), $"{kernel} is not supported on this CPU");
        var a = Floats(n * k, 1);
        var b = Floats(k * m, 2);
        var bT = Transpose(b, k, m);
        var aT = Transpose(a, n, k);
        var x2 = Floats(n * 16, 4);
        var w2 = Floats(m * 16, 5);
        var forms = new (string, Action<float[], bool>)[]
        {
            ("NT", (y, o) => Gemm.Multiply(a, bT, y, n, k, m, threads: 2, kernel, overwrite: o)),
            ("NT bf16", (y, o) => Gemm.Multiply(a, ToBf16(bT), y, n, k, m, threads: 2, kernel, overwrite: o)),
            ("NT+segment", (y, o) => Gemm.Multiply(a, bT, default, x2, w2, y, n, k, 16, m, threads: 2, kernel, overwrite: o)),
            ("NN", (y, o) => Gemm.MultiplyNN(a, b, y, n, k, m, threads: 2, kernel, overwrite: o)),
            ("TN", (y, o) => Gemm.MultiplyTN(aT, b, y, n, k, m, threads: 3, kernel, overwrite: o)),
        };
        foreach (var (name, run) in forms)
        {
            var zeroed = new float[n * m];
            run(zeroed, false);
            var stale = new float[n * m];
            Array.Fill(stale, float.NaN);
            run(stale, true);
            Bitwise(stale, zeroed, $"{kernel} {name} overwrite {n}x{k}x{m}");
        }
    }

    [Fact]
    public void GemmSecondSegment_RejectsBadShapes()
    {
        var (x, w, y) = (new float[4 * 8], new float[3 * 8], new float[4 * 3]);
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(x, w, default, new float[4 * 2], new float[3 * 3], y, 4, 8, 2, 3, 1));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(x, w, default, [], [], y, 4, 8, 0, 3, 1));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(x, w, ToBf16(w), new float[4], new float[3], y, 4, 8, 1, 3, 1));
    }

    private static float[] Join(float[] a, float[] b, int rows, int ka, int kb)
    {
        var r = new float[rows * (ka + kb)];
        for (int i = 0; i < rows; i++)
        {
            a.AsSpan(i * ka, ka).CopyTo(r.AsSpan(i * (ka + kb)));
            b.AsSpan(i * kb, kb).CopyTo(r.AsSpan(i * (ka + kb) + ka));
        }
        return r;
    }

    private static float[] Transpose(float[] src, int rows, int cols)
    {
        var r = new float[src.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) r[j * rows + i] = src[i * cols + j];
        return r;
    }

    [Fact]
    public void LmHeadCrossEntropy_IsTheSameAcrossVocabularyChunks()
    {
        const int n = 9, c = 20, v = 150;
        var hidden = Floats(n * c, 1, 2f);
        var head = Floats(v * c, 2);
        for (int i = 100 * c; i < v * c; i++) head[i] *= 4; // larger logits in the later chunks: the one-pass dHidden rescales what it has
        var labels = Ints(n, 3, v);
        labels[4] = -1;
        var losses = new float[n];
        var dh = new float[n * c];
        var dw = new float[v * c];
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, losses, 0.5f, dh, dw, n, c, v);
        foreach (int chunk in new[] { 32, 64, 150 })
        {
            var (l, h, w) = (new float[n], new float[n * c], new float[v * c]);
            LmHeadCrossEntropy.Run(hidden, head, default, labels, l, 0.5f, h, w, n, c, v, threads: 2, chunkWidth: chunk);
            CloseEach(l, losses, $"ce losses chunk {chunk}", 1e-5, 0.1);
            Close(h, dh, $"ce dHidden chunk {chunk}");
            Close(w, dw, $"ce dLmHead chunk {chunk}");
            var hOnly = new float[n * c]; // no dLmHead: the one-pass path
            var lOnly = new float[n];
            LmHeadCrossEntropy.Run(hidden, head, default, labels, lOnly, 0.5f, hOnly, default, n, c, v, threads: 2, chunkWidth: chunk);
            Close(hOnly, dh, $"ce dHidden alone, chunk {chunk}");
            foreach (int threads in new[] { 1, 3 }) // the vocabulary groups do not depend on the thread count
            {
                var (lt, ht) = (new float[n], new float[n * c]);
                LmHeadCrossEntropy.Run(hidden, head, default, labels, lt, 0.5f, ht, default, n, c, v, threads, chunkWidth: chunk);
                Bitwise(ht, hOnly, $"ce dHidden alone, chunk {chunk}, {threads} vs 2 threads");
                Bitwise(lt, lOnly, $"ce losses, chunk {chunk}, {threads} vs 2 threads");
            }
        }
    }

    [Theory]
    [InlineData(GemmKernel.Avx512)]
    [InlineData(GemmKernel.Avx2)]
    [InlineData(GemmKernel.Scalar)]
    public void Gemm_IsBitwiseIndependentOfThreads(GemmKernel kernel)
    {
        Assert.SkipUnless(Supported(kernel), $"{kernel} is not supported on this CPU");
        // NT and NN (whose f32 b is read in place where a thread's block has only full tiles)
        foreach (var (n, k, m) in new[] { (130, 70, 200), (301, 517, 129), (40, 800, 700) })
        {
            var x = Floats(n * k, 1);
            var w = Floats(m * k, 2);
            float[] Run(int threads)
            {
                var y = new float[n * m];
                Gemm.Multiply(x, w, y, n, k, m, threads, kernel);
                var yNN = new float[n * m]; // w's values as b [K,M]: the NN form, its b read in place where it can be
                Gemm.MultiplyNN(x, w, yNN, n, k, m, threads, kernel);
                return [.. y, .. yNN];
            }
            var one = Run(1);
            Bitwise(Run(2), one, $"{kernel} {n}x{k}x{m} 2 threads");
            Bitwise(Run(3), one, $"{kernel} {n}x{k}x{m} 3 threads");
        }
    }

    [Fact]
    public void Gemv_MatchesReference_AtEveryLength()
    {
        foreach (int k in Enumerable.Range(1, 67).Append(576))
        foreach (int m in new[] { 1, 3, 4, 5, 9 })
        {
            var x = Floats(k, k);
            var wb = ToBf16(Floats(m * k, m + k));
            var w = Widen(wb);
            var expected = Floats(m, 7);
            var y = (float[])expected.Clone();
            var yb = (float[])expected.Clone();
            LinearReference.Forward(x, w, default, expected, 1, k, m, accumulate: true);
            Gemv.Multiply(x, w, y, k, m, threads: 2);
            Gemv.Multiply(x, wb, yb, k, m, threads: 2);
            Close(y, expected, $"gemv f32 k={k} m={m}");
            Close(yb, expected, $"gemv bf16 k={k} m={m}");
        }
    }

    [Fact]
    public void GemvBatch_MatchesReference_AndEachRowAlone()
    {
        foreach (int k in new[] { 1, 15, 16, 17, 31, 32, 33, 67, 576 })
        foreach (int n in new[] { 2, 3, 4, 5, 8, 11, Gemv.MaxBatch })
        {
            const int m = 9; // two 4-row weight tiles and one row past them
            var x = Floats(n * k, n + k);
            var wb = ToBf16(Floats(m * k, k));
            var w = Widen(wb);
            var y0 = Floats(n * m, 5);
            var expected = (float[])y0.Clone();
            LinearReference.Forward(x, w, default, expected, n, k, m, accumulate: true);
            var (y, yb) = ((float[])y0.Clone(), (float[])y0.Clone());
            Gemv.MultiplyBatch(x, w, y, n, k, m, threads: 2);
            Gemv.MultiplyBatch(x, wb, yb, n, k, m, threads: 2);
            Close(y, expected, $"gemv batch f32 n={n} k={k}");
            Close(yb, expected, $"gemv batch bf16 n={n} k={k}");
            for (int i = 0; i < n; i++)
            {
                var (one, oneb) = (y0.AsSpan(i * m, m).ToArray(), y0.AsSpan(i * m, m).ToArray());
                Gemv.Multiply(x.AsSpan(i * k, k), w, one, k, m, threads: 1);
                Gemv.Multiply(x.AsSpan(i * k, k), wb, oneb, k, m, threads: 1);
                Bitwise(y.AsSpan(i * m, m), one, $"gemv batch row {i} vs alone, n={n} k={k}");
                Bitwise(yb.AsSpan(i * m, m), oneb, $"gemv batch bf16 row {i} vs alone, n={n} k={k}");
            }
        }
    }

    /// <summary>Set by SimdPathTests for its child runs: the widest hardware vector (bits) they must see.</summary>
    public const string ExpectedWidthVariable = "TEMPER_EXPECT_VECTOR_BITS";

    [Fact]
    public void Runs_on_the_vector_width_asked_for()
    {
        string? want = Environment.GetEnvironmentVariable(ExpectedWidthVariable);
        if (want == null)
        {
            Assert.Skip($"only in SimdPathTests' child runs ({ExpectedWidthVariable} unset)");
            return;
        }
        int widest = Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Vector128.IsHardwareAccelerated ? 128 : 0;
        Assert.Equal(int.Parse(want, System.Globalization.CultureInfo.InvariantCulture), widest);
        Console.WriteLine(WidthCheckedLine(widest));
    }

    public static string WidthCheckedLine(int bits) => $"vector width checked: {bits} bits, as asked";

    [Fact]
    public void Gemv_IsBitwiseIndependentOfThreads()
    {
        const int k = 1000, m = 301;
        var x = Floats(k, 1);
        var w = Floats(m * k, 2);
        var wb = ToBf16(w);
        foreach (bool bf16 in new[] { false, true })
        {
            float[] Run(int threads)
            {
                var y = new float[m];
                if (bf16) Gemv.Multiply(x, wb, y, k, m, threads);
                else Gemv.Multiply(x, w, y, k, m, threads);
                return y;
            }
            var one = Run(1);
            Bitwise(Run(2), one, $"gemv bf16={bf16} 2 threads");
            Bitwise(Run(3), one, $"gemv bf16={bf16} 3 threads");
        }
    }
}
