"""Logit space: rows are unnormalised log-probabilities. Softmax is never materialised (except by
``softmax`` / ``log_softmax`` themselves, whose output it is).

Each function is written once: its body runs on the adapter ``numbaent._op.space`` picks (host or
device memory) and calls that adapter's kernels (``sp.k``: ``_kernels.cpu`` / ``numpy_impl`` /
``_cuda.device``).
"""

from __future__ import annotations

from typing import Any

from . import _op
from . import _validate as v

ArrayLike = Any


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
    with _op.space(backend, logits) as sp:
        rows = sp.rows(sp.logits(logits, "logits"), axis, "logits")
        target, final = sp.per_row(out, rows.batch, v.math_dtype(rows.data), "none", (rows.data,))
        sp.k.logsumexp(rows.data, target)
        return sp.finish(target, rows.batch, final, out, divisor=1.0, reduction="none",
                         nan_policy="propagate", nan_inputs={})  # fmt: skip


def _softmax_like(op, logits, axis, backend, out):
    with _op.space(backend, logits) as sp:
        return sp.full(op, sp.rows(sp.logits(logits, "logits"), axis, "logits"), out)


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


def _score_outs(sp, batch, dtype, labels: bool, **given):
    """The outputs of the kernels' ``score`` for a single function that takes its pass at a
    temperature: ``given`` ones (the function's result), scratch for the rest (dropped)."""
    fields = v.score_fields(dtype, labels, False)
    return {k: given[k] if k in given else sp.empty(batch, dt)[1] for k, dt in fields.items()}


@_op.op("logits")
def softmax_entropy(
    logits: ArrayLike,
    *,
    temperature: float = 1.0,
    base: float | None = None,
    axis: int = -1,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
    out=None,
):
    """Entropy of softmax(logits / T) per row, in one pass: H = log S - sum e u / S with
    u = (x - m) / T, e = exp(u) (x / T itself is never formed).

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> numbaent.softmax_entropy(np.zeros((2, 4)), base=2)
    array([2., 2.])
    """
    divisor = v.options(base, reduction, nan_policy)
    t = v.check_temperature(temperature)
    with _op.space(backend, logits) as sp:
        rows = sp.rows(sp.logits(logits, "logits"), axis, "logits")
        dtype = v.math_dtype(rows.data)
        target, final = sp.per_row(out, rows.batch, dtype, reduction, (rows.data,))
        if t == 1.0:
            sp.k.softmax_entropy(rows.data, target)
        else:  # score's one pass at the temperature
            outs = _score_outs(sp, rows.batch, dtype, False, entropy=target)
            sp.k.score(rows.data, None, -100, None, 1.0 / t, outs)
        return sp.finish(target, rows.batch, final, out, divisor=divisor, reduction=reduction,
                         nan_policy=nan_policy, nan_inputs={"logits": rows.data})  # fmt: skip


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
    divisor = v.options(base, reduction, nan_policy)
    t = v.check_temperature(temperature)
    with _op.space(backend, logits_p, logits_q) as sp:
        pa = sp.logits(logits_p, "logits_p")
        rp = sp.rows(pa, axis, "logits_p")
        qa = sp.logits(logits_q, "logits_q")
        v.check_pair_shape(pa.shape, qa.shape)
        rq = sp.rows(qa, rp.axis, "logits_q")
        dtype = v.math_dtype(rp.data, rq.data)
        target, final = sp.per_row(out, rp.batch, dtype, reduction, (rp.data, rq.data))
        sp.k.softmax_kl(rp.data, rq.data, 1.0 / t, target)
        nan_in = {"logits_p": rp.data, "logits_q": rq.data}
        return sp.finish(target, rp.batch, final, out, divisor=divisor, reduction=reduction,
                         nan_policy=nan_policy, nan_inputs=nan_in)  # fmt: skip


@_op.op("logits", "target", "weight")
def softmax_cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    temperature: float = 1.0,
    base: float | None = None,
    axis: int = -1,
    nan_policy: str = "propagate",
    backend: str | None = None,
    out=None,
):
    """Softmax cross-entropy loss, -log softmax(logits / T)[target], as ``torch.nn.functional.cross_entropy``.

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
    temperature : float
        T > 0: the loss of softmax(logits / T) (x / T is never formed), with every kind of target,
        weight and label smoothing (torch: ``cross_entropy(logits / T, ...)``).
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
    divisor = v.options(base, reduction, nan_policy)
    eps = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    t = v.check_temperature(temperature)
    opts = {"divisor": divisor, "reduction": reduction, "nan_policy": nan_policy}
    with _op.space(backend, logits, target, weight) as sp:
        xa = sp.logits(logits, "logits")
        rows = sp.rows(xa, axis, "logits")
        n, c = rows.data.shape
        ta, tdt = sp.array(target, "target")
        if tdt.kind in "iu":
            y = sp.labels(target, "target", rows.batch)
            dtype = v.math_dtype(rows.data)
            w = sp.weight(weight, c, dtype)
            tgt, final = sp.per_row(out, rows.batch, dtype, reduction, (rows.data, y, w))
            if t == 1.0 or w is not None or eps != 0:
                row_w, fault = sp.k.ce_labels(rows.data, y, w, ignore_index, eps, 1.0 / t, tgt)
            else:  # score's one pass at the temperature (the same bits as score's field)
                outs = _score_outs(sp, rows.batch, dtype, True, cross_entropy=tgt)
                fault = sp.k.score(rows.data, y, ignore_index, None, 1.0 / t, outs)
                row_w = sp.kept(y, ignore_index)
            if fault is not None:
                row = v.row_name(fault[0], rows.batch)
                raise v.label_out_of_range("target", fault[1], row, c, ignore_index)
            return sp.finish(tgt, rows.batch, final, out, nan_inputs={"logits": rows.data},
                             weights=row_w, **opts)  # fmt: skip
        v.check_soft_target(tdt, ta.shape, xa.shape, rows.batch, ignore_index)
        pt = sp.rows(sp.probs(target, "target"), rows.axis, "target")
        dtype = v.math_dtype(rows.data, pt.data)
        w = sp.weight(weight, c, dtype)
        tgt, final = sp.per_row(out, rows.batch, dtype, reduction, (rows.data, pt.data, w))
        sp.k.ce_soft(rows.data, pt.data, w, eps, 1.0 / t, tgt)
        nan_in = {"logits": rows.data, "target": pt.data}
        return sp.finish(tgt, rows.batch, final, out, nan_inputs=nan_in, **opts)


__all__ = [
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmax_cross_entropy",
    "softmax_entropy",
    "softmax_kl_divergence",
]
