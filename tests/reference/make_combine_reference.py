"""PEFT's add_weighted_adapter combinations on the llama-tiny fixture, for Temper's CombinationTypesTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_combine_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-combine/: first/ (r 4, lora_alpha 8, all seven projections) and second/ (r 4, lora_alpha 4,
q_proj, v_proj and up_proj only, so some modules have one adapter), both with random A and B; one folder per
deterministic combination (cat, linear, svd, ties, ties_frequency, ties_svd, magnitude_prune, magnitude_prune_svd),
each the adapter PEFT's add_weighted_adapter(["first", "second"], [0.7, -0.4], ...) makes and save_pretrained writes;
and reference.json: the weights and, per folder, its combination_type and options. The DARE types are left out:
their masks come from torch's RNG, which Temper does not reproduce (it draws them from its own seeded SplitMix64)."""
import json, os, sys
import peft, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
d = os.path.join(out, "llama-tiny-combine"); os.makedirs(d, exist_ok=True)
torch.manual_seed(11)
base = AutoModelForCausalLM.from_pretrained(os.path.join(src, "llama-tiny"), torch_dtype=torch.float32)
all7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=all7, bias="none", task_type="CAUSAL_LM"), adapter_name="first")
pm.add_adapter("second", LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], bias="none", task_type="CAUSAL_LM"))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "lora_A" in n or "lora_B" in n: p.copy_(0.3 * torch.randn_like(p))
# weight * scale is 1.4 for first and -0.4 for second (PEFT 0.21; before it, weight * scale^2: 2.8): the rank-4 truncations of the svd types have a clear gap.
weights = [0.7, -0.4]
combinations = [
    {"name": "cat", "type": "cat"},
    {"name": "linear", "type": "linear"},
    {"name": "svd", "type": "svd"},
    {"name": "ties", "type": "ties", "density": 0.5, "majority_sign_method": "total"},
    {"name": "ties_frequency", "type": "ties", "density": 0.5, "majority_sign_method": "frequency"},
    {"name": "ties_svd", "type": "ties_svd", "density": 0.5, "majority_sign_method": "total"},
    {"name": "magnitude_prune", "type": "magnitude_prune", "density": 0.5},
    {"name": "magnitude_prune_svd", "type": "magnitude_prune_svd", "density": 0.5},
]
for c in combinations:
    pm.add_weighted_adapter(["first", "second"], weights, c["name"], combination_type=c["type"],
                            density=c.get("density"), majority_sign_method=c.get("majority_sign_method", "total"))
names = ["first", "second"] + [c["name"] for c in combinations]
pm.save_pretrained(d, selected_adapters=names)  # an adapter not named "default" is saved in its own subfolder
with open(os.path.join(d, "reference.json"), "w") as f:
    json.dump({"peft": peft.__version__, "torch": torch.__version__, "weights": weights, "combinations": combinations}, f, indent=1)
for name in names: assert os.path.exists(os.path.join(d, name, "adapter_model.safetensors")), name
print("llama-tiny-combine:", ", ".join(names))
