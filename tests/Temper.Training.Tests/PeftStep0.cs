// Step-0 parity with a PEFT reference fixture (tests/reference/make_*_reference.py): reference.safetensors holds
// input_ids and labels [B,T], the mean loss over the labelled tokens (a row's first token unscored) and grad.NAME
// for every trainable parameter; the model, with the fixture's adapter attached, must give that loss within 1e-4
// relative and every gradient within 1e-3 relative L2, and train exactly the parameters the fixture has.
using Temper.Core.SafeTensors;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

internal static class PeftStep0
{
    /// <summary>Checks lm against DIR/reference.safetensors; returns the fixture's ids and batch size for further checks.</summary>
    public static (int[] Ids, int Batch) AssertMatches(string fixtureDir, LanguageModel lm)
    {
        using var r = SafetensorsFile.Open(Path.Combine(fixtureDir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        double loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], b, 1f / count, ps.GradOf).Sum() / count;
        Assert.Equal(r.Get("loss").Floats[0], loss, 1e-4 * Math.Abs(loss));
        foreach (var p in ps.All)
        {
            double err = GradientParityTests.RelativeL2(r.Get("grad." + p.Name).ToFloatArray(), p.Grad.Floats);
            Assert.True(err < 1e-3, $"grad.{p.Name}: relative L2 error {err:G3}");
        }
        Assert.Equal(r.Entries.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)), ps.All.Count);
        return (ids, b);
    }
}
