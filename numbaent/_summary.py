"""The one summary implementation: exact sums of per-row statistics, mergeable across row chunks.

``Scores.summary()``, the CLI's chunked runs and ``numbaent.dask`` all reduce to a ``SummaryState``
and call ``result()``, so the same rows give the same summary bit for bit however they were split
(the means of a float64 sum depend on the order of the additions; these do not). A sum is held
exactly, as an integer number of 2^-1074 (the smallest float64 step): each finite value is an
integer mantissa times a power of two, grouped by exponent and added in int64 halves, then in
Python integers across exponents. Non-finite values are counted instead (+inf, -inf, NaN), and a
mean is the correctly rounded quotient of the exact sum by the count.

This module imports nothing of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MEAN_KEYS = ("cross_entropy", "accuracy", "entropy", "kl_divergence")
_SHIFT = 1021  # a = M * 2**(e - 53) with M = m * 2**53 (np.frexp: a = m * 2**e) = M * 2**(e + 1021 - 1074)
_CHUNK = 1 << 30  # values per int64 pass: the low halves (< 2**32) of 2**30 values sum below 2**62


@dataclass(frozen=True)
class ExactSum:
    """The exact sum of float64 values (``units`` of 2^-1074) and the count of each non-finite kind."""

    units: int = 0
    n: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    nan: int = 0

    @classmethod
    def of(cls, values) -> ExactSum:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(a)
        bad = a[~finite]
        total = 0
        fin = a[finite] if bad.size else a
        for lo in range(0, fin.size, _CHUNK):
            total += _exact_units(fin[lo : lo + _CHUNK])
        return cls(
            units=total,
            n=int(a.size),
            pos_inf=int(np.count_nonzero(bad == np.inf)),
            neg_inf=int(np.count_nonzero(bad == -np.inf)),
            nan=int(np.count_nonzero(np.isnan(bad))),
        )

    def __add__(self, other: ExactSum) -> ExactSum:
        return ExactSum(
            self.units + other.units,
            self.n + other.n,
            self.pos_inf + other.pos_inf,
            self.neg_inf + other.neg_inf,
            self.nan + other.nan,
        )

    def mean(self) -> float:
        """The correctly rounded mean (NaN over no values; inf / NaN from non-finite values)."""
        if self.nan or (self.pos_inf and self.neg_inf) or self.n == 0:
            return math.nan
        if self.pos_inf:
            return math.inf
        if self.neg_inf:
            return -math.inf
        try:
            return self.units / (self.n << 1074)  # int / int: correctly rounded
        except OverflowError:
            return math.inf if self.units > 0 else -math.inf


def _exact_units(a: np.ndarray) -> int:
    """sum(a) in units of 2^-1074, exactly (a: finite float64, at most _CHUNK values)."""
    if a.size == 0:
        return 0
    m, e = np.frexp(a)
    mant = (m * 2.0**53).astype(np.int64)  # exact: |mant| < 2**53
    order = np.argsort(e, kind="stable")
    es = e[order]
    starts = np.flatnonzero(np.r_[True, es[1:] != es[:-1]])
    ms = mant[order]
    hi = np.add.reduceat(ms >> 32, starts)  # floor division: ms = hi * 2**32 + lo, 0 <= lo < 2**32
    lo = np.add.reduceat(ms & 0xFFFFFFFF, starts)
    total = 0
    for h, low, ex in zip(hi.tolist(), lo.tolist(), es[starts].tolist(), strict=True):
        v = (h << 32) + low
        sh = ex + _SHIFT
        # a subnormal's mantissa ends in at least -sh zero bits, so the right shift is exact
        total += v << sh if sh >= 0 else v >> -sh
    return total


@dataclass(frozen=True)
class SummaryState:
    """Exact sums and counts behind ``Scores.summary()`` for a set of rows; ``merge`` (or ``+``)
    gives the state of the union of two disjoint row sets, ``result()`` the summary dict."""

    rows: int = 0
    ignored: int = 0
    base: float | None = None
    labels: bool = False
    sums: dict = field(default_factory=dict)  # name -> ExactSum over the kept rows (or absent)
    nan_rows: int = 0  # non-ignored rows whose model statistics are NaN (left out of every mean)

    @classmethod
    def of_arrays(cls, *, rows, ignored=None, base=None, **stats) -> SummaryState:
        """The state of one chunk of per-row statistics (NumPy arrays; None: not computed).
        ``stats``: the ``MEAN_KEYS`` (``accuracy`` from ``correct``), over rows not ``ignored``
        whose model statistics are not NaN (a NaN ``entropy``: a NaN or +inf logit, or a row of
        -inf); such rows are counted in ``nan_rows``. A NaN ``kl_divergence`` alone (a NaN
        teacher row) leaves the row out of the KL mean only."""
        n = int(rows)
        keep = np.ones(n, bool) if ignored is None else ~np.asarray(ignored, bool).reshape(-1)
        n_ign = int(keep.size - np.count_nonzero(keep))
        ent = stats.get("entropy")
        model_nan = np.zeros(n, bool) if ent is None else np.isnan(np.asarray(ent).reshape(-1))
        n_nan = int(np.count_nonzero(model_nan & keep))
        keep &= ~model_nan
        sums = {}
        for k in MEAN_KEYS:
            a = stats.get(k)
            if a is None:
                continue
            a = np.asarray(a).reshape(-1)
            rows_k = keep & ~np.isnan(a) if k == "kl_divergence" else keep
            sums[k] = ExactSum.of(a[rows_k])
        return cls(n, n_ign, base, ignored is not None, sums, n_nan)

    def merge(self, other: SummaryState) -> SummaryState:
        if not isinstance(other, SummaryState):
            raise TypeError(f"can only merge SummaryState objects; got {type(other).__name__}")
        if self.rows == 0 and not self.sums:
            return other
        if other.rows == 0 and not other.sums:
            return self
        if (self.base, self.labels, set(self.sums)) != (other.base, other.labels, set(other.sums)):
            raise ValueError(
                "summary states of different scores do not merge (base, labels or computed "
                f"fields differ: {self.base}, {self.labels}, {sorted(self.sums)} vs "
                f"{other.base}, {other.labels}, {sorted(other.sums)})"
            )
        sums = {k: self.sums[k] + other.sums[k] for k in self.sums}
        return SummaryState(self.rows + other.rows, self.ignored + other.ignored, self.base,
                            self.labels, sums, self.nan_rows + other.nan_rows)  # fmt: skip

    __add__ = merge

    def result(self) -> dict:
        """Means over non-ignored, non-NaN rows, ``perplexity`` = base**CE (e**CE in nats), the
        counts ``rows``, ``ignored`` and ``nan_rows``; a mean over no rows is NaN."""
        means = {k: (self.sums[k].mean() if k in self.sums else None) for k in MEAN_KEYS}
        return {
            "cross_entropy": means["cross_entropy"],
            "perplexity": perplexity(means["cross_entropy"], self.base),
            "accuracy": means["accuracy"],
            "entropy": means["entropy"],
            "kl_divergence": means["kl_divergence"],
            "rows": self.rows,
            "ignored": self.ignored,
            "nan_rows": self.nan_rows,
        }


def perplexity(ce: float | None, base: float | None) -> float | None:
    """base**ce (e**ce in nats); None without a cross-entropy, inf where it overflows."""
    if ce is None:
        return None
    if math.isnan(ce):
        return math.nan
    try:
        return math.exp(ce) if base is None else float(base) ** ce
    except OverflowError:
        return math.inf
