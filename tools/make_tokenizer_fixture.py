#!/usr/bin/env python3
"""Writes the byte-level BPE fixture that tests pp3d's tokenizer.json reader
(tests/unit/tokenizer_test.cpp) against Hugging Face `tokenizers`.

usage: python3 tools/make_tokenizer_fixture.py tests/fixtures/tokenizer

Trains a byte-level BPE (vocabulary 600, <|endoftext|> special) on a small
mixed corpus with the `tokenizers` package — the same trainer tools/prepare_data
--train-bpe uses — saves OUTPUT/tokenizer.json, and writes OUTPUT/cases.json:
for each test text, the ids `tokenizers` encodes it to. Texts cover ASCII
prose, contractions, digits, runs of spaces and newlines, punctuation, Latin
accents, Greek, Cyrillic, CJK, emoji and an embedded <|endoftext|>.
"""
import json
import os
import sys

from tokenizers import ByteLevelBPETokenizer, Tokenizer

CORPUS = [
    "alice has 3 apples and gets 4 more, so alice has 7 apples.",
    "bob's dog isn't here; they've gone, we'll see, I'd say I'm sure.",
    "The quick brown fox jumps over the lazy dog.  Twice!\n\nThen   it rested.",
    "Café, naïve, façade, résumé — déjà vu.",
    "Ελληνικά γράμματα και Русский текст для проверки.",
    "日本語のテキストと中文文本。",
    "numbers: 12345, 3.14159, 2024-05-20, x=42;y=-7",
    "emoji 🙂🚀 and symbols → ≤ ≥ ± × ÷ € £ ©",
    "def f(x):\n    return x ** 2  # square\n\tindent\n",
] * 20

CASES = [
    "alice has 3 apples and gets 4 more, so alice has 7 apples.",
    "Hello world! It's a test: don't stop, we're here, they'll go, I've, I'd, I'm.",
    "  leading spaces and trailing spaces   ",
    "line one\nline two\n\n\nline five\r\n\ttabbed",
    "Café naïve façade résumé — «quoted» ¡hola! ¿qué?",
    "Ελληνικά και Русский 日本語のテキスト。中文，标点！",
    "x1 = 3.14159e-10; y_2 += 0xFF; 1000000 ² ³ ½",
    "emoji 🙂🚀👍🏽 arrows → ← symbols ≤ ≥ ± × ÷ € £ © ™",
    "first document<|endoftext|>second document",
    "code:\n    return x ** 2  # square\n",
    "''''' --- ... !!! ??? '''s 'S 'll'",
    "",
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    path = os.path.join(out, "tokenizer.json")
    bpe.save(path)
    tok = Tokenizer.from_file(path)
    cases = [{"text": t, "ids": tok.encode(t).ids} for t in CASES]
    for c in cases:
        assert tok.decode(c["ids"], skip_special_tokens=False) == c["text"], c["text"]
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as fh:
        json.dump({"tokenizers_version": __import__("tokenizers").__version__, "cases": cases}, fh,
                  ensure_ascii=False, indent=1)
    print(f"wrote {path} (vocab {tok.get_vocab_size()}) and {len(cases)} cases")


if __name__ == "__main__":
    main()
