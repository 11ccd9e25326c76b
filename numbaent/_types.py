"""Types every part of the package needs (``Scores``, ``BackendInfo``, the backend error): this
module imports nothing of the package but the leaves ``_summary`` and ``_sequences``, so that no
import circle can run through them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._sequences import SequenceScores, computed_arrays, sequences
from ._summary import SummaryState


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendInfo:
    """Availability of one backend: ``available``, a short ``reason`` and a longer ``detail``."""

    available: bool
    reason: str
    detail: str = ""


def to_numpy(a) -> np.ndarray:
    """A NumPy view/copy of a per-row result: NumPy as is, CuPy via .get(), torch via .cpu(), JAX
    and others through np.asarray."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _opt(a):
    return None if a is None else to_numpy(a)


@dataclass(frozen=True)
class Scores:
    """Per-row results of :func:`score`. Fields that were not computed are None.

    The model's distribution is p = softmax(logits / T), T the ``temperature``. Always:
    ``logsumexp`` (of logits / T), ``entropy`` (of p), ``argmax`` (the first maximum),
    ``confidence`` (max p) and ``margin`` (largest minus second-largest p, 0 for a tie at the
    top). With labels: ``cross_entropy`` (-log p[label]), ``correct``, ``rank`` (classes ranked
    above the label: a larger logit, or an equal one at a lower index; top-k accuracy is
    ``rank < k``), ``brier`` (sum_j (p_j - [j == label])^2) and ``ignored`` (label ==
    ``ignore_index``; such rows have cross_entropy 0, correct False, rank -1, brier 0). With a
    teacher: ``kl_divergence`` (teacher || model, both at T). ``argmax``, ``rank`` and
    ``correct`` are decided on the logits as given. Values are in the units of ``base``.
    """

    logsumexp: Any
    entropy: Any
    argmax: Any
    cross_entropy: Any = None
    correct: Any = None
    kl_divergence: Any = None
    ignored: Any = None
    base: float | None = None
    confidence: Any = None
    margin: Any = None
    rank: Any = None
    brier: Any = None

    def summary(self, *, top_k=(1, 5), bins: int = 15) -> dict:
        """Means over non-ignored rows whose model statistics are not NaN: ``cross_entropy``,
        ``perplexity`` (base**CE, e**CE in nats), ``accuracy``, ``top_k_accuracy`` ({k: the
        fraction with rank < k} for each k of ``top_k``, positive ints; 1 for k >= C), ``brier``,
        ``ece`` and ``mce`` (expected and maximum calibration error over ``bins`` equal-width
        confidence bins of [0, 1]: ECE = sum_b (n_b / n) |accuracy_b - confidence_b|, MCE the
        largest gap of a non-empty bin; a row's bin is min(floor(confidence * bins), bins - 1)),
        ``confidence``, ``entropy``, ``kl_divergence``; plus the counts ``rows``, ``ignored`` and
        ``nan_rows`` (rows whose model statistics are NaN: a NaN or +inf logit, or all -inf; they
        are left out of every mean, and a NaN teacher row out of the KL mean). Statistics that
        were not computed are None; over no rows every mean, ``ece`` and ``mce`` are NaN.

        Examples
        --------
        >>> import numpy as np, numbaent
        >>> s = numbaent.score(np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]), np.array([0, -100]))
        >>> {k: v if v is None or isinstance(v, dict) else round(v, 4)
        ...  for k, v in s.summary(top_k=(1, 2)).items()}  # doctest: +NORMALIZE_WHITESPACE
        {'cross_entropy': 0.6931, 'perplexity': 2.0, 'accuracy': 1.0,
         'top_k_accuracy': {1: 1.0, 2: 1.0}, 'brier': 0.375, 'ece': 0.5, 'mce': 0.5,
         'confidence': 0.5, 'entropy': 1.0397, 'kl_divergence': None, 'rows': 2, 'ignored': 1,
         'nan_rows': 0}
        """
        return self.summary_state(top_k=top_k, bins=bins).result()

    def summary_state(self, *, top_k=(1, 5), bins: int = 15) -> SummaryState:
        """The exact sums, counts and calibration histogram behind :meth:`summary`: merge the
        states of disjoint row chunks (``a.merge(b)`` or ``a + b``) and call ``result()`` for the
        summary of all rows, bit-identical to the summary of the rows in one piece however they
        were split. States of different ``top_k``, ``bins`` or ``base``, or with and without
        labels, do not merge (``ValueError``)."""
        return SummaryState.of_arrays(
            rows=int(np.size(to_numpy(self.logsumexp))),
            ignored=None if self.ignored is None else to_numpy(self.ignored),
            base=self.base,
            top_k=top_k,
            bins=bins,
            cross_entropy=_opt(self.cross_entropy),
            accuracy=_opt(self.correct),
            brier=_opt(self.brier),
            confidence=_opt(self.confidence),
            entropy=_opt(self.entropy),
            kl_divergence=_opt(self.kl_divergence),
            rank=_opt(self.rank),
        )

    def sequences(self, lengths=None) -> SequenceScores:
        """Per-sequence results (language-model evaluation): ``log_likelihood``, ``tokens``,
        ``cross_entropy`` (mean per token), ``perplexity``, ``greedy``, ``entropy`` and
        ``kl_divergence`` (means), over each sequence's non-ignored tokens, summed in float64.

        Scores of shape (..., T) give one sequence per row of the last axis (result shape (...));
        1-D scores of N packed tokens are cut by ``lengths`` (integers >= 0 summing to N; a length
        of 0 is a sequence of no tokens: log-likelihood 0, cross-entropy NaN). Needs labels.

        Examples
        --------
        >>> import numpy as np, numbaent
        >>> x = np.log([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]])
        >>> seq = numbaent.score(x, np.array([0, 1, -100]), base=2).sequences(lengths=[2, 1])
        >>> seq.log_likelihood.round(4), seq.tokens, seq.greedy
        (array([-1.415,  0.   ]), array([2, 0]), array([ True,  True]))
        >>> seq.perplexity.round(4)
        array([1.633,   nan])
        """
        return sequences(self, lengths, to_numpy)

    def as_dict(self) -> dict:
        """The per-row arrays that were computed, by name."""
        return computed_arrays(self)
