"""numbaent for Dask arrays: the same functions, lazy, on arrays larger than one machine.

``import numbaent.dask`` (``import numbaent`` never imports Dask). Every function takes
``dask.array`` inputs (NumPy or other array-likes are wrapped as one chunk) and returns lazy dask
arrays: per-row results chunked like the input's rows, and, for ``reduction="sum"`` / ``"mean"``,
a 0-d float64 dask array (``.compute()`` gives a NumPy float64, which is a Python float). Results
equal the in-memory functions of :mod:`numbaent` up to rounding (float64: 1e-12) and keep their
semantics: dtypes, NaN handling, ``ignore_index``, weighted means, errors (raised at compute
time, naming the row in the whole array).

How the work is split
---------------------
* **Row chunks** (one chunk along the class axis): each block of rows goes through the in-memory
  function (``numbaent.softmax_cross_entropy(block, ...)`` and so on) in one task. This is the
  fast path; chunk so that a block is 64-256 MB (see ``docs/scaling.md``).
* **Class chunks** (several chunks along the class axis), logit space: :func:`logsumexp`,
  :func:`softmax_entropy`, :func:`log_softmax`, :func:`softmax`, :func:`score` (without a
  teacher, at temperature 1; its ``rank`` from the label's logit, gathered first) and
  :func:`softmax_cross_entropy` with integer labels (``weight`` allowed, no
  ``label_smoothing``) reduce each block to a :class:`numbaent.LogitState` and merge the states of
  a row's class blocks in a tree (``SPLIT_EVERY`` at a time, :func:`dask.array.reduction`); exact,
  and no task ever holds more than one block of logits. :func:`log_softmax` / :func:`softmax`
  read the logits twice (states, then the output).
* **Class chunks**, probability space: -sum p log p, -sum p log q, sum p log(p/q) and the JS terms
  are sums over classes, so each block is reduced on its own and the per-block sums are added
  (in float64). With ``normalize=True`` the row sums are computed first (the inputs are read twice).
* **Hidden states**: :func:`linear_score` / :func:`linear_cross_entropy` take ``hidden``
  (..., d) chunked along its rows only, and the weight (V, d) and bias (V,) whole; each row block
  goes through :func:`numbaent.linear_score` (which never holds its block's logits) in one task.
* Anything else with class chunks (soft targets or ``label_smoothing`` in
  :func:`softmax_cross_entropy`, :func:`softmax_kl_divergence`, :func:`score` with a teacher or
  a temperature other than 1) is rechunked to a single class chunk first: each task then holds
  ``rows_per_chunk x C`` values (of each input), and the rechunk moves every byte of the logits
  between workers once.

Backends: ``backend`` is passed to every block's call; ``None`` / ``"auto"`` picks ``"cuda"`` for
CuPy-backed chunks (results stay CuPy-backed) and ``"cpu"`` for NumPy chunks. The cpu backend's
Numba threads run inside each Dask worker thread: give workers one thread each
(``threads_per_worker=1``) and let Numba use the cores, or set ``NUMBA_NUM_THREADS`` to the
cores per worker thread, so the two do not oversubscribe the machine.

Examples
--------
>>> import numpy as np, dask.array as da, numbaent, numbaent.dask as nd
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((1000, 50)); y = rng.integers(0, 50, 1000)
>>> lx = da.from_array(x, chunks=(300, 50))        # row chunks
>>> loss = nd.softmax_cross_entropy(lx, da.from_array(y, chunks=300), reduction="mean")
>>> loss.shape, loss.dtype                          # lazy: nothing computed yet
((), dtype('float64'))
>>> bool(np.isclose(loss.compute(), numbaent.softmax_cross_entropy(x, y, reduction="mean")))
True
>>> cx = da.from_array(x, chunks=(300, 16))        # class chunks: partial states
>>> bool(np.allclose(nd.logsumexp(cx).compute(), numbaent.logsumexp(x), rtol=1e-12))
True
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.array.utils import meta_from_array

from . import _arrays, _backend
from . import _validate as v
from . import linear as _linear
from . import logits as _logits
from . import probability as _prob
from ._sequences import SequenceScores
from ._summary import SummaryState, check_bins, check_top_k
from ._types import Scores, to_numpy
from .linear import _teacher_parts
from .partial import combine as _combine_states
from .partial import partial_state
from .scoring import score as _score

__all__ = [
    "DaskScores",
    "cross_entropy",
    "entropy",
    "js_divergence",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_score",
    "log_softmax",
    "logsumexp",
    "score",
    "softmax",
    "softmax_cross_entropy",
    "softmax_entropy",
    "softmax_kl_divergence",
]

#: how many class blocks' states one task of the tree reduction merges
SPLIT_EVERY = 8

_LETTERS = "abcdefghijklmnopqrstuvwxy"  # batch axes; "z" is the class axis, "w" a weight vector
_ROW = re.compile(r"\brow (\((?:\d+, )*\d+,?\)|\d+)")

ArrayLike = Any


# --------------------------------------------------------------------------------------------------
# inputs


def _dask(a, name: str):
    if isinstance(a, da.Array):
        return a
    if a is None:
        return None
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = np.asarray(a)
    return da.from_array(a, chunks=-1, name=False)


def _check_backend(backend):
    if backend is not None:
        _backend._check_name(backend)


def _class_last(x, axis, name: str):
    ax = v.check_axis(axis, x.ndim, name)
    return x if ax == x.ndim - 1 else da.moveaxis(x, ax, -1)


def _logits_arg(x, axis, name="logits"):
    x = _dask(x, name)
    v.check_logit_dtype(x.dtype, name)
    return _class_last(x, axis, name)


def _prob_arg(p, name):
    p = _dask(p, name)
    v.prob_conversion(p.dtype, name)  # raises for non-real dtypes
    return p


def _result_dtype(*arrays) -> np.dtype:
    """float64 if any input is float64 or will be converted to it (integers, bools), else float32."""
    for a in arrays:
        if a is not None and (a.dtype == np.float64 or a.dtype.kind in "biu"):
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def _batch_like(a, x, name):
    """``a`` (labels: the logits' shape without the class axis) chunked like x's rows."""
    a = _dask(a, name)
    v.check_labels(a.dtype, a.shape, name, x.shape[:-1])
    return a.rechunk(x.chunks[:-1]) if a.chunks != x.chunks[:-1] else a


def _vector(w, c, name="weight"):
    w = _dask(w, name)
    v.check_weight(w.shape, c)
    return w.rechunk(-1)


def _one_class_chunk(*arrays):
    """Rechunk the class axis (last) of each array to a single chunk (documented cost)."""
    return [a if a is None or a.numblocks[-1] == 1 else a.rechunk({a.ndim - 1: -1}) for a in arrays]


def _class_chunked(x) -> bool:
    return x.numblocks[-1] > 1


def _with_row_axis(x):
    """1-D input (one row): add a batch axis so every block has rows; results are indexed [0]."""
    return x[None, :] if x.ndim == 1 else x


# --------------------------------------------------------------------------------------------------
# block plumbing: every block function gets the global start of its rows, for error messages


def _relocated(exc: Exception, starts: tuple[int, ...]) -> Exception:
    """The same exception with the block-local row in its message made global."""

    def sub(mt):
        local = [int(t) for t in re.findall(r"\d+", mt.group(1))]
        if len(local) != len(starts):
            return mt.group(0)
        g = [a + b for a, b in zip(local, starts, strict=True)]
        return "row " + (str(g[0]) if len(g) == 1 else str(tuple(g)))

    msg, n = _ROW.subn(sub, str(exc), count=1)
    if not n:
        msg = f"{msg} (in the block of rows starting at {starts})"
    return type(exc)(msg)


def _entry(*blocks, fn, n_arrays, n_starts, kwargs, like=None):
    arrays = blocks[:n_arrays]
    starts = tuple(int(b[0]) if b.size else 0 for b in blocks[n_arrays : n_arrays + n_starts])
    try:
        res = fn(*arrays, *blocks[n_arrays + n_starts :], **kwargs)
    except (ValueError, IndexError) as exc:
        raise _relocated(exc, starts) from None
    return _like(res, like)


def _like(res, like):
    """``res`` as the array type of ``like`` (CuPy chunks give CuPy results); None: as it is."""
    if like is None or isinstance(res, Scores) or not hasattr(res, "dtype"):
        return res
    return np.asarray(res, like=like)


def _device_like(x, dtype):
    """The meta to convert host results to, for device-backed ``x``; None for NumPy chunks."""
    if isinstance(x._meta, np.ndarray) or np.dtype(dtype) == object:
        return None
    return x._meta


def _row_block_map(fn, x, arrays, *, out, dtype, meta_ndim=None, extra=(), **kw):
    """blockwise over the row blocks of ``x`` (class axis last).

    ``arrays``: (array, kind) with kind "rows+class" (x-shaped), "rows" (batch-shaped), "class"
    (1-D along the class axis), "vector" (1-D, whole, contracted), "scalar" (0-d), or for
    :func:`linear_score` "weight" / "teacher_weight" (2-D, whole), "bias" (1-D of length V,
    whole) and "teacher_rows" (batch-shaped plus its own last axis). ``out``:
    "rows" (per-row results), "rows+class" (x-shaped), or "rows+1" (one value per class block).
    ``fn(*blocks, *extra_blocks, **kw)``; errors name global rows.
    """
    k = x.ndim - 1
    bi = _LETTERS[:k]
    inds = {
        "rows+class": bi + "z",
        "rows": bi,
        "rows+2": bi + "s",
        "class": "z",
        "vector": "w",
        "scalar": "",
        # scores from hidden states: the weight (V, d) and bias (V,) whole, the teacher's hidden
        # states (rows, its own d), its weight (V, d') (capitals: never a batch axis)
        "weight": "VD",
        "bias": "V",
        "teacher_rows": bi + "T",
        "teacher_weight": "VE",
    }
    args: list = []
    for a, kind in arrays:
        args += [a, inds[kind]]
    for d in range(k):
        args += [da.arange(x.shape[d], chunks=x.chunks[d]), bi[d]]
    for a, kind in extra:
        args += [a, inds[kind]]
    out_ind = {"rows": bi, "rows+class": bi + "z", "rows+1": bi + "z"}[out]
    adjust_chunks = {"z": 1} if out == "rows+1" else None
    meta = _meta(arrays[0][0], len(out_ind) if meta_ndim is None else meta_ndim, dtype)
    return da.blockwise(
        _entry,
        out_ind,
        *args,
        dtype=dtype,
        meta=meta,
        concatenate=True,
        adjust_chunks=adjust_chunks,
        fn=fn,
        n_arrays=len(arrays),
        n_starts=k,
        kwargs=kw,
        like=_device_like(x, dtype),
    )


def _meta(like, ndim, dtype):
    if np.dtype(dtype) == object:
        return np.empty((0,) * ndim, dtype=object)
    return meta_from_array(like, ndim=ndim, dtype=dtype)


def _safe_div(total, denom):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(np.float64(total), np.float64(denom))


def _reduce(per_row, reduction: str, denom=None):
    """``reduction`` of per-row results: the array, or a 0-d float64 dask array."""
    if reduction == "none":
        return per_row
    total = per_row.sum(dtype=np.float64)
    if reduction == "sum":
        return total
    if denom is None:
        n = math.prod(per_row.shape)
        denom = da.ones_like(per_row, dtype=np.float64).sum() if math.isnan(n) else float(n)
    if isinstance(denom, da.Array):
        return da.map_blocks(_safe_div, total, denom, dtype=np.float64)
    return total.map_blocks(_safe_div, denom, dtype=np.float64)


def _squeeze_row(res, one_d: bool):
    return res[0] if one_d else res


# --------------------------------------------------------------------------------------------------
# probability space


def _prob_block(p, q, *rest, op, kw):
    if q is None:
        return getattr(_prob, op)(p, **kw)
    return getattr(_prob, op)(p, q, **kw)


def _prob_block_sum(p, q, *rest, op, kw, names, normalize):
    """One class block of an additive probability function: (..., 1) partial sums."""
    if normalize:
        sp = rest[0]
        sq = rest[1] if len(rest) > 1 else None
        batch = p.shape[:-1]
        for a, name in ((p, names[0]), (q, names[1])):
            if a is not None:
                _raise_negative(a, name, batch)
        if kw["nan_policy"] == "raise":
            for a, name in ((p, names[0]), (q, names[1])):
                if a is not None:
                    _raise_nan(a, name, batch)
        kw = dict(kw, nan_policy="propagate", normalize=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = p.astype(np.float64) / sp.astype(np.float64)[..., None]
            if q is not None:
                sq = sq.astype(np.float64)
                q = q.astype(np.float64) / (sq[..., None] if q.ndim == p.ndim else sq)
    res = _prob_block(p, q, op=op, kw=kw)
    return res.astype(np.float64)[..., None]


def _bad_row(bad_rows, a, batch):
    """Row name of the first True of ``bad_rows`` (a 1-D ``a`` is shared: its fault is row 0's)."""
    if a.ndim == 1:
        return v.row_name(0, batch)
    return v.row_name(int(bad_rows.nonzero()[0][0]), batch)


def _raise_negative(a, name, batch):
    bad = (a < 0).reshape(-1, a.shape[-1]).any(axis=1)
    if bad.any():
        raise v.negative_entry(name, _bad_row(bad, a, batch))


def _raise_nan(a, name, batch):
    if a.dtype.kind in "biu":
        return
    bad = (a != a).reshape(-1, a.shape[-1]).any(axis=1)
    if bad.any():
        raise v.nan_row(name, _bad_row(bad, a, batch))


def _prob_call(op, p, q, *, base, axis, normalize, reduction, nan_policy, backend, names):
    v.options(base, reduction, nan_policy)
    _check_backend(backend)
    pn, qn = names
    p = _prob_arg(p, pn)
    ax = v.check_axis(axis, p.ndim, pn)
    if q is not None:
        q = _prob_arg(q, qn)
        v.check_same_shape(p, q, pn, qn, ax)
        if q.ndim == p.ndim:
            q = _class_last(q, ax, qn)
    p = _class_last(p, ax, pn)
    shared_q = q is not None and q.ndim == 1 and p.ndim > 1
    one_d = p.ndim == 1
    if one_d:
        p = p[None, :]
        q = None if q is None else q[None, :]
    dtype = _result_dtype(p, q)
    kw = dict(base=base, axis=-1, normalize=bool(normalize), nan_policy=nan_policy, backend=backend)
    if not _class_chunked(p):
        arrays = [(p, "rows+class")]
        if q is not None:
            q = q.rechunk(-1) if shared_q else q.rechunk(p.chunks)
            arrays.append((q, "class" if shared_q else "rows+class"))
        fn = _prob_block if q is not None else _prob_entropy_block
        per_row = _row_block_map(fn, p, arrays, out="rows", dtype=dtype, op=op, kw=kw)
    else:
        arrays = [(p, "rows+class")]
        if q is not None:
            q = q.rechunk(p.chunks[-1]) if shared_q else q.rechunk(p.chunks)
            arrays.append((q, "class" if shared_q else "rows+class"))
        extra = []
        if normalize:
            extra.append((p.sum(axis=-1, dtype=np.float64), "rows"))
            if q is not None:
                extra.append((q.sum(axis=-1, dtype=np.float64), "scalar" if shared_q else "rows"))
        fn = _prob_block_sum if q is not None else _prob_entropy_block_sum
        parts = _row_block_map(
            fn,
            p,
            arrays,
            out="rows+1",
            dtype=np.float64,
            extra=extra,
            op=op,
            kw=kw,
            names=names,
            normalize=bool(normalize),
        )
        per_row = parts.sum(axis=-1, dtype=np.float64).astype(dtype)
    return _reduce(_squeeze_row(per_row, one_d), reduction)


def _prob_entropy_block(p, *rest, op, kw):
    return _prob_block(p, None, op=op, kw=kw)


def _prob_entropy_block_sum(p, *rest, op, kw, names, normalize):
    return _prob_block_sum(p, None, *rest, op=op, kw=kw, names=names, normalize=normalize)


def entropy(
    p: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    normalize: bool = False,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
):
    """:func:`numbaent.entropy` of a dask array, -sum p log p per row (lazy).

    Class chunks are summed block by block (``normalize=True`` reads ``p`` twice: row sums first).

    Examples
    --------
    >>> import numpy as np, dask.array as da, numbaent.dask as nd
    >>> p = da.from_array(np.full((4, 8), 1 / 8), chunks=(2, 3))
    >>> nd.entropy(p, base=2).compute()
    array([3., 3., 3., 3.])
    """
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("entropy", p, None, backend=backend, names=("p", "q"), **kw)


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
):
    """:func:`numbaent.cross_entropy` of dask arrays, -sum p log q per row (lazy); ``q`` may be
    1-D (length C), shared by every row."""
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("cross_entropy", p, q, backend=backend, names=("p", "q"), **kw)


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
):
    """:func:`numbaent.kl_divergence` of dask arrays, sum p log(p / q) per row (lazy)."""
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("kl_divergence", p, q, backend=backend, names=("p", "q"), **kw)


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
):
    """:func:`numbaent.js_divergence` of dask arrays (lazy); its terms are per class, so class
    chunks are summed block by block too."""
    kw = dict(base=base, axis=axis, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    return _prob_call("js_divergence", p, q, backend=backend, names=("p", "q"), **kw)


# --------------------------------------------------------------------------------------------------
# logit space: partial states for class chunks


def _state_block(xb, offb, *rest, ignore_index, backend):
    yb = rest[0] if rest else None
    xy = rest[1] if len(rest) > 1 else None
    off = int(offb[0]) if offb.size else 0
    return partial_state(xb, yb, class_offset=off, ignore_index=ignore_index, label_logits=xy,
                         backend=backend)  # fmt: skip


def _label_logit_block(xb, offb, yb, *, ignore_index):
    """Each row's logit of its label where this class block holds it, else 0.0 (float64, on the
    host, a trailing axis of 1): summed over a row's class blocks, of which exactly one holds a
    valid label, it is x[label] bit for bit (0.0 + v == v)."""
    off = int(offb[0]) if offb.size else 0
    c = xb.shape[-1]
    y = to_numpy(yb).astype(np.int64)
    own = (y != ignore_index) & (y >= off) & (y < off + c)
    out = np.zeros(y.shape)
    hit = np.nonzero(own)
    if hit[0].size:
        cols = y[hit] - off
        if _arrays.is_device(xb):  # indices on the block's device, the values read back
            import cupy

            hit, cols = tuple(cupy.asarray(h) for h in hit), cupy.asarray(cols)
        out[np.nonzero(own)] = to_numpy(xb[(*hit, cols)]).astype(np.float64)
    return out[..., None]


def _label_logits(x, labels, ignore_index):
    """x[label] per row of the class-chunked logits ``x`` (0.0 where the label is ignored or in
    no block): a gather per block, summed over the class blocks."""
    k = x.ndim - 1
    bi = _LETTERS[:k]
    per_block = da.blockwise(
        _label_logit_block,
        bi + "z",
        x,
        bi + "z",
        da.arange(x.shape[-1], chunks=x.chunks[-1]),
        "z",
        labels,
        bi,
        dtype=np.float64,
        meta=np.empty((0,) * (k + 1), dtype=np.float64),
        adjust_chunks={"z": 1},
        ignore_index=ignore_index,
    )
    return per_block.sum(axis=-1, split_every=SPLIT_EVERY)


def _flatten(parts):
    if isinstance(parts, list):
        out = []
        for p in parts:
            out += _flatten(p)
        return out
    return [parts]


def _combine_parts(parts, axis=None, keepdims=False, **_):
    return _combine_states(_flatten(parts))


def _ident(block, axis=None, keepdims=False, **_):
    return block


def _states(x, labels, ignore_index, backend, rank=False):
    """Object array (one LogitState per row block) of the class-chunked logits ``x``. ``rank``
    (with labels): every block also counts its classes above the label, from the label's logit
    gathered first from the block that holds it (:func:`_label_logits`), so the merged states
    have ``rank``."""
    k = x.ndim - 1
    bi = _LETTERS[:k]
    args = [x, bi + "z", da.arange(x.shape[-1], chunks=x.chunks[-1]), "z"]
    if labels is not None:
        args += [labels, bi]
        if rank:
            args += [_label_logits(x, labels, ignore_index), bi]
    st = da.blockwise(
        _state_block,
        bi + "z",
        *args,
        dtype=object,
        meta=np.empty((0,) * (k + 1), dtype=object),
        adjust_chunks={"z": 1},
        ignore_index=ignore_index,
        backend=backend,
    )
    return da.reduction(
        st,
        chunk=_ident,
        combine=_combine_parts,
        aggregate=_combine_parts,
        axis=-1,
        keepdims=False,
        concatenate=False,
        split_every=SPLIT_EVERY,
        dtype=object,
        meta=np.empty((0,) * k, dtype=object),
    )


def _state_field(states, x, fn, dtype, extra=(), new_axis=None, **kw):
    """Per-row results of the states (one object per row block), errors naming global rows;
    ``new_axis=n``: results of shape (rows, n)."""
    k = x.ndim - 1
    bi = _LETTERS[:k]
    out_ind = bi if new_axis is None else bi + "s"
    args: list = [states, bi]
    for d in range(k):
        args += [da.arange(x.shape[d], chunks=x.chunks[d]), bi[d]]
    for a, kind in extra:
        args += [a, {"vector": "w", "rows": bi}[kind]]
    return da.blockwise(
        _entry,
        out_ind,
        *args,
        dtype=dtype,
        meta=_meta(x, len(out_ind), dtype),
        concatenate=True,
        new_axes=None if new_axis is None else {"s": new_axis},
        fn=fn,
        n_arrays=1,
        n_starts=k,
        kwargs=kw,
        like=_device_like(x, dtype),
    )


def _nan_check(state, res, nan_policy):
    if nan_policy == "raise":
        bad = np.flatnonzero((np.isnan(res) & np.isnan(state.max)).reshape(-1))
        if bad.size:
            row = v.row_name(int(bad[0]), state.shape)
            raise v.nan_row("logits", row)
    return res


def _finish_lse(state):
    return state.logsumexp()


def _finish_entropy(state, *, base, nan_policy):
    return _nan_check(state, state.entropy(base), nan_policy)


def _finish_ce(state, *rest, base, nan_policy, c):
    state._check_labels("target", c)  # the states cover [0, c): the in-memory functions' error
    ce = state.cross_entropy(base)
    if rest:  # class weights: the loss of a row is weight[label] * CE (torch semantics)
        w = to_numpy(rest[0]).astype(np.float64)
        y = state.labels
        ok = y != state.ignore_index
        ce = np.where(ok, w[np.where(ok, y, 0)] * ce, 0.0).astype(state.dtype)
    return _nan_check(state, ce, nan_policy)


def _finish_scores(state, *, base, c):
    return state.finish(base, num_classes=c)  # a stray label: the error of numbaent.score


def _finish_shift(state):
    with np.errstate(divide="ignore"):
        return np.stack([state.max, np.log(state.sum_exp)], axis=-1)


def _row_weights(yb, *rest, ignore_index, c):
    yb = to_numpy(yb)
    ok = (yb != ignore_index) & (yb >= 0) & (yb < c)
    if not rest:
        return ok.astype(np.float64)
    w = to_numpy(rest[0]).astype(np.float64)
    return np.where(ok, w[np.where(ok, yb, 0)], 0.0)


# --------------------------------------------------------------------------------------------------
# logit space: public functions


def _logit_rows_call(fn_name, x, arrays=(), dtype=None, **kw):
    return _row_block_map(
        _call_public,
        x,
        [(x, "rows+class"), *arrays],
        out="rows",
        dtype=dtype,
        fn_name=fn_name,
        kw=kw,
    )


def _call_public(*blocks, fn_name, kw):
    return getattr(_logits, fn_name)(*blocks, **kw)


def logsumexp(logits: ArrayLike, *, axis: int = -1, backend: str | None = None):
    """:func:`numbaent.logsumexp` of a dask array (lazy); class chunks merge partial states.

    Examples
    --------
    >>> import numpy as np, dask.array as da, numbaent.dask as nd
    >>> x = da.from_array(np.log(np.arange(1.0, 9.0)).reshape(2, 4), chunks=(1, 2))
    >>> np.exp(nd.logsumexp(x).compute())
    array([10., 26.])
    """
    _check_backend(backend)
    x = _logits_arg(logits, axis)
    one_d = x.ndim == 1
    x = _with_row_axis(x)
    dtype = _result_dtype(x)
    if not _class_chunked(x):
        res = _logit_rows_call("logsumexp", x, dtype=dtype, backend=backend)
    else:
        res = _state_field(_states(x, None, -100, backend), x, _finish_lse, dtype)
    return _squeeze_row(res, one_d)


def softmax_entropy(
    logits: ArrayLike,
    *,
    base: float | None = None,
    axis: int = -1,
    reduction: str = "none",
    nan_policy: str = "propagate",
    backend: str | None = None,
):
    """:func:`numbaent.softmax_entropy` of a dask array (lazy); class chunks merge partial states."""
    v.options(base, reduction, nan_policy)
    _check_backend(backend)
    x = _logits_arg(logits, axis)
    one_d = x.ndim == 1
    x = _with_row_axis(x)
    dtype = _result_dtype(x)
    if not _class_chunked(x):
        res = _logit_rows_call(
            "softmax_entropy", x, dtype=dtype, base=base, nan_policy=nan_policy, backend=backend
        )
    else:
        st = _states(x, None, -100, backend)
        res = _state_field(st, x, _finish_entropy, dtype, base=base, nan_policy=nan_policy)
    return _reduce(_squeeze_row(res, one_d), reduction)


def _log_softmax_block(xb, shift, *rest, exp):
    m = shift[..., 0:1]
    log_s = shift[..., 1:2]
    with np.errstate(invalid="ignore"):
        out = (xb.astype(np.float64) - m) - log_s
    dtype = np.float64 if xb.dtype == np.float64 else np.float32
    out = np.where(np.isfinite(m) & np.isfinite(log_s), out, np.nan)
    return (np.exp(out) if exp else out).astype(dtype)


def _softmax_like(fn_name, logits, axis, backend):
    _check_backend(backend)
    x0 = _dask(logits, "logits")
    ax = v.check_axis(axis, x0.ndim, "logits")
    x = _logits_arg(x0, axis)
    one_d = x.ndim == 1
    x = _with_row_axis(x)
    dtype = _result_dtype(x)
    if not _class_chunked(x):
        res = _row_block_map(
            _call_public,
            x,
            [(x, "rows+class")],
            out="rows+class",
            dtype=dtype,
            fn_name=fn_name,
            kw={"backend": backend},
        )
    else:
        st = _states(x, None, -100, backend)
        shift = _state_field(st, x, _finish_shift, np.float64, new_axis=2)
        res = _row_block_map(
            _log_softmax_block,
            x,
            [(x, "rows+class"), (shift, "rows+2")],
            out="rows+class",
            dtype=dtype,
            exp=fn_name == "softmax",
        )
    res = _squeeze_row(res, one_d)
    return res if ax == x0.ndim - 1 else da.moveaxis(res, -1, ax)


def log_softmax(logits: ArrayLike, *, axis: int = -1, backend: str | None = None):
    """:func:`numbaent.log_softmax` of a dask array (lazy, same shape and chunks as the input).

    With class chunks, the rows' log-sum-exp comes from merged partial states and each block is
    then shifted by it: the logits are read twice."""
    return _softmax_like("log_softmax", logits, axis, backend)


def softmax(logits: ArrayLike, *, axis: int = -1, backend: str | None = None):
    """:func:`numbaent.softmax` of a dask array (lazy, same shape and chunks as the input)."""
    return _softmax_like("softmax", logits, axis, backend)


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
):
    """:func:`numbaent.softmax_cross_entropy` of dask arrays (lazy), torch semantics.

    ``reduction="mean"`` divides by the sum of the labels' weights over the rows that are not
    ``ignore_index`` (the number of such rows without ``weight``; the number of rows for soft
    targets), computed exactly from the labels. Class chunks with integer labels and no
    ``label_smoothing`` merge partial states; soft targets and ``label_smoothing`` rechunk the
    class axis to one chunk.
    """
    v.options(base, reduction, nan_policy)
    eps = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    _check_backend(backend)
    x = _logits_arg(logits, axis)
    ax = v.check_axis(axis, _dask(logits, "logits").ndim, "logits")
    t = _dask(target, "target")
    c = x.shape[-1]
    w = None if weight is None else _vector(weight, c)
    one_d = x.ndim == 1
    dtype = _result_dtype(x)
    if t.dtype.kind in "iu":
        y = _batch_like(t, x, "target")
        if one_d:
            x, y = x[None, :], y[None]
        extra = [] if w is None else [(w, "vector")]
        if _class_chunked(x) and eps == 0.0:
            st = _states(x, y, ignore_index, backend)
            per_row = _state_field(
                st, x, _finish_ce, dtype, extra=extra, base=base, nan_policy=nan_policy, c=c
            )
        else:
            (x,) = _one_class_chunk(x)
            per_row = _row_block_map(
                _call_ce,
                x,
                [(x, "rows+class"), (y, "rows")],
                out="rows",
                dtype=dtype,
                extra=extra,
                kw=dict(
                    ignore_index=ignore_index,
                    label_smoothing=eps,
                    base=base,
                    nan_policy=nan_policy,
                    backend=backend,
                ),
            )
        denom = None
        if reduction == "mean":
            denom = _row_block_map(
                _row_weights,
                x,
                [(y, "rows")],
                out="rows",
                dtype=np.float64,
                meta_ndim=x.ndim - 1,
                extra=extra,
                ignore_index=ignore_index,
                c=c,
            ).sum()
        return _reduce(_squeeze_row(per_row, one_d), reduction, denom)
    v.check_soft_target(t.dtype, t.shape, _dask(logits, "logits").shape, x.shape[:-1], ignore_index)
    t = _prob_arg(t, "target")
    t = _class_last(t, ax, "target")
    if one_d:
        x, t = x[None, :], t[None, :]
    x, t = _one_class_chunk(x, t)
    t = t.rechunk(x.chunks)
    dtype = _result_dtype(x, t)
    extra = [] if w is None else [(w, "vector")]
    per_row = _row_block_map(
        _call_ce,
        x,
        [(x, "rows+class"), (t, "rows+class")],
        out="rows",
        dtype=dtype,
        extra=extra,
        kw=dict(label_smoothing=eps, base=base, nan_policy=nan_policy, backend=backend),
    )
    return _reduce(_squeeze_row(per_row, one_d), reduction)


