"""Reference fixtures from Hugging Face transformers + PEFT (CPU, float32).
Usage: python3 make_fixtures.py OUTDIR NAME ARCH SEED [options as key=value]
Writes OUTDIR/NAME/{model files, tokenizer files, adapter/, merged/, reference.safetensors, reference.json}.

This is ../shared/reference/make_fixtures.py (which made llama-tiny and qwen2-tiny) with ARCH qwen3 added
(q_norm/k_norm per head, head_dim=N may differ from hidden/heads). Temper's Qwen3 fixture, run on a machine
with torch, transformers (>= 4.51) and peft, from the repository root:
    python3 tests/reference/make_fixtures.py tests/fixtures/hf qwen3-tiny qwen3 3 theta=1000000 head_dim=32
The tests that read it (ParityTests, GradientParityTests: Fixtures.Hf("qwen3-tiny")) are skipped until it exists.
The same with YaRN RoPE scaling (rope_scaling=yarn: factor 4 over 64 original positions, as Qwen3's model cards add it,
scaled down; 4 = max_position_embeddings 256 / 64, so the 4.x releases that derive the factor from those agree),
read by ParityTests as Fixtures.Hf("qwen3-yarn-tiny"):
    python3 tests/reference/make_fixtures.py tests/fixtures/hf qwen3-yarn-tiny qwen3 5 theta=1000000 head_dim=32 rope_scaling=yarn
bench/gpu/lease.sh's step reference-fixtures runs this (and make_dora_reference.py) on the GPU machine."""
import sys, os, json, math, random
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

out, name, arch, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
opts = dict(a.split("=", 1) for a in sys.argv[5:])
torch.manual_seed(seed); random.seed(seed)
torch.backends.cuda.matmul.allow_tf32 = False
d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
info = {"arch": arch, "seed": seed}

# ---------- tokenizer: byte-level BPE trained on stdlib docstrings ----------
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
import pydoc, importlib
texts = []
for mod in ["os", "json", "math", "random", "collections", "itertools", "functools", "re", "string", "textwrap", "argparse", "pathlib", "datetime", "heapq", "bisect"]:
    m = importlib.import_module(mod)
    for k in dir(m):
        doc = getattr(getattr(m, k), "__doc__", None)
        if isinstance(doc, str): texts.append(doc)
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
vocab = int(opts.get("vocab", 512))
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
vocab = tok.get_vocab_size()
from transformers import PreTrainedTokenizerFast
hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
hf_tok.chat_template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
hf_tok.save_pretrained(d)
tok_cases = ["Return the absolute value of the argument.", "  leading spaces and\ttabs\nnewlines", "Ünïcödé ✓ 中文 emoji 🚀", "x=1+2*3; print(f'{x:>4}')", ""]
info["tokenize"] = [{"text": t, "ids": hf_tok.encode(t, add_special_tokens=False)} for t in tok_cases]
conv = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
info["chat_template"] = {"messages": conv,
    "text": hf_tok.apply_chat_template(conv, tokenize=False),
    "text_with_generation_prompt": hf_tok.apply_chat_template(conv[:2], tokenize=False, add_generation_prompt=True)}

