"""PEFT's LoRA with modules_to_save=["embed_tokens", "lm_head"] at training step 0 on the llama-tiny fixture (tied
embeddings), for Temper's ModulesToSaveTrainingTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_modules_to_save_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-modules-to-save/: adapter/ (as PEFT saves it: lora_A, lora_B of every projection and the
copies base_model.model.model.embed_tokens.weight and base_model.model.lm_head.weight) and reference.safetensors:
input_ids and labels (the llama-tiny fixture's), loss [1] (mean cross-entropy over the labelled tokens, training mode,
lora_dropout 0) and grad.<name> for every trained parameter under Temper's TrainableParameters names
(model.layers.0.self_attn.q_proj.lora_A.weight, ..., model.embed_tokens.weight, lm_head.weight). lora_B and both
copies are perturbed from their initial values (the copies apart from each other: with PEFT's default
ensure_weight_tying=False each ModulesToSaveWrapper deep-copies its module, so the tied pair is trained untied)."""
import os, sys
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
d = os.path.join(out, "llama-tiny-modules-to-save"); os.makedirs(d, exist_ok=True)
torch.manual_seed(11)
base = AutoModelForCausalLM.from_pretrained(os.path.join(src, "llama-tiny"), torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, modules_to_save=["embed_tokens", "lm_head"],
                                     bias="none", task_type="CAUSAL_LM"))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "lora_B" in n or ("modules_to_save" in n and p.requires_grad): p.add_(0.02 * torch.randn_like(p))
pm.save_pretrained(os.path.join(d, "adapter"))
ref = load_file(os.path.join(src, "llama-tiny", "reference.safetensors"))
ids, labels = ref["input_ids"].long(), ref["labels"].long()
pm.train()
pm.zero_grad()
outp = pm(input_ids=ids, labels=labels)
outp.loss.backward()
tensors = {"input_ids": ids.int(), "labels": labels.int(), "loss": torch.tensor([outp.loss.item()], dtype=torch.float32)}
for n, p in pm.named_parameters():
    if p.requires_grad and p.grad is not None:
        name = n.replace("base_model.model.", "").replace(".modules_to_save.default", "").replace(".default", "")
        tensors["grad." + name] = p.grad.detach().float().contiguous()
save_file(tensors, os.path.join(d, "reference.safetensors"))
print("llama-tiny-modules-to-save: loss", outp.loss.item(), "gradients", sum(k.startswith("grad.") for k in tensors))
