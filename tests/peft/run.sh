#!/usr/bin/env bash
# Issue 3's PEFT check, in two halves so the Temper half runs where .NET is and the PEFT half where
# torch is (the GPU machine has no .NET SDK; ../shared/gpu/pack gives it the runtime instead):
#   bash tests/peft/run.sh temper FIXTURE_DIR WORK   trains 30 LoRA SFT steps on FIXTURE_DIR/trainer/sft.jsonl
#                                                    and writes WORK/{adapter/, ids.json, temper_logits.safetensors}
#   bash tests/peft/run.sh peft FIXTURE_DIR WORK     PEFT loads WORK/adapter; its logits vs Temper's (1e-4 x max)
# TEMPER overrides how temper is started (default: the Release build of tools/Temper.Cli); SFT_FLAGS adds
# flags to the training run (SFT_FLAGS=--use-dora: PEFT loads a DoRA adapter Temper trained; SFT_FLAGS="--prompt-tuning 4":
# a prompt-tuning adapter; SFT_FLAGS="--prefix-tuning 3": a prefix-tuning one).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=$1 model=$2 work=$3
temper=${TEMPER:-"dotnet tools/Temper.Cli/bin/Release/net10.0/temper.dll"}
case "$mode" in
  temper)
    mkdir -p "$work"
    case "${SFT_FLAGS:-}" in *-tuning*) lora="" ;; *) lora="--lora-r 8 --lora-alpha 16" ;; esac  # prompt/prefix tuning refuse LoRA flags
    $temper sft --model "$model" --data "$model/trainer/sft.jsonl" --out "$work/adapter" $lora \
      --lr 1e-2 --batch-size 4 --max-steps 30 --seed 1 --threads 2 ${SFT_FLAGS:-}
    echo '[[1, 17, 42, 99, 250, 7, 300, 12], [5, 6, 7, 8, 9, 10, 11, 12]]' > "$work/ids.json"
    $temper logits --model "$model" --adapter "$work/adapter" --ids "$work/ids.json" --out "$work/temper_logits.safetensors"
    ;;
  peft) python3 tests/peft/peft_loads_temper_adapter.py "$model" "$work/adapter" "$work" ;;
  *) echo "usage: tests/peft/run.sh temper|peft FIXTURE_DIR WORK" >&2; exit 2 ;;
esac
