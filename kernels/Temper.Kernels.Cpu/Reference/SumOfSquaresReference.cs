// Sum of squares of all elements, the oracle (for global gradient norms): accumulated in f64.
namespace Temper.Kernels.Cpu.Reference;

public static class SumOfSquaresReference
{
    public static double Compute(ReadOnlySpan<float> x)
    {
        double sum = 0;
        foreach (var value in x) sum += (double)value * value;
        return sum;
    }
}
