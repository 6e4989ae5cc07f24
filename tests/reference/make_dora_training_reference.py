"""PEFT's DoRA training step 0 (use_dora=True) on the llama-tiny fixture, for Temper's DoraTrainingTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_dora_training_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-dora-training/: adapter/ (the DoRA adapter as PEFT saves it: lora_A, lora_B and
lora_magnitude_vector of every projection) and reference.safetensors: input_ids and labels (the llama-tiny
fixture's), loss [1] (mean cross-entropy over the labelled tokens, the model in training mode with
lora_dropout 0, as SFT runs it) and grad.<module>.lora_A.weight / lora_B.weight / lora_magnitude_vector
(PEFT's parameter names without base_model.model. and the adapter name, as Temper's TrainableParameters names
them). lora_B and the magnitudes are perturbed from PEFT's initialisation so that A gets a gradient and the
magnitude is not the weight norm."""
import os, sys
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
d = os.path.join(out, "llama-tiny-dora-training"); os.makedirs(d, exist_ok=True)
torch.manual_seed(7)
base = AutoModelForCausalLM.from_pretrained(os.path.join(src, "llama-tiny"), torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, use_dora=True, bias="none", task_type="CAUSAL_LM"))
ref = load_file(os.path.join(src, "llama-tiny", "reference.safetensors"))
ids, labels = ref["input_ids"].long(), ref["labels"].long()
with torch.no_grad():
    pm(input_ids=ids[:, :2])  # newer PEFT creates the magnitude (||W||_row) on the first forward
    for n, p in pm.named_parameters():
        if "lora_B" in n: p.copy_(0.05 * torch.randn_like(p))
        if "lora_magnitude_vector" in n: p.mul_(1 + 0.2 * torch.randn_like(p))
pm.save_pretrained(os.path.join(d, "adapter"))
pm.train()
pm.zero_grad()
outp = pm(input_ids=ids, labels=labels)
outp.loss.backward()
tensors = {"input_ids": ids.int(), "labels": labels.int(), "loss": torch.tensor([outp.loss.item()], dtype=torch.float32)}
for n, p in pm.named_parameters():
    if p.requires_grad and p.grad is not None:
        name = n.replace("base_model.model.", "").replace(".default", "")
        if name.endswith("lora_magnitude_vector.weight"): name = name[: -len(".weight")]
        tensors["grad." + name] = p.grad.detach().float().contiguous()
save_file(tensors, os.path.join(d, "reference.safetensors"))
print("llama-tiny-dora-training: loss", outp.loss.item(), "gradients", sum(k.startswith("grad.") for k in tensors))
