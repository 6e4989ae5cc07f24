// Attaches fresh, trainable LoRA views to the projections a LoraConfig targets, initialised as PEFT
// does (init_lora_weights=True): A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0,
// so the adapted model starts equal to the base. Seeded for reproducible runs. DoRA (use_dora) adds the
// magnitude m [Out] = ||W + s B A||_row = ||W||_row (B = 0), as PEFT's DoraLinearLayer initialises it.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Lora;

public static class LoraInit
{
    public static int Attach(ModelWeights w, LoraConfig cfg, IBackend be, int seed)
    {
        var rng = new Random(seed);
        int attached = 0;
        foreach (var p in w.Projections)
        {
            if (!cfg.Targets(p.Name)) continue;
            float bound = 1f / MathF.Sqrt(p.In);
            var a = new float[cfg.Rank * p.In];
            for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * bound;
            p.Lora = new LoraView(
                be.FromHost(Tensor.FromFloats(new Shape(cfg.Rank, p.In), a, p.Name + ".lora_A.weight")),
                be.FromHost(Tensor.Zeros(new Shape(p.Out, cfg.Rank), DType.F32, p.Name + ".lora_B.weight")),
                cfg.Scale,
                cfg.UseDora ? be.Zeros(new Shape(p.Out)) : null);
            if (p.Lora.Magnitude is { } m) p.DoraNorm(be, m);
            attached++;
        }
        if (attached == 0) throw new TemperException($"LoRA target modules {Describe(cfg)} match no projection of the model");
        return attached;
    }

    internal static string Describe(LoraConfig cfg) => cfg.TargetRegex ?? "[" + string.Join(",", cfg.TargetList!) + "]";
}
