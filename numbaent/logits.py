"""Logit space: rows are unnormalised log-probabilities. Softmax is never materialised (except by
``softmax`` / ``log_softmax`` themselves, whose output it is).

Public functions -> validation (``_validate``) -> backend (``_kernels.cpu`` / ``numpy_impl`` / ``_cuda``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend, _op
from . import _validate as v

ArrayLike = Any


def _logit_rows(x, name, axis):
    xa = v.as_logits(x, name)
    ax = v.check_axis(axis, xa.ndim, name)
    return v.to_rows(xa, ax)


@_op.op("logits")
def logsumexp(logits: ArrayLike, *, axis: int = -1, backend: str | None = None, out=None):
    """log(sum(exp(logits))) along ``axis``, computed with an online max (never overflows).

    A row of all -inf gives -inf; a row with +inf or NaN gives NaN. An empty row gives -inf.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]])).round(4).tolist()
    [0.6931, 1000.6931]
    """
    name = _backend.resolve(backend, logits)
    if _backend.on_device(logits):
        return _backend.device_call("logsumexp", logits, axis=axis, out=out)
    impl = _backend.implementation(name)
    rows = _logit_rows(logits, "logits", axis)
    target, final = v.outputs(out, rows.batch, v.math_dtype(rows.data), "none", (rows.data,))
    impl.logsumexp(rows.data, target)
    res = v.finish(
        target,
        rows.batch,
        final,
        divisor=1.0,
        reduction="none",
        nan_policy="propagate",
        nan_inputs={},
    )
    return v.scalar_if_0d(res, out)


def _softmax_like(op, logits, axis, backend, out):
    name = _backend.resolve(backend, logits)
    if _backend.on_device(logits):
        return _backend.device_call(op, logits, axis=axis, out=out)
    impl = _backend.implementation(name)
    rows = _logit_rows(logits, "logits", axis)
    n, c = rows.data.shape
    dtype = v.math_dtype(rows.data)
    shape = np.shape(logits)
    if out is not None:
        v.prepare_out(out, shape, dtype)  # validates shape, dtype, writability
        # in place (out is the input's own memory, same dtype) is fine: a row is read whole
        # before it is written; any other overlap goes through ``flat``
        addr = out.__array_interface__["data"][0]
        same = out.dtype == rows.data.dtype and addr == rows.data.__array_interface__["data"][0]
        usable = same or not v.overlaps(out, (rows.data,))
        if rows.axis == len(shape) - 1 and out.flags.c_contiguous and usable:
            impl_out = out.reshape(n, c)
            getattr(impl, op)(rows.data, impl_out)
            return out
    flat = np.empty((n, c), dtype)
    getattr(impl, op)(rows.data, flat)
    if out is not None:
        np.moveaxis(out, rows.axis, -1)[...] = flat.reshape(rows.moved)
        return out
    return np.moveaxis(flat.reshape(rows.moved), -1, rows.axis)


@_op.op("logits")
def log_softmax(logits: ArrayLike, *, axis: int = -1, backend: str | None = None, out=None):
    """log(softmax(logits)) along ``axis``: ``x - logsumexp(x)``, exact for large logits.

    Output has the input's shape (float64 for float64 input, else float32). Rows with NaN, +inf
    or all -inf give NaN.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.log_softmax(np.array([0.0, np.log(3.0)])).round(6)
    array([-1.386294, -0.287682])
    """
    return _softmax_like("log_softmax", logits, axis, backend, out)


@_op.op("logits")
def softmax(logits: ArrayLike, *, axis: int = -1, backend: str | None = None, out=None):
    """softmax(logits) along ``axis``: ``exp(x - logsumexp(x))``.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    return _softmax_like("softmax", logits, axis, backend, out)


