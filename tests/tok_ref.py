#!/usr/bin/env python3
"""tok_ref.py: writes tests/fixtures/tok_ref.txt, the token ids that tests/test_tokenizer.c holds
common/text/tokenizer.c to. The reference is the Hugging Face `tokenizers` package (PyPI; the
plain python3 on PATH has it, /usr/bin/python3 does not) reading the model's own tokenizer.json:

    python3 tests/tok_ref.py [MODEL_DIR]

MODEL_DIR defaults to $MSD_MINILM_DIR, then `tools/fetch-minilm --print-dir`. Truncation is
what sentence-transformers feeds the model: max_seq_length of sentence_bert_config.json, [CLS]
and [SEP] included, no padding (tokenizer.json's own truncation 128 and fixed padding 128 are
replaced: sentence-transformers calls the tokenizer with max_length=max_seq_length and pads
only to the longest text of a batch, which the attention mask then hides).

Format, one text a line after '#' comments: the text's UTF-8 bytes in hex, a tab, then its ids
separated by spaces, or the word "invalid" for bytes that are not UTF-8 (Python's strict decoder
refuses them; the C tokenizer must refuse them too). Cases: hand-picked (short, longer than the
limit, accents, emoji, CJK, other scripts, punctuation runs, digits, case, white space oddities,
control characters, empty, added tokens written in the text, Fashion-MNIST class phrasings),
then 40 random texts from a mixed character pool (seed 14)."""
import json
import os
import random
import subprocess
import sys

import tokenizers
from tokenizers import Tokenizer

here = os.path.dirname(os.path.abspath(__file__))
if len(sys.argv) > 1:
    mdir = sys.argv[1]
else:
    mdir = os.environ.get("MSD_MINILM_DIR") or subprocess.check_output(
        [os.path.join(here, "..", "tools", "fetch-minilm"), "--print-dir"], text=True).strip()
max_len = json.load(open(os.path.join(mdir, "sentence_bert_config.json")))["max_seq_length"]
tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
tok.no_padding()
tok.enable_truncation(max_length=max_len)

fmnist = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
texts = [
    "", "a", "hello", "Hello, world!", "a pair of sneakers", "ankle boot", "T-shirt/top",
    "a photo of a T-shirt/top", "an ankle boot, size 42", "a pair of trousers.", "A PULLOVER", "dRESS",
] + [f"a photo of a {c.lower()}" for c in fmnist] + [
    "café naïve Ångström résumé Crème brûlée", "İstanbul ǅemal ŞİŞLİ Ωmega ΣΊΣΥΦΟΣ ﬁne ﬂow",
    "e\u0301 a\u0300\u0316 o\u0308\u0304", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "½ ² ℃ ™ №",
    "emoji 😀🎉👍🏽 👨‍👩‍👧 🇫🇷 🥲🫠", "❤️ ✔︎ ☃",
    "中文分词测试", "日本語のテキストとカタカナ", "한국어 텍스트", "mixed中文and English文字",
    "𠀀𪜀𫝀𫠠𬺰 CJK extensions", "兀 CJK compatibility 豈",
    "مرحبا بالعالم", "שלום עולם", "Привет, мир! ЁЖИК", "Ελληνικά κείμενα", "हिन्दी पाठ", "ไทยภาษา ำ",
    "wait... what?!?! ---- (((nested))) [[x]] {{y}} <<<>>>", "“quotes” ‘single’ «guillemets» — – … ¿¡",
    "$5+3=8 ^_^ `code` |pipe| ~tilde @user #tag 100%",
    "3.14159 1,000,000 2024-01-31 0x1F 1e-9 007", "MiXeD CaSe WoRdS iPhone eBay",
    "tabs\tand\nnewlines\r\nand  double  spaces", "no\u00a0break\u2003em\u3000ideographic\u2028line\u2029para",
    "zero\u200bwidth\u200cjoiner\u200dx\ufeffbom\u2060wj\u00adsoft", "\t\n  \u00a0 ", "ctrl\x00nul\x01\x07bell\x1b[0m\x7fdel\x85nel",
    "replacement \ufffd char", "private \ue000 use \U000F0000", "unassigned \u0378 and \U000E0001 tag",
    "x\U0001D165y musical Mc", "[CLS] written [SEP] in [MASK] text [PAD][UNK]", "[CL[SEP]S] a[MASK]b [cls]",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 100, "x" * 101, "ab" * 50 + " " + "é" * 101,
    "the quick brown fox " * 80,
    "a " * 253 + "b c", "a " * 254 + "b c", "a " * 253 + "unbelievably",
    "[SEP] " * 300,
    "word, " * 200 + "中" * 100,
]
rng = random.Random(14)
pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + " " * 12 + ".,;:!?'\"()[]{}-_/\\#@&*+=<>|~^`$%"
        + "\t\n\r\x00\x01\x1f\x7f\x85\u00a0\u2000\u200b\u200d\ufeff\ufffd"
        + "éèêëàâäôöûüçñåøæœßÉÀÇÑÅØÆŒİıǅ" + "\u0300\u0301\u0308\u0327\u0338" + "ΑαΣσςЖжШш" + "中文字日本語漢字한국"
        + "😀👍🏽🇫🇷‍" + "“”‘’«»—–…¿¡" + "ﬁﬂ½²①Ⅻ" + "\ue000\u0378\U0001D165" + "[]CLSEPMAK")
for _ in range(40):
    n = rng.choice([1, 3, 8, 20, 60, 200])
    s = "".join(rng.choice(pool) for _ in range(n))
    if rng.random() < 0.2:
        s += rng.choice(["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"]) + s[: n // 2]
    texts.append(s)
invalid = [b"\xff", b"abc\x80", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
           b"caf\xc3\xa9 \xe2\x82", b"ok\xe0\x80\xaf"]

out = os.path.join(here, "fixtures", "tok_ref.txt")
with open(out, "w") as f:
    f.write(f"# tests/fixtures/tok_ref.txt: written by tests/tok_ref.py with tokenizers {tokenizers.__version__}\n")
    f.write(f"# from {os.path.basename(mdir)}/tokenizer.json, truncation max_seq_length {max_len}, no padding\n")
    f.write("# hex of the text's UTF-8 <TAB> its ids (or 'invalid')\n")
    for s in texts:
        f.write(s.encode("utf-8").hex() + "\t" + " ".join(str(i) for i in tok.encode(s).ids) + "\n")
    for b in invalid:
        try:
            b.decode("utf-8")
            raise SystemExit(f"{b!r} decodes: not an invalid case")
        except UnicodeDecodeError:
            pass
        f.write(b.hex() + "\tinvalid\n")
print(f"tok_ref.py: {len(texts)} texts and {len(invalid)} invalid byte strings -> {out}")
