// transpose_16.cu (CudaTranspose.Transpose16) against the definition, element for element: shapes ending in
// partial 64 x 64 tiles, the 8-byte path (rows and columns multiples of 4) and the element path (either not), a
// single row and a single column; the output poisoned so an unwritten element fails, and a guard after it that
// must stay untouched. Runs on a GPU and on the CUDA emulator.
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaTransposeChecks
{
    [Theory]
    [InlineData(128, 64)]  // whole tiles, 8-byte accesses
    [InlineData(200, 136)] // partial tiles both ways, 8-byte accesses
    [InlineData(67, 130)]  // rows not a multiple of 4: element by element
    [InlineData(72, 33)]   // columns not a multiple of 4
    [InlineData(1, 300)]
    [InlineData(300, 1)]
    public void Every_element_lands_transposed(int rows, int cols)
    {
        using var device = Gpu.OpenForKernels();
        var r = new Random(rows * 1000 + cols);
        var input = new ushort[rows * cols];
        for (int i = 0; i < input.Length; i++) input[i] = (ushort)r.Next(0, 0xFFFF);
        const int guard = 16;
        using var din = device.Upload<ushort>(input);
        using var dout = device.Upload<ushort>(Enumerable.Repeat((ushort)0xFFFF, rows * cols + guard).ToArray());
        using var transpose = new CudaTranspose(device);
        transpose.Transpose16(din, dout, rows, cols);
        device.Synchronize();
        var output = device.Download<ushort>(dout);
        int wrong = 0;
        string first = "";
        for (int c = 0; c < cols; c++)
            for (int q = 0; q < rows; q++)
                if (output[c * rows + q] != input[q * cols + c] && wrong++ == 0)
                    first = $"out[{c},{q}] 0x{output[c * rows + q]:X4}, expected in[{q},{c}] 0x{input[q * cols + c]:X4}";
        Assert.True(wrong == 0, $"{wrong} of {rows * cols} elements wrong; first {first}");
        Assert.All(output.AsSpan(rows * cols).ToArray(), v => Assert.Equal(0xFFFF, v));
    }

    [Fact]
    public void Undersized_buffers_and_negative_sizes_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var small = device.Allocate<ushort>(16);
        using var tiny = device.Allocate<ushort>(4);
        using var transpose = new CudaTranspose(device);
        Assert.Contains("the output", Assert.Throws<CudaException>(() => transpose.Transpose16(small, tiny, 4, 4)).Message);
        Assert.Contains("the input", Assert.Throws<CudaException>(() => transpose.Transpose16(small, small, 8, 4)).Message);
        Assert.Contains("rows -1", Assert.Throws<CudaException>(() => transpose.Transpose16(small, small, -1, 4)).Message);
    }
}
