"""numbaent: fast, exact row-wise entropy, cross-entropy and KL divergence for large batches.

Probability space: :func:`entropy`, :func:`cross_entropy`, :func:`kl_divergence`,
:func:`js_divergence`. Logit space: :func:`logsumexp`, :func:`log_softmax`, :func:`softmax`,
:func:`softmax_cross_entropy`, :func:`softmax_entropy`, :func:`softmax_kl_divergence`,
:func:`score`. From hidden states (no logits in memory): :func:`linear_score`,
:func:`linear_cross_entropy`. Backends: :func:`backends`, :func:`set_backend`, :func:`get_backend`,
:func:`use_backend`. Sharded vocabularies: :func:`partial_state` and :class:`LogitState`
(:mod:`numbaent.partial`); Dask arrays: :mod:`numbaent.dask` (imported explicitly). The README describes the contract and its semantics.
"""

from . import _threads, partial
from ._backend import (
    BackendInfo,
    BackendUnavailableError,
    backends,
    get_backend,
    set_backend,
    use_backend,
)
from ._sequences import SequenceScores
from ._summary import SummaryState
from .batches import score_batch
from .linear import linear_cross_entropy, linear_score
from .logits import (
    log_softmax,
    logsumexp,
    softmax,
    softmax_cross_entropy,
    softmax_entropy,
    softmax_kl_divergence,
)
from .partial import LogitState, partial_state
from .probability import cross_entropy, entropy, js_divergence, kl_divergence
from .scoring import Scores, score

__version__ = "0.1.0"

# a fork- and thread-safe threading layer for the CPU kernels (TBB), before any of them runs
_threads.configure()
threads = _threads.threads

__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "LogitState",
    "Scores",
    "SequenceScores",
    "SummaryState",
    "backends",
    "cross_entropy",
    "entropy",
    "get_backend",
    "js_divergence",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_score",
    "log_softmax",
    "logsumexp",
    "partial",
    "partial_state",
    "score",
    "score_batch",
    "set_backend",
    "softmax",
    "softmax_cross_entropy",
    "softmax_entropy",
    "softmax_kl_divergence",
    "threads",
    "use_backend",
]
