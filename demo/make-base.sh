#!/usr/bin/env bash
# Regenerates demo/base/model.safetensors: a tiny Llama (hidden 128, 2 layers, the llama-tiny fixture's
# 512-token tokenizer) pretrained from scratch by Temper on 20000 lines "23+58=81" (both splits of the
# addition task) in three surface forms — "23+58=81", "What is 23+58? It is 81." and "Answer: 81 = 23+58" —
# so it knows the sums and every word of the task, but not the "What is 23+58?\nAnswer: 81" format
# (a token it never saw would be pushed to the bottom of the softmax, out of a LoRA's reach). Deterministic on
# the same machine and thread count (--threads 2); prints the SHA-256 of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build tools/Temper.Cli -c Release -nologo -v q >/dev/null
temper() { dotnet tools/Temper.Cli/bin/Release/net10.0/temper.dll "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/init"
cp demo/base/config.json demo/base/tokenizer.json demo/base/tokenizer_config.json demo/base/chat_template.jinja "$work/init/"
temper task-data --form equation --split all --count 20000 --seed 1 --out "$work/equation.jsonl"
awk -F'"' '{ split($4, e, /[+=]/); a = e[1]; b = e[2]; s = e[3];
  if (NR % 3 == 1) t = a "+" b "=" s; else if (NR % 3 == 2) t = "What is " a "+" b "? It is " s "."; else t = "Answer: " s " = " a "+" b;
  printf "{\"text\":\"%s\"}\n", t }' "$work/equation.jsonl" > "$work/mixed.jsonl"
temper pretrain --model "$work/init" --from-scratch --data "$work/mixed.jsonl" --out "$work/run" \
  --lr 3e-3 --lr-scheduler cosine --warmup-steps 40 --batch-size 64 --max-steps 3000 --max-len 32 --seed 1 --threads 2
cp "$work/run/model.safetensors" demo/base/model.safetensors
cp "$work/run/metrics.jsonl" demo/base/pretrain-metrics.jsonl
sha256sum demo/base/model.safetensors
