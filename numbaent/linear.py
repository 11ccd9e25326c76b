"""Scoring from hidden states: ``score`` / ``softmax_cross_entropy`` of ``hidden @ weight.T + bias``
without ever holding the (rows x V) logits.

A language model's logits do not fit (8192 tokens x 151,936 classes is 5 GB of float32); its last
hidden states (rows x d) and LM-head weight (V x d) do. :func:`linear_score` cuts the vocabulary
into chunks of ``chunk_classes`` classes and the rows into row chunks, so that one chunk of
logits (plus, with a teacher, the teacher's) fills a reused scratch of at most
:data:`SCRATCH_BYTES`. Each chunk of logits comes from the array library's own matrix product
(BLAS through NumPy on the host, cuBLAS through CuPy / torch on a GPU), is scored by the backend's
``score`` kernel as a row of its own, and is folded at once into per-row float64 states:

* L, the log-sum-exp of logits / T so far; E, the entropy of the softmax over the classes so far;
  P2 = sum p^2 of that softmax; M, M2, A: the largest and second-largest logit and the first
  index holding M; Y, the label's logit once its chunk has been seen, and the count of classes
  ranked above it; with a teacher Lt (its log-sum-exp) and K = KL(teacher || model) over the
  classes so far.

Two states over disjoint classes (a over earlier classes, b) merge exactly: L = logaddexp(La, Lb),
with log-weights la = La - L and lb = Lb - L, E = e^la (Ea - la) + e^lb (Eb - lb),
P2 = e^2la P2a + e^2lb P2b, and with the teacher's log-weights ta, tb (Lt likewise)
K = e^ta (Ka + ta - la) + e^tb (Kb + tb - lb). A chunk's own state comes from its score:
Lb = logsumexp, Eb = entropy, Mb = the chunk's logit at its argmax (read from the scratch, so
ties between chunks stay exact), M2b from margin / confidence = 1 - exp((M2b - Mb) / T), P2b from
the Brier score of a known column (brier + 2 p_j - 1), Kb from the chunk's KL to the teacher
chunk, Ltb from the teacher chunk's log-sum-exp.

The rank counts, in every chunk, the classes above the label (a larger logit, or an equal one at
a lower index) against the label's logit as the products make it: known from the chunk of the
label's first twin on (the first class whose weight row and bias equal the label's, found once
per call from a fingerprint product; its logit equals the label's bit for bit, so ties with
duplicated classes stay exact), and before that the label's logit computed from the inputs in
float64 (one dot product per row). So ranks can differ from ``score(hidden @ weight.T)`` only
where a class that is not a copy of the label has a logit within the product's rounding of the
label's, in a chunk before the label's.

Cost: 2 N V d flops for the products; each chunk of logits is then read three or four times
(bias, score, rank count, teacher) while it is in cache, which is small beside the product for
any d of a language model (see docs/scaling.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _op
from . import _validate as v
from ._types import Scores

ArrayLike = Any

__all__ = ["linear_cross_entropy", "linear_score", "SCRATCH_BYTES"]

#: the most bytes of scratch a call holds: the chunk of logits (and the teacher's), and the widened
#: chunks of float16 / bfloat16 hidden states and weights
SCRATCH_BYTES = 32 << 20
#: classes per chunk when ``chunk_classes`` is not given (fewer when d is large and the weight is
#: widened, so the widened chunk stays within the scratch)
DEFAULT_CHUNK = 4096


def linear_score(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    teacher: tuple | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    base: float | None = None,
    chunk_classes: int | None = None,
    backend: str | None = None,
) -> Scores:
    """:func:`numbaent.score` of the logits ``hidden @ weight.T + bias``, without holding them.

    Parameters
    ----------
    hidden : array_like, shape (..., d)
        Last hidden states (float16, bfloat16, float32 or float64); the batch shape is
        ``hidden.shape[:-1]``.
    weight : array_like, shape (V, d)
        The LM head (output projection): one row per class.
    labels : array_like of int, shape (...), optional
        As in :func:`numbaent.score`.
    bias : array_like, shape (V,), optional
    teacher : tuple, optional
        ``(teacher_hidden, teacher_weight)`` or ``(teacher_hidden, teacher_weight,
        teacher_bias)``: the teacher's logits, of the same batch shape and V (its d may differ),
        for ``kl_divergence`` (teacher || model).
    temperature, ignore_index, base, backend
        As in :func:`numbaent.score`.
    chunk_classes : int, optional
        Classes per chunk (default: :data:`DEFAULT_CHUNK`, or fewer, so that the scratch stays
        within :data:`SCRATCH_BYTES`). The rows are chunked to fit the same scratch.

    Returns
    -------
    Scores
        Every field of :func:`numbaent.score` (within float32 tolerance of it: the chunked matrix
        product rounds differently from a whole one).

    Raises
    ------
    ValueError
        Shapes that do not match (``hidden`` (..., d), ``weight`` (V, d), ``bias`` (V,)),
        a bad ``teacher`` tuple, ``chunk_classes`` < 1, a bad temperature or base.
    TypeError
        Non-floating inputs, non-integer labels.
    IndexError
        A label outside [0, V) that is not ``ignore_index`` (the message names the row).

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((4, 8)).astype(np.float32)
    >>> w = rng.standard_normal((10, 8)).astype(np.float32)
    >>> y = np.array([1, 2, 3, 4])
    >>> s = numbaent.linear_score(h, w, y, chunk_classes=3)
    >>> bool(np.allclose(s.cross_entropy, numbaent.score(h @ w.T, y).cross_entropy, atol=1e-5))
    True
    """
    th, tw, tb = _teacher_parts(teacher)
    return _linear(hidden, weight, labels, bias, th, tw, tb, None, mode="score",
                   temperature=temperature, ignore_index=ignore_index, base=base,
                   chunk_classes=chunk_classes, backend=backend)  # fmt: skip


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    weight_classes: ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "none",
    temperature: float = 1.0,
    base: float | None = None,
    chunk_classes: int | None = None,
    backend: str | None = None,
):
    """:func:`numbaent.softmax_cross_entropy` of ``hidden @ weight.T + bias`` with integer labels,
    without holding the logits (see :func:`linear_score` for the chunking).

    ``weight_classes`` is the per-class weight (``weight`` of ``softmax_cross_entropy``: torch
    semantics); ``label_smoothing``, ``reduction`` and ``temperature`` as there.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> h = np.eye(3, dtype=np.float32); w = 2 * np.eye(3, dtype=np.float32)
    >>> numbaent.linear_cross_entropy(h, w, np.array([0, 1, 0])).round(4)
    array([0.2395, 0.2395, 2.2395], dtype=float32)
    """
    return _linear(hidden, weight, target, bias, None, None, None, weight_classes, mode="ce",
                   temperature=temperature, ignore_index=ignore_index, base=base,
                   chunk_classes=chunk_classes, backend=backend, label_smoothing=label_smoothing,
                   reduction=reduction)  # fmt: skip


def _teacher_parts(teacher):
    if teacher is None:
        return None, None, None
    if not isinstance(teacher, (tuple, list)) or len(teacher) not in (2, 3):
        raise ValueError(
            "teacher must be a tuple (teacher_hidden, teacher_weight[, teacher_bias]); got "
            f"{type(teacher).__name__}"
            + (f" of length {len(teacher)}" if isinstance(teacher, (tuple, list)) else "")
        )
    return teacher[0], teacher[1], teacher[2] if len(teacher) == 3 else None


# ----------------------------------------------------------------------------------------------
# the one op body


@_op.op(
    "hidden",
    "weight",
    "labels",
    "bias",
    "teacher_hidden",
    "teacher_weight",
    "teacher_bias",
    "weight_classes",
)
def _linear(hidden, weight, labels, bias, teacher_hidden, teacher_weight, teacher_bias,
            weight_classes, *, mode, temperature,
            ignore_index, base, chunk_classes, backend, label_smoothing=0.0,
            reduction="none"):  # fmt: skip
    ce_mode = mode == "ce"
    if ce_mode:
        divisor = v.options(base, reduction, "propagate")
        eps = v.check_label_smoothing(label_smoothing)
    else:
        divisor = v.base_divisor(base)
        eps = 0.0
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    with _op.space(backend, hidden, weight, labels, bias, teacher_hidden, teacher_weight,
                   teacher_bias) as sp:  # fmt: skip
        h, w, b = _inputs(sp, hidden, weight, bias, "hidden", "weight", "bias")
        batch = tuple(h.shape[:-1])
        n = math.prod(batch)
        nv = w.shape[0]
        h2 = sp.rows(h, h.ndim - 1, "hidden").data
        teacher = None
        if teacher_hidden is not None:
            th, tw, tb = _inputs(sp, teacher_hidden, teacher_weight, teacher_bias, "teacher_hidden",
                                 "teacher_weight", "teacher_bias")  # fmt: skip
            if tuple(th.shape[:-1]) != batch or tw.shape[0] != nv:
                raise ValueError(
                    f"teacher: teacher_hidden {tuple(th.shape)} and teacher_weight "
                    f"{tuple(tw.shape)} must give logits of the model's shape {batch + (nv,)}"
                )
            teacher = (sp.rows(th, th.ndim - 1, "teacher_hidden").data, tw, tb)
        dtype = v.math_dtype(h2, w, b, *(teacher or ()))
        tname = "target" if ce_mode else "labels"
        y = None
        if labels is not None or ce_mode:
            y = sp.labels(labels, tname, batch)
            yh = sp.host(y)
            bad = np.flatnonzero((yh != ignore_index) & ((yh < 0) | (yh >= nv)))
            if bad.size:
                i = int(bad[0])
                raise v.label_out_of_range(tname, int(yh[i]), v.row_name(i, batch), nv,
                                           ignore_index)  # fmt: skip
        else:
            yh = None
        cls_w = None
        if weight_classes is not None:
            cls_w = sp.host(sp.weight(weight_classes, nv, np.float64))
        plan = _plan(n, nv, h2, w, teacher, dtype, chunk_classes)
        st = _fold(sp, h2, w, b, yh, teacher, 1.0 / t, ignore_index, dtype, plan,
                   smooth_w=(cls_w if cls_w is not None else 1.0) if eps else None,
                   ce_only=ce_mode)  # fmt: skip
        if ce_mode:
            return _finish_ce(sp, st, yh, cls_w, eps, nv, ignore_index, 1.0 / t, dtype, batch,
                              divisor, reduction)  # fmt: skip
        fields = _finish_scores(st, yh, ignore_index, 1.0 / t, dtype, teacher is not None)
        for k in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
            if k in fields and divisor != 1.0:
                v.to_units(fields[k], divisor)
        res = {k: sp.result(a.reshape(batch)) for k, a in fields.items()}
        ignored = None if y is None else sp.equals(y, ignore_index, batch)
        return Scores(ignored=ignored, base=base, **res)


def _inputs(sp, hidden, head, bias, hname, wname, bname):
    """Validated (hidden, weight, bias) of one model; ValueError for shapes that do not fit."""
    h = sp.logits(hidden, hname)
    w = sp.logits(head, wname)
    if h.ndim < 1:
        raise ValueError(f"{hname} must have at least one dimension (d); got a scalar")
    if w.ndim != 2:
        raise ValueError(f"{wname} must be 2-D (V, d); got shape {tuple(w.shape)}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(
            f"{wname} {tuple(w.shape)} and {hname} {tuple(h.shape)}: the last dimensions (d) "
            "must match"
        )
    b = None
    if bias is not None:
        b = sp.logits(bias, bname)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"{bname} must have shape ({w.shape[0]},); got {tuple(b.shape)}")
    return h, w, b


def _plan(n, nv, h2, w, teacher, dtype, chunk_classes):
    """(rows per chunk, classes per chunk): the chunk of logits (and the teacher's) and the
    widened half chunks fit :data:`SCRATCH_BYTES`."""
    item = np.dtype(dtype).itemsize
    nbuf = 2 if teacher is not None else 1
    models = [(h2, w)] + ([teacher[:2]] if teacher is not None else [])
    half_w = sum(m[1].shape[1] for m in models if m[1].dtype.itemsize < item)  # widened weight
    half_h = sum(m[0].shape[1] for m in models if m[0].dtype.itemsize < item)  # widened rows
    if chunk_classes is not None:
        vc = v.check_int(chunk_classes, "chunk_classes")
        if vc < 1:
            raise ValueError(f"chunk_classes must be >= 1; got {vc}")
    else:
        vc = DEFAULT_CHUNK
        if half_w:  # the widened weight chunk takes at most half the scratch
            vc = max(64, min(vc, SCRATCH_BYTES // 2 // (item * half_w)))
    vc = max(1, min(vc, nv))
    left = max(SCRATCH_BYTES - item * vc * half_w, SCRATCH_BYTES // 4)
    rows = max(1, left // (item * (vc * nbuf + half_h)))
    return max(1, min(rows, n)), vc


class _State:
    """Per-row float64 states of one row chunk (see the module docstring)."""

    def __init__(self, n, labels, teacher):
        self.L = np.full(n, -np.inf)
        self.E = np.zeros(n)
        self.P2 = np.zeros(n)
        self.M = np.full(n, -np.inf)
        self.M2 = np.full(n, -np.inf)
        self.A = np.zeros(n, np.int64)
        if labels:
            self.Y = np.full(n, np.nan)
            self.thr = np.full(n, np.nan)  # the label's logit as the products make it
            self.known = np.zeros(n, bool)  # ... once its first twin's chunk is folded
            self.above = np.zeros(n, np.int64)
        if teacher:
            self.Lt = np.full(n, -np.inf)
            self.K = np.zeros(n)


@np.errstate(all="ignore")  # NaN / inf rows: their fields are NaN, by rule
def _weights(la, lb, l_new):
    """exp of the log-weights La - L, Lb - L (0 where a side is empty)."""
    with np.errstate(invalid="ignore"):
        da = np.where(la == -np.inf, -np.inf, la - l_new)
        db = np.where(lb == -np.inf, -np.inf, lb - l_new)
    return da, db, np.exp(da), np.exp(db)


def _fold(sp, h2, w, b, y, teacher, inv_t, ignore_index, dtype, plan, smooth_w, ce_only):
    """Chunk by chunk: the product into the scratch, the backend's score of the chunk, merged
    into float64 row states (one _State per call: rows chunk after chunk). ``smooth_w``: with
    label smoothing, the class weights (or 1.0) of sum_j w_j x_j, which is gathered too."""
    n, nv = h2.shape[0], w.shape[0]
    rows, vc = plan
    st = _State(n, y is not None, teacher is not None)
    if smooth_w is not None:
        st.WX = np.zeros(n)
    buf = sp.scratch((rows * vc,), dtype)
    tbuf = sp.scratch((rows * vc,), dtype) if teacher is not None else None
    wide: dict = {}
    labelled = y is not None and not ce_only
    first = _first_twins(sp, w, b, dtype, vc, wide) if labelled else None
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        nr = r1 - r0
        hr = h2[r0:r1]
        yr = None if y is None else y[r0:r1]
        xy = None
        if labelled:
            xy = sp.label_logits(hr, w, b, yr, ignore_index, dtype)
        for c0 in range(0, nv, vc):
            c1 = min(nv, c0 + vc)
            x = buf[: nr * (c1 - c0)].reshape(nr, c1 - c0)
            sp.product(hr, w[c0:c1], None if b is None else b[c0:c1], x, wide, "model")
            xt = None
            if teacher is not None:
                xt = tbuf[: nr * (c1 - c0)].reshape(nr, c1 - c0)
                tb = teacher[2]
                sp.product(teacher[0][r0:r1], teacher[1][c0:c1],
                           None if tb is None else tb[c0:c1], xt, wide, "teacher")  # fmt: skip
            _fold_chunk(sp, st, r0, r1, c0, x, xt, yr, xy, inv_t, ignore_index, labelled,
                        smooth_w, ce_only, first)  # fmt: skip
    return st


def _first_twins(sp, w, b, dtype, vc, wide):
    """Per class, the first class with the same weight row and bias (itself when none): a twin
    of the label has the label's logit in every row, bit for bit, so the rank count takes the
    label's logit from the first twin's chunk on and ties stay exact. Found by one product of the
    weight with a random vector (a fingerprint per class), then checked row by row."""
    nv, d = w.shape
    r = np.random.default_rng(0x5EED).standard_normal((1, d)).astype(dtype)
    rd = sp.put(r)
    fp = np.empty(nv, np.float64)
    out = sp.scratch((vc,), dtype)
    for c0 in range(0, nv, vc):
        c1 = min(nv, c0 + vc)
        o = out[: c1 - c0].reshape(1, c1 - c0)
        sp.product(rd, w[c0:c1], None if b is None else b[c0:c1], o, wide, "twins")
        fp[c0:c1] = sp.host(o).reshape(-1)
    first = np.arange(nv)
    order = np.argsort(fp, kind="stable")  # equal fingerprints: runs, in class order
    f = fp[order]
    same = np.flatnonzero(f[1:] == f[:-1])
    if not same.size:
        return first
    wh = bh = None
    for k in same:
        i, j = int(order[k]), int(order[k + 1])  # j > i: the stable sort keeps class order
        root = int(first[i])
        if wh is None:
            wh, bh = {}, {}
        for c in (root, j):
            if c not in wh:
                wh[c] = sp.host(w[c : c + 1]).astype(np.float64)
                bh[c] = 0.0 if b is None else float(sp.host(b[c : c + 1])[0])
        if np.array_equal(wh[root], wh[j]) and bh[root] == bh[j]:
            first[j] = root
    return first


def _chunk_score(sp, x, yl, xt, inv_t):
    """The backend's score of a chunk as rows of their own (local labels ``yl``), float64 fields
    on the host."""
    outs = {k: sp.scratch((x.shape[0],), dt)
            for k, dt in v.score_fields(np.float64, True, xt is not None).items()}  # fmt: skip
    sp.k.score(x, sp.put(yl), -1, xt, inv_t, outs)
    return {k: sp.host(a) for k, a in outs.items()}


@np.errstate(all="ignore")  # NaN / inf rows: their fields are NaN, by rule
def _fold_chunk(sp, st, r0, r1, c0, x, xt, yr, xy, inv_t, ignore_index, labelled, smooth_w,
                ce_only, first):  # fmt: skip
    nr, c = x.shape
    sl = slice(r0, r1)
    inside = None
    yl = np.zeros(nr, np.int64)  # every row a label (the Brier score gives sum p^2), and one
    if yr is not None:  # compiled variant of the kernel per teacher / dtype, not four
        inside = (yr != ignore_index) & (yr >= c0) & (yr < c0 + c)
        yl = np.where(inside, yr - c0, 0)
    o = _chunk_score(sp, x, yl, xt, inv_t)
    lb = o["logsumexp"]
    la = st.L[sl]
    l_new = np.logaddexp(la, lb)
    da, db, wa, wb = _weights(la, lb, l_new)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        st.E[sl] = np.where(wa > 0, wa * (st.E[sl] - da), 0.0) + np.where(
            wb > 0, wb * (o["entropy"] - db), 0.0
        )
        # the chunk's max, read at its argmax (exact, so that ties across chunks stay ties)
        amb = o["argmax"]
        mb = sp.take(x, amb)
        ratio = np.minimum(o["margin"] / o["confidence"], 1.0)
        m2b = np.where(lb == -np.inf, -np.inf, mb + np.log1p(-ratio) / inv_t)
        ma = st.M[sl]
        take = (mb > ma) | (np.isnan(mb) & ~np.isnan(ma))
        st.M2[sl] = np.fmax(np.fmin(ma, mb), np.fmax(st.M2[sl], m2b))
        st.A[sl] = np.where(take, amb + c0, st.A[sl])
        st.M[sl] = np.where(take, mb, ma)
        if labelled:
            # sum p^2 from the Brier score of the label column (or column 0): brier + 2 p_j - 1
            xj = sp.take(x, yl)
            p2b = o["brier"] + 2.0 * np.exp(xj * inv_t - lb) - 1.0
            st.P2[sl] = np.where(wa > 0, wa * wa * st.P2[sl], 0.0) + np.where(
                wb > 0, wb * wb * p2b, 0.0
            )
        if xt is not None:
            ltb = _chunk_score(sp, xt, yl, None, inv_t)["logsumexp"]
            lta = st.Lt[sl]
            lt_new = np.logaddexp(lta, ltb)
            ta, tb, ua, ub = _weights(lta, ltb, lt_new)
            ka = np.where(ua > 0, ua * (st.K[sl] + ta - da), 0.0)
            kb = np.where(ub > 0, ub * (o["kl_divergence"] + tb - db), 0.0)
            st.K[sl] = ka + kb
            st.Lt[sl] = lt_new
    st.L[sl] = l_new
    if yr is not None:
        idx = np.flatnonzero(inside)
        if idx.size:
            st.Y[r0 + idx] = sp.take(x, yl)[idx]
        if smooth_w is not None:
            st.WX[sl] += sp.weighted_sum(x, smooth_w if np.ndim(smooth_w) == 0
                                         else smooth_w[c0:c0 + c])  # fmt: skip
        if labelled:
            # classes ranked above the label: against its logit as the products make it from
            # the chunk of its first twin on (the label itself, or an identical class before
            # it), before that against the float64 dot product; ties count at a lower index
            valid = yr != ignore_index
            f = first[np.where(valid, yr, 0)]
            now = valid & ~st.known[sl] & (f >= c0) & (f < c0 + c)
            idx = np.flatnonzero(now)
            if idx.size:
                st.thr[r0 + idx] = sp.take(x, np.where(now, f - c0, 0))[idx]
                st.known[r0 + idx] = True
            thr = np.where(st.known[sl], st.thr[sl], xy)
            lab = np.where(inside, yl, np.where(yr >= c0 + c, c, -1))
            cnt = sp.scratch((nr,), np.int64)
            sp.k.count_above(x, sp.put(thr), sp.put(lab.astype(np.int64)), cnt)
            st.above[sl] += np.where(valid, sp.host(cnt), 0)


@np.errstate(all="ignore")  # NaN / inf rows: their fields are NaN, by rule
def _finish_scores(st, y, ignore_index, inv_t, dtype, teacher):
    """The Scores fields (float64 -> dtype) of the merged states."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        valid = np.isfinite(st.L)
        lse = st.L
        ent = np.where(valid, np.maximum(st.E, 0.0), np.nan)
        conf = np.where(valid, np.exp(st.M * inv_t - st.L), np.nan)
        margin = np.where(valid, conf * -np.expm1((st.M2 - st.M) * inv_t), np.nan)
        f = {"logsumexp": lse, "entropy": ent, "argmax": st.A.copy(), "confidence": conf,
             "margin": margin}  # fmt: skip
        if y is not None:
            ign = y == ignore_index
            ce = np.where(valid, st.L - st.Y * inv_t, np.nan)
            brier = np.where(valid, np.maximum(st.P2 - 2.0 * np.exp(-ce) + 1.0, 0.0), np.nan)
            rank = np.where(valid & ~ign, st.above, -1)
            f.update(cross_entropy=np.where(ign, 0.0, ce), correct=rank == 0, rank=rank,
                     brier=np.where(ign, 0.0, brier))  # fmt: skip
        if teacher:
            ok = valid & np.isfinite(st.Lt)
            f["kl_divergence"] = np.where(ok, np.maximum(st.K, 0.0), np.nan)
        for k in ("logsumexp", "entropy", "confidence", "margin", "cross_entropy", "brier",
                  "kl_divergence"):  # fmt: skip
            if k in f:
                f[k] = f[k].astype(dtype)
    return f


@np.errstate(all="ignore")  # NaN / inf rows: their fields are NaN, by rule
def _finish_ce(sp, st, y, cls_w, eps, nv, ignore_index, inv_t, dtype, batch, divisor, reduction):
    """softmax_cross_entropy's per-row loss from the merged states, then its finishing."""
    ign = y == ignore_index
    safe = np.where(ign, 0, y)
    wy = 1.0 if cls_w is None else cls_w[safe]
    with np.errstate(invalid="ignore", over="ignore"):
        nll = np.where(np.isfinite(st.L), st.L - st.Y * inv_t, np.nan)
        loss = (1.0 - eps) * wy * nll
        if eps:
            wsum = float(nv) if cls_w is None else float(np.sum(cls_w))
            # sum_j w_j (-log p_j) = L sum_j w_j - sum_j w_j x_j / T (L: the lse of x / T)
            loss = loss + eps / nv * (st.L * wsum - st.WX * inv_t)
    loss = np.where(ign, 0.0, loss).astype(dtype)
    row_w = None
    if cls_w is not None:
        row_w = np.where(ign, 0.0, wy)
    elif reduction == "mean":
        row_w = (~ign).astype(np.float64)
    tgt, final = v.outputs(None, batch, dtype, reduction)
    tgt[...] = loss
    return sp.finish(sp.result(tgt), batch, final, None, divisor=divisor, reduction=reduction,
                     nan_policy="propagate", nan_inputs={}, weights=row_w)  # fmt: skip
