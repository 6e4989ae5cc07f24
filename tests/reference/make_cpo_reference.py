"""TRL's CPO (CPOTrainer.cpo_loss and concatenated_forward) at training step 0 on the llama-tiny fixture, for
Temper's CpoParityTests.
Usage (repository root, where torch, transformers and peft are; trl is optional; CPU, float32):
    python3 tests/reference/make_cpo_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-cpo/cpo_reference.json: {"cases": [...]}, one case per loss type (sigmoid, sigmoid with
label smoothing and cpo_alpha 0, hinge, ipo, simpo with gamma 0.8) with its settings and loss, nll_loss,
rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins and grad_norm (global L2 norm of the LoRA
gradients, before clipping). Policy = llama-tiny + its fixture adapter (PEFT), the whole of trainer/dpo.jsonl as
one batch. Tokens as Temper (and the fixture's DPO/ORPO references) take them: the prompt messages rendered with
the generation prompt, the completion = the ids that rendering prompt + completion adds after them (labels -100
on the prompt). The loss follows TRL's cpo_trainer.py; where trl is importable, its CPOTrainer.cpo_loss is run
on the same log-probs too and must agree."""
import json, os, sys, types
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

src, out = sys.argv[1], sys.argv[2]
model_dir = os.path.join(src, "llama-tiny")
d = os.path.join(out, "llama-tiny-cpo"); os.makedirs(d, exist_ok=True)
tok = AutoTokenizer.from_pretrained(model_dir)
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
pm = PeftModel.from_pretrained(base, os.path.join(model_dir, "adapter"), is_trainable=True)
pm.train()  # lora_dropout of the fixture adapter is 0

rows = [json.loads(l) for l in open(os.path.join(model_dir, "trainer", "dpo.jsonl")) if l.strip()]

def encode(prompt, completion):
    p = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(prompt + completion, tokenize=False)
    pid = tok(p, add_special_tokens=False)["input_ids"]
    fid = tok(full, add_special_tokens=False)["input_ids"]
    assert fid[:len(pid)] == pid, "the rendered prompt is not a prefix of prompt + completion"
    return fid, [-100] * len(pid) + fid[len(pid):]

def batch(kind):
    enc = [encode(r["prompt"], r[kind]) for r in rows]
    n = max(len(i) for i, _ in enc)
    ids = torch.tensor([i + [0] * (n - len(i)) for i, _ in enc])
    labels = torch.tensor([l + [-100] * (n - len(l)) for _, l in enc])
    mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in enc])
    return ids, labels, mask

def cpo(loss_type, beta, label_smoothing, simpo_gamma, cpo_alpha):
    pm.zero_grad()
    (ci, cl, cm), (ri, rl, rm) = batch("chosen"), batch("rejected")
    n = max(ci.shape[1], ri.shape[1])
    pad = lambda t, v: F.pad(t, (0, n - t.shape[1]), value=v)
    ids = torch.cat([pad(ci, 0), pad(ri, 0)]); labels = torch.cat([pad(cl, -100), pad(rl, -100)]); mask = torch.cat([pad(cm, 0), pad(rm, 0)])
    logits = pm(input_ids=ids, attention_mask=mask, use_cache=False).logits
    k = ci.shape[0]
    # concatenated_forward: nll = nn.CrossEntropyLoss() over the chosen rows, shifted; 0 when cpo_alpha == 0
    nll = torch.tensor(0.0) if cpo_alpha == 0 else F.cross_entropy(logits[:k, :-1].reshape(-1, logits.shape[-1]), labels[:k, 1:].reshape(-1))
    # get_batch_logps, average_log_prob for ipo and simpo
    lab = labels[:, 1:].clone(); lmask = lab != -100; lab[~lmask] = 0
    tok_logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, lab.unsqueeze(2)).squeeze(2)
    logps = (tok_logps * lmask).sum(-1)
    if loss_type in ("ipo", "simpo"): logps = logps / lmask.sum(-1)
    pc, pr = logps[:k], logps[k:]
    # cpo_loss (alpha = 0: plain log-prob rewards)
    z = pc - pr
    if loss_type == "simpo":
        z = z - simpo_gamma / beta
        losses = -F.logsigmoid(beta * z) * (1 - label_smoothing) - F.logsigmoid(-beta * z) * label_smoothing
    elif loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * z) * (1 - label_smoothing) - F.logsigmoid(-beta * z) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * z)
    else:
        losses = (z - 1 / (2 * beta)) ** 2
    try:  # TRL's own cpo_loss on the same log-probs, where trl is installed
        from trl.experimental.cpo import CPOTrainer
    except ImportError:
        try:
            from trl import CPOTrainer
        except ImportError:
            CPOTrainer = None
    if CPOTrainer is not None:
        me = types.SimpleNamespace(alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma,
                                   accelerator=types.SimpleNamespace(device="cpu"))
        trl_losses = CPOTrainer.cpo_loss(me, pc.detach(), pr.detach())[0]
        assert torch.allclose(trl_losses, losses.detach(), atol=1e-6), (loss_type, trl_losses, losses)
    loss = losses.mean() + cpo_alpha * nll
    loss.backward()
    gn = torch.sqrt(sum((p.grad.double() ** 2).sum() for n_, p in pm.named_parameters() if p.requires_grad and p.grad is not None))
    rc, rr = beta * pc.detach(), beta * pr.detach()
    return {"loss_type": loss_type, "beta": beta, "label_smoothing": label_smoothing, "simpo_gamma": simpo_gamma, "cpo_alpha": cpo_alpha,
            "loss": loss.item(), "nll_loss": nll.item(), "rewards/chosen": rc.mean().item(), "rewards/rejected": rr.mean().item(),
            "rewards/accuracies": (rc > rr).float().mean().item(), "rewards/margins": (rc - rr).mean().item(), "grad_norm": gn.item(),
            "chosen_logps": pc.tolist(), "rejected_logps": pr.tolist()}

cases = [cpo("sigmoid", 0.1, 0.0, 0.5, 1.0), cpo("sigmoid", 0.1, 0.1, 0.5, 0.0), cpo("hinge", 0.1, 0.0, 0.5, 1.0),
         cpo("ipo", 0.1, 0.0, 0.5, 1.0), cpo("simpo", 2.0, 0.0, 0.8, 0.0)]
json.dump({"model": "llama-tiny", "adapter": "llama-tiny/adapter", "data": "llama-tiny/trainer/dpo.jsonl", "cases": cases},
          open(os.path.join(d, "cpo_reference.json"), "w"), indent=1)
print("wrote", d)