@_op.op("logits")
def softmax_entropy(
    logits: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out=None,
):
    """Entropy of softmax(logits) per row, in one pass: H = log S - sum e (x - m) / S.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.softmax_entropy(np.zeros((2, 4)), base=2)
    array([2., 2.])
    """
    divisor = v.base_divisor(base)
    v.check_choice(reduction, "reduction", v.REDUCTIONS)
    v.check_choice(nan_policy, "nan_policy", v.NAN_POLICIES)
    name = _backend.resolve(backend, logits)
    if _backend.on_device(logits):
        return _backend.device_call(
            "softmax_entropy",
            logits,
            base=base,
            axis=axis,
            reduction=reduction,
            nan_policy=nan_policy,
            out=out,
        )
    impl = _backend.implementation(name)
    rows = _logit_rows(logits, "logits", axis)
    target, final = v.outputs(out, rows.batch, v.math_dtype(rows.data), reduction, (rows.data,))
    impl.softmax_entropy(rows.data, target)
    res = v.finish(
        target,
        rows.batch,
        final,
        divisor=divisor,
        reduction=reduction,
        nan_policy=nan_policy,
        nan_inputs={"logits": rows.data},
    )
    return v.scalar_if_0d(res, out)


@_op.op("logits_p", "logits_q")
def softmax_kl_divergence(
    logits_p: ArrayLike,
    logits_q: ArrayLike,
    *,
    temperature: float = 1.0,
    base: float | None = None,
    axis: int = -1,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out=None,
):
    """D(softmax(logits_p / T) || softmax(logits_q / T)) per row, in one pass over both inputs.

    ``logits_p`` is the reference (teacher), ``logits_q`` the model (student). No T**2 factor is
    applied (multiply by ``temperature**2`` yourself for the distillation-loss convention).
    Log-probabilities are valid logits.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> p = np.log([[0.5, 0.5]]); q = np.log([[0.75, 0.25]])
    >>> numbaent.softmax_kl_divergence(p, q, base=2).round(6)
    array([0.207519])
    """
    divisor = v.base_divisor(base)
    v.check_choice(reduction, "reduction", v.REDUCTIONS)
    v.check_choice(nan_policy, "nan_policy", v.NAN_POLICIES)
    t = v.check_temperature(temperature)
    name = _backend.resolve(backend, logits_p, logits_q)
    if _backend.on_device(logits_p, logits_q):
        return _backend.device_call(
            "softmax_kl_divergence",
            logits_p,
            logits_q,
            temperature=t,
            base=base,
            axis=axis,
            reduction=reduction,
            nan_policy=nan_policy,
            out=out,
        )
    impl = _backend.implementation(name)
    rp = _logit_rows(logits_p, "logits_p", axis)
    qa = v.as_logits(logits_q, "logits_q")
    if qa.shape != np.shape(logits_p):  # exactly the same shape (not the class-axis-last one)
        raise ValueError(
            f"logits_p and logits_q must have the same shape; got {np.shape(logits_p)} and {qa.shape}"
        )
    rq = v.to_rows(qa, rp.axis)
    target, final = v.outputs(
        out, rp.batch, v.math_dtype(rp.data, rq.data), reduction, (rp.data, rq.data)
    )
    impl.softmax_kl(rp.data, rq.data, 1.0 / t, target)
    res = v.finish(
        target,
        rp.batch,
        final,
        divisor=divisor,
        reduction=reduction,
        nan_policy=nan_policy,
        nan_inputs={"logits_p": rp.data, "logits_q": rq.data},
    )
    return v.scalar_if_0d(res, out)


