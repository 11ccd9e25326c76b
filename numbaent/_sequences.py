"""Per-sequence results from per-token scores: ``Scores.sequences``.

Language-model evaluation reports per document: the log-likelihood of its tokens, their count, the
mean cross-entropy and its perplexity, whether greedy decoding reproduces every token (what
lm-evaluation-harness calls ``is_greedy``), and the mean entropy / KL. These are sums over each
sequence's non-ignored tokens of the per-token fields, taken here in float64 (float32 token values
are widened first, never summed in float32), one ``np.add.reduceat`` per field.

This module imports nothing of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SequenceScores:
    """Per-sequence results of :meth:`Scores.sequences` (NumPy arrays, one value per sequence).

    ``log_likelihood``: sum of log p(label) over the non-ignored tokens, in the units of ``base``;
    ``tokens``: their count; ``cross_entropy``: -log_likelihood / tokens (NaN for no tokens);
    ``perplexity``: base ** cross_entropy (e ** in nats; the same number in every base);
    ``greedy``: every non-ignored token is the argmax (True for no tokens); ``entropy`` and
    ``kl_divergence`` (None without a teacher): means over the non-ignored tokens.
    """

    log_likelihood: np.ndarray
    tokens: np.ndarray
    cross_entropy: np.ndarray
    perplexity: np.ndarray
    greedy: np.ndarray
    entropy: np.ndarray
    kl_divergence: np.ndarray | None = None
    base: float | None = None

    def as_dict(self) -> dict:
        """The per-sequence arrays that were computed, by name."""
        return computed_arrays(self)


def computed_arrays(result: Any) -> dict:
    """The array fields of a result dataclass (``Scores``, ``SequenceScores``) that are not None,
    by name (``base`` is a unit, not an array)."""
    return {
        f.name: getattr(result, f.name)
        for f in fields(result)
        if f.name != "base" and getattr(result, f.name) is not None
    }


def _cuts(batch_shape: tuple[int, ...], lengths: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """(lengths of the consecutive sequences over the flattened tokens, shape of the result)."""
    if lengths is None:
        if len(batch_shape) == 0:
            return np.ones(1, np.int64), ()
        t = batch_shape[-1]
        b = batch_shape[:-1]
        return np.full(math.prod(b), t, np.int64), b
    if len(batch_shape) != 1:
        raise ValueError(
            f"lengths: packed sequences need 1-D scores (N tokens); these have shape "
            f"{batch_shape}: leave lengths out to take the last axis as the sequence"
        )
    raw = np.asarray(lengths)
    if raw.ndim != 1 or not (raw.dtype.kind in "iu" or raw.size == 0):
        raise ValueError(
            f"lengths must be a 1-D array of integers; got {raw.dtype} of shape {raw.shape}"
        )
    ln = raw.astype(np.int64)
    if ln.size and ln.min() < 0:
        i = int(np.argmax(ln < 0))
        raise ValueError(f"lengths[{i}] is {int(ln[i])}: sequence lengths must be >= 0")
    if int(ln.sum()) != batch_shape[0]:
        raise ValueError(
            f"lengths sum to {int(ln.sum())} but the scores hold {batch_shape[0]} tokens"
        )
    return ln, (ln.size,)


def _per_sequence(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (1-D) over each run of ``lengths`` consecutive elements (0 for length 0)."""
    out = np.zeros(lengths.size, values.dtype)
    nz = lengths > 0
    if values.size:
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nz]
        out[nz] = np.add.reduceat(values, starts)
    return out


def sequences(scores: Any, lengths: Any, to_numpy) -> SequenceScores:
    """The body of ``Scores.sequences`` (``to_numpy`` reads a field of any array kind)."""
    if scores.cross_entropy is None:
        raise ValueError("sequences() needs labels: these scores were computed without them")
    ce = np.asarray(to_numpy(scores.cross_entropy), np.float64)
    cut, shape = _cuts(ce.shape, lengths)
    ignored = np.asarray(to_numpy(scores.ignored), bool).reshape(-1)
    keep = ~ignored
    ce = ce.reshape(-1)

    tokens = _per_sequence(keep.astype(np.int64), cut)

    def mean_of(field) -> np.ndarray:
        a = np.where(keep, np.asarray(to_numpy(field), np.float64).reshape(-1), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (_per_sequence(a, cut) / tokens).reshape(shape)

    ll = 0.0 - _per_sequence(np.where(keep, ce, 0.0), cut)  # 0.0 - : no -0.0 for no tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_ce = np.where(tokens > 0, -ll / np.maximum(tokens, 1), np.nan)
    b = math.e if scores.base is None else float(scores.base)
    with np.errstate(over="ignore", invalid="ignore"):
        ppl = np.power(b, mean_ce)
    miss = keep & ~np.asarray(to_numpy(scores.correct), bool).reshape(-1)
    greedy = _per_sequence(miss.astype(np.int64), cut) == 0
    return SequenceScores(
        log_likelihood=ll.reshape(shape),
        tokens=tokens.reshape(shape),
        cross_entropy=mean_ce.reshape(shape),
        perplexity=ppl.reshape(shape),
        greedy=greedy.reshape(shape),
        entropy=mean_of(scores.entropy),
        kl_divergence=None if scores.kl_divergence is None else mean_of(scores.kl_divergence),
        base=scores.base,
    )
