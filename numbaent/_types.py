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

    ``logsumexp``, ``entropy`` (of the softmax), ``argmax`` always; ``cross_entropy`` and
    ``correct`` with labels (ignored rows: 0 and False); ``kl_divergence`` (teacher || model) with
    a teacher. ``ignored`` marks rows whose label is ``ignore_index`` (None without labels).
    Values are in the units of ``base``.
    """

    logsumexp: Any
    entropy: Any
    argmax: Any
    cross_entropy: Any = None
    correct: Any = None
    kl_divergence: Any = None
    ignored: Any = None
    base: float | None = None

    def summary(self) -> dict:
        """Means over non-ignored rows: cross_entropy, perplexity (base**CE, e**CE in nats),
        accuracy, entropy, kl_divergence; plus the counts ``rows``, ``ignored`` and ``nan_rows``
        (rows whose model statistics are NaN: a NaN or +inf logit, or all -inf; they are left out
        of every mean, and a NaN teacher row out of the KL mean). Statistics that were not
        computed are None; a mean over no rows is NaN.

        Examples
        --------
        >>> import numpy as np, numbaent
        >>> s = numbaent.score(np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]), np.array([0, -100]))
        >>> {k: v if v is None else round(v, 4) for k, v in s.summary().items()}
        {'cross_entropy': 0.6931, 'perplexity': 2.0, 'accuracy': 1.0, 'entropy': 1.0397, 'kl_divergence': None, 'rows': 2, 'ignored': 1, 'nan_rows': 0}
        """
        return self.summary_state().result()

    def summary_state(self) -> SummaryState:
        """The exact sums and counts behind :meth:`summary`: merge the states of disjoint row
        chunks (``a.merge(b)`` or ``a + b``) and call ``result()`` for the summary of all rows,
        bit-identical to the summary of the rows in one piece however they were split."""
        return SummaryState.of_arrays(
            rows=int(np.size(to_numpy(self.logsumexp))),
            ignored=None if self.ignored is None else to_numpy(self.ignored),
            base=self.base,
            cross_entropy=_opt(self.cross_entropy),
            accuracy=_opt(self.correct),
            entropy=_opt(self.entropy),
            kl_divergence=_opt(self.kl_divergence),
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
