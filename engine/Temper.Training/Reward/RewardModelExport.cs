// Writes a trained reward model where the HF/PEFT stack expects it: with LoRA, the PEFT SEQ_CLS adapter
// (LoRA A/B + base_model.model.score.weight, modules_to_save ["classifier", "score"]); fully fine-tuned,
// a *ForSequenceClassification folder (every decoder weight + score.weight [1,C], no lm_head; config.json
// with that architecture, num_labels 1 and a pad_token_id, which HF needs to find each row's last token).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Lora;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Training.Reward;

public static class RewardModelExport
{
    public static void Save(string dir, TrainingRun run, Tensor score, string baseModel)
    {
        if (run.Lora != null)
            PeftAdapterWriter.Save(dir, run.Model.Weights, run.Lora, run.Backend, baseModel, PeftAdapterWriter.SequenceClassification(score));
        else
            ModelExport.Save(dir, run.Model, run.Backend, [new("score.weight", score)], SequenceClassificationConfig(run.Model.Config, run.PadId));
    }

    /// <summary>config.json of the causal model rewritten for sequence classification with one label.</summary>
    public static string SequenceClassificationConfig(ModelConfig cfg, int padId)
    {
        var o = JsonNode.Parse(cfg.RawJson) as JsonObject ?? throw new TemperException("config.json is not a JSON object");
        string arch = cfg.Architecture.EndsWith("ForCausalLM", StringComparison.Ordinal)
            ? cfg.Architecture[..^"ForCausalLM".Length] + "ForSequenceClassification"
            : cfg.Architecture.EndsWith("ForSequenceClassification", StringComparison.Ordinal) ? cfg.Architecture
            : cfg.ModelType switch { "qwen2" => "Qwen2", "qwen3" => "Qwen3", "mistral" => "Mistral", _ => "Llama" } + "ForSequenceClassification";
        o["architectures"] = new JsonArray(arch);
        o["num_labels"] = 1;
        o["id2label"] = new JsonObject { ["0"] = "LABEL_0" };
        o["label2id"] = new JsonObject { ["LABEL_0"] = 0 };
        o["pad_token_id"] ??= padId;
        return o.ToJsonString(new() { WriteIndented = true });
    }
}
