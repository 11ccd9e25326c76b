"""Partial log-sum-exp states: score logits whose classes are split across arrays, files or machines.

A vocabulary that is sharded (tensor-parallel LM heads, class-chunked Dask arrays, a 256k-column
file read in column blocks) never exists as one row of logits. :func:`partial_state` reduces one
slice of the classes, ``logits[..., k0:k1]``, to a :class:`LogitState` of a few numbers per row;
states of disjoint slices are merged with :func:`combine` (or ``a.combine(b)``), in any order and
any grouping; :func:`finish` turns the merged state into the :class:`numbaent.Scores` that
:func:`numbaent.score` gives on the whole row (log-sum-exp, softmax entropy, argmax and, with
labels, cross-entropy and correctness).

Per row, a state over a set of classes K holds

* ``max``: m = max_{j in K} x_j (NaN when a NaN is in K; -inf when K is empty or all -inf);
* ``sum_exp``: S = sum_{j in K} exp(x_j - m);
* ``sum_exp_x``: T = sum_{j in K} exp(x_j - m) (x_j - m), the entropy accumulator;
* ``argmax``: the first index (in the full class numbering) holding m (the first NaN when K has one);
* ``target``: x[label] when the row's label is in K (NaN otherwise; see ``classes``);
* ``second``: m2, the second largest logit of K counted with multiplicity (-inf for one class);
* ``sum_exp2``: S2 = sum_{j in K} exp(2 (x_j - m)), for sum p^2 (the Brier score);
* ``above``: with labels, how many classes of K rank above the label (x_j > x[label], or equal at
  a lower index), when x[label] is known to the slice (its own label, or ``label_logits``); -1
  where it is not, and for ignored rows.

Merging two states rescales to the larger maximum m = max(m_a, m_b), f_a = exp(m_a - m):
S = f_a S_a + f_b S_b and T = f_a (T_a + (m_a - m) S_a) + f_b (T_b + (m_b - m) S_b), which is
exact up to rounding, associative and commutative; S2 = f_a^2 S2_a + f_b^2 S2_b;
m2 = max(min(m_a, m_b), m2_a, m2_b) (the smaller maximum is a candidate, and a tie of the maxima
gives m2 = m, margin 0); the counts above the label add. Finishing gives logsumexp = m + log S,
entropy = log S - T / S, cross-entropy = (m - x[label]) + log S, confidence = 1 / S, margin =
(1 - exp(m2 - m)) / S, brier = S2 / S^2 - 2 exp(x[label] - m) / S + 1, rank = the count above.

A rank needs x[label] in every slice, and only one slice holds it: a tensor-parallel caller
gathers the label logits first (one number per row: the slice that holds the label reads it,
an all-reduce or all-gather shares it) and passes them as ``label_logits``; without them, ranks
are known only for rows whose label lies in the slice, and ``finish`` gives ``rank`` None (and
``correct`` from the argmax) unless every row's count is known.

A state is stored in float64 whatever the logits' dtype (as accurate as the kernels for that
dtype); results are cast, as everywhere in numbaent, to float64 for float64 logits and float32
otherwise. :func:`partial_state` reads the slice once to find each row's maximum, shifts the rows
by it (one row block of at most ``BLOCK_VALUES`` values at a time, so the copy stays in cache) and
runs :func:`numbaent.score` on the shifted block: large logits (1e30) lose nothing, the backend
kernels do the work, and CuPy slices stay on the GPU (only the O(rows) state comes back to the
host). The max pass and the shifted copy make it about 2-3x slower than :func:`numbaent.score`
on the same slice.

Examples
--------
A vocabulary of 5 classes held as two shards:

>>> import numpy as np, numbaent
>>> from numbaent.partial import partial_state, combine, finish
>>> x = np.array([[2.0, 0.5, -1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
>>> y = np.array([4, 1])
>>> a = partial_state(x[:, :2], y)                    # classes 0, 1
>>> b = partial_state(x[:, 2:], y, class_offset=2)    # classes 2, 3, 4
>>> s = finish(combine([a, b]))
>>> s.cross_entropy.round(6), s.argmax, s.correct
(array([0.417438, 1.609438]), array([4, 0]), array([ True, False]))
>>> np.allclose(s.cross_entropy, numbaent.score(x, y).cross_entropy)
True
>>> b.combine(a).logsumexp().round(6)                # any order
array([3.417438, 1.609438])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _arrays, _op
from . import _validate as v
from ._types import Scores, to_numpy
from .scoring import score

__all__ = ["LogitState", "combine", "finish", "partial_state"]

ArrayLike = Any

#: argmax of a state that covers no class (never wins a tie, see ``combine``)
NO_CLASS = np.iinfo(np.int64).max
#: values per row block in ``partial_state``: the shifted temporary (1 MB of float32) stays in cache
BLOCK_VALUES = 1 << 18


def _merge_ranges(a: tuple, b: tuple) -> tuple[tuple[int, int], ...]:
    """Union of two sets of disjoint half-open class ranges; ValueError if they overlap."""
    out: list[list[int]] = []
    for lo, hi in sorted(a + b):
        if out and lo < out[-1][1]:
            raise ValueError(
                f"cannot combine states whose classes overlap: [{lo}, {hi}) and "
                f"[{out[-1][0]}, {out[-1][1]}) (each class must be counted once)"
            )
        if out and lo == out[-1][1]:
            out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _in_ranges(y: np.ndarray, ranges: tuple) -> np.ndarray:
    mask = np.zeros(np.shape(y), dtype=bool)
    for lo, hi in ranges:
        mask |= (y >= lo) & (y < hi)
    return mask


def _ranges_text(ranges: tuple) -> str:
    return " + ".join(f"[{lo}, {hi})" for lo, hi in ranges) if ranges else "no classes"


@dataclass(frozen=True, eq=False)
class LogitState:
    """Partial softmax statistics of a set of classes, per row (see the module docstring).

    Create states with :func:`partial_state`; merge them with :meth:`combine`; read results with
    :meth:`logsumexp`, :meth:`entropy`, :meth:`cross_entropy`, :meth:`predictions` (argmax),
    :meth:`correct`, or
    all at once with :meth:`finish`. The per-row arrays have the batch shape of the logits (their
    shape without the class axis). States pickle, so they can travel between processes.

    Attributes
    ----------
    max : ndarray of float64
        Row maximum m over the classes covered (NaN if one of them is NaN, -inf if none is finite
        or none is covered).
    sum_exp : ndarray of float64
        S = sum exp(x - m) (0 when m is -inf; NaN for rows with NaN or +inf).
    sum_exp_x : ndarray of float64
        T = sum exp(x - m) (x - m), the entropy accumulator (<= 0).
    argmax : ndarray of int64
        First class index (in the full numbering) holding m; ``NO_CLASS`` when no class is covered.
    target : ndarray of float64 or None
        x[label] for rows whose label is a covered class, NaN for the others; None without labels.
    labels : ndarray of int64 or None
        The rows' labels (full class numbering): a copy of those given to :func:`partial_state`
        (no field of a state is a view of an input).
    ignore_index : int
        Label value of rows that are left out of the cross-entropy.
    classes : tuple of (start, stop)
        The disjoint class ranges covered, merged where adjacent: ``((0, C),)`` once every class of
        a C-class vocabulary has been combined.
    dtype : numpy.dtype
        Result dtype: float64 if any slice was float64, else float32.
    second : ndarray of float64
        m2, the second largest logit over the classes covered, counted with multiplicity.
    sum_exp2 : ndarray of float64
        S2 = sum exp(2 (x - m)).
    above : ndarray of int64 or None
        With labels: classes covered that rank above the label; -1 where unknown or ignored.
    """

    max: np.ndarray
    sum_exp: np.ndarray
    sum_exp_x: np.ndarray
    argmax: np.ndarray
    target: np.ndarray | None
    labels: np.ndarray | None
    ignore_index: int
    classes: tuple[tuple[int, int], ...]
    dtype: np.dtype
    second: np.ndarray | None = None
    sum_exp2: np.ndarray | None = None
    above: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------
    # merging

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape (shape of every per-row array)."""
        return tuple(np.shape(self.max))

    @property
    def num_classes(self) -> int:
        """How many classes the state covers."""
        return sum(hi - lo for lo, hi in self.classes)

    @property
    def ignored(self) -> np.ndarray | None:
        """Rows whose label is ``ignore_index`` (None without labels)."""
        return None if self.labels is None else self.labels == self.ignore_index

    def combine(self, other: LogitState) -> LogitState:
        """The state of the union of both states' classes (which must not overlap).

        Exact up to rounding, commutative and associative: merging shards in any order or tree
        gives the same result to within a few ulps.

        Raises
        ------
        ValueError
            Different batch shapes, labels or ignore_index, labels on one side only, or
            overlapping class ranges.

        Examples
        --------
        >>> import numpy as np
        >>> from numbaent.partial import partial_state
        >>> x = np.log([[1.0, 2.0, 3.0, 2.0]])
        >>> s = partial_state(x[:, 2:], class_offset=2).combine(partial_state(x[:, :2]))
        >>> s.classes, s.logsumexp(), s.argmax   # log(1 + 2 + 3 + 2) = log 8
        (((0, 4),), array([2.07944154]), array([2]))
        """
        if not isinstance(other, LogitState):
            raise TypeError(f"can only combine LogitState objects; got {type(other).__name__}")
        a, b = self, other
        if a.shape != b.shape:
            raise ValueError(f"cannot combine states of batch shapes {a.shape} and {b.shape}")
        if (a.labels is None) != (b.labels is None):
            raise ValueError("cannot combine a state computed with labels and one without")
        if a.labels is not None:
            if a.ignore_index != b.ignore_index:
                raise ValueError(
                    f"cannot combine states with ignore_index {a.ignore_index} and {b.ignore_index}"
                )
            if not np.array_equal(a.labels, b.labels):
                raise ValueError("cannot combine states computed with different labels")
        classes = _merge_ranges(a.classes, b.classes)
        ma, mb = a.max, b.max
        with np.errstate(invalid="ignore", over="ignore"):
            m = np.maximum(ma, mb)  # NaN wins
            fa = np.where(ma == -np.inf, 0.0, np.exp(ma - m))
            fb = np.where(mb == -np.inf, 0.0, np.exp(mb - m))
            s = fa * a.sum_exp + fb * b.sum_exp
            s2 = fa * fa * a.sum_exp2 + fb * fb * b.sum_exp2
            second = np.maximum(np.minimum(ma, mb), np.maximum(a.second, b.second))
            ta = np.where(fa == 0, 0.0, fa * (a.sum_exp_x + (ma - m) * a.sum_exp))
            tb = np.where(fb == 0, 0.0, fb * (b.sum_exp_x + (mb - m) * b.sum_exp))
            t = ta + tb
            na, nb = np.isnan(ma), np.isnan(mb)
            tie = (na & nb) | (ma == mb)
            take_b = (nb & ~na) | (mb > ma)
        arg = np.where(tie, np.minimum(a.argmax, b.argmax), np.where(take_b, b.argmax, a.argmax))
        target = above = None
        if a.labels is not None:
            target = np.where(_in_ranges(b.labels, b.classes), b.target, a.target)
            above = np.where((a.above < 0) | (b.above < 0), -1, a.above + b.above)
        dtype = np.dtype(np.float64) if np.float64 in (a.dtype, b.dtype) else np.dtype(np.float32)
        return LogitState(
            max=m,
            sum_exp=s,
            sum_exp_x=t,
            argmax=arg.astype(np.int64, copy=False),
            target=target,
            labels=None if a.labels is None else a.labels.copy(),  # no array shared with a
            ignore_index=a.ignore_index,
            classes=classes,
            dtype=dtype,
            second=second,
            sum_exp2=s2,
            above=above,
        )

    # ------------------------------------------------------------------------------------------
    # results (over the classes covered so far)

    def logsumexp(self) -> np.ndarray:
        """log sum exp(x) over the classes covered, in nats (-inf when none is finite, NaN for
        rows with NaN or +inf), as :func:`numbaent.logsumexp`."""
        m = self.max
        with np.errstate(divide="ignore", invalid="ignore"):
            lse = np.where(m == -np.inf, -np.inf, m + np.log(self.sum_exp))
        return self._out(lse)

    def entropy(self, base: float | None = None) -> np.ndarray:
        """Entropy of the softmax over the classes covered: log S - T / S, as
        :func:`numbaent.softmax_entropy` (NaN for rows with NaN, +inf or no finite logit)."""
        divisor = v.base_divisor(base)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log(self.sum_exp) - self.sum_exp_x / self.sum_exp
        return self._out(h / divisor)

    def predictions(self) -> np.ndarray:
        """``argmax`` with ``NO_CLASS`` (no class covered) replaced by 0, as
        ``numbaent.score(...).argmax`` gives for rows of no classes."""
        return np.where(self.argmax == NO_CLASS, 0, self.argmax)

    def cross_entropy(self, base: float | None = None) -> np.ndarray:
        """-log softmax(x)[label] = (m - x[label]) + log S per row; 0 for ignored rows.

        Raises
        ------
        ValueError
            The state was computed without labels.
        IndexError
            A label that is not ``ignore_index`` and lies in no covered class (the message names
            the row and the label). Finish only once every shard has been combined.
        """
        if self.labels is None:
            raise ValueError("cross_entropy needs labels: pass labels to partial_state")
        divisor = v.base_divisor(base)
        self._check_labels()
        y = self.labels
        ignored = y == self.ignore_index
        with np.errstate(divide="ignore", invalid="ignore"):
            ce = (self.max - self.target) + np.log(self.sum_exp)
        ce = np.where(ignored, 0.0, ce)
        return self._out(ce / divisor)

    def _valid(self) -> np.ndarray:
        """Rows whose model statistics are not NaN (no NaN or +inf logit, one finite)."""
        return (self.max > -np.inf) & (self.max < np.inf) & (self.sum_exp == self.sum_exp)

    def confidence(self) -> np.ndarray:
        """The largest probability, 1 / S (NaN for rows without a valid softmax)."""
        with np.errstate(divide="ignore"):
            return self._out(np.where(self._valid(), 1.0 / self.sum_exp, np.nan))

    def margin(self) -> np.ndarray:
        """Largest minus second-largest probability, (1 - exp(m2 - m)) / S (0 for a tie at the top,
        1 for a single class)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mg = (0.0 - np.expm1(self.second - self.max)) / self.sum_exp
        return self._out(np.where(self._valid(), mg, np.nan))

    def brier(self) -> np.ndarray:
        """sum_j (p_j - [j == label])^2 = S2 / S^2 - 2 p[label] + 1; 0 for ignored rows."""
        ce = self.cross_entropy().astype(np.float64)  # checks the labels
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            b = self.sum_exp2 / (self.sum_exp * self.sum_exp) - 2.0 * np.exp(-ce) + 1.0
        b = np.where(self._valid(), np.maximum(b, 0.0), np.nan)
        return self._out(np.where(self.ignored, 0.0, b))

    def rank(self) -> np.ndarray | None:
        """Classes ranked above the label (-1 for ignored rows and rows without a valid softmax);
        None unless every row's count is known (see ``label_logits`` in :func:`partial_state`)."""
        if self.labels is None:
            raise ValueError("rank needs labels: pass labels to partial_state")
        self._check_labels()
        if (self.above < 0).any():
            return None
        return np.where(self.ignored | ~self._valid(), -1, self.above).astype(np.int64)

    def _out(self, res: np.ndarray) -> np.ndarray:
        """A float64 result in the state's dtype: beyond float32 it is +-inf, the contract's answer
        (as ``_validate.to_units``), without a warning."""
        with np.errstate(over="ignore"):
            return res.astype(self.dtype)

    def _check_labels(self, name: str = "labels", num_classes: int | None = None) -> None:
        """IndexError for the first label that is not ``ignore_index`` and in no covered class.
        ``num_classes``: the state is known to cover every class, [0, num_classes) (``finish``
        with ``num_classes``, numbaent.dask): such a label is out of range, and the error is the
        one the in-memory functions give; otherwise a shard may be missing, and it says so."""
        y = self.labels
        if y is None:
            return
        missing = np.flatnonzero(
            ((y != self.ignore_index) & ~_in_ranges(y, self.classes)).reshape(-1)
        )
        if not missing.size:
            return
        i = int(missing[0])
        label = int(y.reshape(-1)[i])
        row = v.row_name(i, self.shape)
        if num_classes is not None:
            raise v.label_out_of_range(name, label, row, num_classes, self.ignore_index)
        raise IndexError(
            f"{name}: label {label} at row {row} is in no slice (the states cover "
            f"{_ranges_text(self.classes)}) and is not ignore_index ({self.ignore_index})"
        )

    def correct(self) -> np.ndarray:
        """argmax == label (rank == 0), False for ignored rows and rows whose cross-entropy is
        NaN."""
        ce = self.cross_entropy()
        return (self.predictions() == self.labels) & ~np.isnan(ce) & ~self.ignored & self._valid()

    def finish(self, base: float | None = None, *, num_classes: int | None = None):
        """All results as a :class:`numbaent.Scores` (see :func:`finish`)."""
        return finish(self, base, num_classes=num_classes)


