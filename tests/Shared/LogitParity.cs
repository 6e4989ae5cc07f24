// The comparison of logits against a reference (transformers' in reference.safetensors, or another backend's) that
// the parity tests share (Temper.Models.Tests' ParityTests, Temper.Kernels.Ilgpu.Tests' EndToEndChecks): the largest
// absolute error over the compared elements within rel x the largest |reference| among them (rel = 1e-4 by default,
// the fixtures README's bound), on a reference that is not all zeros; and the [B, T] token ids a reference file holds.
using Temper.Core.SafeTensors;
using Xunit;

namespace Temper.Tests;

public static class LogitParity
{
    /// <summary>Asserts max |reference - actual| &lt;= rel x max |reference| over the flat indices <paramref name="include"/> accepts (all when null).</summary>
    public static void AssertClose(ReadOnlySpan<float> reference, ReadOnlySpan<float> actual, Func<int, bool>? include = null, double rel = 1e-4)
    {
        Assert.Equal(reference.Length, actual.Length);
        float maxRef = 0, maxErr = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            if (include != null && !include(i)) continue;
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
            maxErr = Math.Max(maxErr, Math.Abs(reference[i] - actual[i]));
        }
        Assert.True(maxRef > 0, "reference is all zeros");
        Assert.True(maxErr <= rel * maxRef, $"max abs error {maxErr:G4} exceeds {rel} x max|ref| = {rel * maxRef:G4}");
    }

    /// <summary>The int tensor <paramref name="name"/> [B, T] of a reference file, flat, with B and T.</summary>
    public static (int[] Ids, int B, int T) Ids(SafetensorsFile reference, string name)
    {
        var t = reference.Get(name);
        return (t.Span<int>().ToArray(), t.Shape[0], t.Shape[1]);
    }
}
