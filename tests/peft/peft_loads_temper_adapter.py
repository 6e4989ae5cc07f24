"""PEFT loads an adapter Temper trained and gives the logits Temper gives (issue 3's GPU-machine check).

Run on a machine with torch, transformers and PEFT (the GPU machine), from the files tests/peft/run.sh
makes with Temper on any machine:
    python3 tests/peft/peft_loads_temper_adapter.py MODEL_DIR ADAPTER_DIR WORK_DIR
WORK_DIR holds ids.json (a list of equal-length id lists) and temper_logits.safetensors (`temper logits
--adapter ADAPTER_DIR`, tensor "logits" [B,T,V]). Computes the logits of base + adapter with
PeftModel.from_pretrained in float32 on the CPU (exact, no TF32) and fails unless
max|temper - peft| <= 1e-4 * max|peft| (for a prompt-tuning adapter, over the real tokens' rows). Prints one line with the figures; exit 0 = pass, 1 = fail."""
import json, os, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel

model_dir, adapter_dir, work = sys.argv[1], sys.argv[2], sys.argv[3]
ids = torch.tensor(json.load(open(os.path.join(work, "ids.json"))), dtype=torch.long)
temper = load_file(os.path.join(work, "temper_logits.safetensors"))["logits"].float()
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    peft = model(input_ids=ids).logits.float()
cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
if cfg.get("peft_type") == "PROMPT_TUNING":  # PEFT returns the virtual tokens' rows first; Temper the real tokens' only
    peft = peft[:, cfg["num_virtual_tokens"]:, :]
if peft.shape != temper.shape:
    print(f"FAIL: PEFT logits {tuple(peft.shape)} vs Temper's {tuple(temper.shape)}")
    sys.exit(1)
err = (peft - temper).abs().max().item()
scale = peft.abs().max().item()
ok = err <= 1e-4 * scale
print(f"{'ok' if ok else 'FAIL'}: max|temper - peft| = {err:.3e}, 1e-4 x max|peft| = {1e-4 * scale:.3e} ({ids.shape[0]}x{ids.shape[1]} ids, adapter {adapter_dir})")
sys.exit(0 if ok else 1)
