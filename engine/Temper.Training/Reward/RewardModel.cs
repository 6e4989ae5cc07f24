// A trained reward model loaded for scoring: a decoder plus the `score` head [1,C]. Two folder forms,
// both as the HF/PEFT stack writes them:
//   - a PEFT SEQ_CLS adapter: adapter_config.json (modules_to_save has "score") + adapter_model.safetensors
//     with the LoRA A/B and base_model.model.score.weight; the base is base_model_name_or_path or baseDir;
//   - a full *ForSequenceClassification folder: config.json + model.safetensors with score.weight.
// Score(sequences) gives one scalar per token-id sequence (at its last token); Score(prompt, completion)
// tokenizes as the preference data is (prompt + completion, through the chat template for messages).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;
using Temper.Training.Data;

namespace Temper.Training.Reward;

public sealed class RewardModel : IDisposable
{
    /// <summary>The modules_to_save names PEFT gives a SEQ_CLS adapter; only score exists in a Llama-family model.</summary>
    internal static readonly string[] HeadModules = ["classifier", "score"];

    private readonly LanguageModel _lm;
    private readonly LoraAdapter? _adapter;
    private readonly SftDataset _texts;
    private readonly DecoderBackprop _backprop;
    private readonly Tensor _head; // score.weight [1,C]

    private RewardModel(string dir, LanguageModel lm, LoraAdapter? adapter, Tensor score)
    {
        Directory = dir;
        _lm = lm;
        _adapter = adapter;
        _head = score;
        _texts = SftDataset.ForObjects(dir, lm.RequireTokenizer(), lm.Template);
        _backprop = new DecoderBackprop(lm.Decoder);
    }

    public string Directory { get; }
    public LanguageModel Model => _lm;

    public static RewardModel Load(string dir, IBackend be, string? baseDir = null)
    {
        if (!System.IO.Directory.Exists(dir)) throw new TemperException($"{dir}: reward model folder not found");
        if (File.Exists(Path.Combine(dir, "adapter_config.json")))
        {
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json"))) as JsonObject;
            string? basePath = baseDir ?? cfg?["base_model_name_or_path"]?.GetValue<string>();
            if (basePath == null || !System.IO.Directory.Exists(basePath))
                throw new TemperException($"{dir}: the adapter's base model '{basePath}' is not a folder here; give the base model folder explicitly");
            var adapter = LoraAdapter.Load(dir, HeadModules, allowDora: true); // a DoRA reward model runs unmerged, its norms cached (it is frozen)
            LanguageModel? lm = null;
            try
            {
                if (!adapter.SavedModules.TryGetValue("score.weight", out var head))
                    throw new TemperException($"{dir}: adapter_model.safetensors has no base_model.model.score.weight; not a reward model adapter");
                lm = LanguageModel.Load(basePath, be);
                adapter.Apply(lm.Weights, be, dora: true);
                return new RewardModel(dir, lm, adapter, HeadOnBackend(head, lm.Config, dir, be));
            }
            catch
            {
                lm?.Dispose();
                adapter.Dispose();
                throw;
            }
        }
        var full = LanguageModel.Load(dir, be);
        try
        {
            using var file = SafetensorsModel.Open(dir);
            if (!file.Contains("score.weight")) throw new TemperException($"{dir}: tensor 'score.weight' missing; not a reward model (*ForSequenceClassification) folder");
            return new RewardModel(dir, full, null, HeadOnBackend(file.Get("score.weight"), full.Config, dir, be));
        }
        catch
        {
            full.Dispose();
            throw;
        }
    }

    private static Tensor HeadOnBackend(Tensor head, ModelConfig cfg, string dir, IBackend be)
    {
        if (head.Shape != new Shape(1, cfg.HiddenSize))
            throw new TemperException($"{dir}: score.weight has shape {head.Shape}; a reward model needs [1,{cfg.HiddenSize}] (num_labels 1)");
        return be.FromHost(Tensor.FromFloats(head.Shape, head.ToFloatArray(), "score.weight"));
    }

    /// <summary>One reward per token-id sequence, scored at its last token, in batches of <paramref name="batchSize"/>.</summary>
    public float[] Score(IReadOnlyList<int[]> sequences, int batchSize = 16)
    {
        var result = new float[sequences.Count];
        int pad = _lm.Config.PadTokenId ?? _lm.Tokenizer?.PadId ?? 0;
        for (int s = 0; s < sequences.Count; s += batchSize)
        {
            var part = sequences.Skip(s).Take(batchSize).Select(ids => new SftExample(ids, ids, 0)).ToList();
            if (part.Any(p => p.Length == 0)) throw new TemperException("reward model: cannot score an empty sequence");
            var b = SftBatcher.Pad(part, pad);
            var scores = _backprop.Run(b.Ids, b.Mask, b.Batch, new ScoreHead(_head, ScoreHead.LastTokenRows(b.Mask, b.Batch)), null);
            scores.CopyTo(result, s);
        }
        return result;
    }

    /// <summary>The reward of a completion to a prompt (both text, or both message lists), tokenized as the preference data is.</summary>
    public float Score(JsonNode prompt, JsonNode completion)
    {
        var obj = new JsonObject { ["prompt"] = prompt.DeepClone(), ["completion"] = completion.DeepClone() };
        var (ids, _) = _texts.TokenizeObject(obj, 0);
        return Score([ids])[0];
    }

    public void Dispose()
    {
        _head.Dispose();
        _lm.Dispose();
        _adapter?.Dispose();
    }
}
