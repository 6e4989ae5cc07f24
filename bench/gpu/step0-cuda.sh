#!/usr/bin/env bash
# Issue 6's step-0 parity on the GPU in f32 mode, as Temper.Cli.Tests' Step0_on_cuda_in_f32_matches_trl runs it, for
# a lease without the test projects: each trainer's first logged loss and gradient norm on qwen2-tiny (--device cuda
# --dtype f32, batch 64, one step) against TRL's (trainer/trainer_reference.json): loss within 1e-4 and grad_norm
# within 1e-3, relative (DEVICE=cpu runs it on the CPU). Usage (on the device, after lease.sh has unpacked .NET): bash bench/gpu/step0-cuda.sh FIXTURES_HF
set -u
hf=${1:?usage: step0-cuda.sh FIXTURES_HF}; m=$hf/qwen2-tiny; fail=0
for pair in sft:sft.jsonl dpo:dpo.jsonl kto:kto.jsonl orpo:dpo.jsonl; do
  verb=${pair%%:*}; data=${pair#*:}; out=$(mktemp -d)
  extra=(); [ "$verb" = sft ] || extra=(--beta 0.1)
  temper "$verb" --model "$m" --init-adapter "$m/adapter" --data "$m/trainer/$data" --out "$out" --batch-size 64 --grad-accum 1 --max-steps 1 \
    "${extra[@]}" --device "${DEVICE:-cuda}" --dtype f32 > "$out.log" 2>&1 || { echo "$verb: temper failed: $(tail -2 "$out.log")"; fail=1; continue; }
  python3 - "$verb" "$out/metrics.jsonl" "$m/trainer/trainer_reference.json" <<'PY' || fail=1
import json, sys
verb, metrics, reference = sys.argv[1:]
first = json.loads(open(metrics).readline()); ref = json.load(open(reference))[verb]
dl = abs(first["loss"] - ref["loss"]) / ref["loss"]; dg = abs(first["grad_norm"] - ref["grad_norm"]) / ref["grad_norm"]
ok = dl <= 1e-4 and dg <= 1e-3
print(f"{verb}: loss {first['loss']:.7f} vs TRL {ref['loss']:.7f} (rel {dl:.1e}), grad_norm {first['grad_norm']:.6f} vs {ref['grad_norm']:.6f} (rel {dg:.1e}) {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
done
exit $fail
