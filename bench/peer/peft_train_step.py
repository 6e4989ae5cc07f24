"""The PyTorch + PEFT peer of `temper bench train` (issue 6): LoRA SFT steps on a randomly initialised
model of the same shape, batch and sequence length, timed the same way (one warm-up step, then N timed
steps), printing tokens/s and peak CUDA memory. Run it in the same lease as Temper's bench:

    python3 bench/peer/peft_train_step.py --shape smollm-135m --lora-r 16 --batch-size 1 --seq-len 2048 --steps 3 [--dtype bf16]
    bash .gpu/run Temper.Cli bench train --shape smollm-135m --lora-r 16 --batch-size 1 --seq-len 2048 --steps 3 --device cuda --dtype bf16

The shapes are the ones `temper bench train --shape` builds (tools/Temper.Cli/Commands/BenchQLoraCommands.cs):
LoRA on all seven projections, alpha = 2r, no dropout, AdamW lr 1e-4, loss on every token.
First run on an H100 on 2026-11-23 (docs/PERF.md, "GPU: ILGPU backend on an H100")."""
import argparse, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model

SHAPES = {
    "smollm-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                        head_dim=64, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=8192),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0, max_position_embeddings=131072,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
}

ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="smollm-135m", choices=SHAPES)
ap.add_argument("--lora-r", type=int, default=16)
ap.add_argument("--batch-size", type=int, default=1)
ap.add_argument("--seq-len", type=int, default=2048)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa, eager, flash_attention_2)")
ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute each layer in backward (transformers' non-reentrant checkpointing)")
a = ap.parse_args()

torch.manual_seed(1)
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
cfg = LlamaConfig(**SHAPES[a.shape], rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, attn_implementation=a.attn)
model = LlamaForCausalLM(cfg).to(device="cuda", dtype=dtype)
model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
if a.gradient_checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, cfg.vocab_size, (a.batch_size, a.seq_len), device="cuda")

def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

step()  # warm-up (kernel selection, allocator)
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(a.steps):
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
tokens = a.batch_size * a.seq_len
mean = sum(times) / len(times)
print(f"peft {a.shape} r{a.lora_r} {a.dtype} batch {a.batch_size} x {a.seq_len}{' checkpointed' if a.gradient_checkpointing else ''}: mean {mean * 1e3:.1f} ms = {tokens / mean:.0f} tokens/s, "
      f"best {min(times) * 1e3:.1f} ms = {tokens / min(times):.0f} tokens/s; peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
      f"({torch.cuda.get_device_name()}, torch {torch.__version__}, attn {model.config._attn_implementation})")
