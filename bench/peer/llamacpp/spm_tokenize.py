#!/usr/bin/env python3
"""llama.cpp's SentencePiece tokenizer against Temper's on the folders make_spm_tiny.py writes:
  python3 spm_tokenize.py PEER MODEL_DIR...
Each folder goes through `temper gguf` and back through `temper gguf-import`; on the 12 texts of tests/Shared/SpmTiny.cs
and 100 random ones (seed 7: corpus words, non-ASCII, runs of spaces, tabs, newlines, spaces at either end, <s>, </s>
and <unk> inside) it prints how often `peer tokenize FILE.gguf TEXT` (no BOS, specials parsed) equals
`temper tokenize --json` on the folder and on the imported folder, and each text where they differ that neither starts
with a space nor holds a special token (the two places llama.cpp adds a '▁' that a Metaspace pre-tokenizer does not)."""
import json, os, random, subprocess, sys, tempfile
TEMPER = os.environ.get('TEMPER', 'tools/Temper.Cli/bin/Release/net10.0/temper')
TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", " leading space", "trailing space ", "multiple   spaces  here",
         "line one\nline two\n\nend", "digits 12345 and 3.14159", "punctuation: hello, world! (yes?) [no] {x}",
         "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F642", "<s>hello</s> world", "the text with </s> inside", "UPPER Case Mixed"]
def random_texts():
    random.seed(7)
    words = "the quick brown fox jumps over lazy dog hello world test tokenizer there sea shells model text tokens seven eight nine 12 345 3.14 café 日本 ü — ... ?! () [] : ; , the the sells".split()
    seps = [" ", " ", " ", "  ", "\n", "\t", "", ", ", " \n "]
    out = []
    for _ in range(100):
        s = "".join(random.choice(words) + random.choice(seps) for _ in range(random.randint(1, 12)))
        if random.random() < 0.3: s = random.choice([" ", "  ", "\n"]) + s
        if random.random() < 0.3: s = s + random.choice([" ", "  ", "\n"])
        if random.random() < 0.3:
            k = random.randint(0, len(s)); s = s[:k] + random.choice(["<s>", "</s>", "<unk>"]) + s[k:]
        out.append(s)
    return out
def run(*args): return subprocess.run(args, capture_output=True, text=True, check=True).stdout
peer, dirs = sys.argv[1], sys.argv[2:]
tmp = tempfile.mkdtemp()
for d in dirs:
    name = os.path.basename(os.path.normpath(d)); gguf = os.path.join(tmp, name + '.gguf'); back = os.path.join(tmp, name + '-back')
    run(TEMPER, 'gguf', '--model', d, '--out', gguf); run(TEMPER, 'gguf-import', gguf, '--out', back)
    for label, texts in (('texts', TEXTS), ('random', random_texts())):
        same = same_back = 0
        for t in texts:
            p = json.loads(run(peer, 'tokenize', gguf, t).strip().splitlines()[-1])
            a = json.loads(run(TEMPER, 'tokenize', '--model', d, '--text', t, '--json'))
            b = json.loads(run(TEMPER, 'tokenize', '--model', back, '--text', t, '--json'))
            same += p == a; same_back += p == b
            if (p != a and not (t.startswith(' ') or any(s in t for s in ('<s>', '</s>', '<unk>')))) or p != b:
                print(f'  {name}: {json.dumps(t)} peer {p} temper {a} imported {b}')
        print(f'{name} {label}: temper = llama.cpp {same}/{len(texts)}, imported = llama.cpp {same_back}/{len(texts)}')
