"""The PyTorch peer of `temper bench ops` (issue 7's kernel bench): the same ops at the same shapes
(SmolLM-135M widths, batch x seq tokens), timed with CUDA events after a warm-up, median of --reps,
printed in the same layout so the two outputs line up. Weights bf16, activations as --act (bf16 is what
PEFT's bf16 training runs; f32 matches Temper's activations). Run it in the same lease as Temper's:

    python3 bench/peer/torch_ops.py [--batch 8 --seq 1024 --hidden 576 --ffn 1536 --heads 9 --kv-heads 3
        --head-dim 64 --vocab 49152 --reps 10 --act bf16]
    temper bench ops --device cuda --dtype bf16 --reps 10

Written without a GPU (no torch where it was written); first run owed to a GPU session."""
import argparse
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
for name, value in [("batch", 8), ("seq", 1024), ("hidden", 576), ("ffn", 1536), ("heads", 9), ("kv-heads", 3),
                    ("head-dim", 64), ("vocab", 49152), ("reps", 10)]:
    ap.add_argument("--" + name, type=int, default=value)
ap.add_argument("--act", default="bf16", choices=["bf16", "f32"])
a = ap.parse_args()
dev = "cuda"
act = torch.bfloat16 if a.act == "bf16" else torch.float32
n, c, f, h, hk, d, v = a.batch * a.seq, a.hidden, a.ffn, a.heads, a.kv_heads, a.head_dim, a.vocab
torch.manual_seed(11)


def rand(*shape, dtype=act, grad=False):
    return ((torch.rand(*shape, device=dev) * 2 - 1) * 0.05).to(dtype).requires_grad_(grad)


def time_ms(fn):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(a.reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def line(name, ms, flops=0.0, nbytes=0.0):
    rate = f"{flops / ms / 1e6:9.0f} GFLOP/s" if flops else f"{nbytes / ms / 1e6:9.0f} GB/s"
    print(f"{name:<34} {ms:10.3f} ms {rate}")


print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; {a.batch} x {a.seq} tokens, C {c}, F {f}, "
      f"heads {h}/{hk} x {d}, vocab {v}, weights bf16, activations {a.act}")
x, w, dy = rand(n, c), rand(f, c, dtype=torch.bfloat16), rand(n, f)
mm = 2.0 * n * c * f
line(f"Linear [{n},{c}]->{f}", time_ms(lambda: F.linear(x, w.to(act))), mm)
line("LinearBackward dx", time_ms(lambda: dy @ w.to(act)), mm)
g, u = rand(n, f), rand(n, f)
line("SwiGlu", time_ms(lambda: F.silu(g) * u), nbytes=3.0 * n * f * g.element_size())
xs, norm = rand(n, c), torch.ones(c, device=dev, dtype=act)
line("RmsNorm", time_ms(lambda: F.rms_norm(xs, (c,), norm, 1e-5)), nbytes=2.0 * n * c * xs.element_size())
q = rand(a.batch, h, a.seq, d, grad=True)
k = rand(a.batch, hk, a.seq, d, grad=True)
vv = rand(a.batch, hk, a.seq, d, grad=True)
att = 4.0 * a.batch * h * d * a.seq * (a.seq + 1) / 2
line("Attention (causal)", time_ms(lambda: F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True)), att)
out = F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True)
do = torch.randn_like(out)
line("AttentionBackward", time_ms(lambda: torch.autograd.grad(
    F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True), (q, k, vv), do)) - time_ms(
    lambda: F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True)), 2.5 * att)
head, labels = rand(v, c, dtype=torch.bfloat16), torch.randint(0, v, (n,), device=dev)
lm = 2.0 * n * c * v
line(f"LmHeadCrossEntropy V {v}", time_ms(lambda: F.cross_entropy(F.linear(x, head.to(act)).float(), labels)), lm)
xg = x.detach().clone().requires_grad_(True)
line("LmHeadCrossEntropy + dHidden", time_ms(lambda: torch.autograd.grad(F.cross_entropy(F.linear(xg, head.to(act)).float(), labels), xg)), 3 * lm)
print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
