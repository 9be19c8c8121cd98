#!/usr/bin/env python3
"""Naive byte-level BPE as CLIP's simple_tokenizer applies it (rescan for the lowest-rank pair,
merge every occurrence left to right, repeat), written independently for the tokenizer test.

Usage: bpe_reference.py VOCAB.txt.gz WORDS.txt > IDS.txt
Each line of WORDS.txt is one pre-tokenized, lower-case word; each output line is its ids.
Vocabulary layout as CLIP's: 256 byte symbols, the same with "</w>", then one entry per merge.
"""
import gzip
import sys


def byte_symbols():
    """(byte -> symbol, symbols in vocabulary order): the printable bytes first, in byte order, then
    the remaining bytes, each mapped to chr(256 + n) in byte order (CLIP's bytes_to_unicode)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    rest = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(rest)})
    return table, [table[b] for b in keep + rest]


def main():
    vocab_path, words_path = sys.argv[1], sys.argv[2]
    lines = gzip.open(vocab_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(l.split()) for l in lines[1:49152 - 256 - 2 + 1]]
    sym, order = byte_symbols()
    vocab = order + [v + "</w>" for v in order] + ["".join(m) for m in merges]
    ids = {v: i for i, v in enumerate(vocab)}
    rank = {m: i for i, m in enumerate(merges)}
    for word in open(words_path, encoding="utf-8").read().split("\n"):
        if not word:
            continue
        parts = [sym[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: rank.get(p, float("inf")))
            if best not in rank:
                break
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        print(" ".join(str(ids[p]) for p in parts))


if __name__ == "__main__":
    main()
