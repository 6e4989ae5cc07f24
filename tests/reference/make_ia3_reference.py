"""PEFT's (IA)^3 (peft_type IA3) step 0 on the llama-tiny fixture, for Temper's Ia3TrainingTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_ia3_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-ia3/: adapter/ (the IA3 adapter as PEFT saves it, with PEFT's llama defaults: target_modules
k_proj, v_proj, down_proj, feedforward_modules down_proj; ia3_l [Out,1] or [1,In]) and reference.safetensors:
input_ids and labels (the llama-tiny fixture's), loss [1] (mean cross-entropy over the labelled tokens, training
mode), grad.<module>.ia3_l (PEFT's parameter names without base_model.model. and the adapter name, as Temper's
TrainableParameters names them; shaped as PEFT holds them) and logits [2,24,V] (eval mode, the adapter unmerged).
The vectors are perturbed from PEFT's ones so that the scaling shows in the loss and the gradients."""
import os, sys
import torch
from peft import IA3Config, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
d = os.path.join(out, "llama-tiny-ia3"); os.makedirs(d, exist_ok=True)
torch.manual_seed(11)
base = AutoModelForCausalLM.from_pretrained(os.path.join(src, "llama-tiny"), torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
pm = get_peft_model(base, IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"], task_type="CAUSAL_LM"))
ref = load_file(os.path.join(src, "llama-tiny", "reference.safetensors"))
ids, labels = ref["input_ids"].long(), ref["labels"].long()
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "ia3_l" in n: p.mul_(1 + 0.3 * torch.randn_like(p))
pm.save_pretrained(os.path.join(d, "adapter"))
pm.train()
pm.zero_grad()
outp = pm(input_ids=ids, labels=labels)
outp.loss.backward()
tensors = {"input_ids": ids.int(), "labels": labels.int(), "loss": torch.tensor([outp.loss.item()], dtype=torch.float32)}
for n, p in pm.named_parameters():
    if p.requires_grad and p.grad is not None:
        tensors["grad." + n.replace("base_model.model.", "").replace(".default", "")] = p.grad.detach().float().contiguous()
pm.eval()
with torch.no_grad():
    tensors["logits"] = pm(input_ids=ids).logits.float().contiguous()
save_file(tensors, os.path.join(d, "reference.safetensors"))
print("llama-tiny-ia3: loss", outp.loss.item(), "gradients", sum(k.startswith("grad.") for k in tensors))
