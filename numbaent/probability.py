"""Probability space: rows are distributions (or counts, with ``normalize=True``).

Each function is written once, over the adapter ``numbaent._op.space`` picks (see
``numbaent.logits``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _op
from . import _validate as v

ArrayLike = Any


def _prob_call(op, p, q, *, base, axis, normalize, reduction, nan_policy, backend, out):
    divisor = v.options(base, reduction, nan_policy)
    with _op.space(backend, p, q) as sp:
        pa = sp.probs(p, "p")
        rows = sp.rows(pa, axis, "p")
        q2 = None
        if q is not None:
            qa = sp.probs(q, "q")
            v.check_same_shape(pa, qa, "p", "q", rows.axis)
            q2 = sp.rows(qa, rows.axis, "q").data if qa.shape == pa.shape else sp.shared(qa)
        dtype = v.math_dtype(rows.data, q2)
        target, final = sp.per_row(out, rows.batch, dtype, reduction, (rows.data, q2))
        if q is None:
            fault = sp.k.entropy(rows.data, bool(normalize), target)
        else:
            fault = getattr(sp.k, op)(rows.data, q2, bool(normalize), target)
        if fault is not None:  # (row, flags): bit 1 for p, else q
            raise v.negative_entry("p" if fault[1] & 1 else "q", v.row_name(fault[0], rows.batch))
        return sp.finish(target, rows.batch, final, out, divisor=divisor, reduction=reduction,
                         nan_policy=nan_policy, nan_inputs={"p": rows.data, "q": q2})  # fmt: skip


@_op.op("p")
def entropy(
    p: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    normalize: bool = False,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out: np.ndarray | None = None,
):
    """Shannon entropy of each row, H(p) = -sum p log p.

    Parameters
    ----------
    p : array_like, shape (..., C)
        Probabilities (or counts with ``normalize=True``) along ``axis``. Integer and bool arrays
        are converted to float64; negative entries raise ``ValueError``.
    base : float, optional
        Logarithm base (2 gives bits); natural log (nats) by default.
    axis : int
        The class axis, reduced; every other axis is a batch axis. A non-last axis costs a copy.
    normalize : bool
        Divide each row by its sum first (as ``scipy.stats.entropy`` does); an all-zero row gives NaN.
    reduction : {"none", "sum", "mean"}
        Per-row array, or their sum / mean as a Python float.
    nan_policy : {"propagate", "raise"}
        A NaN in a row makes that row NaN, or raises ``ValueError`` naming the first such row.
    backend : {None, "auto", "cpu", "cuda", "numpy"}
        Where to compute; None uses the current default (see ``numbaent.use_backend``).
    out : ndarray, optional
        Preallocated result (shape ``p.shape`` without ``axis``; float64 for float64 input, else
        float32); returned.

    Returns
    -------
    ndarray of shape (...,) or float
        Terms with p = 0 contribute 0. An empty row (C = 0) gives 0.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.entropy(np.array([[0.5, 0.5], [1.0, 0.0]]), base=2)
    array([1., 0.])
    >>> round(float(numbaent.entropy([3, 1], normalize=True)), 6)
    0.562335
    """
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("entropy", p, None, backend=backend, out=out, **kw)


@_op.op("p", "q")
def cross_entropy(
    p: ArrayLike,
    q: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    normalize: bool = False,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out: np.ndarray | None = None,
):
    """Cross-entropy of each row, H(p, q) = -sum p log q  (>= H(p) for distributions).

    ``q`` has the shape of ``p``, or is 1-D of length C and shared by every row. Terms with p = 0
    contribute 0 whatever q is; p > 0 with q = 0 gives +inf. Other arguments as in :func:`entropy`.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> p = np.array([[0.5, 0.5, 0.0]])
    >>> numbaent.cross_entropy(p, [0.25, 0.25, 0.5], base=2)
    array([2.])
    """
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("cross_entropy", p, q, backend=backend, out=out, **kw)


@_op.op("p", "q")
def kl_divergence(
    p: ArrayLike,
    q: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    normalize: bool = False,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out: np.ndarray | None = None,
):
    """Kullback-Leibler divergence of each row, D(p || q) = sum p log(p / q) = H(p, q) - H(p) >= 0.

    Zero iff p = q; p > 0 where q = 0 gives +inf; terms with p = 0 contribute 0. Other arguments as
    in :func:`entropy`.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.kl_divergence([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.75, 0.25]], base=2).round(6)
    array([0.      , 0.207519])
    """
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("kl_divergence", p, q, backend=backend, out=out, **kw)


@_op.op("p", "q")
def js_divergence(
    p: ArrayLike,
    q: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    normalize: bool = False,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out: np.ndarray | None = None,
):
    """Jensen-Shannon divergence of each row, 1/2 D(p || m) + 1/2 D(q || m) with m = (p + q) / 2.

    Symmetric, finite, and at most log 2 (1 bit) for distributions. Other arguments as in
    :func:`entropy`.

    Examples
    --------
    >>> import numbaent
    >>> numbaent.js_divergence([[1.0, 0.0]], [[0.0, 1.0]], base=2)
    array([1.])
    """
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("js_divergence", p, q, backend=backend, out=out, **kw)
