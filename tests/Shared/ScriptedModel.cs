// A model folder whose greedy answer is a given script, for tests of what a server does with particular
// answers (tool calls, reasoning tags) on the real decode path. The qwen2-tiny fixture's tokenizer gets each
// script piece as an added token (non-special unless named special), unless the piece is a token already (<|im_end|>); the model
// is a Llama of one layer whose attention and MLP write nothing (zero projections), so the last position's
// hidden state is its token's embedding: piece k's token embeds as the unit vector e[k+1], every other token
// as e[0], and the LM head row of piece k is 4 e[k] (hidden 64, so after the final RMSNorm the next piece's
// logit is 32 and every other logit 0). From any prompt the model thus answers piece 0, piece 1, ... until a
// piece is an EOS token (eos_token_id: <|im_end|> and <|endoftext|>); a prompt that ends in piece k's token
// continues from piece k+1. Pieces must be distinct tokens, at most 63.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Tests;

public static class ScriptedModel
{
    private const int Hidden = 64;

    /// <summary>Writes the model folder into a new temporary folder (deleted at exit; with <paramref name="chatTemplate"/>) and returns it;
    /// new pieces named in <paramref name="specials"/> are special tokens.</summary>
    public static string Write(IReadOnlyList<string> pieces, string chatTemplate, IReadOnlyCollection<string>? specials = null)
    {
        if (pieces.Count >= Hidden) throw new ArgumentException($"at most {Hidden - 1} pieces");
        string source = Fixtures.Hf("qwen2-tiny");
        string dir = TempFolder.Create("temper-scripted");
        var tok = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "tokenizer.json")))!.AsObject();
        var added = tok["added_tokens"]!.AsArray();
        int vocab = tok["model"]!["vocab"]!.AsObject().Count;
        var ids = new int[pieces.Count];
        for (int k = 0; k < pieces.Count; k++)
        {
            var existing = added.FirstOrDefault(t => (string)t!["content"]! == pieces[k]);
            if (existing != null)
            {
                ids[k] = (int)existing["id"]!;
                continue;
            }
            ids[k] = vocab++;
            added.Add(new JsonObject
            {
                ["id"] = ids[k], ["content"] = pieces[k], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = specials?.Contains(pieces[k]) == true,
            });
        }
        if (ids.Distinct().Count() != ids.Length) throw new ArgumentException("the script's pieces must be distinct tokens");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        File.Copy(Path.Combine(source, "tokenizer_config.json"), Path.Combine(dir, "tokenizer_config.json"));
        File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), chatTemplate);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": [2, 0], "pad_token_id": 0,
             "hidden_act": "silu", "hidden_size": {{Hidden}}, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
             "tie_word_embeddings": false, "torch_dtype": "float32", "vocab_size": {{vocab}}}
            """);

        var embed = new float[vocab * Hidden];
        var head = new float[vocab * Hidden];
        for (int t = 0; t < vocab; t++) embed[t * Hidden] = 1;
        for (int k = 0; k < pieces.Count; k++)
        {
            embed[ids[k] * Hidden] = 0;
            embed[ids[k] * Hidden + k + 1] = 1;
            head[ids[k] * Hidden + k] = 4;
        }
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("model.embed_tokens.weight", Tensor.FromFloats(new Shape(vocab, Hidden), embed, "embed")),
            new("lm_head.weight", Tensor.FromFloats(new Shape(vocab, Hidden), head, "lm_head")),
            new("model.norm.weight", Ones(Hidden)),
        };
        const string L = "model.layers.0.";
        foreach (var (name, rows, cols) in new[] { ("self_attn.q_proj", Hidden, Hidden), ("self_attn.k_proj", Hidden, Hidden), ("self_attn.v_proj", Hidden, Hidden),
            ("self_attn.o_proj", Hidden, Hidden), ("mlp.gate_proj", 32, Hidden), ("mlp.up_proj", 32, Hidden), ("mlp.down_proj", Hidden, 32) })
            tensors.Add(new(L + name + ".weight", Tensor.FromFloats(new Shape(rows, cols), new float[rows * cols], name)));
        tensors.Add(new(L + "input_layernorm.weight", Ones(Hidden)));
        tensors.Add(new(L + "post_attention_layernorm.weight", Ones(Hidden)));
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return dir;
    }

    private static Tensor Ones(int n) => Tensor.FromFloats(new Shape(n), Enumerable.Repeat(1f, n).ToArray(), "norm");
}
