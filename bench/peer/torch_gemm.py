"""The PyTorch peer of `temper bench gemm`: the forward Linear product y[N,M] = x[N,K] W[M,K]^T with x and W
in bf16 on cuBLAS (torch.matmul(x, W.t()), bf16 out), and with an f32 out (as Temper's kernels write it) where
this torch's mm takes out_dtype; --reps launches between two CUDA events after a warm-up. Same default shapes
(NxKxM): the Llama-3.2-1B training products at 8192 tokens and 8192^3. Run it in the same lease:

    python3 bench/peer/torch_gemm.py [--shapes ...] [--reps 20]
    temper bench gemm [--shapes ...] [--reps 20]

Written without a GPU (no torch where it was written); first run owed to a GPU session."""
import argparse
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--shapes", default="8192x2048x2048,8192x2048x8192,8192x8192x2048,8192x8192x8192")
ap.add_argument("--reps", type=int, default=20)
a = ap.parse_args()


def seconds(fn):
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / a.reps


print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; {a.reps} reps; cuBLAS bf16")
for shape in a.shapes.split(","):
    n, k, m = (int(v) for v in shape.split("x"))
    x = torch.rand(n, k, device="cuda", dtype=torch.bfloat16) * 2 - 1
    w = torch.rand(m, k, device="cuda", dtype=torch.bfloat16) * 2 - 1
    flops = 2.0 * n * k * m
    s = seconds(lambda: torch.matmul(x, w.t()))
    print(f"[{n},{k}]->{m} torch bf16 out {s * 1e3:9.3f} ms {flops / s / 1e12:8.1f} TFLOP/s")
    try:
        y = torch.empty(n, m, device="cuda", dtype=torch.float32)
        s = seconds(lambda: torch.mm(x, w.t(), out_dtype=torch.float32, out=y))
        print(f"[{n},{k}]->{m} torch f32 out  {s * 1e3:9.3f} ms {flops / s / 1e12:8.1f} TFLOP/s")
    except (TypeError, RuntimeError) as e:
        print(f"[{n},{k}]->{m} torch f32 out: not available here ({str(e).splitlines()[0]})")
    del x, w