@_op.op("logits", "target", "weight")
def softmax_cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    base: float | None = None,
    axis: int = -1,
    nan_policy: str = "propagate",
    backend: str | None = None,
    out=None,
):
    """Softmax cross-entropy loss, -log softmax(logits)[target], as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like, shape (..., C)
        Floating logits; the class axis is ``axis``.
    target : array_like
        Integer class labels of shape (...) (the logits' shape without ``axis``), or probabilities
        with the logits' shape (soft targets).
    weight : array_like, shape (C,), optional
        Per-class weights (torch semantics: the per-row loss is scaled by the weight of its label,
        and the mean divides by the sum of those weights; with soft targets the mean divides by
        the number of rows).
    ignore_index : int
        Label whose rows give 0 and leave the mean's denominator. With soft targets only the
        default -100 is allowed.
    label_smoothing : float in [0, 1]
        Mix the target with the uniform distribution (torch semantics).
    reduction, base, axis, nan_policy, backend, out
        As in :func:`numbaent.entropy`. A mean over no rows (all ignored, or zero total weight) is
        NaN; the sum is 0.

    Raises
    ------
    IndexError
        A label outside [0, C) that is not ``ignore_index`` (the message names the row and label).

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> numbaent.softmax_cross_entropy(logits, np.array([0, 2])).round(6)
    array([0.241311, 1.098612])
    >>> round(numbaent.softmax_cross_entropy(logits, np.array([0, -100]), reduction="mean"), 6)
    0.241311
    """
    divisor = v.base_divisor(base)
    v.check_choice(reduction, "reduction", v.REDUCTIONS)
    v.check_choice(nan_policy, "nan_policy", v.NAN_POLICIES)
    eps = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    name = _backend.resolve(backend, logits, target, weight)
    if _backend.on_device(logits, target, weight):
        return _backend.device_call(
            "softmax_cross_entropy",
            logits,
            target,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=eps,
            reduction=reduction,
            base=base,
            axis=axis,
            nan_policy=nan_policy,
            out=out,
        )
    impl = _backend.implementation(name)
    rows = _logit_rows(logits, "logits", axis)
    n, c = rows.data.shape
    ta = v.as_array(target, "target")
    dtype = v.math_dtype(rows.data)
    w = v.weight_array(weight, c, np.float64)
    if ta.dtype.kind in "iu":
        y = v.labels_rows(ta, "target", rows.batch)
        tgt, final = v.outputs(out, rows.batch, dtype, reduction, (rows.data, y, w))
        row_w, bad = impl.ce_labels(rows.data, y, w, ignore_index, eps, tgt)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise v.label_out_of_range(
                "target", int(y[i]), v.row_name(i, rows.batch), c, ignore_index
            )
        denom = float(np.sum(row_w, dtype=np.float64)) if reduction == "mean" else None
        return v.scalar_if_0d(
            v.finish(
                tgt,
                rows.batch,
                final,
                divisor=divisor,
                reduction=reduction,
                nan_policy=nan_policy,
                nan_inputs={"logits": rows.data},
                denom=denom,
            ),
            out,
        )
    if ta.dtype.kind == "b":
        raise TypeError("target must be integer class labels or floating probabilities; got bool")
    if ta.shape != np.shape(logits):
        raise ValueError(
            f"target must be integer labels of shape {rows.batch} or probabilities of the logits' "
            f"shape {np.shape(logits)}; got shape {ta.shape} with dtype {ta.dtype}"
        )
    if ignore_index != -100:
        raise ValueError(
            "ignore_index is only supported for integer class labels; soft (probability) targets "
            f"take no ignore_index (got {ignore_index})"
        )
    t = v.to_rows(v.as_probabilities(ta, "target"), rows.axis)
    dtype = v.math_dtype(rows.data, t.data)
    tgt, final = v.outputs(out, rows.batch, dtype, reduction, (rows.data, t.data, w))
    impl.ce_soft(rows.data, t.data, w, eps, tgt)
    return v.scalar_if_0d(
        v.finish(
            tgt,
            rows.batch,
            final,
            divisor=divisor,
            reduction=reduction,
            nan_policy=nan_policy,
            nan_inputs={"logits": rows.data, "target": t.data},
        ),
        out,
    )


__all__ = [
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmax_cross_entropy",
    "softmax_entropy",
    "softmax_kl_divergence",
]
