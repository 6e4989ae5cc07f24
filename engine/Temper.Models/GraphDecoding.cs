// Builds a CudaDecodeGraph (kernels/Temper.Kernels.Cuda) from a loaded model: the sizes and RoPE of its
// ModelConfig and the tensors of its ModelWeights, which must be host tensors (the CPU backend's) holding
// f32 or bf16 matrices; f32 matrices are rounded to bf16 one at a time as they are uploaded, bf16 ones go
// as they are. Norms (Qwen3's head norms too) and biases stay f32. NF4 bases, unmerged LoRA views and
// sliding-window attention are refused with a one-line TemperException (merge adapters first: `temper merge`), as are shapes the
// graph's kernels do not take (head dims other than 64 and 128, widths not a multiple of 8).
using Temper.Core;
using Temper.Cuda;
using Temper.Kernels.Cuda;

namespace Temper.Models;

public static class GraphDecoding
{
    /// <summary>The graph's view of a model's sizes and RoPE.</summary>
    public static DecodeModelShape Shape(ModelConfig cfg)
    {
        var rope = cfg.Rope.Frequencies(cfg.HeadDim);
        return new DecodeModelShape(cfg.NumLayers, cfg.HiddenSize, cfg.NumHeads, cfg.NumKvHeads, cfg.HeadDim, cfg.IntermediateSize, cfg.VocabSize,
            cfg.RmsNormEps, rope.InvFreq, rope.AttentionScaling);
    }

    /// <summary>Throws a one-line TemperException when a graph of this model's shape cannot be built (the
    /// weights' formats aside), without a device.</summary>
    public static void Validate(ModelConfig cfg, int rows, int capacity)
    {
        cfg.RefuseMoe("the CUDA graph decoder (--graph, TEMPER_DEVICE_CUDA)");
        if (cfg.SlidingWindow is { } window && capacity > window)
            throw new TemperException($"the decode graph has no sliding-window attention: capacity {capacity} is past the model's window of {window}");
        try
        {
            CudaDecodeGraph.Validate(Shape(cfg), rows, capacity);
        }
        catch (ArgumentException e)
        {
            throw new TemperException(e.Message);
        }
    }

    /// <summary>A graph for <paramref name="rows"/> sequences of up to <paramref name="capacity"/> positions with the model's weights uploaded;
    /// <paramref name="dependentLaunch"/>: CudaDecodeGraph.DependentLaunch (null: the graph decides).</summary>
    public static CudaDecodeGraph Build(CudaDevice device, ModelConfig cfg, ModelWeights weights, int rows, int capacity, bool? dependentLaunch = null)
    {
        Validate(cfg, rows, capacity);
        if (weights.VirtualTokenCount > 0) throw new TemperException("the decode graph does not put a prompt- or prefix-tuning adapter's virtual tokens before the prompt; decode without --graph");
        foreach (var p in weights.Projections.Append(weights.LmHead))
        {
            if (p.Nf4 != null) throw new TemperException($"{p.Name}: the decode graph takes f32 or bf16 weights, not NF4");
            if (p.Lora != null || p.Ia3 != null) throw new TemperException($"{p.Name}: the decode graph takes merged weights; merge the adapter first (temper merge)");
        }
        var graph = new CudaDecodeGraph(device, Shape(cfg), rows, capacity, dependentLaunch);
        try
        {
            graph.SetEmbedding(Bits(weights.Embed));
            for (int l = 0; l < weights.Layers.Length; l++)
            {
                var w = weights.Layers[l];
                graph.SetLayer(l, new DecodeLayerWeights
                {
                    InputNorm = Floats(w.InputNorm), PostAttentionNorm = Floats(w.PostAttentionNorm),
                    Q = Bits(w.Q.Weight), K = Bits(w.K.Weight), V = Bits(w.V.Weight), O = Bits(w.O.Weight),
                    Gate = Bits(w.Gate.Weight), Up = Bits(w.Up.Weight), Down = Bits(w.Down.Weight),
                    QBias = Floats(w.Q.Bias), KBias = Floats(w.K.Bias), VBias = Floats(w.V.Bias), OBias = Floats(w.O.Bias),
                    QNorm = Floats(w.QNorm), KNorm = Floats(w.KNorm),
                    GateBias = Floats(w.Gate.Bias), UpBias = Floats(w.Up.Bias), DownBias = Floats(w.Down.Bias),
                });
            }
            bool tied = ReferenceEquals(weights.LmHead.Weight, weights.Embed);
            graph.SetFinal(Floats(weights.FinalNorm), tied ? default : Bits(weights.LmHead.Weight));
            return graph;
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    // A matrix as bf16 bits: a bf16 tensor's own span, an f32 one rounded into a new array.
    private static ReadOnlySpan<ushort> Bits(Tensor t)
    {
        Host(t);
        if (t.DType == DType.BF16) return t.Span<ushort>();
        if (t.DType != DType.F32) throw new TemperException($"{t.Name}: the decode graph takes f32 or bf16 matrices, not {t.DType}");
        var bits = new ushort[t.Elements];
        BFloat16.FromSingle(t.Floats, bits);
        return bits;
    }

    private static ReadOnlySpan<float> Floats(Tensor? t)
    {
        if (t == null) return default;
        Host(t);
        if (t.DType != DType.F32) throw new TemperException($"{t.Name}: the decode graph takes f32 norms and biases, not {t.DType}");
        return t.Floats;
    }

    private static void Host(Tensor t)
    {
        if (!t.IsHost) throw new TemperException($"{t.Name}: the decode graph uploads host tensors; load the model on the CPU backend");
    }
}
