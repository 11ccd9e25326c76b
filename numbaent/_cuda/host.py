"""The ``cuda`` backend for host (NumPy) arrays: the interface of ``numbaent._kernels`` (same
functions, arguments and results as ``numbaent._kernels.cpu``). Each call copies its inputs to the
current device, launches one kernel, and copies the results into the caller's preallocated
outputs. Row faults come back as the CPU's flag arrays: the kernels write a flag per row and lower
one integer to the first flagged row; only that integer is read back unless a row was flagged.
Rows the kernels cannot get right in their working precision take the exact path of the cpu
backend (``numbaent._kernels.exact``) on the host inputs, as ``numbaent._kernels.cpu`` does:
non-finite results of the logit kernels, and the probability kernels' ``REDO`` rows.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._kernels import exact
from . import ops


def kernel_view(a):
    """bfloat16 -> uint16 bits (decoded in registers by the kernels); float16 is loaded natively."""
    if a.dtype.name == "bfloat16":
        return a.view(np.uint16)
    return a


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(kernel_view(a)))


def _first(n, slots=1):
    return cuda.to_device(np.full(slots, n, np.int64))


def _flags_back(d_flags, d_first, n):
    """Host int8 flags (rows,): zeros unless the kernel lowered a slot of ``first`` (one small
    read)."""
    if n == 0 or int(d_first.copy_to_host().min()) >= n:
        return np.zeros(n, np.int8)
    return d_flags.copy_to_host()


def _out(out):
    return cuda.device_array(out.shape, out.dtype)


def _back(d, out):
    if out.size:
        d.copy_to_host(out)


def _q_step(p, q):
    return 0 if q.shape[0] == 1 and p.shape[0] != 1 else 1


def entropy(p, normalize, out):
    n = p.shape[0]
    d_out, d_flags, d_first = _out(out), cuda.device_array(n, np.int8), _first(n, 2)
    ops.run("entropy", n, 0, _dev(p), bool(normalize), d_out, d_flags, d_first)
    _back(d_out, out)
    flags = _flags_back(d_flags, d_first, n)
    exact.prob("entropy", p, None, normalize, out, exact.take_redo(flags))
    return flags


def _pq(op, p, q, normalize, out):
    n = p.shape[0]
    d_out, d_flags, d_first = _out(out), cuda.device_array(n, np.int8), _first(n, 2)
    ops.run(op, n, 0, _dev(p), _dev(q), _q_step(p, q), bool(normalize), d_out, d_flags, d_first)
    _back(d_out, out)
    flags = _flags_back(d_flags, d_first, n)
    exact.prob(op, p, q, normalize, out, exact.take_redo(flags))
    return flags


def cross_entropy(p, q, normalize, out):
    return _pq("cross_entropy", p, q, normalize, out)


def kl_divergence(p, q, normalize, out):
    return _pq("kl_divergence", p, q, normalize, out)


def js_divergence(p, q, normalize, out):
    return _pq("js_divergence", p, q, normalize, out)


def _single(op, x, out):
    d_out = _out(out)
    ops.run(op, x.shape[0], 0, _dev(x), d_out)
    _back(d_out, out)


def logsumexp(x, out):
    _single("logsumexp", x, out)


def log_softmax(x, out):
    _single("log_softmax", x, out)


def softmax(x, out):
    _single("softmax", x, out)


def softmax_entropy(x, out):
    _single("softmax_entropy", x, out)


def _weights(weight, c, dtype):
    """(device weights in the math type, has_weight); a 1-element dummy when there are none."""
    if weight is None:
        return cuda.to_device(np.ones(1, dtype)), False
    return cuda.to_device(np.ascontiguousarray(weight, dtype=dtype)), True


def ce_labels(x, y, weight, ignore_index, eps, out):
    n, c = x.shape
    d_w, has_w = _weights(weight, c, out.dtype)
    d_out, d_rw = _out(out), cuda.device_array(n, np.float64)
    d_bad, d_first = cuda.device_array(n, np.int8), _first(n)
    d_y = cuda.to_device(np.ascontiguousarray(y, dtype=np.int64))
    ops.run("ce_labels", n, 0, _dev(x), d_y, d_w, has_w, int(ignore_index), float(eps),
            d_out, d_rw, d_bad, d_first)  # fmt: skip
    _back(d_out, out)
    row_w = d_rw.copy_to_host() if n else np.empty(0, np.float64)
    if eps != 0:  # the smoothing term is a float32 sum of products (see exact.py)
        exact.ce_labels(x, y, weight, ignore_index, eps, out, exact.nonfinite_rows(out, x))
    return row_w, _flags_back(d_bad, d_first, n)


def ce_soft(x, t, weight, eps, out):
    d_w, has_w = _weights(weight, x.shape[1], out.dtype)
    d_out = _out(out)
    ops.run("ce_soft", x.shape[0], 0, _dev(x), _dev(t), d_w, has_w, float(eps), d_out)
    _back(d_out, out)
    exact.ce_soft(x, t, weight, eps, out, exact.nonfinite_rows(out, x, t))


def softmax_kl(xp, xq, inv_t, out):
    d_out = _out(out)
    ops.run("softmax_kl", xp.shape[0], 0, _dev(xp), _dev(xq), float(inv_t), d_out)
    _back(d_out, out)
    exact.softmax_kl(xp, xq, inv_t, out, exact.nonfinite_rows(out, xp, xq))


def score(x, y, ignore_index, teacher, inv_t, outs):
    n = x.shape[0]
    d_x = _dev(x)
    lse = outs["logsumexp"]
    dt = lse.dtype
    d = {k: _out(v) for k, v in outs.items()}
    dummy_f = cuda.device_array(1, dt)
    d_bad, d_first = cuda.device_array(n, np.int8), _first(n)
    d_y = cuda.to_device(np.ascontiguousarray(y, np.int64)) if y is not None else _first(0)
    ops.run(
        "score", n, 0,
        d_x, d_y, y is not None, int(ignore_index),
        _dev(teacher) if teacher is not None else d_x, teacher is not None, float(inv_t),
        d["logsumexp"], d["entropy"], d["argmax"],
        d.get("cross_entropy", dummy_f), d.get("correct", cuda.device_array(1, np.bool_)),
        d.get("kl_divergence", dummy_f), d_bad, d_first,
    )  # fmt: skip
    for k, v in outs.items():
        _back(d[k], v)
    if teacher is not None:
        kl = outs["kl_divergence"]
        exact.softmax_kl(teacher, x, inv_t, kl, exact.nonfinite_rows(kl, teacher, x))
    if y is None:
        return np.zeros(n, np.int8)
    return _flags_back(d_bad, d_first, n)
