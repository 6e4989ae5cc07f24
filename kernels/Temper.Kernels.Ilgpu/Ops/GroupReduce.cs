// Reductions over the threads of one group (explicitly grouped kernels whose group size is a power of
// two, at most MaxGroup): each thread gives a value, a shared-memory tree combines them in a fixed
// order, and every thread gets the result. Callers pass one shared array of MaxGroup floats and call
// these from all threads of the group (they contain barriers). RowGroups is the launch shape for
// "one group per row" kernels: the largest power of two the accelerator allows, at most MaxGroup.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class GroupReduce
{
    public const int MaxGroup = 256;

    public static float Sum(ArrayView<float> shared, float value)
    {
        int tid = Group.IdxX;
        shared[tid] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half /= 2)
        {
            if (tid < half) shared[tid] += shared[tid + half];
            Group.Barrier();
        }
        float result = shared[0];
        Group.Barrier();
        return result;
    }

    public static float Max(ArrayView<float> shared, float value)
    {
        int tid = Group.IdxX;
        shared[tid] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half /= 2)
        {
            if (tid < half) shared[tid] = IntrinsicMath.Max(shared[tid], shared[tid + half]);
            Group.Barrier();
        }
        float result = shared[0];
        Group.Barrier();
        return result;
    }

    public static KernelConfig RowGroups(DeviceContext dc, int rows) =>
        new(rows, Math.Min(MaxGroup, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)dc.Accelerator.MaxNumThreadsPerGroup + 1) / 2));
}
