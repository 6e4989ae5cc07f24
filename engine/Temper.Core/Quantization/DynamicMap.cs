// bitsandbytes' signed 8-bit dynamic map (functional.create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8)), the code of the double quantisation of NF4 block scales:
// for exponent i in 0..6, 2^i + 1 boundaries linspace(0.1, 1) in f32, the means of neighbours
// ((a + b) / 2 in f32), times f32(10^(i-6)), with both signs; then 0 and 1.0; 256 values sorted.
// torch's CPU linspace computes step = (end - start) / (steps - 1) in f32 and fills the first half
// as start + step * i, the second as end - step * (steps - 1 - i); Build does the same.
// Quantize is bitsandbytes' dQuantize<0> (csrc/kernels.cu): a 7-step binary search from pivot 127
// followed by a midpoint test against the last upper / lower pivots.
namespace Temper.Core.Quantization;

public static class DynamicMap
{
    private static readonly float[] s_values = Build();

    /// <summary>The 256 code values, ascending; code 255 is 1.0, code 127 is 0.</summary>
    public static ReadOnlySpan<float> Values => s_values;

    private static float[] Build()
    {
        const int maxExponentBits = 7, nonSignBits = 7;
        var data = new List<float>(256);
        for (int i = 0; i < maxExponentBits; i++)
        {
            int items = (1 << (i + nonSignBits - maxExponentBits)) + 1;
            var bounds = Linspace(0.1f, 1f, items);
            float scale = (float)Math.Pow(10, -(maxExponentBits - 1) + i);
            for (int j = 0; j + 1 < items; j++)
            {
                float mean = (bounds[j] + bounds[j + 1]) / 2f;
                data.Add(scale * mean);
                data.Add(-scale * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 256) throw new InvalidOperationException($"dynamic map has {data.Count} values");
        data.Sort();
        return [.. data];
    }

    private static float[] Linspace(float start, float end, int steps)
    {
        var r = new float[steps];
        float step = (end - start) / (steps - 1);
        int half = steps / 2;
        for (int i = 0; i < steps; i++) r[i] = i < half ? start + step * i : end - step * (steps - i - 1);
        return r;
    }

    /// <summary>The code of x (x is a value divided by its block's absmax, nominally in [-1, 1]).</summary>
    public static byte Quantize(float x)
    {
        var code = s_values;
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f;
        float val = code[pivot];
        for (int step = 64; step > 0; step >>= 1)
        {
            if (x > val)
            {
                lowerPivot = pivot;
                lower = val;
                pivot += step;
            }
            else
            {
                upperPivot = pivot;
                upper = val;
                pivot -= step;
            }
            val = code[pivot];
        }
        if (upperPivot == 255) upper = code[upperPivot];
        if (lowerPivot == 0) lower = code[lowerPivot];
        if (x > val) return x > (upper + val) * 0.5f ? (byte)upperPivot : (byte)pivot;
        return x < (lower + val) * 0.5f ? (byte)lowerPivot : (byte)pivot;
    }
}