def _call_ce(xb, tb, *rest, kw):
    weight = rest[0] if rest else None
    return _logits.softmax_cross_entropy(xb, tb, weight=weight, **kw)


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
):
    """:func:`numbaent.softmax_kl_divergence` of dask arrays (lazy): D(softmax(p/T) || softmax(q/T)).

    Class chunks are rechunked to one chunk per row block (documented cost: each task holds
    ``rows_per_chunk x C`` values of both inputs)."""
    v.options(base, reduction, nan_policy)
    t = v.check_temperature(temperature)
    _check_backend(backend)
    xp = _logits_arg(logits_p, axis, "logits_p")
    xq = _logits_arg(logits_q, axis, "logits_q")
    v.check_pair_shape(_dask(logits_p, "p").shape, _dask(logits_q, "q").shape)
    one_d = xp.ndim == 1
    xp, xq = _with_row_axis(xp), _with_row_axis(xq)
    xp, xq = _one_class_chunk(xp, xq)
    xq = xq.rechunk(xp.chunks)
    per_row = _row_block_map(
        _call_public,
        xp,
        [(xp, "rows+class"), (xq, "rows+class")],
        out="rows",
        dtype=_result_dtype(xp, xq),
        fn_name="softmax_kl_divergence",
        kw=dict(temperature=t, base=base, nan_policy=nan_policy, backend=backend),
    )
    return _reduce(_squeeze_row(per_row, one_d), reduction)


