// GgmlDequant against ggml itself: tests/fixtures/ggml-quants holds, for each type GgmlDequant reads, a 512-value
// row quantised by ggml's quantize_row_*_ref (TYPE.bin, its length ggml_row_size) and ggml's dequantize_row_* of
// those bytes (TYPE.f32), written by tests/reference/ggml_quants/make_vectors.c; decoding TYPE.bin must give TYPE.f32
// bit for bit and take ByteCount's bytes. Also: Temper's own Q8_0 encoder (GgmlQuant) gives ggml's q8_0 bytes for
// the same row and decodes back within half a step of the input; lengths that are not whole blocks, byte counts
// that do not match and types Temper does not read are refused in one line.
using System.Runtime.InteropServices;
using Temper.Core;
using Temper.Core.Gguf;

namespace Temper.Tests;

public class GgmlDequantTests
{
    private static string Fixture(string file) => Path.Combine(Fixtures.RepoRoot, "tests", "fixtures", "ggml-quants", file);

    private static float[] ReadFloats(string file) => MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(Fixture(file))).ToArray();

    public static TheoryData<GgmlType> Types =>
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q40, GgmlType.Q41, GgmlType.Q50, GgmlType.Q51, GgmlType.Q8,
        GgmlType.Q2K, GgmlType.Q3K, GgmlType.Q4K, GgmlType.Q5K, GgmlType.Q6K,
    ];

    [Theory, MemberData(nameof(Types))]
    public void DecodesGgmlsVectorsBitForBit(GgmlType type)
    {
        string name = GgmlDequant.Name(type);
        byte[] src = File.ReadAllBytes(Fixture(name + ".bin"));
        float[] want = ReadFloats(name + ".f32");
        Assert.True(GgmlDequant.IsSupported(type));
        Assert.Equal(512, want.Length);
        Assert.Equal(GgmlDequant.ByteCount(type, want.Length), src.Length);
        Assert.Contains(want, v => v != 0);

        var got = new float[want.Length];
        GgmlDequant.ToFloats(type, src, got);
        for (int i = 0; i < want.Length; i++)
            if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]))
                Assert.Fail($"{name} value {i}: {got[i]:R}, ggml's is {want[i]:R}");
    }

    [Fact]
    public void TempersQ8EncoderIsGgmlsAndRoundTrips()
    {
        float[] x = ReadFloats("f32.bin");
        using var ms = new MemoryStream();
        GgmlQuant.Write(ms, x, GgmlType.Q8);
        byte[] bytes = ms.ToArray();
        Assert.Equal(File.ReadAllBytes(Fixture("q8_0.bin")), bytes);

        var y = new float[x.Length];
        GgmlDequant.ToFloats(GgmlType.Q8, bytes, y);
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(x[32 * b + j]));
            float d = amax / 127, stored = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, 34 * b));
            // Half a step of the f32 scale, plus what rounding the scale to f16 moves the largest code (127).
            double bound = d / 2 + 127 * Math.Abs(d - stored) + 1e-7 * amax;
            for (int j = 0; j < 32; j++)
                Assert.True(Math.Abs(x[32 * b + j] - y[32 * b + j]) <= bound, $"block {b} value {j}: {x[32 * b + j]} decoded {y[32 * b + j]}, bound {bound}");
        }
    }

    [Fact]
    public void BlockSizesAreGgmls()
    {
        (GgmlType Type, int Values, int Bytes)[] blocks =
        [
            (GgmlType.F32, 1, 4), (GgmlType.F16, 1, 2), (GgmlType.BF16, 1, 2),
            (GgmlType.Q40, 32, 18), (GgmlType.Q41, 32, 20), (GgmlType.Q50, 32, 22), (GgmlType.Q51, 32, 24), (GgmlType.Q8, 32, 34),
            (GgmlType.Q2K, 256, 84), (GgmlType.Q3K, 256, 110), (GgmlType.Q4K, 256, 144), (GgmlType.Q5K, 256, 176), (GgmlType.Q6K, 256, 210),
        ];
        foreach (var (type, values, bytes) in blocks)
        {
            Assert.Equal(values, GgmlDequant.BlockSize(type));
            Assert.Equal(bytes, GgmlDequant.BlockBytes(type));
            Assert.Equal(3L * bytes, GgmlDequant.ByteCount(type, 3L * values));
        }
        Assert.Equal(GgmlQuant.Q8BlockBytes, GgmlDequant.BlockBytes(GgmlType.Q8));
    }

    private static void Refused(Action act, string expected)
    {
        var e = Assert.Throws<TemperException>(act);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void RefusesPartialBlocksWrongLengthsAndUnknownTypes()
    {
        Refused(() => GgmlDequant.ToFloats(GgmlType.Q4K, new byte[144], new float[100]), "ggml q4_K: 100 values are not whole blocks of 256");
        Refused(() => GgmlDequant.ByteCount(GgmlType.Q40, 33), "ggml q4_0: 33 values are not whole blocks of 32");
        Refused(() => GgmlDequant.ToFloats(GgmlType.Q6K, new byte[209], new float[256]), "ggml q6_K: 209 bytes for 256 values, expected 210");
        Refused(() => GgmlDequant.ToFloats(GgmlType.F16, new byte[6], new float[2]), "ggml f16: 6 bytes for 2 values, expected 4");

        var iq2xxs = (GgmlType)16;
        Assert.False(GgmlDequant.IsSupported(iq2xxs));
        Refused(() => GgmlDequant.ToFloats(iq2xxs, new byte[66], new float[256]), "ggml type 16 tensors are not supported");
        Refused(() => GgmlDequant.BlockBytes(iq2xxs), "ggml type 16 tensors are not supported");
    }
}
