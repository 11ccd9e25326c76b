"""The ``cpu`` backend: adapts validated arrays to the Numba kernels (half types viewed as their bits)
and allocates the O(rows) side outputs (row flags). Same interface as ``numpy_impl`` and the CUDA
backend; see ``numbaent._kernels.__init__`` for the contract of each function."""

from __future__ import annotations

import numpy as np

from . import cpu_logits, cpu_prob, cpu_score, exact, first_fault
from ._blocks import SMALL_C


def ro(a):
    """A read-only view of an input array (no copy). Numba types the read-only flag, so a kernel
    given writable and read-only arrays (np.load(mmap_mode="r"), torch, broadcasts) would compile
    twice; every input reaches the kernels read-only, one specialisation per dtype."""
    v = a.view()
    v.flags.writeable = False
    return v


_BITS = {np.dtype(np.float16): np.dtype(np.int16)}  # half types, viewed as their bits
try:
    import ml_dtypes

    _BITS[np.dtype(ml_dtypes.bfloat16)] = np.dtype(np.uint16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency of the bfloat16 path
    pass


def kernel_view(a):
    """A read-only view of an input (see ``ro``): float16 -> int16 bits, bfloat16 -> uint16 bits
    (decoded in registers by the kernels). One dict lookup: this runs on every call."""
    bits = _BITS.get(a.dtype)
    v = a.view() if bits is None else a.view(bits)  # ro() inlined: one call less per input
    v.flags.writeable = False
    return v


def _flags(n):
    return np.zeros(n, np.int8)


def _q_step(p, q):
    return 0 if q.shape[0] == 1 and p.shape[0] != 1 else 1


def entropy(p, normalize, out):
    flags = _flags(p.shape[0])
    cpu_prob.entropy(kernel_view(p), bool(normalize), *exact.limits(out.dtype), out, flags)
    exact.prob("entropy", p, None, normalize, out, exact.take_redo(flags))
    return first_fault(flags)


def _pq(op, p, q, normalize, out):
    flags = _flags(p.shape[0])
    kernel = getattr(cpu_prob, op)
    lim = exact.limits(out.dtype)
    kernel(kernel_view(p), kernel_view(q), _q_step(p, q), bool(normalize), *lim, out, flags)
    exact.prob(op, p, q, normalize, out, exact.take_redo(flags))
    return first_fault(flags)


def cross_entropy(p, q, normalize, out):
    return _pq("cross_entropy", p, q, normalize, out)


def kl_divergence(p, q, normalize, out):
    return _pq("kl_divergence", p, q, normalize, out)


def js_divergence(p, q, normalize, out):
    return _pq("js_divergence", p, q, normalize, out)


def total(a):
    """The float64 sum of a 1-D result or weight vector (deterministic: fixed chunks)."""
    return float(cpu_logits.total(a)) if a.shape[0] else 0.0


def _small(x):
    return 0 < x.shape[1] <= SMALL_C


_NO_I64 = ro(np.empty(0, np.int64))
#: the working precision of a kernel whose outputs may be wider (score: float64 chunk states)
_LIKE = {t: ro(np.empty(0, t)) for t in (np.float32, np.float64)}
_NO_F64 = np.empty(0, np.float64)
_NO_I8 = np.empty(0, np.int8)


def _split_states(x, dtype):
    m = np.empty(x.shape[0], dtype)
    s = np.empty(x.shape[0], np.float64)
    cpu_logits.split_lse(kernel_view(x), m, s)
    return m.astype(np.float64), s


def logsumexp(x, out):
    if _small(x):
        cpu_logits.small_rows(kernel_view(x), _NO_I64, 0, 0, out, _NO_F64, _NO_I8)
    elif cpu_logits.use_split(*x.shape):
        m, s = _split_states(x, out.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[...] = m + np.log(s)
    else:
        cpu_logits.logsumexp(kernel_view(x), out)


def log_softmax(x, out):
    cpu_logits.log_softmax(kernel_view(x), out)


def softmax(x, out):
    cpu_logits.softmax(kernel_view(x), out)


def softmax_entropy(x, out):
    if _small(x):
        cpu_logits.small_rows(kernel_view(x), _NO_I64, 0, 2, out, _NO_F64, _NO_I8)
    else:
        cpu_logits.softmax_entropy(kernel_view(x), out)


def _weights(weight, c, dtype):
    return ro(np.ones(c, dtype) if weight is None else np.ascontiguousarray(weight, dtype=dtype))


def ce_labels(x, y, weight, ignore_index, eps, inv_t, out):
    n, c = x.shape
    it = None if inv_t == 1.0 else float(inv_t)
    # the row weights are 0/1 without class weights: int8, not float64 (fresh pages are zeroed by
    # the OS on first touch: 8 bytes per row cost ~1 ms per call at 1048576 x 10, 25% of it)
    plain = weight is None and eps == 0 and it is None
    row_w = np.empty(n, np.int8 if plain else np.float64)
    bad = _flags(n)
    xv = kernel_view(x)
    if plain and _small(x):
        cpu_logits.small_rows(xv, ro(y), ignore_index, 1, out, row_w, bad)
    elif plain and cpu_logits.use_split(n, c):
        m, s = _split_states(x, out.dtype)
        ignored = y == ignore_index
        bad[...] = ~ignored & ((y < 0) | (y >= c))
        ok = ~ignored & (bad == 0)
        xy = np.zeros(n)
        xy[ok] = x[np.flatnonzero(ok), y[ok]].astype(np.float64)
        # a loss beyond float32 (logits of 3e38 and -3e38) is stored as inf, the contract's answer
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            loss = (m - xy) + np.log(s)
            out[...] = np.where(ok, loss, np.where(ignored, 0.0, np.nan))
        row_w[...] = ok
    elif plain:
        cpu_logits.ce_labels(xv, ro(y), ignore_index, out, row_w, bad)
    else:
        w = _weights(weight, c, out.dtype)
        ones = ro(np.ones(c, out.dtype))
        cpu_logits.ce_labels_general(
            xv, ro(y), w, ignore_index, float(eps), it, ones, out, row_w, bad
        )
        if eps != 0 or it is not None:  # the smoothing term is a float32 sum of products (see
            # exact.py); at a temperature, the same linear pass: its non-finite rows are redone too
            idx = exact.nonfinite_rows(out, x)
            exact.ce_labels(x, y, weight, ignore_index, eps, inv_t, out, idx)
    return row_w, first_fault(bad, y)


def ce_soft(x, t, weight, eps, inv_t, out):
    w = _weights(weight, x.shape[1], out.dtype)
    it = None if inv_t == 1.0 else float(inv_t)
    cpu_logits.ce_soft(kernel_view(x), kernel_view(t), w, float(eps), it, out)
    exact.ce_soft(x, t, weight, eps, inv_t, out, exact.nonfinite_rows(out, x, t))


def softmax_kl(xp, xq, inv_t, out):
    cpu_logits.softmax_kl(kernel_view(xp), kernel_view(xq), float(inv_t), out)
    exact.softmax_kl(xp, xq, inv_t, out, exact.nonfinite_rows(out, xp, xq))


def score(x, y, ignore_index, teacher, inv_t, outs):
    n = x.shape[0]
    xv = kernel_view(x)
    bad = _flags(n)
    lse = outs["logsumexp"]
    dummy_f = np.empty(0, lse.dtype)
    cpu_score.score(
        xv,
        ro(y if y is not None else np.empty(0, np.int64)),
        y is not None,
        ignore_index,
        kernel_view(teacher) if teacher is not None else xv,
        teacher is not None,
        float(inv_t),
        _LIKE[
            np.float64 if np.float64 in (x.dtype, getattr(teacher, "dtype", None)) else np.float32
        ],
        lse,
        outs["entropy"],
        outs["argmax"],
        outs["confidence"],
        outs["margin"],
        outs.get("cross_entropy", dummy_f),
        outs.get("correct", np.empty(0, np.bool_)),
        outs.get("rank", np.empty(0, np.int64)),
        outs.get("brier", dummy_f),
        outs.get("kl_divergence", dummy_f),
        bad,
    )
    if teacher is not None:
        kl = outs["kl_divergence"]
        exact.softmax_kl(teacher, x, inv_t, kl, exact.nonfinite_rows(kl, teacher, x))
    return first_fault(bad, y)


def count_above(x, thr, lab, out):
    cpu_score.count_above(ro(x), ro(thr), ro(lab), out)
