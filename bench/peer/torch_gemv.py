"""The PyTorch peer of `temper bench gemv`: decode's matrix-vector products y = x W^T at the same shapes
(Llama-3.2-1B and Llama-3.1-8B: qkv, o, gate and up, down, lm head), F.linear with W and x in bf16 (cuBLAS's
batch-1 path; no norm, residual or SwiGLU folded in: gate and up are one [2F, C] product), weights rotated
over copies totalling >= 256 MB as Temper's bench does so neither is served from L2, --reps launches
between two CUDA events after a warm-up; GB/s = weight bytes / time. Run it in the same lease:

    python3 bench/peer/torch_gemv.py [--rows 1] [--reps 50]
    temper bench gemv [--rows 1] [--reps 50]

Written without a GPU (no torch where it was written); first run owed to a GPU session."""
import argparse
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=1)
ap.add_argument("--reps", type=int, default=50)
a = ap.parse_args()
dev = "cuda"
ring_bytes = 256 << 20
# name: (hidden C, MLP F, heads H, kv heads Hkv, head dim D, vocab V, layers)
shapes = {"llama-3.2-1b": (2048, 8192, 32, 8, 64, 128256, 16), "llama-3.1-8b": (4096, 14336, 32, 8, 128, 128256, 32)}


def seconds(n, k):
    nbytes = 2 * n * k
    ring = [torch.full((n, k), 0.0115, device=dev, dtype=torch.bfloat16) for _ in range(max(2, -(-ring_bytes // nbytes)))]
    x = torch.rand(a.rows, k, device=dev, dtype=torch.bfloat16)
    F.linear(x, ring[0])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(a.reps):
        F.linear(x, ring[(i + 1) % len(ring)])
    end.record()
    torch.cuda.synchronize()
    del ring
    return start.elapsed_time(end) / 1e3 / a.reps


print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; rows {a.rows}, {a.reps} reps, F.linear bf16")
for name, (c, f, h, hk, d, v, layers) in shapes.items():
    token_s = token_bytes = 0.0
    for product, n, k, times in [("qkv", (h + 2 * hk) * d, c, layers), ("o", c, h * d, layers), ("gate+up", 2 * f, c, layers),
                                 ("down", c, f, layers), ("lm head", v, c, 1)]:
        s = seconds(n, k)
        nbytes = 2.0 * n * k
        print(f"{name} {product:<8} [{n},{k}] {nbytes / 1e6:8.1f} MB {s * 1e3:8.4f} ms {nbytes / s / 1e9:7.0f} GB/s")
        token_s += times * s
        token_bytes += times * nbytes
    print(f"{name} one token's products: {token_bytes / 1e9:.2f} GB in {token_s * 1e3:.3f} ms = "
          f"{token_bytes / token_s / 1e9:.0f} GB/s; {1 / token_s:.0f} tokens/s bound (rows {a.rows})")
