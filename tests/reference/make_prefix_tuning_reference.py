"""PEFT's prefix tuning (PREFIX_TUNING, no prefix_projection) on the llama-tiny fixture, for Temper's
PrefixTuningParityTests. Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_prefix_tuning_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-prefix-tuning/: adapter/ (the adapter as PEFT saves it: adapter_config.json, with token_dim
Hkv*D = 32 and num_attention_heads Hkv = 2 for the fixture's grouped-query attention, and prompt_embeddings
[3, 2*2*32]) and reference.safetensors:
  input_ids, labels [2, 24] the llama-tiny fixture's, each row's first label set to -100
  logits [2, 24, 512]      the logits of the real tokens (the prefix adds no rows)
  loss [1]                 mean cross-entropy over the labelled tokens
  grad.prompt_embeddings   d loss / d prompt_embeddings [3, 128] (PEFT's layout: [P, L*2*Hkv*D])
The embedding is scaled down from PEFT's N(0,1) start so attention is not saturated by the prefix."""
import os, sys
import torch
from peft import PrefixTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
model_dir = os.path.join(src, "llama-tiny")
d = os.path.join(out, "llama-tiny-prefix-tuning"); os.makedirs(d, exist_ok=True)
torch.manual_seed(13)
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
pm = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
emb = pm.prompt_encoder["default"].embedding.weight
with torch.no_grad():
    emb.mul_(0.3)
pm.save_pretrained(os.path.join(d, "adapter"))
ref = load_file(os.path.join(model_dir, "reference.safetensors"))
ids, labels = ref["input_ids"].long(), ref["labels"].long().clone()
labels[:, 0] = -100
pm.train()
pm.zero_grad()
outp = pm(input_ids=ids, labels=labels)
outp.loss.backward()
save_file({
    "input_ids": ids.int(), "labels": labels.int(),
    "logits": outp.logits.detach().float().contiguous(),
    "loss": torch.tensor([outp.loss.item()], dtype=torch.float32),
    "grad.prompt_embeddings": emb.grad.detach().float().contiguous(),
}, os.path.join(d, "reference.safetensors"))
print("llama-tiny-prefix-tuning: loss", outp.loss.item())
