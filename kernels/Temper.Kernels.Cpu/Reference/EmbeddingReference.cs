// Embedding, the oracle: out[N,C] = table[V,C][ids[N]] (f32 table; a bf16 table is widened first);
// backward: dTable[ids[n]] += dOut[n].
namespace Temper.Kernels.Cpu.Reference;

public static class EmbeddingReference
{
    /// <summary>output[n, :] = table[ids[n], :]; table [V,C], output [N,C].</summary>
    public static void Forward(ReadOnlySpan<float> table, ReadOnlySpan<int> ids, Span<float> output, int c)
    {
        for (int n = 0; n < ids.Length; n++)
            for (int j = 0; j < c; j++)
                output[n * c + j] = table[ids[n] * c + j];
    }

    public static void Backward(ReadOnlySpan<float> dOut, ReadOnlySpan<int> ids, Span<float> dTable, int c)
    {
        for (int n = 0; n < ids.Length; n++)
            for (int j = 0; j < c; j++)
                dTable[ids[n] * c + j] += dOut[n * c + j];
    }
}
