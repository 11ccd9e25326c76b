"""``score``: every per-row statistic of a batch of logits (and a teacher) in ONE pass."""

from __future__ import annotations

from typing import Any

from . import _op
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
    """Score a batch of logits in one pass over the row: log-sum-exp, softmax entropy, argmax,
    confidence and margin; with labels cross-entropy, correctness, the label's rank and the
    Brier score; with a teacher KL(teacher || model). See :class:`Scores` for the fields.

    ``temperature`` T applies to every field: the model's distribution is softmax(logits / T) and
    the teacher's softmax(teacher_logits / T) (calibration, sampling temperature, distillation);
    argmax, rank and correct do not depend on it. Labels equal to ``ignore_index`` give
    cross_entropy 0, correct False, rank -1 and brier 0 and leave the summary's means; any other
    label outside [0, C) raises ``IndexError``.

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
    with _op.space(backend, logits, labels, teacher_logits) as sp:
        xa = sp.logits(logits, "logits")
        rows = sp.rows(xa, axis, "logits")
        batch, c = rows.batch, rows.data.shape[1]
        y = None if labels is None else sp.labels(labels, "labels", batch)
        tq = None
        if teacher_logits is not None:
            ta = sp.logits(teacher_logits, "teacher_logits")
            v.check_teacher_shape(ta.shape, xa.shape)
            tq = sp.rows(ta, rows.axis, "teacher_logits").data  # at its own precision
        dtype = v.math_dtype(rows.data, tq)
        res, outs = {}, {}
        for k, dt in v.score_fields(dtype, y is not None, tq is not None).items():
            res[k], outs[k] = sp.empty(batch, dt)
        fault = sp.k.score(rows.data, y, ignore_index, tq, 1.0 / t, outs)
        if fault is not None:
            raise v.label_out_of_range("labels", fault[1], v.row_name(fault[0], batch), c,
                                       ignore_index)  # fmt: skip
        for k in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
            if k in outs:
                sp.units(outs[k], divisor)
        ignored = None if y is None else sp.equals(y, ignore_index, batch)
        return Scores(ignored=ignored, base=base, **res)
