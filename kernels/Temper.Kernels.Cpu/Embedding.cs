// Embedding lookup: output[N,C] = table[V,C][ids[N]], table f32 (row copies) or bf16 (rows widened
// with SIMD, see Bf16). Backward: dTable[ids[n]] += dOut[n].

namespace Temper.Kernels.Cpu;

public static unsafe class Embedding
{
    public static void Forward(ReadOnlySpan<float> table, ReadOnlySpan<int> ids, Span<float> output, int c)
    {
        Check(table.Length, ids, output.Length, c);
        for (int n = 0; n < ids.Length; n++) table.Slice(ids[n] * c, c).CopyTo(output.Slice(n * c, c));
    }

    public static void Forward(ReadOnlySpan<ushort> tableBf16, ReadOnlySpan<int> ids, Span<float> output, int c)
    {
        Check(tableBf16.Length, ids, output.Length, c);
        fixed (ushort* pt = tableBf16) fixed (float* po = output)
            for (int n = 0; n < ids.Length; n++) Bf16.Widen(pt + (long)ids[n] * c, po + (long)n * c, c);
    }

    private static void Check(int tableLength, ReadOnlySpan<int> ids, int outputLength, int c)
    {
        if (c <= 0 || tableLength % c != 0 || outputLength != ids.Length * c)
            throw new ArgumentException($"Embedding: table has {tableLength} values, output {outputLength}, for {ids.Length} ids of width {c}");
        int v = tableLength / c;
        for (int n = 0; n < ids.Length; n++)
            if ((uint)ids[n] >= (uint)v) throw new ArgumentOutOfRangeException(nameof(ids), $"Embedding: id {ids[n]} at {n} is outside the table's {v} rows");
    }

    /// <summary>dTable[ids[n]] += dOut[n]; rows in id order, so repeated ids sum in a fixed order.</summary>
    public static void Backward(ReadOnlySpan<float> dOut, ReadOnlySpan<int> ids, Span<float> dTable, int c)
    {
        Check(dTable.Length, ids, dOut.Length, c);
        for (int n = 0; n < ids.Length; n++)
        {
            var row = dTable.Slice(ids[n] * c, c);
            Add.Forward(row, dOut.Slice(n * c, c), row);
        }
    }
}
