#!/usr/bin/python3
"""minilm_ref.py: writes tests/fixtures/minilm_ref.safetensors, the reference sentence
embeddings of all-MiniLM-L6-v2 that tests/test_minilm.c compares the C encoder
(common/text/minilm.c) against.

Run with the system python that has torch 1.13:  /usr/bin/python3 tests/minilm_ref.py
The token ids come from the reference `tokenizers` package (installed for the plain `python3`
only, so this script runs it there on the model's own tokenizer.json: truncation at 256 tokens,
as sentence-transformers' max_seq_length). The BERT is built here by hand from the same
model.safetensors (transformers is not installed): embeddings + LayerNorm, 6 post-LN layers of
12-head self-attention with HF's additive padding mask (finfo.min) and GELU (erf) FFN, then
mean pooling over the real tokens and F.normalize. It embeds the sentences in padded batches
(as sentence-transformers does), so padding and masking are part of the reference.
Stored: "lens" (S) I32, "ids" (sum of lens) I32 (the sequences one after another), "emb"
(S, 384) F32. The model directory: $MSD_MINILM_DIR or ~/.cache/msdpipe/all-minilm-l6-v2."""
import json
import os
import struct
import subprocess

import torch
import torch.nn.functional as F

MODEL = os.environ.get("MSD_MINILM_DIR") or os.path.expanduser("~/.cache/msdpipe/all-minilm-l6-v2")

LONG = ("The quick brown fox jumps over the lazy dog while the committee deliberates on "
        "tokenisation, normalisation and embeddings of unusually verbose sentences. ") * 12
SENTENCES = [
    "", "a", "Hello world!", "A dog.", "a cat sitting on a mat", "Generate a picture of a sneaker.",
    "an ankle boot", "a red dress", "T-shirt/top", "Trouser", "Pullover", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot", "Draw me a pair of trousers, please.",
    "What is the capital of France?", "The weather is lovely today.", "I love programming in C.",
    "Machine learning models need data.", "Café au lait, naïve résumé, façade.", "Ünïcödé àccénts éverywhere",
    "Straße und Größe", "日本語のテキストです。", "我喜欢机器学习", "한국어 문장입니다", "Привет, как дела?",
    "Γειά σου κόσμε", "مرحبا بالعالم", "emoji 😀🎉👍 party", "🚀", "tabs\tand\nnewlines  and   spaces",
    "punctuation!!! ??? ... ;;; :::", "(brackets) [square] {curly} <angle>", "hyphen-ated and under_scored",
    "email@example.com and https://example.org/path?q=1", "numbers 12345 3.14159 -42 1e10",
    "UPPER CASE SHOUTING", "MiXeD cAsE wOrDs", "don't can't won't it's", "\"quoted\" 'single'",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z", "the the the the the the the the",
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "ñandú jalapeño piñata",
    "x" * 60, "a summer dress with flowers", "warm winter coat for cold days", "leather handbag",
    "running shoes for marathon training", "striped shirt with long sleeves",
    "A very long sentence that keeps going and going, adding more and more words to see how the "
    "encoder handles sequences that are considerably longer than a typical short prompt would be.",
    LONG, LONG[:700],
]

TOKENIZE = r"""
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tok.no_padding()
tok.enable_truncation(256)
print(json.dumps([tok.encode(s).ids for s in json.load(sys.stdin)]))
"""


def tokenize(sentences):
    r = subprocess.run(["python3", "-c", TOKENIZE, os.path.join(MODEL, "tokenizer.json")],
                       input=json.dumps(sentences), capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        b, e = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(v["shape"])
    return out


def bert_embed(W, batch):
    """batch: list of id lists -> (B, 384) normalised embeddings"""
    B, L = len(batch), max(len(s) for s in batch)
    ids = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L)
    for i, s in enumerate(batch):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    e = "embeddings."
    x = W[e + "word_embeddings.weight"][ids] + W[e + "position_embeddings.weight"][:L][None] \
        + W[e + "token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (384,), W[e + "LayerNorm.weight"], W[e + "LayerNorm.bias"], eps=1e-12)
    add_mask = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    H, d = 12, 32
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def lin(name, t):
            return F.linear(t, W[p + name + ".weight"], W[p + name + ".bias"])

        def heads(t):
            return t.reshape(B, L, H, d).transpose(1, 2)

        q, k, v = (heads(lin("attention.self." + n, x)) for n in ("query", "key", "value"))
        a = (q @ k.transpose(-1, -2) / d ** 0.5 + add_mask).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(B, L, 384)
        x = F.layer_norm(x + lin("attention.output.dense", a), (384,), W[p + "attention.output.LayerNorm.weight"],
                         W[p + "attention.output.LayerNorm.bias"], eps=1e-12)
        f = lin("output.dense", F.gelu(lin("intermediate.dense", x)))
        x = F.layer_norm(x + f, (384,), W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps=1e-12)
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


def main():
    torch.set_grad_enabled(False)
    ids = tokenize(SENTENCES)
    W = read_safetensors(os.path.join(MODEL, "model.safetensors"))
    # padded batches of 8, sorted by length as sentence-transformers does
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    emb = torch.zeros(len(ids), 384)
    for s in range(0, len(order), 8):
        idx = order[s:s + 8]
        emb[idx] = bert_embed(W, [ids[i] for i in idx])
    T = {"lens": (torch.tensor([len(s) for s in ids], dtype=torch.int32), "I32"),
         "ids": (torch.tensor([t for s in ids for t in s], dtype=torch.int32), "I32"),
         "emb": (emb.contiguous(), "F32")}
    header = {"__metadata__": {"generator": "tests/minilm_ref.py", "torch": torch.__version__,
                               "sentences": str(len(ids))}}
    blobs, off = [], 0
    for n in sorted(T):
        t, dt = T[n]
        b = t.numpy().tobytes()
        header[n] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "minilm_ref.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    lens = [len(s) for s in ids]
    print(f"wrote {path}: {len(ids)} sentences, {min(lens)} to {max(lens)} tokens")


if __name__ == "__main__":
    main()
