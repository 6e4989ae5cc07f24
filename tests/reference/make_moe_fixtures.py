"""transformers' tiny mixture-of-experts models for Temper's MoeTests (MoeParity_*): Mixtral, Qwen3-MoE and Qwen2-MoE.
Usage (repository root, where torch and transformers 4.46..4.57 are; CPU, float32):
    python3 tests/reference/make_moe_fixtures.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/mixtral-tiny/, OUTDIR/qwen3-moe-tiny/ and OUTDIR/qwen2-moe-tiny/, each in the layout of make_fixtures.py's folders:
save_pretrained's config.json and model.safetensors, the qwen2-tiny fixture's tokenizer and chat template,
reference.safetensors (input_ids [2,24] int32, attention_mask [2,24] int32 (row 1 padded from 17), logits and
masked_logits [2,24,V] float32) and reference.json (arch, seed, greedy: prompt_ids, output_ids (prompt + 20
greedy tokens), top2_gaps; min_routing_gap: the smallest gap between a token's k-th and (k+1)-th routing
probability over both inputs and every sparse layer, kept above 1e-4 by trying further seeds, so float32 rounding
cannot route a token differently).
Shapes: hidden 64, 3 layers, 4 query / 2 KV heads of head_dim 16, vocabulary 512. mixtral-tiny: 4 experts (w1/w3/w2,
width 96), top-2, renormalised. qwen3-moe-tiny: 6 experts of width 48, top-2, norm_topk_prob False, layer 1 in
mlp_only_layers (a dense MLP of width 96), q/k head norms. qwen2-moe-tiny: q/k/v biases, 4 experts of width 48, top-2,
norm_topk_prob False, layer 1 dense, a shared expert of width 64 gated by sigmoid(shared_expert_gate). Router weights are drawn with std 2/sqrt(hidden)
(transformers' 0.02 would make every routing a near-tie).
The experts are saved per expert, as the hub holds them ('...block_sparse_moe.experts.0.w1.weight',
'...mlp.experts.0.gate_proj.weight'), which is what Temper reads. transformers 4.x's save_pretrained writes that layout;
transformers 5 holds (and may save) the experts fused (gate_up_proj [E,2F,C]: gate rows then up rows; down_proj
[E,C,F]; Mixtral's module named mlp): then the script splits them into the hub layout and checks the split by
loading the rewritten folder back and comparing its logits; if anything does not match, it stops with a message
rather than write a layout Temper refuses."""
import json, os, re, shutil, sys
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

src, out = sys.argv[1], sys.argv[2]
tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(src, "qwen2-tiny"))
vocab = len(tok)
common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=1000000.0,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def build(arch, seed):
    torch.manual_seed(seed)
    if arch == "mixtral":
        from transformers import MixtralConfig as C, MixtralForCausalLM as M
        cfg = C(**common, intermediate_size=96, num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                tie_word_embeddings=False, router_jitter_noise=0.0)
    elif arch == "qwen2_moe":
        from transformers import Qwen2MoeConfig as C, Qwen2MoeForCausalLM as M
        cfg = C(**common, intermediate_size=96, moe_intermediate_size=48, shared_expert_intermediate_size=64, num_experts=4,
                num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=False,
                use_sliding_window=False)
    else:
        from transformers import Qwen3MoeConfig as C, Qwen3MoeForCausalLM as M
        cfg = C(**common, head_dim=16, intermediate_size=96, moe_intermediate_size=48, num_experts=6, num_experts_per_tok=2,
                norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=True, attention_bias=False)
    cfg._attn_implementation = "eager"
    model = M(cfg).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".gate.weight"):  # the routers (block_sparse_moe.gate / mlp.gate)
                p.normal_(0, 2 / cfg.hidden_size ** 0.5)
            elif n.endswith("self_attn.q_proj.bias") or n.endswith("self_attn.k_proj.bias") or n.endswith("self_attn.v_proj.bias"):
                p.normal_(0, 0.2)  # transformers starts biases at 0, which would not show them
            elif n.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))  # away from 1, so a missing norm shows
    return cfg, model


def routing_gap(model, cfg, inputs):
    """The smallest k-th minus (k+1)-th routing probability, from the routers' outputs (forward hooks: the router
    is a Linear in transformers 4, a module returning (logits, ...) in 5)."""
    k = cfg.num_experts_per_tok
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
             for n, m in model.named_modules() if n.endswith(".gate")]
    try:
        for ids in inputs:
            with torch.no_grad():
                model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        sys.exit("make_moe_fixtures.py: no router module ('...gate') found to check the routing gaps")
    gap = float("inf")
    for r in seen:
        p = torch.softmax(r.reshape(-1, r.shape[-1]).double(), -1).sort(-1, descending=True).values
        gap = min(gap, (p[:, k - 1] - p[:, k]).min().item())
    return gap


