"""The ``numpy`` backend: the float64 oracle behind the common backend interface (results are
computed in float64 and cast into the preallocated outputs)."""

from __future__ import annotations

import numpy as np

from . import first_fault, oracle

# float64 oracle results stored into float32 outputs: a value beyond the float32 range becomes
# +-inf, the contract's answer, without NumPy's cast warning
_stores = np.errstate(over="ignore")


@_stores
def _f64(a):
    return np.asarray(a, dtype=np.float64)


def total(a):
    """The float64 sum of a 1-D result or weight vector."""
    return float(np.sum(a, dtype=np.float64))


@_stores
def entropy(p, normalize, out):
    res, flags = oracle.entropy(_f64(p), normalize)
    out[...] = res
    return first_fault(flags)


@_stores
def cross_entropy(p, q, normalize, out):
    res, flags = oracle.cross_entropy(_f64(p), _f64(q), normalize)
    out[...] = res
    return first_fault(flags)


@_stores
def kl_divergence(p, q, normalize, out):
    res, flags = oracle.kl_divergence(_f64(p), _f64(q), normalize)
    out[...] = res
    return first_fault(flags)


@_stores
def js_divergence(p, q, normalize, out):
    res, flags = oracle.js_divergence(_f64(p), _f64(q), normalize)
    out[...] = res
    return first_fault(flags)


@_stores
def logsumexp(x, out):
    out[...] = oracle.logsumexp(_f64(x))


@_stores
def log_softmax(x, out):
    out[...] = oracle.log_softmax(_f64(x))


@_stores
def softmax(x, out):
    out[...] = oracle.softmax(_f64(x))


@_stores
def softmax_entropy(x, out):
    out[...] = oracle.softmax_entropy(_f64(x))


@_stores
def ce_labels(x, y, weight, ignore_index, eps, inv_t, out):
    loss, row_w, bad = oracle.ce_labels(_f64(x), y, weight, ignore_index, eps, inv_t)
    out[...] = loss
    return row_w, first_fault(bad, y)


@_stores
def ce_soft(x, t, weight, eps, inv_t, out):
    out[...] = oracle.ce_soft(_f64(x), _f64(t), weight, eps, inv_t)


@_stores
def softmax_kl(xp, xq, inv_t, out):
    out[...] = oracle.softmax_kl(_f64(xp), _f64(xq), inv_t)


@_stores
def score(x, y, ignore_index, teacher, inv_t, outs):
    res = oracle.score(_f64(x), y, ignore_index, None if teacher is None else _f64(teacher), inv_t)
    for name, arr in outs.items():
        arr[...] = res[name]
    return first_fault(res["bad"], y) if "bad" in res else None


def count_above(x, thr, lab, out):
    """Classes j != lab with x > thr, or x == thr at j < lab, per row (see cpu_score)."""
    j = np.arange(x.shape[1])[None, :]
    t, lab = thr[:, None], lab[:, None]
    with np.errstate(invalid="ignore"):
        hit = ((x > t) | ((x == t) & (j < lab))) & (j != lab)
    out[...] = hit.sum(axis=1)
