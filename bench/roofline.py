"""The CPU's own limits for a workload, measured in the same run on the same bytes.

Three yardsticks, each a parallel Numba loop over every input of a workload, flattened (so rows and
their lengths play no part):

* ``read``: the bytes XORed as 32-bit words (bfloat16 pairs included): the load limit;
* ``expsum``: one float32 polynomial exp (numbaent's own ``vexpz``, no SVML) and an add per float
  element, integer inputs read: the arithmetic limit of any one-pass softmax over these elements;
* ``logsum``: one float32 polynomial log (``log32``) and an add per float element: the
  arithmetic limit of the probability-space functions (one log per term).

A workload's limit is min(read, expsum) for logit workloads and min(read, logsum) for probability
ones (``limit_keys``); the report gives numbaent's time as a fraction of that limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from numbaent._vmath import ld, log32, vexpz

_FM = {"nsz", "contract", "reassoc", "arcp"}
_CHUNK = 1 << 16  # elements per parallel task; partial sums per chunk, added in order


@njit(parallel=True, fastmath=_FM, cache=True)
def _read32(w):
    """XOR of the words (one cheap op per 4 bytes; exact, so a test can check it)."""
    n = w.shape[0]
    nch = (n + _CHUNK - 1) // _CHUNK
    part = np.zeros(nch, np.int32)
    for k in prange(nch):
        # a view per chunk: indices from range(n) let the loads vectorise (range(lo, hi) gathers)
        v = w[k * _CHUNK : min(k * _CHUNK + _CHUNK, n)]
        s = np.int32(0)
        for j in range(v.shape[0]):
            s ^= v[j]
        part[k] = s
    x = np.int32(0)
    for k in range(nch):
        x ^= part[k]
    return x


@njit(fastmath=_FM, inline="always")
def _exp_term(v):
    return vexpz(v - np.float32(10.0))


def _fold(term):
    """A parallel kernel: the float64 sum of the float32 sums of ``term(x)`` over chunks."""

    @njit(parallel=True, fastmath=_FM)
    def kernel(x):
        n = x.shape[0]
        nch = (n + _CHUNK - 1) // _CHUNK
        part = np.zeros(nch)
        for k in prange(nch):
            v = x[k * _CHUNK : min(k * _CHUNK + _CHUNK, n)]
            s = np.float32(0.0)
            for j in range(v.shape[0]):
                s += term(np.float32(ld(v[j])))
            part[k] = s
        return part.sum()

    return kernel


_expsum = _fold(_exp_term)
_logsum = _fold(log32)


def _flat(a: np.ndarray) -> np.ndarray:
    """The array's elements, flattened; bfloat16 as its uint16 bits."""
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(np.uint16) if a.dtype.itemsize == 2 and a.dtype.kind == "V" else a


def _words(a: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return b[: b.size // 4 * 4].view(np.int32)


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" or (a.dtype.itemsize == 2 and a.dtype.kind == "V")


def prepare(which: str, inputs: dict[str, Any]) -> Callable[[], Any]:
    """A call of the ``which`` yardstick ("read", "expsum" or "logsum") over ``inputs``."""
    arrays = list(inputs.values())
    words = [_words(a) for a in arrays]
    floats = [_flat(a) for a in arrays if _is_float(a)]
    ints = [w for a, w in zip(arrays, words, strict=True) if not _is_float(a)]
    if which == "read":
        jobs = [(_read32, w) for w in words]
    else:
        f = _expsum if which == "expsum" else _logsum
        jobs = [(f, v) for v in floats] + [(_read32, w) for w in ints]

    def run() -> float:
        return float(sum(float(fn(v)) for fn, v in jobs))

    run()  # compile outside the timing
    return run


PROBABILITY_KINDS = ("entropy", "kl")


def limit_keys(kind: str) -> tuple[str, str]:
    """The two yardsticks whose slower one is the workload's limit."""
    return ("read_limit", "logsum_limit" if kind in PROBABILITY_KINDS else "expsum_limit")