# ---------- model ----------
H = int(opts.get("hidden", 64)); L = int(opts.get("layers", 2)); NH = int(opts.get("heads", 4)); KV = int(opts.get("kv_heads", 2))
I = int(opts.get("inter", 160)); tie = opts.get("tie", "1") == "1"; theta = float(opts.get("theta", 10000))
common = dict(vocab_size=vocab, hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=NH, num_key_value_heads=KV,
              max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=theta, tie_word_embeddings=tie,
              bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
if opts.get("rope_scaling") == "llama3":
    common["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
if opts.get("rope_scaling") == "yarn":
    common["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
if arch == "llama":
    from transformers import LlamaConfig as C, LlamaForCausalLM as M
    cfg = C(**common, attention_bias=False, mlp_bias=False)
elif arch == "qwen2":
    from transformers import Qwen2Config as C, Qwen2ForCausalLM as M
    cfg = C(**common)
elif arch == "qwen3":
    from transformers import Qwen3Config as C, Qwen3ForCausalLM as M
    cfg = C(**common, head_dim=int(opts.get("head_dim", H // NH)), attention_bias=False)
elif arch == "mistral":
    from transformers import MistralConfig as C, MistralForCausalLM as M
    cfg = C(**common, sliding_window=None)
cfg._attn_implementation = "eager"
model = M(cfg).float().eval()
with torch.no_grad():  # make norms non-trivial so that a missing norm weight shows
    for n, p in model.named_parameters():
        if "norm" in n: p.copy_(1.0 + 0.1 * torch.randn_like(p))
        if n.endswith(".bias"): p.copy_(0.05 * torch.randn_like(p))
model.save_pretrained(d, safe_serialization=True)
info["config"] = json.load(open(os.path.join(d, "config.json")))

B, T = 2, 24
ids = torch.randint(3, vocab, (B, T))
labels = ids.clone(); labels[:, :8] = -100            # prompt tokens masked out of the loss
ref = {"input_ids": ids.int(), "labels": labels.int()}
model.zero_grad()
outp = model(input_ids=ids, labels=labels)
outp.loss.backward()
ref["logits"] = outp.logits.detach().float()
info["loss"] = outp.loss.item()
for n, p in model.named_parameters():
    if p.grad is not None: ref["grad." + n] = p.grad.detach().clone()
# per-token log-probs of the labelled tokens (shifted), the quantity DPO/KTO/GRPO build on
lp = torch.log_softmax(outp.logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
ref["token_logps"] = lp.float()

# padded batch with attention mask (left part real, right padded)
mask = torch.ones(B, T, dtype=torch.long); mask[1, 17:] = 0
with torch.no_grad():
    ref["masked_logits"] = model(input_ids=ids, attention_mask=mask).logits.float()
ref["attention_mask"] = mask.int()

# greedy generation
prompt = torch.tensor([hf_tok.encode("Return the", add_special_tokens=False)])
with torch.no_grad():
    gen = prompt.clone(); gaps = []
    for _ in range(20):
        lg = model(input_ids=gen).logits[0, -1]
        top = torch.topk(lg, 2); gaps.append((top.values[0] - top.values[1]).item())
        gen = torch.cat([gen, top.indices[:1].view(1, 1)], 1)
info["greedy"] = {"prompt_ids": prompt[0].tolist(), "output_ids": gen[0].tolist(), "top2_gaps": gaps}

# ---------- LoRA via PEFT ----------
from peft import LoraConfig, get_peft_model
r = int(opts.get("r", 4)); alpha = int(opts.get("alpha", 8))
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
base = M.from_pretrained(d, torch_dtype=torch.float32); base.config._attn_implementation = "eager"; base.eval()
pm = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM"))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if "lora_B" in n: p.copy_(0.02 * torch.randn_like(p))
pm.save_pretrained(os.path.join(d, "adapter"))
pm.zero_grad()
lo = pm(input_ids=ids, labels=labels)
lo.loss.backward()
ref["lora.logits"] = lo.logits.detach().float(); info["lora_loss"] = lo.loss.item()
for n, p in pm.named_parameters():
    if p.requires_grad and p.grad is not None: ref["lora.grad." + n.replace("base_model.model.", "")] = p.grad.detach().clone()

# ---------- DPO (sigmoid loss, beta) with policy = base+LoRA, reference = base ----------
beta = 0.1
P = 8  # prompt length; chosen/rejected are the tokens after it
ch = torch.randint(3, vocab, (B, T)); rj = ch.clone(); rj[:, P:] = torch.randint(3, vocab, (B, T - P))
def seq_logp(m, x):
    lg = m(input_ids=x).logits[:, :-1].float()
    l = torch.log_softmax(lg, -1).gather(-1, x[:, 1:, None]).squeeze(-1)
    return l[:, P - 1:].sum(-1)
pm.zero_grad()
pc, pr = seq_logp(pm, ch), seq_logp(pm, rj)
with torch.no_grad(), pm.disable_adapter():
    rc, rr = seq_logp(pm, ch), seq_logp(pm, rj)
dpo = -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
dpo.backward()
ref["dpo.chosen"], ref["dpo.rejected"] = ch.int(), rj.int()
info["dpo"] = {"beta": beta, "prompt_len": P, "loss": dpo.item(), "policy_chosen_logps": pc.tolist(), "policy_rejected_logps": pr.tolist(),
               "ref_chosen_logps": rc.tolist(), "ref_rejected_logps": rr.tolist()}
for n, p in pm.named_parameters():
    if p.requires_grad and p.grad is not None: ref["dpo.grad." + n.replace("base_model.model.", "")] = p.grad.detach().clone()

# ---------- merged model ----------
merged = pm.merge_and_unload()
merged.save_pretrained(os.path.join(d, "merged"), safe_serialization=True)
with torch.no_grad():
    ref["merged.logits"] = merged(input_ids=ids).logits.float()

save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(d, "reference.safetensors"))
json.dump(info, open(os.path.join(d, "reference.json"), "w"), indent=1)
print(name, "vocab", vocab, "params", sum(p.numel() for p in model.parameters()), "loss", info["loss"], "lora_loss", info["lora_loss"], "dpo", info["dpo"]["loss"])
