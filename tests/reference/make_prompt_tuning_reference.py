"""PEFT's prompt tuning (PROMPT_TUNING, TEXT init) on the llama-tiny fixture, for Temper's PromptTuningParityTests.
Usage (repository root, where torch, transformers and peft are; CPU, float32):
    python3 tests/reference/make_prompt_tuning_reference.py ../shared/fixtures/hf tests/fixtures/hf
Writes OUTDIR/llama-tiny-prompt-tuning/: adapter/ (the adapter as PEFT saves it: adapter_config.json and
prompt_embeddings [4, 64]) and reference.safetensors:
  init_embeddings [4, 64]  PEFT's TEXT initialisation from "What is" (before the perturbation below)
  input_ids, labels [2, 24] the llama-tiny fixture's, with each row's first label set to -100 (Temper leaves a row's
                            first token unscored; PEFT would score it from the last virtual token)
  logits [2, 24, 512]      the real tokens' logits (PEFT's forward returns P + T rows; the first P are dropped)
  loss [1]                 mean cross-entropy over the labelled tokens
  grad.prompt_embeddings   d loss / d prompt_embeddings [4, 64]
The embeddings are perturbed from the TEXT init so the check does not rest on token rows alone."""
import os, sys
import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

src, out = sys.argv[1], sys.argv[2]
model_dir = os.path.join(src, "llama-tiny")
d = os.path.join(out, "llama-tiny-prompt-tuning"); os.makedirs(d, exist_ok=True)
torch.manual_seed(11)
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
base.config._attn_implementation = "eager"
cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init=PromptTuningInit.TEXT,
                         prompt_tuning_init_text="What is", tokenizer_name_or_path=model_dir)
pm = get_peft_model(base, cfg)
emb = pm.prompt_encoder["default"].embedding.weight
init = emb.detach().clone()
with torch.no_grad():
    emb.add_(0.05 * torch.randn_like(emb))
pm.save_pretrained(os.path.join(d, "adapter"))
ref = load_file(os.path.join(model_dir, "reference.safetensors"))
ids, labels = ref["input_ids"].long(), ref["labels"].long().clone()
labels[:, 0] = -100
pm.train()
pm.zero_grad()
outp = pm(input_ids=ids, labels=labels)
outp.loss.backward()
tensors = {
    "init_embeddings": init.float().contiguous(),
    "input_ids": ids.int(), "labels": labels.int(),
    "logits": outp.logits[:, cfg.num_virtual_tokens:, :].detach().float().contiguous(),
    "loss": torch.tensor([outp.loss.item()], dtype=torch.float32),
    "grad.prompt_embeddings": emb.grad.detach().float().contiguous(),
}
save_file(tensors, os.path.join(d, "reference.safetensors"))
print("llama-tiny-prompt-tuning: loss", outp.loss.item())
