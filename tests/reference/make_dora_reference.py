"""PEFT's DoRA (use_dora=True) on the llama-tiny fixture, for Temper's DoraTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_dora_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-dora/: the adapter PEFT saves (adapter_config.json, adapter_model.safetensors with
lora_magnitude_vector beside lora_A/lora_B) and reference.safetensors: input_ids (the llama-tiny fixture's),
logits of the adapter unmerged (PEFT's DoRA forward) and merged.logits after merge_and_unload.
lora_B and the magnitudes are perturbed from PEFT's initialisation so that both show in the logits."""
import os, sys
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
d = os.path.join(out, "llama-tiny-dora"); os.makedirs(d, exist_ok=True)
torch.manual_seed(5)
base = AutoModelForCausalLM.from_pretrained(os.path.join(src, "llama-tiny"), torch_dtype=torch.float32)
base.config._attn_implementation = "eager"; base.eval()
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, use_dora=True, bias="none", task_type="CAUSAL_LM"))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "lora_B" in n: p.copy_(0.02 * torch.randn_like(p))
        if "lora_magnitude_vector" in n: p.mul_(1 + 0.3 * torch.randn_like(p))
pm.eval()
pm.save_pretrained(d)
ids = load_file(os.path.join(src, "llama-tiny", "reference.safetensors"))["input_ids"].long()
with torch.no_grad():
    logits = pm(input_ids=ids).logits.float()
    merged = pm.merge_and_unload()
    merged_logits = merged(input_ids=ids).logits.float()
save_file({"input_ids": ids.int(), "logits": logits.contiguous(), "merged.logits": merged_logits.contiguous()}, os.path.join(d, "reference.safetensors"))
print("llama-tiny-dora: max |unmerged - merged| =", (logits - merged_logits).abs().max().item())