# --------------------------------------------------------------------------------------------------
# score


class DaskScores(Scores):
    """:class:`numbaent.Scores` whose per-row fields are lazy dask arrays (from :func:`score` or
    :func:`linear_score`).

    :meth:`summary` and :meth:`compute` run ONE Dask computation for all fields (computing the
    fields one by one would score the logits once per field). Row-chunked and class-chunked
    logits alike have every field."""

    def summary(self, *, top_k=(1, 5), bins: int = 15, **compute_kwargs) -> dict:
        """As :meth:`numbaent.Scores.summary` (means over non-ignored rows, top-k accuracy and
        calibration errors), computed in one pass; other keyword arguments go to
        :func:`dask.compute`. The same dict, bit for bit, as the summary of the computed scores:
        one exact ``SummaryState`` per row chunk, merged."""
        return self.summary_state(top_k=top_k, bins=bins, **compute_kwargs).result()

    def summary_state(self, *, top_k=(1, 5), bins: int = 15, **compute_kwargs) -> SummaryState:
        """The merged :class:`SummaryState` of the row chunks (one Dask computation)."""
        top_k, bins = check_top_k(top_k), check_bins(bins)  # before anything is computed
        names = [f for f in _STATE_FIELDS if getattr(self, f) is not None]
        ref = self.logsumexp
        blocks = [getattr(self, f).rechunk(ref.chunks).to_delayed().ravel() for f in names]
        parts = [
            dask.delayed(_block_state)(names, self.base, top_k, bins, *block)
            for block in zip(*blocks, strict=True)
        ]
        (states,) = dask.compute(parts, **compute_kwargs)
        return functools.reduce(SummaryState.merge, states, SummaryState())

    def sequences(self, lengths=None, **compute_kwargs) -> SequenceScores:
        """As :meth:`numbaent.Scores.sequences`, on the computed scores (one Dask computation;
        a sequence cut by a row chunk is whole again once computed)."""
        return self.compute(**compute_kwargs).sequences(lengths)

    def compute(self, **compute_kwargs) -> Scores:
        """The in-memory :class:`numbaent.Scores` (one Dask computation for every field)."""
        arrays = self.as_dict()
        (done,) = dask.compute(arrays, **compute_kwargs)
        return Scores(base=self.base, **done)


