"""The exact path for the few rows a fast kernel cannot get right in its working precision.

The kernels are written for the common case: float32 sums, one pass, references that may lag the
row maximum by a bounded amount. A handful of inputs defeat that: float32 intermediates that
overflow (logits of 3e38 whose differences span 6e38, probabilities or counts of 1e37 times a
log, soft targets of 3e38 times a class weight), a KL term exp(a - ref) * (a - b) whose logit gap
is beyond 1e11, rows of subnormal probabilities under ``normalize=True``, and the +inf / -inf
rules of the contract (an infinite probability makes its row NaN; a finite teacher logit over a
-inf student logit makes KL +inf even where the teacher's probability underflows).

Such rows are recognised after the kernel, at O(1) cost per row: their result is not finite, or
(probability kernels, flag bit ``REDO``) a row sum is outside the range where the kernel's
float32 products are exact enough. They are recomputed here by the float64 NumPy oracle, a
bounded number of rows at a time (at most ``CHUNK_ELEMS`` elements per step, so memory stays
O(block), never N x C). Rows whose inputs hold a NaN are left alone: every function makes them NaN,
and the kernels already did. The decision depends on the row's data only, so results remain
deterministic; rows with ordinary values never take this path (it is a correctness net, not a
second implementation to keep in sync).
"""

from __future__ import annotations

import numpy as np

from .. import _jitcache  # noqa: F401  (before any cached @njit: see _jitcache)
from . import oracle

CHUNK_ELEMS = 1 << 20
REDO = 4  # probability kernels: flag bit asking for the exact path (bits 1, 2: negative p, q)


def limits(dtype):
    """(tiny, huge): the row sums between which the probability kernels' products in math type
    ``dtype`` (float32 or float64; a dtype or the scalar type) are exact enough."""
    return (2.0**-100, 2.0**100) if dtype == np.float32 else (2.0**-900, 2.0**900)


def redo_bit(res, Sp, Sq, normalize, tiny, huge, bounded):
    """REDO when a probability kernel's row result ``res`` (row sums Sp, Sq) needs the exact path,
    else 0: a NaN result from inputs without NaN, a +inf input, a non-finite result from sums
    beyond ``huge`` (or any non-finite result when the function is ``bounded`` for finite inputs,
    as JS), or with ``normalize`` a row sum outside [tiny, huge]. Plain Python: compiled by both
    the cpu kernels (njit) and the cuda kernels (device function), so both flag the same rows."""
    if Sp != Sp or Sq != Sq:  # a NaN input: the row is NaN, nothing to redo
        return 0
    if res != res or Sp == np.inf or Sq == np.inf:  # +inf input: the row is NaN (contract)
        return REDO
    if not (abs(res) < np.inf) and (bounded or Sp > huge or Sq > huge):
        return REDO
    if normalize and not (tiny <= Sp and Sp <= huge and tiny <= Sq and Sq <= huge):
        return REDO
    return 0


def weighted_term(coef, nll):
    """coef * nll for a loss term with coefficient ``coef`` (a class weight, (1 - eps) w[y]):
    exactly 0 when coef is 0, even over an infinite nll (a -inf label logit), unless nll is NaN
    (a row that is NaN, holds +inf or is all -inf stays NaN). Plain Python, compiled by the cpu
    kernels and the cuda kernels alike."""
    if coef == 0.0 and nll == nll:
        return 0.0
    return coef * nll


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _chunks(idx, c):
    step = max(1, CHUNK_ELEMS // max(c, 1))
    for k in range(0, idx.size, step):
        yield idx[k : k + step]


def nonfinite_rows(out, *inputs):
    """Rows whose result is not finite and whose inputs hold no NaN (a NaN row is NaN already)."""
    idx = np.flatnonzero(~np.isfinite(out))
    if idx.size == 0 or not inputs:
        return idx
    keep = np.ones(idx.size, bool)
    c = inputs[0].shape[1]
    pos = 0
    for ch in _chunks(idx, c):
        k = np.zeros(ch.size, bool)
        for a in inputs:
            if a.shape[1]:
                k |= np.isnan(_f64(a[ch])).any(axis=1)
        keep[pos : pos + ch.size] = ~k
        pos += ch.size
    return idx[keep]


def take_redo(flags):
    """Rows flagged REDO by a probability kernel; clears the bit (the validation layer reads
    the others as errors)."""
    idx = np.flatnonzero(flags & REDO)
    if idx.size:
        flags &= ~np.int8(REDO)
    return idx


def redo(idx, out, c, compute):
    """out[rows] = compute(rows) for the rows ``idx``, in bounded chunks (a float64 result beyond
    the float32 range is stored as +-inf, the contract's answer, without a cast warning)."""
    for ch in _chunks(idx, c):
        res = compute(ch)
        with np.errstate(over="ignore"):
            out[ch] = res


# one function per kernel family: the oracle on a subset of rows


def prob(op, p, q, normalize, out, idx):
    if op == "entropy":
        redo(idx, out, p.shape[1], lambda r: oracle.entropy(_f64(p[r]), normalize)[0])
        return
    shared = q.shape[0] == 1 and p.shape[0] != 1
    fn = getattr(oracle, op)
    redo(
        idx,
        out,
        p.shape[1],
        lambda r: fn(_f64(p[r]), _f64(q if shared else q[r]), normalize)[0],
    )


def ce_labels(x, y, weight, ignore_index, eps, inv_t, out, idx):
    redo(
        idx,
        out,
        x.shape[1],
        lambda r: oracle.ce_labels(_f64(x[r]), y[r], weight, ignore_index, eps, inv_t)[0],
    )


def ce_soft(x, t, weight, eps, inv_t, out, idx):
    redo(
        idx,
        out,
        x.shape[1],
        lambda r: oracle.ce_soft(_f64(x[r]), _f64(t[r]), weight, eps, inv_t),
    )


def softmax_kl(xp, xq, inv_t, out, idx):
    redo(idx, out, xp.shape[1], lambda r: oracle.softmax_kl(_f64(xp[r]), _f64(xq[r]), inv_t))
