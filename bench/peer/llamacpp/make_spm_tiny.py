#!/usr/bin/env python3
"""SentencePiece-style model folders for bench/peer/llamacpp/spm_tokenize.py, in plain Python:
  python3 make_spm_tiny.py FIXTURES_HF OUT_DIR
The tokenizer of tests/Shared/SpmTiny.cs, written the same way (the two give byte-identical tokenizer.json vocab and
merges): ids 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, the corpus' chars and '▁', then a tiny BPE trained on
the corpus up to 512 ids; merges every split of each trained token (SpmConverter's order); byte_fallback; beside
llama-tiny's config and weights. OUT_DIR/spm-tiny-metaspace has a Metaspace pre-tokenizer (prepend_scheme first,
split false), OUT_DIR/spm-tiny-legacy the older normalizer Sequence[Prepend '▁', Replace ' ' -> '▁']."""
import json, os, shutil, sys
SP = '\u2581'
CORPUS = [
    "the quick brown fox jumps over the lazy dog and the dog sleeps in the sun",
    "hello world, this is a test of the tokenizer: there are 12 tests and 345 numbers.",
    "in the beginning there was the word, and the word was with the tokenizer",
    "she sells sea shells on the sea shore; the shells she sells are sea shells",
    "testing, testing: one two three, four five six! seven eight nine ten?",
    "a model reads the text; then the model writes more text (and more tokens).",
]
def build():
    vocab = ['<unk>', '<s>', '</s>'] + [f'<0x{b:02X}>' for b in range(256)]
    words = [SP + w for line in CORPUS for w in line.split(' ') if w]
    vocab += sorted({c for w in words for c in w})
    known = set(vocab); split = [list(w) for w in words]; merged = []
    while len(vocab) < 512:
        counts = {}
        for w in split:
            for i in range(len(w) - 1): counts[(w[i], w[i + 1])] = counts.get((w[i], w[i + 1]), 0) + 1
        cands = [(k, v) for k, v in counts.items() if k[0] + k[1] not in known]
        if not cands: break
        best = min(cands, key=lambda kv: (-kv[1], kv[0][0] + '\0' + kv[0][1]))[0]
        tok = best[0] + best[1]
        for w in split:
            i = 0
            while i + 1 < len(w):
                if w[i] == best[0] and w[i + 1] == best[1]: w[i] = tok; del w[i + 1]
                i += 1
        vocab.append(tok); known.add(tok); merged.append(tok)
    ids = {t: i for i, t in enumerate(vocab)}
    merges = []
    for t in merged:
        merges += sorted([(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in ids and t[k:] in ids], key=lambda p: (ids[p[0]], ids[p[1]]))
    return vocab, merges
def tokenizer(legacy):
    vocab, merges = build()
    added = lambda i: {'id': i, 'content': vocab[i], 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}
    special = lambda i: {'SpecialToken': {'id': i, 'type_id': 0}}
    seq = lambda i, t: {'Sequence': {'id': i, 'type_id': t}}
    return {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': [added(0), added(1), added(2)],
        'normalizer': {'type': 'Sequence', 'normalizers': [{'type': 'Prepend', 'prepend': SP}, {'type': 'Replace', 'pattern': {'String': ' '}, 'content': SP}]} if legacy else None,
        'pre_tokenizer': None if legacy else {'type': 'Metaspace', 'replacement': SP, 'prepend_scheme': 'first', 'split': False},
        'post_processor': {'type': 'TemplateProcessing', 'single': [special('<s>'), seq('A', 0)], 'pair': [special('<s>'), seq('A', 0), special('<s>'), seq('B', 1)],
                           'special_tokens': {'<s>': {'id': '<s>', 'ids': [1], 'tokens': ['<s>']}}},
        'decoder': {'type': 'Sequence', 'decoders': [{'type': 'Replace', 'pattern': {'String': SP}, 'content': ' '}, {'type': 'ByteFallback'}, {'type': 'Fuse'},
                                                     {'type': 'Strip', 'content': ' ', 'start': 1, 'stop': 0}]},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': '<unk>', 'continuing_subword_prefix': None, 'end_of_word_suffix': None, 'fuse_unk': True,
                  'byte_fallback': True, 'ignore_merges': False, 'vocab': {t: i for i, t in enumerate(vocab)}, 'merges': [list(m) for m in merges]},
    }
if __name__ == '__main__':
    src, out = sys.argv[1], sys.argv[2]
    for legacy in (False, True):
        d = os.path.join(out, 'spm-tiny-' + ('legacy' if legacy else 'metaspace'))
        os.makedirs(d, exist_ok=True)
        for f in ('config.json', 'model.safetensors'): shutil.copy(os.path.join(src, 'llama-tiny', f), d)
        json.dump(tokenizer(legacy), open(os.path.join(d, 'tokenizer.json'), 'w', encoding='utf-8'), ensure_ascii=False)
        json.dump({'tokenizer_class': 'LlamaTokenizerFast', 'add_bos_token': True, 'add_eos_token': False,
                   'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}, open(os.path.join(d, 'tokenizer_config.json'), 'w'))
        print(d)