def _empty_rows_state(shape, labels, ignore_index, dtype) -> LogitState:
    return LogitState(
        max=np.full(shape, -np.inf),
        sum_exp=np.zeros(shape),
        sum_exp_x=np.zeros(shape),
        argmax=np.full(shape, NO_CLASS, np.int64),
        target=None if labels is None else np.full(shape, np.nan),
        labels=labels,
        ignore_index=ignore_index,
        classes=(),
        dtype=dtype,
        second=np.full(shape, -np.inf),
        sum_exp2=np.zeros(shape),
        above=None if labels is None else np.zeros(shape, np.int64),
    )


def _device_module():
    """CuPy, for slices that live on a CUDA device (the cuda backend needs CuPy anyway)."""
    import cupy

    return cupy


@_op.op("logits", "labels", device=False)
def partial_state(
    logits: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    class_offset: int = 0,
    axis: int = -1,
    ignore_index: int = -100,
    label_logits: ArrayLike | None = None,
    backend: str | None = None,
) -> LogitState:
    """Reduce a slice of the classes, ``logits[..., k0:k0 + c]``, to a :class:`LogitState`.

    Parameters
    ----------
    logits : array_like, shape (..., c)
        The slice: floating logits of classes ``class_offset`` to ``class_offset + c - 1`` of
        every row, along ``axis``. May be empty (c = 0). CuPy arrays (and other CUDA arrays) are
        reduced on the device by the cuda backend.
    labels : array_like of int, shape (...), optional
        The rows' labels in the FULL class numbering (not relative to the slice). Labels outside
        this slice are fine: another shard holds them.
    class_offset : int
        Index of the slice's first class in the full numbering.
    axis : int
        The class axis (a non-last axis costs a contiguous copy of the slice).
    ignore_index : int
        Label of rows to leave out of the cross-entropy (as in :func:`numbaent.score`).
    label_logits : array_like of float, shape (...), optional
        Each row's logit of its label, x[label] (from whichever slice holds it): lets this slice
        count its classes that rank above the label, so that the finished state has ``rank``.
        Without it only rows whose label lies in this slice are counted.
    backend : str, optional
        Backend of the :func:`numbaent.score` call that does the reduction.

    Returns
    -------
    LogitState

    Raises
    ------
    TypeError
        Non-floating logits, non-integer labels.
    ValueError
        Bad axis, ``class_offset`` < 0, labels of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from numbaent.partial import partial_state
    >>> s = partial_state(np.array([[1.0, 3.0], [5.0, 5.0]]), np.array([11, 7]), class_offset=10)
    >>> s.max, s.argmax, s.target, s.classes
    (array([3., 5.]), array([11, 10]), array([ 3., nan]), ((10, 12),))
    """
    class_offset = v.check_int(class_offset, "class_offset")
    if class_offset < 0:
        raise ValueError(f"class_offset must be >= 0; got {class_offset}")
    ignore_index = v.check_int(ignore_index, "ignore_index")
    if _arrays.is_device(logits):
        xp = _device_module()
        xa = xp.asarray(logits)
        v.check_logit_dtype(xa.dtype, "logits")
        ax = v.check_axis(axis, xa.ndim, "logits")
        moved = xp.moveaxis(xa, ax, -1)
        batch = tuple(moved.shape[:-1])
        data = xp.ascontiguousarray(moved).reshape(math.prod(batch), moved.shape[-1])
        dtype = np.dtype(np.float64) if xa.dtype == np.float64 else np.dtype(np.float32)
        if labels is not None and _arrays.is_device(labels):
            labels = xp.asnumpy(xp.asarray(labels))
    else:
        xp = np
        xa = v.as_logits(logits, "logits")
        ax = v.check_axis(axis, xa.ndim, "logits")
        rows = v.to_rows(xa, ax)
        data, batch = rows.data, rows.batch
        dtype = v.math_dtype(data)
    n, c = data.shape
    y = None if labels is None else v.labels_rows(labels, "labels", batch)
    if y is not None and not y.flags.owndata:  # a view of the caller's labels: the state keeps
        y = y.copy()  # its own (the only input the state would otherwise hold on to)
    state = _empty_rows_state(n, y, ignore_index, dtype)
    if c == 0 or n == 0:
        classes = ((class_offset, class_offset + c),) if c else ()
        return _reshaped(state, batch, classes)

    work = xp.float64 if data.dtype == np.float64 else xp.float32
    xy = need = None
    if y is not None:
        inside = (y != ignore_index) & (y >= class_offset) & (y < class_offset + c)
        idx = np.flatnonzero(inside)
        if idx.size:
            cols = y[idx] - class_offset
            if xp is np:
                vals = data[idx, cols]
            else:
                vals = data[xp.asarray(idx), xp.asarray(cols)]
            state.target[idx] = to_numpy(vals).astype(np.float64)
        xy, need = state.target, inside
        if label_logits is not None:
            xy = np.asarray(to_numpy(label_logits), dtype=np.float64)
            if xy.shape != batch:
                raise ValueError(
                    f"label_logits must have the batch shape {batch} of logits; got {xy.shape}"
                )
            xy = xy.reshape(n)
            need = y != ignore_index
        state.above[~need & (y != ignore_index)] = -1  # x[label] is not known here
    step = max(1, BLOCK_VALUES // c)
    m_all, s_all, t_all, a_all = state.max, state.sum_exp, state.sum_exp_x, state.argmax
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        blk = data[r0:r1]
        with np.errstate(invalid="ignore"):
            m = blk.max(axis=1).astype(work)  # NaN for rows with a NaN
        shift = xp.where(xp.isfinite(m), m, work(0))
        with np.errstate(over="ignore"):  # -3e38 - 3e38: -inf, a term exp() makes 0
            d = xp.subtract(blk, shift[:, None], dtype=work)  # the row max becomes exactly 0
        sc = _score_block(d, backend)
        m64, log_s, h, am = (to_numpy(a) for a in (m, sc.logsumexp, sc.entropy, sc.argmax))
        m64 = m64.astype(np.float64)
        log_s = log_s.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            s = np.exp(log_s)
            t = s * (log_s - h.astype(np.float64))
            e = xp.exp(d)
            s2 = to_numpy((e * e).sum(axis=1, dtype=xp.float64))
            # the second largest value, with multiplicity (the row's own max when it is tied)
            d2 = xp.partition(d, c - 2, axis=1)[:, c - 2] if c > 1 else xp.full(r1 - r0, -xp.inf)
            second = m64 + to_numpy(d2).astype(np.float64)
        none = m64 == -np.inf  # every logit of the row -inf: nothing to sum
        m_all[r0:r1] = m64
        s_all[r0:r1] = np.where(none, 0.0, s)
        t_all[r0:r1] = np.where(none, 0.0, t)
        a_all[r0:r1] = am.astype(np.int64) + class_offset
        state.sum_exp2[r0:r1] = np.where(none, 0.0, s2)
        state.second[r0:r1] = np.where(none, -np.inf, second)
        if y is not None and need[r0:r1].any():
            # classes ranked above the label: a larger logit, or an equal one at a lower index
            xb = xp.asarray(xy[r0:r1])[:, None]
            yb = xp.asarray(y[r0:r1] - class_offset)[:, None]
            with np.errstate(invalid="ignore"):
                hit = (blk > xb) | ((blk == xb) & (xp.arange(c)[None, :] < yb))
            cnt = to_numpy(hit.sum(axis=1)).astype(np.int64)
            state.above[r0:r1] = np.where(need[r0:r1], cnt, state.above[r0:r1])
    return _reshaped(state, batch, ((class_offset, class_offset + c),))


def _score_block(d, backend):
    return score(d, backend=backend)


def _reshaped(state: LogitState, batch: tuple[int, ...], classes) -> LogitState:
    def r(a):
        return None if a is None else a.reshape(batch)

    return LogitState(
        max=r(state.max),
        sum_exp=r(state.sum_exp),
        sum_exp_x=r(state.sum_exp_x),
        argmax=r(state.argmax),
        target=r(state.target),
        labels=r(state.labels),
        ignore_index=state.ignore_index,
        classes=tuple(classes),
        dtype=state.dtype,
        second=r(state.second),
        sum_exp2=r(state.sum_exp2),
        above=r(state.above),
    )


def combine(states: Iterable[LogitState]) -> LogitState:
    """Merge the states of disjoint class slices into one (pairwise, as a balanced tree).

    Parameters
    ----------
    states : iterable of LogitState
        At least one state; all with the same batch shape, labels and ignore_index.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> from numbaent.partial import partial_state, combine
    >>> x = np.random.default_rng(0).standard_normal((3, 10))
    >>> parts = [partial_state(x[:, k:k + 4], class_offset=k) for k in (8, 0, 4)]
    >>> s = combine(parts)
    >>> s.classes, bool(np.allclose(s.logsumexp(), numbaent.logsumexp(x), rtol=1e-14))
    (((0, 10),), True)
    """
    items = list(states)
    if not items:
        raise ValueError("combine needs at least one state")
    while len(items) > 1:
        nxt = [items[i].combine(items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def finish(state: LogitState, base: float | None = None, *, num_classes: int | None = None):
    """Results of a (combined) state as :class:`numbaent.Scores`.

    ``logsumexp``, ``entropy``, ``argmax``, ``confidence`` and ``margin`` always;
    ``cross_entropy``, ``correct``, ``brier``, ``ignored`` and ``rank`` (None unless every row's
    count is known: see ``label_logits`` in :func:`partial_state`) with labels; ``kl_divergence``
    is None. Once the state covers every class, these
    equal ``numbaent.score(full_logits, labels, base=base)`` up to rounding (including
    ``Scores.summary()``).

    Parameters
    ----------
    state : LogitState
    base : float, optional
        Logarithm base of logsumexp, entropy and cross-entropy (as in :func:`numbaent.score`).
    num_classes : int, optional
        When given, check that the state covers exactly the classes [0, num_classes)
        (``ValueError`` otherwise): catches a forgotten or duplicated shard.

    Raises
    ------
    IndexError
        A label that is not ``ignore_index`` lies in no covered class (with ``num_classes``: the
        message :func:`numbaent.score` gives for a label outside [0, num_classes)).

    Examples
    --------
    >>> import numpy as np
    >>> from numbaent.partial import partial_state, finish
    >>> s = finish(partial_state(np.log([[0.5, 0.25, 0.25]]), np.array([0])), base=2)
    >>> s.cross_entropy, s.entropy, s.argmax
    (array([1.]), array([1.5]), array([0]))
    >>> finish(partial_state(np.zeros((1, 2))), num_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: the states cover [0, 2), not the 3 classes [0, 3): a shard is missing or extra
    """

    if not isinstance(state, LogitState):
        raise TypeError(f"finish takes a LogitState; got {type(state).__name__}")
    if num_classes is not None:
        nc = v.check_int(num_classes, "num_classes")
        want = ((0, nc),) if nc else ()
        if state.classes != want:
            raise ValueError(
                f"the states cover {_ranges_text(state.classes)}, not the {nc} classes "
                f"[0, {nc}): a shard is missing or extra"
            )
        state._check_labels(num_classes=nc)  # every class is in: a stray label is out of range
    divisor = v.base_divisor(base)
    lse = state.logsumexp()
    if divisor != 1.0:
        lse = (lse / divisor).astype(state.dtype)
    ce = correct = ignored = rank = brier = None
    if state.labels is not None:
        ce = state.cross_entropy(base)
        correct = state.correct()
        ignored = state.ignored
        rank = state.rank()
        brier = state.brier()
    return Scores(
        logsumexp=lse,
        entropy=state.entropy(base),
        argmax=state.predictions(),
        cross_entropy=ce,
        correct=correct,
        ignored=ignored,
        base=base,
        confidence=state.confidence(),
        margin=state.margin(),
        rank=rank,
        brier=brier,
    )