_STATE_FIELDS = ("logsumexp", "ignored", "cross_entropy", "correct", "entropy", "kl_divergence",
                 "confidence", "rank", "brier")  # fmt: skip


def _block_state(names, base, top_k, bins, *arrays):
    fields = dict(zip(names, arrays, strict=True))
    return Scores(argmax=None, base=base, **fields).summary_state(top_k=top_k, bins=bins)


def _score_block(xb, *rest, has_labels, has_teacher, kw):
    y = rest[0] if has_labels else None
    teacher = rest[int(has_labels)] if has_teacher else None
    return _score(xb, y, teacher_logits=teacher, **kw)


def _field(obj, name, like):
    return _like(getattr(obj, name), like)


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
) -> DaskScores:
    """:func:`numbaent.score` of dask arrays: a :class:`DaskScores` of lazy per-row arrays.

    Each row block is scored in one pass (one task per block); with class chunks, no teacher and
    temperature 1 the blocks' partial states are merged instead; with class chunks and a teacher
    or another temperature the class axis is rechunked to one chunk. ``.summary()`` computes the
    summary in one Dask pass. Merged partial states give every field: ``rank`` counts, in every
    class block, the classes above the label's logit, which a gather task per block takes from
    the block that holds it first (so Dask keeps a row band's class blocks in memory until
    their gathers are summed, instead of one block at a time; the logits are read once).

    Examples
    --------
    >>> import numpy as np, dask.array as da, numbaent.dask as nd
    >>> x = da.from_array(np.log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]), chunks=(1, 3))
    >>> s = nd.score(x, da.from_array(np.array([0, -100]), chunks=1))
    >>> summ = s.summary(top_k=(1, 2))  # the same dict as numbaent.score(...).summary()
    >>> round(summ["cross_entropy"], 4), summ["top_k_accuracy"], summ["brier"], summ["rows"]
    (0.6931, {1: 1.0, 2: 1.0}, 0.375, 2)
    >>> s.argmax.compute()
    array([0, 1])
    """
    v.base_divisor(base)
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    _check_backend(backend)
    x = _logits_arg(logits, axis)
    one_d = x.ndim == 1
    y = None
    if labels is not None:
        y = _batch_like(labels, x, "labels")
    tq = None
    if teacher_logits is not None:
        full = _dask(logits, "logits").shape
        tq0 = _dask(teacher_logits, "teacher_logits")
        v.check_teacher_shape(tq0.shape, full)
        tq = _logits_arg(tq0, axis, "teacher_logits")
    if one_d:
        x = x[None, :]
        y = None if y is None else y[None]
        tq = None if tq is None else tq[None, :]
    dtype = _result_dtype(x)
    # partial states: at temperature 1 only (it applies to every field)
    states = _class_chunked(x) and tq is None and t == 1.0
    if states:
        st = _states(x, y, ignore_index, backend, rank=True)
        obj = _state_field(st, x, _finish_scores, object, base=base, c=x.shape[-1])
    else:
        x, tq = _one_class_chunk(x, tq)
        arrays = [(x, "rows+class")]
        if y is not None:
            arrays.append((y, "rows"))
        if tq is not None:
            arrays.append((tq.rechunk(x.chunks), "rows+class"))
        obj = _row_block_map(
            _score_block,
            x,
            arrays,
            out="rows",
            dtype=object,
            has_labels=y is not None,
            has_teacher=tq is not None,
            kw=dict(temperature=t, ignore_index=ignore_index, base=base, backend=backend),
        )
    return _lazy_scores(obj, x, dtype, base, labels=y is not None, teacher=tq is not None,
                        one_d=one_d)  # fmt: skip


