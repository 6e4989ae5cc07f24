"""PEFT LoRA over a mixture-of-experts model's attention, experts and routers, trained with transformers' router
load-balancing loss (output_router_logits), for Temper's MoePeftParityTests.
Usage (repository root, where torch, peft and transformers 4.46..4.57 are; CPU, float32), after make_moe_fixtures.py:
    python3 tests/reference/make_moe_lora_reference.py tests/fixtures/hf tests/fixtures/hf
INDIR holds make_moe_fixtures.py's mixtral-tiny/ and qwen2-moe-tiny/. Writes OUTDIR/mixtral-tiny-lora/ and
OUTDIR/qwen2-moe-tiny-lora/, each self-contained (built in NAME.partial/ and renamed when complete, so a failed run leaves
no folder that looks finished):
  the base folder's files (model.safetensors, tokenizer, chat template; not its reference.*), its config.json with
      output_router_logits true and router_aux_loss_coef 0.02 (what the model below was loaded with);
  adapter/            the LoRA adapter as PEFT's save_pretrained writes it: r 4, lora_alpha 8, lora_dropout 0, bias none,
                      target_modules q_proj, v_proj, the experts' projections and the router 'gate' (Mixtral: w1, w2, w3;
                      Qwen2-MoE: gate_proj, up_proj, down_proj, which also take its shared expert and layer 1's dense MLP,
                      and shared_expert_gate); PEFT's A init, lora_B drawn N(0, 0.05^2) so that A has a gradient;
  reference.safetensors:
    input_ids [2,24] int32        the base fixture's
    attention_mask [2,24] int32   the base fixture's: row 1 right-padded from position 17
    labels [2,24] int32           input_ids, -100 on each row's first 4 tokens (a prompt) and on the padding
    loss [1] float32              model(input_ids, attention_mask, labels, output_router_logits=True).loss in training
                                  mode: ce_loss + 0.02 x aux_loss
    ce_loss [1] float32           the mean cross-entropy over the labelled tokens (position t predicting labels[t+1])
    aux_loss [1] float32          load_balancing_loss_func over the sparse layers' router logits (the LoRA included) and
                                  the attention mask's real tokens
    grad.<key> float32            d loss / d every lora_A [r,In] and lora_B [Out,r]; <key> is the adapter file's tensor
                                  name without 'base_model.model.' (e.g. model.layers.0.block_sparse_moe.experts.1.w3.lora_A.weight),
                                  as Temper's TrainableParameters names them; zeros for an expert no token was routed to
  reference.json: base, transformers and peft versions, adapter seed, targets, coef, the three losses as float64 text, and
      min_routing_gap: the smallest k-th minus (k+1)-th routing probability over the real tokens of every sparse layer with
      the adapter on, kept above 1e-4 by trying further adapter seeds, so float32 rounding cannot route a token differently.
The script checks what it relies on and stops with a message otherwise: per-expert nn.Linear experts (transformers 5 fuses
them into 3-d parameters PEFT's LoRA does not name per expert: run it with transformers 4.46..4.57, as make_moe_fixtures.py
documents), every target wrapped by PEFT, transformers' aux_loss equal to this script's float64 load_balancing_loss_func over
the LoRA'd routers' outputs, loss = ce_loss + coef x aux_loss, and the gradient names equal to the saved adapter's keys."""
import json, os, shutil, sys
import torch
import torch.nn.functional as F
import transformers
import peft
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

COEF = 0.02
PROMPT = 4  # each row's first tokens carry no label, as an SFT prompt

version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
if not (4, 46) <= version < (5, 0):
    sys.exit(f"make_moe_lora_reference.py: transformers {transformers.__version__}: this script needs transformers 4.46..4.57, "
             "whose Mixtral and Qwen2-MoE hold each expert's projections as nn.Linear modules (PEFT's per-expert LoRA names, "
             "which Temper reads); transformers 5 fuses the experts")

src, out = sys.argv[1], sys.argv[2]