def hub_layout(state, arch, cfg):
    """state with fused experts (transformers 5) split per expert under the hub's names; unchanged when already so."""
    mixtral = arch == "mixtral"
    module = "block_sparse_moe" if mixtral else "mlp"
    gate, up, down = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    f = cfg.intermediate_size if mixtral else cfg.moe_intermediate_size
    c, e = cfg.hidden_size, cfg.num_local_experts if mixtral else cfg.num_experts
    out = {}
    for k, v in state.items():
        m = re.match(r"(.*\.)(?:mlp|block_sparse_moe)\.(experts\.(gate_up_proj|down_proj)|gate\.weight)$", k)
        if not m:
            out[k] = v
            continue
        prefix = m.group(1) + module + "."
        if m.group(2) == "gate.weight":
            out[prefix + "gate.weight"] = v
        elif m.group(3) == "gate_up_proj":
            if tuple(v.shape) == (e, c, 2 * f):
                v = v.transpose(1, 2)
            if tuple(v.shape) != (e, 2 * f, c):
                sys.exit(f"{k}: shape {tuple(v.shape)}, expected [{e},{2 * f},{c}] or [{e},{c},{2 * f}]")
            for x in range(e):
                out[f"{prefix}experts.{x}.{gate}.weight"] = v[x, :f].contiguous()
                out[f"{prefix}experts.{x}.{up}.weight"] = v[x, f:].contiguous()
        else:
            if tuple(v.shape) == (e, f, c):
                v = v.transpose(1, 2)
            if tuple(v.shape) != (e, c, f):
                sys.exit(f"{k}: shape {tuple(v.shape)}, expected [{e},{c},{f}] or [{e},{f},{c}]")
            for x in range(e):
                out[f"{prefix}experts.{x}.{down}.weight"] = v[x].contiguous()
    return out


for name, arch, seed in [("mixtral-tiny", "mixtral", 3), ("qwen3-moe-tiny", "qwen3_moe", 5), ("qwen2-moe-tiny", "qwen2_moe", 7)]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    prompt = torch.tensor([tok.encode("Return the", add_special_tokens=False)])
    for attempt in range(50):
        cfg, model = build(arch, seed + 1000 * attempt)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, vocab, (2, 24), generator=g)
        with torch.no_grad():
            gen = prompt.clone(); gaps = []
            for _ in range(20):
                lg = model(input_ids=gen).logits[0, -1]
                top = torch.topk(lg, 2); gaps.append((top.values[0] - top.values[1]).item())
                gen = torch.cat([gen, top.indices[:1].view(1, 1)], 1)
        gap = routing_gap(model, cfg, [ids, gen])
        if gap > 1e-4:
            break
    else:
        sys.exit(f"{name}: every seed tried left a routing near-tie")
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    for f in ["chat_template.jinja"]:
        if os.path.exists(os.path.join(src, "qwen2-tiny", f)):
            shutil.copy(os.path.join(src, "qwen2-tiny", f), d)
    weights = os.path.join(d, "model.safetensors")
    if not os.path.exists(weights):
        sys.exit(f"{name}: save_pretrained wrote no single model.safetensors")
    state = load_file(weights)
    hub = hub_layout(state, arch, cfg)
    if hub.keys() != state.keys():
        save_file(hub, weights, metadata={"format": "pt"})
        reloaded = type(model).from_pretrained(d, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            diff = (reloaded(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
        if diff > 1e-5:
            sys.exit(f"{name}: the experts split into the hub layout do not reload to the same logits (max diff {diff}); "
                     f"this transformers ({transformers.__version__}) fuses them differently: run the script with transformers 4.x")
    keys = list(hub.keys())
    expert = "block_sparse_moe.experts.0.w1.weight" if arch == "mixtral" else "mlp.experts.0.gate_proj.weight"
    if not any(k.endswith(expert) for k in keys) or any("gate_up_proj" in k for k in keys):
        sys.exit(f"{name}: the saved weights are not per-expert tensors ('...{expert}'); Temper reads the hub layout")
    mask = torch.ones(2, 24, dtype=torch.long); mask[1, 17:] = 0
    with torch.no_grad():
        ref = {"input_ids": ids.int(), "attention_mask": mask.int(),
               "logits": model(input_ids=ids).logits.float().contiguous(),
               "masked_logits": model(input_ids=ids, attention_mask=mask).logits.float().contiguous()}
    save_file(ref, os.path.join(d, "reference.safetensors"))
    info = {"arch": arch, "seed": seed + 1000 * attempt, "transformers": transformers.__version__, "min_routing_gap": gap,
            "greedy": {"prompt_ids": prompt[0].tolist(), "output_ids": gen[0].tolist(), "top2_gaps": gaps}}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(name, "seed", info["seed"], "min routing gap", gap, "tensors", len(keys))