def _lazy_scores(obj, x, dtype, base, *, labels, teacher, one_d=False) -> DaskScores:
    """The :class:`DaskScores` of ``obj``, an object array of one ``Scores`` per row block (of
    ``x``'s row blocks): a lazy per-row array for each field the blocks have."""
    k = x.ndim - 1

    def field(name, dt):
        f = obj.map_blocks(_field, name, _device_like(x, dt), dtype=dt, meta=_meta(x, k, dt))
        return _squeeze_row(f, one_d)

    return DaskScores(
        logsumexp=field("logsumexp", dtype),
        entropy=field("entropy", dtype),
        argmax=field("argmax", np.int64),
        cross_entropy=field("cross_entropy", dtype) if labels else None,
        correct=field("correct", np.bool_) if labels else None,
        kl_divergence=field("kl_divergence", dtype) if teacher else None,
        ignored=field("ignored", np.bool_) if labels else None,
        base=base,
        confidence=field("confidence", dtype),
        margin=field("margin", dtype),
        rank=field("rank", np.int64) if labels else None,
        brier=field("brier", dtype) if labels else None,
    )


# --------------------------------------------------------------------------------------------------
# scores from hidden states


def _float_arg(a, name):
    a = _dask(a, name)
    v.check_logit_dtype(a.dtype, name)
    return a


