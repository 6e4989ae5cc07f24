// Shared by the learning tests: a tiny model folder (the llama-tiny fixture's tokenizer and template,
// a config of the given size) for training from scratch. The issue-3 learning acceptance tests are not
// in the suite yet: the from-scratch full fine-tune reached 99% held-out exact match after 1500 steps in
// one run and 2% in another after a change of kernel rounding (a sharp, seed- and rounding-sensitive
// transition), too fragile to gate CI on; see issue 3's note.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class LearningTests
{
    internal static string TinyModelDir(int hidden, int layers, int intermediate)
    {
        string dir = Directory.CreateTempSubdirectory("temper-tiny-").FullName;
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            File.Copy(Path.Combine(Fixtures.Hf("llama-tiny"), f), Path.Combine(dir, f));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf("llama-tiny"), "config.json")))!.AsObject();
        cfg["hidden_size"] = hidden;
        cfg["num_hidden_layers"] = layers;
        cfg["intermediate_size"] = intermediate;
        cfg["head_dim"] = hidden / 4;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return dir;
    }
}
