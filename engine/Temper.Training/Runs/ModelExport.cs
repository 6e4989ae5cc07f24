// Writes a full Hugging Face model folder: config.json (as loaded), model.safetensors with every
// weight under its HF name (LoRA views merged first by the caller if wanted), and the tokenizer and
// chat-template files copied from the source folder. A bitsandbytes base, loaded dequantised, is written
// dense without its quantization_config. A reward model replaces the LM head with its
// score head and config.json with its *ForSequenceClassification one. A tied model whose embedding or head was
// replaced by a modules_to_save copy (ModulesToSave) is written untied: lm_head.weight saved, tie_word_embeddings false
// (transformers would otherwise re-tie the head to the embedding on load and lose the copy).
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;

namespace Temper.Training.Runs;

public static class ModelExport
{
    /// <param name="head">Tensors written instead of lm_head.weight (null = the LM head).</param>
    /// <param name="configJson">config.json's text (null = as loaded).</param>
    public static void Save(string dir, LanguageModel lm, IBackend be, IReadOnlyList<KeyValuePair<string, Tensor>>? head = null, string? configJson = null)
    {
        Directory.CreateDirectory(dir);
        var w = lm.Weights;
        if (w.Projections.Append(w.LmHead).Any(p => p.Lora != null || p.Ia3 != null)) throw new TemperException("merge the adapter before exporting a full model");
        if (w.Projections.FirstOrDefault(p => p.Nf4 != null) is { } q)
            throw new TemperException($"{q.Name}: an NF4 weight cannot be exported into a full model; load the base dequantised (LanguageModel.Load dequantize) or without --qlora");
        var tensors = new List<KeyValuePair<string, Tensor>> { new("model.embed_tokens.weight", be.ToHost(w.Embed)) };
        for (int i = 0; i < w.Layers.Length; i++)
        {
            var l = w.Layers[i];
            foreach (var (name, norm) in l.Norms) tensors.Add(new($"model.layers.{i}.{name}", be.ToHost(norm)));
            foreach (var p in l.Projections)
            {
                tensors.Add(new(p.Name + ".weight", be.ToHost(p.Weight)));
                if (p.Bias != null) tensors.Add(new(p.Name + ".bias", be.ToHost(p.Bias)));
            }
        }
        tensors.Add(new("model.norm.weight", be.ToHost(w.FinalNorm)));
        if (head != null) tensors.AddRange(head.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, be.ToHost(kv.Value))));
        else if (!lm.Config.TieWordEmbeddings || Untied(w)) tensors.Add(new("lm_head.weight", be.ToHost(w.LmHead.Weight)));
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), configJson ?? DenseConfig(lm.Config, untie: head == null && lm.Config.TieWordEmbeddings && Untied(w)));
        ModelFolderFiles.CopyTokenizer(lm.Directory, dir);
    }

    // config.json as loaded, less a bitsandbytes quantization_config (every exported weight is dense), and with
    // tie_word_embeddings false when a modules_to_save copy untied the pair.
    private static string DenseConfig(ModelConfig cfg, bool untie)
    {
        if (cfg.Bnb4Bit == null && !untie) return cfg.RawJson;
        var o = System.Text.Json.Nodes.JsonNode.Parse(cfg.RawJson) as System.Text.Json.Nodes.JsonObject ?? throw new TemperException("config.json is not a JSON object");
        o.Remove("quantization_config");
        if (untie) o["tie_word_embeddings"] = false;
        return o.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    // A tied pair one of whose halves is a modules_to_save copy.
    private static bool Untied(ModelWeights w) => w.EmbedReplacement != null || w.LmHead.Replacement != null;
}
