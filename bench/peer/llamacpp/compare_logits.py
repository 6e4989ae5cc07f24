#!/usr/bin/env python3
"""Compares `temper logits` output (safetensors, [1, T, V] f32 `logits`) with the llama.cpp peer's raw [T, V] f32 file.
Prints max |diff|, max |ref|, their ratio and whether each position's argmax agrees. Plain Python (no numpy)."""
import json, struct, sys

def temper_logits(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        info = header['logits']
        f.seek(8 + n + info['data_offsets'][0])
        count = info['data_offsets'][1] - info['data_offsets'][0]
        return list(struct.unpack(f'<{count // 4}f', f.read(count))), info['shape']

def main(temper_path, peer_path):
    ours, shape = temper_logits(temper_path)
    v = shape[-1]
    with open(peer_path, 'rb') as f:
        data = f.read()
    theirs = list(struct.unpack(f'<{len(data) // 4}f', data))
    if len(theirs) != len(ours):
        sys.exit(f'{peer_path}: {len(theirs)} values, {temper_path}: {len(ours)}')
    diff = max(abs(a - b) for a, b in zip(ours, theirs))
    ref = max(abs(a) for a in ours)
    t = len(ours) // v
    agree = sum(1 for i in range(t) if max(range(v), key=lambda j: ours[i * v + j]) == max(range(v), key=lambda j: theirs[i * v + j]))
    print(json.dumps({'positions': t, 'vocab': v, 'max_abs_diff': diff, 'max_abs_ref': ref, 'ratio': diff / ref, 'argmax_agree': agree}))

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
