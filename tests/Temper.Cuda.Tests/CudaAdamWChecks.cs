// CudaAdamW (cuda/adamw.cu) against the AdamW update evaluated here in f64 (torch's formula, its scalars
// rounded to f32 as the CPU reference rounds them), with non-zero m and v at step 3 and weight decay: the
// multi-tensor step over tensors of 5000 elements (two chunks, the second partial), 7 (a single-float
// tail), 0 (empty) and 33 one float off 16-byte alignment (single floats), then the single-tensor step on
// the same inputs, which must agree with it bit for bit. Every buffer carries a finite guard past its end (a NaN would stay NaN through the update).
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;
using static Temper.Cuda.Tests.CudaRmsNormChecks;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaAdamWChecks
{
    private const float Guard = 12345f;
    private static readonly AdamWParams P = new(Lr: 1e-2f, Beta1: 0.9f, Beta2: 0.999f, Eps: 1e-8f, WeightDecay: 0.1f, Step: 3);

    [Fact]
    public void Multi_and_single_tensor_steps_match_an_f64_evaluation()
    {
        using var device = Gpu.OpenForKernels();
        using var adamw = new CudaAdamW(device);
        (int Length, int Shift)[] shapes = [(5000, 0), (7, 0), (0, 0), (33, 1)];
        var r = new Random(7);
        float[] Rand(int n, double lo, double hi) => [.. Enumerable.Range(0, n).Select(_ => (float)(lo + r.NextDouble() * (hi - lo)))];
        var inputs = shapes.Select(s => (P: Rand(s.Length, -1, 1), G: Rand(s.Length, -1, 1), M: Rand(s.Length, -0.1, 0.1), V: Rand(s.Length, 0, 0.01))).ToArray();
        var buffers = new List<CudaDeviceMemory>();
        CudaDeviceMemory Up(float[] values, int shift)
        {
            var b = device.Upload<float>([.. Enumerable.Repeat(0f, shift), .. values, Guard]);
            buffers.Add(b);
            return b;
        }
        AdamWTensor[] Tensors() => [.. shapes.Select((s, t) => new AdamWTensor(
            Offset(device, Up(inputs[t].P, s.Shift), s.Shift, s.Length), Offset(device, Up(inputs[t].G, s.Shift), s.Shift, s.Length),
            Offset(device, Up(inputs[t].M, s.Shift), s.Shift, s.Length), Offset(device, Up(inputs[t].V, s.Shift), s.Shift, s.Length), s.Length))];
        float[] Read(CudaDeviceMemory view, int shift) => device.Download<float>(CudaDeviceMemory.Borrow(view.Pointer - (ulong)(4 * shift), view.ByteLength + 4L * (shift + 1), device.Context));
        try
        {
            var multi = Tensors();
            adamw.MultiStep(multi, P);
            var single = Tensors();
            foreach (var t in single) adamw.Step(t.Param, t.Grad, t.M, t.V, t.Length, P);
            // A second step over the same tensors reuses the device table (not uploaded again) and still
            // matches two single-tensor steps; checked after the f64 comparison of the first step below.
            var twice = Tensors();
            var twiceSingle = Tensors();
            adamw.MultiStep(twice, P);
            adamw.MultiStep(twice, P with { Step = P.Step + 1 });
            foreach (var t in twiceSingle)
            {
                adamw.Step(t.Param, t.Grad, t.M, t.V, t.Length, P);
                adamw.Step(t.Param, t.Grad, t.M, t.V, t.Length, P with { Step = P.Step + 1 });
            }

            double decay = (float)(1 - (double)P.Lr * P.WeightDecay), w1 = (float)(1 - (double)P.Beta1), w2 = (float)(1 - (double)P.Beta2);
            double stepSize = (float)(P.Lr / (1 - Math.Pow(P.Beta1, P.Step))), bc2 = (float)Math.Sqrt(1 - Math.Pow(P.Beta2, P.Step));
            for (int t = 0; t < shapes.Length; t++)
            {
                var (n, shift) = shapes[t];
                float[] p = Read(multi[t].Param, shift), m = Read(multi[t].M, shift), v = Read(multi[t].V, shift);
                for (int i = 0; i < n; i++)
                {
                    double g = inputs[t].G[i];
                    double em = inputs[t].M[i] + w1 * (g - inputs[t].M[i]);
                    double ev = inputs[t].V[i] * (double)P.Beta2 + w2 * g * g;
                    double ep = inputs[t].P[i] * decay - stepSize * em / (Math.Sqrt(ev) / bc2 + P.Eps);
                    Near(m[shift + i], em, $"tensor {t} m[{i}]");
                    Near(v[shift + i], ev, $"tensor {t} v[{i}]");
                    Near(p[shift + i], ep, $"tensor {t} param[{i}]");
                }
                Assert.True(p[shift + n] == Guard && m[shift + n] == Guard && v[shift + n] == Guard, $"tensor {t}: the step wrote past its end");
                Assert.Equal(p, Read(single[t].Param, shift));
                Assert.Equal(m, Read(single[t].M, shift));
                Assert.Equal(v, Read(single[t].V, shift));
                Assert.Equal(Read(twiceSingle[t].Param, shift), Read(twice[t].Param, shift));
                Assert.Equal(Read(twiceSingle[t].V, shift), Read(twice[t].V, shift));
            }
        }
        finally
        {
            foreach (var b in buffers) b.Dispose();
        }
    }

    [Fact]
    public void Buffers_too_small_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var adamw = new CudaAdamW(device);
        using var small = device.Allocate<float>(4);
        using var big = device.Allocate<float>(64);
        var e = Assert.Throws<CudaException>(() => adamw.MultiStep([new AdamWTensor(big, big, big, big, 8), new AdamWTensor(big, big, small, big, 8)], P));
        Assert.Contains("tensor 1's m holds 16 bytes, the sizes need 32", e.Message);
    }
}
