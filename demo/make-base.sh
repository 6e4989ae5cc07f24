#!/usr/bin/env bash
# Regenerates demo/base/model.safetensors: a tiny Llama (hidden 64, 2 layers, intermediate 192, untied
# embeddings, initializer_range 0.085; the llama-tiny fixture's 512-token tokenizer) pretrained from
# scratch by Temper on statements of sums of the addition task's training split (operands 10..49) in six
# surface forms, "23+58=81", "23+58 = 81", "23 + 58 = 81", "23+58 is 81", "23+58 makes 81",
# "23+58 equals 81": it knows sums but not the "What is 23+58?" / "Answer: 81" format the demo teaches.
# The held-out pairs the demo is scored on are never in it. Deterministic on the same machine and
# thread count (--threads 2); prints the SHA-256 of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build tools/Temper.Cli -c Release -nologo -v q >/dev/null
temper() { dotnet tools/Temper.Cli/bin/Release/net10.0/temper.dll "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/init"
cp demo/base/config.json demo/base/tokenizer.json demo/base/tokenizer_config.json demo/base/chat_template.jinja "$work/init/"
temper task-data --form base-text --split train --count 16000 --seed 3 --out "$work/statements.jsonl"
temper pretrain --model "$work/init" --from-scratch --data "$work/statements.jsonl" --out "$work/run" \
  --lr 3e-3 --lr-scheduler constant --warmup-steps 20 --weight-decay 0.1 --batch-size 128 --max-steps ${STEPS:-600} \
  --max-len 32 --seed 1 --threads 2
cp "$work/run/model.safetensors" demo/base/model.safetensors
cp "$work/run/metrics.jsonl" demo/base/pretrain-metrics.jsonl
sha256sum demo/base/model.safetensors