def _linear_model(hidden, weight, bias, names):
    """One model's (hidden, weight, bias) as dask arrays, checked as :mod:`numbaent.linear` checks
    them (its messages), plus: ``hidden`` in one chunk along d (the rows are the blocks), the
    weight and bias whole (one chunk each: every row block reads all of them)."""
    hname, wname, bname = names
    h = _float_arg(hidden, hname)
    if h.ndim < 1:
        raise ValueError(f"{hname} must have at least one dimension (d); got a scalar")
    if h.numblocks[-1] > 1:
        raise ValueError(
            f"{hname} must be chunked along its rows only, not along d (its last axis); got "
            f"chunks {h.chunks[-1]} along d: rechunk it with .rechunk({{{h.ndim - 1}: -1}})"
        )
    w = _float_arg(weight, wname)
    if w.ndim != 2:
        raise ValueError(f"{wname} must be 2-D (V, d); got shape {tuple(w.shape)}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(
            f"{wname} {tuple(w.shape)} and {hname} {tuple(h.shape)}: the last dimensions (d) "
            "must match"
        )
    b = None
    if bias is not None:
        b = _float_arg(bias, bname)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"{bname} must have shape ({w.shape[0]},); got {tuple(b.shape)}")
        b = b.rechunk(-1)
    return h, w.rechunk(-1), b