# name, seed, the MoE block's module name, its experts' projections, LoRA targets
VARIANTS = [("mixtral-tiny", 21, "block_sparse_moe", ["w1", "w2", "w3"], ["q_proj", "v_proj", "w1", "w2", "w3", "gate"]),
            ("qwen2-moe-tiny", 23, "mlp", ["gate_proj", "up_proj", "down_proj"],
             ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj", "gate", "shared_expert_gate"])]


def fail(name, message):
    sys.exit(f"make_moe_lora_reference.py: {name}: {message}")


def self_contained_copy(base, d):
    """base's files (not its reference.*) into d, config.json asking for the router load-balancing loss."""
    for f in os.listdir(base):
        p = os.path.join(base, f)
        if os.path.isfile(p) and not f.startswith("reference."):
            shutil.copy(p, d)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg["output_router_logits"] = True
    cfg["router_aux_loss_coef"] = COEF
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def check_per_expert_linears(name, model, module, projections):
    """Every sparse layer's router and experts are nn.Linear modules (transformers 4.x), or the script stops."""
    sparse = 0
    for i, layer in enumerate(model.model.layers):
        moe = getattr(layer, module)
        if not hasattr(moe, "experts"):
            continue  # Qwen2-MoE's dense layer (mlp_only_layers)
        sparse += 1
        ok = isinstance(getattr(moe, "gate", None), torch.nn.Linear) and isinstance(moe.experts, torch.nn.ModuleList) \
            and all(isinstance(getattr(e, p, None), torch.nn.Linear) for e in moe.experts for p in projections)
        if not ok:
            fail(name, f"layer {i}'s router and experts are not per-expert nn.Linear modules ({type(moe.experts).__name__}); "
                       f"this transformers ({transformers.__version__}) fuses them: run the script with transformers 4.46..4.57")
    if sparse == 0:
        fail(name, f"no layer has a '{module}.experts' module")


def load_balancing(router_logits, experts, k, mask):
    """transformers' load_balancing_loss_func in float64: over the real (mask 1) tokens of every sparse layer, f[e] = the
    share of (layer, token) pairs with e among their top k, P[e] = their mean softmax probability; E sum_e f[e] P[e]."""
    keep = mask.reshape(-1).bool()
    logits = torch.cat([r.detach().double().reshape(-1, experts)[keep] for r in router_logits])
    p = torch.softmax(logits, -1)
    chosen = F.one_hot(torch.topk(p, k, -1).indices, experts).sum(1).double()
    return experts * (chosen.mean(0) * p.mean(0)).sum().item()


def routing_gap(router_logits, experts, k, mask):
    keep = mask.reshape(-1).bool()
    gap = float("inf")
    for r in router_logits:
        p = torch.softmax(r.detach().double().reshape(-1, experts)[keep], -1).sort(-1, descending=True).values
        gap = min(gap, (p[:, k - 1] - p[:, k]).min().item())
    return gap


def step(name, d, seed, targets, module, projections, ids, mask, labels):
    """A fresh load of d with seeded LoRA, one training-mode forward (the routers' outputs recorded) and backward."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
    if not model.config.output_router_logits or model.router_aux_loss_coef != COEF:
        fail(name, f"the model did not take output_router_logits true and router_aux_loss_coef {COEF} from config.json")
    check_per_expert_linears(name, model, module, projections)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    wrapped = {n.replace("base_model.model.", "", 1) for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in targets and not n.endswith(".base_layer"):
            fail(name, f"PEFT left '{n}' without LoRA")  # wrapped Linears are LoRA layers now; a plain one was missed
    if not any(n.endswith(f"{module}.experts.0.{projections[0]}") for n in wrapped) or not any(n.endswith(f"{module}.gate") for n in wrapped):
        fail(name, f"PEFT wrapped no expert ('{module}.experts.0.{projections[0]}') or router ('{module}.gate'): {sorted(wrapped)[:8]}...")
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn_like(p))
    routers = [m for n, m in pm.named_modules() if n.endswith(f"{module}.gate")]  # the LoRA-wrapped routers: logits + LoRA
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for m in routers]
    pm.train()  # lora_dropout 0, attention dropout 0, router_jitter_noise 0: the same numbers as eval, as SFT runs it
    pm.zero_grad()
    try:
        outp = pm(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    if len(seen) != len(routers):
        fail(name, f"{len(routers)} routers but {len(seen)} router outputs recorded")
    outp.loss.backward()
    return pm, outp, seen


for name, seed, module, projections, targets in VARIANTS:
    base = os.path.join(src, name)
    if not os.path.exists(os.path.join(base, "reference.safetensors")):
        fail(name, f"{base} has no reference.safetensors: run make_moe_fixtures.py first")
    final = os.path.join(out, name + "-lora")
    d = final + ".partial"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    self_contained_copy(base, d)
    ref = load_file(os.path.join(base, "reference.safetensors"))
    ids, mask = ref["input_ids"].long(), ref["attention_mask"].long()
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    labels[mask == 0] = -100
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    experts = config.get("num_local_experts", config.get("num_experts"))
    k = config["num_experts_per_tok"]

    for attempt in range(20):
        adapter_seed = seed + 1000 * attempt
        pm, outp, seen = step(name, d, adapter_seed, targets, module, projections, ids, mask, labels)
        gap = routing_gap(seen, experts, k, mask)
        if gap > 1e-4:
            break
    else:
        fail(name, "every adapter seed tried left a routing near-tie")

    logits = outp.logits.detach().float()
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100).item()
    aux = outp.aux_loss.item()
    mine = load_balancing(seen, experts, k, mask)
    if abs(aux - mine) > 1e-5 * abs(mine):
        fail(name, f"transformers' aux_loss {aux} is not load_balancing_loss_func over the LoRA'd routers' outputs and the real "
                   f"tokens ({mine}): this transformers ({transformers.__version__}) records other router logits")
    if abs(outp.loss.item() - (ce + COEF * aux)) > 1e-5 * abs(outp.loss.item()):
        fail(name, f"loss {outp.loss.item()} is not ce {ce} + {COEF} x aux {aux}")

    pm.peft_config["default"].base_model_name_or_path = final  # not the .partial folder it was loaded from
    pm.save_pretrained(os.path.join(d, "adapter"))
    saved = {key.replace("base_model.model.", "", 1) for key in load_file(os.path.join(d, "adapter", "adapter_model.safetensors"))}
    tensors = {"input_ids": ids.int(), "attention_mask": mask.int(), "labels": labels.int(),
               "loss": torch.tensor([outp.loss.item()], dtype=torch.float32),
               "ce_loss": torch.tensor([ce], dtype=torch.float32), "aux_loss": torch.tensor([aux], dtype=torch.float32)}
    unrouted = []
    for n, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        key = n.replace("base_model.model.", "", 1).replace(".default", "")
        if p.grad is None:  # transformers skips an expert no token was routed to
            unrouted.append(key)
        tensors["grad." + key] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().contiguous()
    grads = {key[len("grad."):] for key in tensors if key.startswith("grad.")}
    if grads != saved:
        fail(name, f"gradient names differ from the adapter's keys: {sorted(grads ^ saved)[:6]}")
    save_file(tensors, os.path.join(d, "reference.safetensors"))
    info = {"base": name, "transformers": transformers.__version__, "peft": peft.__version__, "adapter_seed": adapter_seed,
            "targets": targets, "router_aux_loss_coef": COEF, "loss": outp.loss.item(), "ce_loss": ce, "aux_loss": aux,
            "min_routing_gap": gap, "unrouted": unrouted}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(info, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(d, final)
    print(name + "-lora", "loss", info["loss"], "ce", ce, "aux", aux, "gap", gap, "gradients", len(grads), "unrouted", len(unrouted))
