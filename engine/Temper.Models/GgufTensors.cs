// GgufExport's tensors: each weight added to a GgufWriter under its GGUF name and type, read back from the backend
// only when the writer reaches it (one tensor in host memory at a time). Vectors (norms, biases) and forced ones
// (routers) are f32; matrices take the export's type, q8_0 falling back to f16 where a row is not whole blocks of 32.
// Shapes are HF's row-major [Out, In] ([V, C] for the embedding); stacked experts are [E, Out, In].
// Permute: llama's q_proj/k_proj rows (and bias) per head of D rows, from HF's halves (i, i + D/2) to llama.cpp's pairs
// (2i, 2i + 1): destination row h*D + 2i + j takes source row h*D + j*D/2 + i; inverse: back (GgufImport).
using Temper.Core;
using Temper.Core.Gguf;

namespace Temper.Models;

internal sealed class GgufTensors(GgufWriter writer, IBackend be, GgmlType matrixType)
{
    public void Add(string name, Tensor t) => Add(name, t, heads: 0, forceF32: false);

    public void AddF32(string name, float[] values) =>
        writer.AddTensor(name, [values.Length], GgmlType.F32, s => GgmlQuant.Write(s, values, GgmlType.F32));

    /// <summary>prefix.weight and, when the projection has one, prefix.bias; heads > 0 permutes rows for llama's RoPE.</summary>
    public void Add(string prefix, Projection p, int heads = 0, bool forceF32 = false)
    {
        Add(prefix + ".weight", p.Weight, heads, forceF32);
        if (p.Bias != null) Add(prefix + ".bias", p.Bias, heads, forceF32: true);
    }

    /// <summary>The experts' [Out, In] weights of one projection as one [E, Out, In] tensor.</summary>
    public void AddStacked(string name, Projection[] experts)
    {
        int rows = experts[0].Out, cols = experts[0].In;
        var type = TypeOf(2, cols, forceF32: false);
        writer.AddTensor(name, [experts.Length, rows, cols], type, s =>
        {
            foreach (var e in experts) GgmlQuant.Write(s, MoeBlock.HostValues(be, e.Weight), type);
        });
    }

    private void Add(string name, Tensor t, int heads, bool forceF32)
    {
        long[] shape = t.Shape.Rank == 1 ? [t.Shape[0]] : [t.Shape[0], t.Shape[1]];
        var type = TypeOf(t.Shape.Rank, shape[^1], forceF32);
        writer.AddTensor(name, shape, type, s =>
        {
            var v = MoeBlock.HostValues(be, t);
            if (heads > 0) v = PermuteRows(v, (int)shape[0], t.Shape.Rank == 1 ? 1 : (int)shape[1], heads);
            GgmlQuant.Write(s, v, type);
        });
    }

    private GgmlType TypeOf(int rank, long rowLength, bool forceF32) =>
        rank == 1 || forceF32 ? GgmlType.F32
        : matrixType == GgmlType.Q8 && rowLength % GgmlQuant.Q8BlockSize != 0 ? GgmlType.F16
        : matrixType;

    /// <summary>HF rotate-half row order to llama.cpp's interleaved pairs, per head of rows / heads rows (inverse: back).</summary>
    public static float[] PermuteRows(float[] v, int rows, int cols, int heads, bool inverse = false)
    {
        int d = rows / heads, half = d / 2;
        if (d * heads != rows || half * 2 != d) throw new TemperException($"GGUF: {rows} rows are not {heads} heads of an even size");
        var r = new float[v.Length];
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < half; i++)
                {
                    long halves = (long)(h * d + j * half + i) * cols, pairs = (long)(h * d + 2 * i + j) * cols;
                    Array.Copy(v, inverse ? pairs : halves, r, inverse ? halves : pairs, cols);
                }
        return r;
    }
}