def _check_chunk_classes(chunk_classes):
    if chunk_classes is not None and v.check_int(chunk_classes, "chunk_classes") < 1:
        raise ValueError(f"chunk_classes must be >= 1; got {chunk_classes}")


def _math_dtype(*arrays) -> np.dtype:
    """The dtype of numbaent.linear's results: float64 if any input is, else float32."""
    f64 = any(a is not None and a.dtype == np.float64 for a in arrays)
    return np.dtype(np.float64 if f64 else np.float32)


def _linear_block(*blocks, names, op, kw):
    """One row block through ``numbaent.linear_score`` / ``linear_cross_entropy``."""
    a = dict(zip(names, blocks, strict=True))
    if op == "linear_score":
        teacher = None
        if "teacher_hidden" in a:
            teacher = (a["teacher_hidden"], a["teacher_weight"], a.get("teacher_bias"))
        return _linear.linear_score(a["hidden"], a["weight"], a.get("labels"), bias=a.get("bias"),
                                    teacher=teacher, **kw)  # fmt: skip
    return _linear.linear_cross_entropy(a["hidden"], a["weight"], a["target"], bias=a.get("bias"),
                                        weight_classes=a.get("weight_classes"), **kw)  # fmt: skip


def _linear_map(op, h, named, dtype, kw):
    """blockwise over the row blocks of ``h``: ``named`` is (name, array, kind) for each input
    (None arrays left out), the block function gets them by name."""
    named = [(n, a, kind) for n, a, kind in named if a is not None]
    return _row_block_map(_linear_block, h, [(a, kind) for _, a, kind in named], out="rows",
                          dtype=dtype, names=[n for n, _, _ in named], op=op, kw=kw)  # fmt: skip


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
) -> DaskScores:
    """:func:`numbaent.linear_score` of a dask array of hidden states: a :class:`DaskScores` of
    lazy per-row arrays, every field of :func:`score` (the rank included).

    ``hidden`` (..., d) is chunked along its rows only (a ValueError names it if it is chunked
    along d); each row block is scored in one task by :func:`numbaent.linear_score`, which makes
    that block's logits ``hidden @ weight.T + bias`` class chunk by class chunk and never holds
    them. ``weight`` (V, d) and ``bias`` (V,) are NumPy arrays or dask arrays, gathered into one
    chunk: every task reads all of them. ``teacher`` is ``(teacher_hidden, teacher_weight[,
    teacher_bias])`` as there (``teacher_hidden`` rechunked to ``hidden``'s row chunks).
    ``.summary()`` computes the summary in one Dask pass.

    Examples
    --------
    >>> import numpy as np, dask.array as da, numbaent, numbaent.dask as nd
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((40, 8)).astype(np.float32)
    >>> w = rng.standard_normal((30, 8)).astype(np.float32); y = rng.integers(0, 30, 40)
    >>> s = nd.linear_score(da.from_array(h, chunks=(16, 8)), w, da.from_array(y, chunks=16))
    >>> ref = numbaent.linear_score(h, w, y)
    >>> bool(np.allclose(s.cross_entropy.compute(), ref.cross_entropy, rtol=1e-6))
    True
    >>> s.summary()["rows"]
    40
    """
    v.base_divisor(base)
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    _check_backend(backend)
    _check_chunk_classes(chunk_classes)
    th, tw, tb = _teacher_parts(teacher)
    h, w, b = _linear_model(hidden, weight, bias, ("hidden", "weight", "bias"))
    one_d = h.ndim == 1
    y = None if labels is None else _batch_like(labels, h, "labels")
    if th is not None:
        th, tw, tb = _linear_model(th, tw, tb, ("teacher_hidden", "teacher_weight", "teacher_bias"))
        batch = tuple(h.shape[:-1])
        if tuple(th.shape[:-1]) != batch or tw.shape[0] != w.shape[0]:
            raise ValueError(
                f"teacher: teacher_hidden {tuple(th.shape)} and teacher_weight "
                f"{tuple(tw.shape)} must give logits of the model's shape {batch + (w.shape[0],)}"
            )
    if one_d:
        h, y = h[None, :], None if y is None else y[None]
        th = None if th is None else th[None, :]
    if th is not None and th.chunks[:-1] != h.chunks[:-1]:
        th = th.rechunk(h.chunks[:-1] + (-1,))
    dtype = _math_dtype(h, w, b, th, tw, tb)
    kw = dict(temperature=t, ignore_index=ignore_index, base=base, chunk_classes=chunk_classes,
              backend=backend)  # fmt: skip
    obj = _linear_map("linear_score", h, [
        ("hidden", h, "rows+class"), ("labels", y, "rows"), ("weight", w, "weight"),
        ("bias", b, "bias"), ("teacher_hidden", th, "teacher_rows"),
        ("teacher_weight", tw, "teacher_weight"), ("teacher_bias", tb, "bias"),
    ], object, kw)  # fmt: skip
    return _lazy_scores(obj, h, dtype, base, labels=y is not None, teacher=th is not None,
                        one_d=one_d)  # fmt: skip


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
    """:func:`numbaent.linear_cross_entropy` of a dask array of hidden states (lazy), integer
    labels, row blocks as in :func:`linear_score`. ``reduction="mean"`` divides by the sum of
    the labels' ``weight_classes`` over the rows that are not ``ignore_index`` (their number
    without ``weight_classes``), as :func:`softmax_cross_entropy` does."""
    v.options(base, reduction, "propagate")
    eps = v.check_label_smoothing(label_smoothing)
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    _check_backend(backend)
    _check_chunk_classes(chunk_classes)
    h, w, b = _linear_model(hidden, weight, bias, ("hidden", "weight", "bias"))
    c = w.shape[0]
    y = _batch_like(target, h, "target")
    cw = None if weight_classes is None else _vector(weight_classes, c)
    one_d = h.ndim == 1
    if one_d:
        h, y = h[None, :], y[None]
    kw = dict(ignore_index=ignore_index, label_smoothing=eps, reduction="none", temperature=t,
              base=base, chunk_classes=chunk_classes, backend=backend)  # fmt: skip
    per_row = _linear_map("linear_cross_entropy", h, [
        ("hidden", h, "rows+class"), ("target", y, "rows"), ("weight", w, "weight"),
        ("bias", b, "bias"), ("weight_classes", cw, "vector"),
    ], _math_dtype(h, w, b), kw)  # fmt: skip
    denom = None
    if reduction == "mean":
        extra = [] if cw is None else [(cw, "vector")]
        denom = _row_block_map(_row_weights, h, [(y, "rows")], out="rows", dtype=np.float64,
                               meta_ndim=h.ndim - 1, extra=extra, ignore_index=ignore_index,
                               c=c).sum()  # fmt: skip
    return _reduce(_squeeze_row(per_row, one_d), reduction, denom)
