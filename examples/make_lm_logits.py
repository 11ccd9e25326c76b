"""Make ``examples/lm_logits.npz``: token logits of two small language models, for trying out
``numbaent score --sequences`` on data no one made up.

How the file was made (``python examples/make_lm_logits.py``; NumPy only, a few seconds)::

    text      the help topics that ship with CPython (``pydoc_data.topics``, Python 3.11.7), the
              topics in sorted order joined by newlines; characters are the tokens (every
              character of the text is in the vocabulary, V = 104 with an "other" token)
    split     the first 90% of the characters train the models, the rest is held out
    logits    student: a character bigram model, log(count(prev, next) + 0.5) (add-1/2 smoothing)
    teacher   a stronger model: a character 4-gram model interpolated with lower orders
              (weights 0.6 / 0.25 / 0.1 / 0.05 on the 4-, 3-, 2- and 1-gram estimates, each
              add-1/1000 smoothed), its log-probabilities as logits
    sequences 32 windows of 64 characters from the held-out text, evenly spaced; a window's first
              token is predicted from the characters before it; labels are the next characters,
              -100 (ignored) where that is the "other" token

Arrays in the file: ``logits`` and ``teacher_logits`` (float16, (32, 64, 104)), ``labels`` (int64,
(32, 64)). Nothing here is random, so rerunning on the same Python gives the same file. Try it::

    numbaent score examples/lm_logits.npz --sequences --base 2    # bits per character
    numbaent score examples/lm_logits.npz --sequences -o docs.npz  # per-sequence arrays
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("lm_logits.npz")
B, T = 32, 64
WEIGHTS = (0.6, 0.25, 0.1, 0.05)  # 4-, 3-, 2-, 1-gram


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index[ch] for ch in text], np.int64), vocab + ["<other>"]


def context_ids(tokens: np.ndarray, positions: np.ndarray, length: int, v: int) -> np.ndarray:
    """Index of the ``length`` tokens before each position (in the n-gram tables)."""
    ids = np.zeros(positions.shape, np.int64)
    for j in range(length, 0, -1):
        ids = ids * v + tokens[positions - j]
    return ids


def make() -> dict[str, np.ndarray]:
    tokens, vocab = encode(corpus())
    v = len(vocab)
    cut = int(len(tokens) * 0.9)
    train, held = tokens[:cut], tokens[cut:]
    # the student: a dense bigram table; the teacher: interpolated n-grams from sorted count keys
    student = np.log(_counts(train, v, 2) + 0.5)
    starts = np.linspace(8, len(held) - T - 1, B).astype(np.int64)
    pos = starts[:, None] + np.arange(T)[None, :]  # positions of the predicted tokens
    logits = student[held[pos - 1]]
    probs = np.zeros((B, T, v))
    for order, w in zip((4, 3, 2, 1), WEIGHTS, strict=True):
        probs += w * _ngram_probs(train, held, pos, v, order, 1e-3)
    labels = held[pos].copy()
    labels[labels == v - 1] = -100
    return {
        "logits": logits.astype(np.float16),
        "labels": labels,
        "teacher_logits": np.log(probs).astype(np.float16),
    }


def _counts(train: np.ndarray, v: int, order: int) -> np.ndarray:
    ctx = np.zeros(len(train) - order + 1, np.int64)
    for j in range(order - 1):
        ctx = ctx * v + train[j : len(train) - order + 1 + j]
    counts = np.zeros((v ** (order - 1), v))
    np.add.at(counts, (ctx, train[order - 1 :]), 1.0)
    return counts


def _ngram_probs(train, held, pos, v, order, k) -> np.ndarray:
    """p(held[pos] = . | the order-1 tokens before pos), add-k smoothed, from a sparse table."""
    n = len(train) - order + 1
    ctx = np.zeros(n, np.int64)
    for j in range(order - 1):
        ctx = ctx * v + train[j : n + j]
    key = ctx * v + train[order - 1 :]
    uniq, cnt = np.unique(key, return_counts=True)
    want = context_ids(held, pos.reshape(-1), order - 1, v)
    # the counts of every next token after each wanted context
    rows = want[:, None] * v + np.arange(v)[None, :]
    at = np.searchsorted(uniq, rows)
    at = np.minimum(at, len(uniq) - 1)
    c = np.where(uniq[at] == rows, cnt[at], 0).astype(np.float64) + k
    return (c / c.sum(1, keepdims=True)).reshape(pos.shape + (v,))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", type=Path, default=OUT)
    args = p.parse_args()
    arrays = make()
    np.savez(args.output, **arrays)
    for k, a in arrays.items():
        print(f"{k}: {a.dtype} {a.shape}")
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
