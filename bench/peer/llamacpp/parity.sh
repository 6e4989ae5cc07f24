#!/usr/bin/env bash
# Runs each model folder through `temper logits` and through llama.cpp on the file `temper gguf` writes, and prints how
# far apart the logits are (compare_logits.py: max |diff| / max |ref| and argmax agreement per position).
#   bash bench/peer/llamacpp/parity.sh PEER IDS_JSON OUTTYPE MODEL_DIR...
# PEER: the binary build.sh made; IDS_JSON: one list of ids, e.g. [[1, 87, 85, ...]]; OUTTYPE: f32, f16, bf16 or q8_0.
set -euo pipefail
PEER=$1; IDS=$2; TYPE=$3; shift 3
HERE=$(dirname "$(readlink -f "$0")")
TEMPER=${TEMPER:-tools/Temper.Cli/bin/Release/net10.0/temper}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LIST=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))[0])))" "$IDS")
for m in "$@"; do
  n=$(basename "$m")
  "$TEMPER" logits --model "$m" --ids "$IDS" --out "$TMP/$n.safetensors" >/dev/null
  "$TEMPER" gguf --model "$m" --out "$TMP/$n.gguf" --outtype "$TYPE" >/dev/null
  "$PEER" logits "$TMP/$n.gguf" "$LIST" "$TMP/$n.f32" >/dev/null
  echo "$n $TYPE $(python3 "$HERE/compare_logits.py" "$TMP/$n.safetensors" "$TMP/$n.f32")"
done
