"""A bitsandbytes 4-bit checkpoint of the llama-tiny fixture, for Temper's Bnb4BitTests (Bitsandbytes_own_checkpoint...).
Usage (repository root, on a CUDA machine where torch, transformers and bitsandbytes are):
    python3 tests/reference/make_bnb_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-bnb4/: the model as transformers saves it after loading it with
BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
bnb_4bit_compute_dtype=float32) (config.json with quantization_config, model.safetensors with Params4bit and their packed
QuantState tensors, tokenizer files), and reference.safetensors:
  input_ids [2, 24]        the llama-tiny fixture's
  logits [2, 24, 512]      the 4-bit model's logits (bitsandbytes dequantises to float32, then matmuls)
  dynamic_map [256]        bitsandbytes.functional.create_dynamic_map(signed=True), for DynamicMap.Values"""
import os, shutil, sys
import torch
import bitsandbytes.functional as bnbf
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

src, out = sys.argv[1], sys.argv[2]
model_dir = os.path.join(src, "llama-tiny")
d = os.path.join(out, "llama-tiny-bnb4"); os.makedirs(d, exist_ok=True)
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, quantization_config=q, device_map={"": 0})
model.config._attn_implementation = "eager"
model.save_pretrained(d, safe_serialization=True)
for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]:
    if os.path.exists(os.path.join(model_dir, f)): shutil.copy(os.path.join(model_dir, f), d)
ids = load_file(os.path.join(model_dir, "reference.safetensors"))["input_ids"].long()
with torch.no_grad():
    logits = model(input_ids=ids.to(0)).logits.float().cpu().contiguous()
save_file({"input_ids": ids.int(), "logits": logits, "dynamic_map": bnbf.create_dynamic_map(signed=True).float().cpu().contiguous()},
          os.path.join(d, "reference.safetensors"))
print("llama-tiny-bnb4: max |logit|", logits.abs().max().item())
