"""``score``: every per-row statistic of a batch of logits (and a teacher) in ONE pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend, _op
from . import _validate as v
from ._types import Scores

ArrayLike = Any


@_op.op("logits", "labels", "teacher_logits")
def score(
    logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    teacher_logits: ArrayLike | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    base: float | None = None,
    axis: int = -1,
    backend: str | None = None,
) -> Scores:
    """Score a batch of logits in one pass: log-sum-exp, softmax entropy, argmax, and (with labels)
    cross-entropy and correctness, and (with a teacher) KL(teacher || model) at ``temperature``.

    The temperature applies to the KL divergence only. Labels equal to ``ignore_index`` give
    cross_entropy 0 and correct False and leave the summary's means; any other label outside
    [0, C) raises ``IndexError``.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> s = numbaent.score(np.array([[2.0, 0.0], [0.0, 3.0]]), np.array([0, 0]))
    >>> s.argmax, s.correct
    (array([0, 1]), array([ True, False]))
    >>> s.cross_entropy.round(4)
    array([0.1269, 3.0486])
    """
    divisor = v.base_divisor(base)
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    name = _backend.resolve(backend, logits, labels, teacher_logits)
    if _backend.on_device(logits, labels, teacher_logits):
        return _backend.device_call(
            "score",
            logits,
            labels,
            teacher_logits=teacher_logits,
            temperature=t,
            ignore_index=ignore_index,
            base=base,
            axis=axis,
        )
    impl = _backend.implementation(name)
    xa = v.as_logits(logits, "logits")
    ax = v.check_axis(axis, xa.ndim, "logits")
    rows = v.to_rows(xa, ax)
    n, c = rows.data.shape
    y = None if labels is None else v.labels_rows(labels, "labels", rows.batch)
    tq = None
    if teacher_logits is not None:
        ta = v.as_logits(teacher_logits, "teacher_logits")
        if ta.shape != xa.shape:
            raise ValueError(
                f"teacher_logits must have the logits' shape {xa.shape}; got {ta.shape}"
            )
        tq = v.to_rows(ta, ax).data  # read at its own precision, as softmax_kl_divergence does
    dtype = v.math_dtype(rows.data, tq)
    outs = {
        "logsumexp": np.empty(n, dtype),
        "entropy": np.empty(n, dtype),
        "argmax": np.empty(n, np.int64),
    }
    if y is not None:
        outs["cross_entropy"] = np.empty(n, dtype)
        outs["correct"] = np.empty(n, np.bool_)
    if tq is not None:
        outs["kl_divergence"] = np.empty(n, dtype)
    bad = impl.score(rows.data, y, ignore_index, tq, 1.0 / t, outs)
    hit = np.flatnonzero(bad)
    if hit.size:
        i = int(hit[0])
        raise v.label_out_of_range("labels", int(y[i]), v.row_name(i, rows.batch), c, ignore_index)
    for k in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
        if k in outs:
            v.to_units(outs[k], divisor)
    shaped = {k: a.reshape(rows.batch) for k, a in outs.items()}
    ignored = None if y is None else (y == ignore_index).reshape(rows.batch)
    return Scores(ignored=ignored, base=base, **shaped)
