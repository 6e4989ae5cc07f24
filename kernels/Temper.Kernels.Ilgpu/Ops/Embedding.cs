// Embedding: out[N,C] = table[V,C][ids[N]] (table f32 or bf16), one thread per output element.
// Backward: dTable[V,C] += dOut[N,C] scattered by ids. Repeated ids would race, so the host (which
// holds the ids anyway) groups them: unique ids u[U], offsets[U+1] and the rows of each group
// rows[N]; one thread per (unique id, column) sums its group's rows in order. Deterministic, no atomics.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Embedding
{
    public static void ForwardKernel<TW>(Index1D index, TW table, ArrayView<int> ids, ArrayView<float> output, int c) where TW : struct, IWeights
    {
        int n = index / c, j = index - n * c;
        output[index] = table.Get(ids[n] * c + j);
    }

    public static void BackwardKernel(Index1D index, ArrayView<float> dOut, ArrayView<int> unique, ArrayView<int> offsets, ArrayView<int> rows, ArrayView<float> dTable, int c)
    {
        int u = index / c, j = index - u * c;
        float sum = dTable[unique[u] * c + j];
        for (int r = offsets[u]; r < offsets[u + 1]; r++) sum += dOut[rows[r] * c + j];
        dTable[unique[u] * c + j] = sum;
    }

    public static void Forward(DeviceContext dc, WeightView table, ReadOnlySpan<int> ids, ArrayView<float> output, int c)
    {
        if ((long)ids.Length * c == 0) return;
        var dIds = dc.Arena.Upload(ids);
        if (table.IsBf16)
            dc.Kernel<Action<Index1D, Bf16Weights, ArrayView<int>, ArrayView<float>, int>>("embedding.fwd.bf16", a => a.LoadAutoGroupedStreamKernel<Index1D, Bf16Weights, ArrayView<int>, ArrayView<float>, int>(ForwardKernel))
                (ids.Length * c, new Bf16Weights(table.Bf16), dIds, output, c);
        else
            dc.Kernel<Action<Index1D, F32Weights, ArrayView<int>, ArrayView<float>, int>>("embedding.fwd.f32", a => a.LoadAutoGroupedStreamKernel<Index1D, F32Weights, ArrayView<int>, ArrayView<float>, int>(ForwardKernel))
                (ids.Length * c, new F32Weights(table.F32), dIds, output, c);
    }

    public static void Backward(DeviceContext dc, ArrayView<float> dOut, ReadOnlySpan<int> ids, ArrayView<float> dTable, int c)
    {
        if ((long)ids.Length * c == 0) return;
        // Group rows by id (stable: rows ascending within a group).
        var order = new int[ids.Length];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        var keys = ids.ToArray();
        Array.Sort(keys, order);
        var unique = new List<int>();
        var offsets = new List<int>();
        for (int i = 0; i < keys.Length; i++)
        {
            if (i > 0 && keys[i] == keys[i - 1]) continue;
            unique.Add(keys[i]);
            offsets.Add(i);
        }
        offsets.Add(keys.Length);
        // Array.Sort is not stable: restore row order within each group so sums run in row order.
        for (int g = 0; g < unique.Count; g++) Array.Sort(order, offsets[g], offsets[g + 1] - offsets[g]);
        var dUnique = dc.Arena.Upload<int>(unique.ToArray());
        var dOffsets = dc.Arena.Upload<int>(offsets.ToArray());
        var dRows = dc.Arena.Upload<int>(order);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int>>("embedding.bwd", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<float>, int>(BackwardKernel))
            (unique.Count * c, dOut, dUnique, dOffsets, dRows, dTable, c);
    }
}
