"""The one summary implementation: exact sums of per-row statistics, mergeable across row chunks.

``Scores.summary()``, the CLI's chunked runs and ``numbaent.dask`` all reduce to a ``SummaryState``
and call ``result()``, so the same rows give the same summary bit for bit however they were split
(the means of a float64 sum depend on the order of the additions; these do not). A sum is held
exactly, as an integer number of 2^-1074 (the smallest float64 step): each finite value is an
integer mantissa times a power of two, grouped by exponent and added in int64 halves, then in
Python integers across exponents. Non-finite values are counted instead (+inf, -inf, NaN), and a
mean is the correctly rounded quotient of the exact sum by the count. Top-k accuracies are
integer counts, and the calibration errors (ECE, MCE) come from a histogram of integer counts and
exact per-bin sums of the confidences, so every value of ``result()`` is exact up to its final
rounding.

This module imports nothing of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

MEAN_KEYS = ("cross_entropy", "accuracy", "brier", "confidence", "entropy", "kl_divergence")
DEFAULT_TOP_K = (1, 5)
DEFAULT_BINS = 15
_SHIFT = 1021  # a = M * 2**(e - 53) with M = m * 2**53 (np.frexp: a = m * 2**e) = M * 2**(e + 1021 - 1074)
_CHUNK = 1 << 30  # values per int64 pass: the low halves (< 2**32) of 2**30 values sum below 2**62
_EOFF, _ESPAN = 1100, 2200  # np.frexp's exponents (-1073 .. 1024) + _EOFF lie in [0, _ESPAN)


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
    out = [0]
    _add_units(a, None, out)
    return out[0]


def _units_by_group(a: np.ndarray, groups: np.ndarray, n_groups: int) -> list[int]:
    """The exact sum of the finite float64 values ``a`` of each group 0 .. n_groups - 1 (units of
    2^-1074); ``groups``: a non-negative integer per value."""
    out = [0] * n_groups
    for lo in range(0, a.size, _CHUNK):
        _add_units(a[lo : lo + _CHUNK], groups[lo : lo + _CHUNK], out)
    return out


def _add_units(a: np.ndarray, groups: np.ndarray | None, out: list[int]) -> None:
    """Add the exact sum of each group's values (all in group 0 without ``groups``) to ``out``
    (a: finite float64, at most _CHUNK values): integer mantissas grouped by (group, exponent)."""
    if a.size == 0:
        return
    m, e = np.frexp(a)
    mant = (m * 2.0**53).astype(np.int64)  # exact: |mant| < 2**53
    key = e if groups is None else groups.astype(np.int64) * _ESPAN + (e + _EOFF)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ms = mant[order]
    hi = np.add.reduceat(ms >> 32, starts)  # floor division: ms = hi * 2**32 + lo, 0 <= lo < 2**32
    lo = np.add.reduceat(ms & 0xFFFFFFFF, starts)
    for h, low, k in zip(hi.tolist(), lo.tolist(), ks[starts].tolist(), strict=True):
        g, ex = (0, k) if groups is None else (k // _ESPAN, k % _ESPAN - _EOFF)
        v = (h << 32) + low
        sh = ex + _SHIFT
        # a subnormal's mantissa ends in at least -sh zero bits, so the right shift is exact
        out[g] += v << sh if sh >= 0 else v >> -sh


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def check_top_k(top_k) -> tuple[int, ...]:
    """``top_k`` (positive ints, or one int) as a sorted tuple without repeats; else ValueError."""
    bad = ValueError(f"top_k must be positive ints (e.g. (1, 5)); got {top_k!r}")
    ks = (top_k,) if _is_int(top_k) else top_k
    try:
        ks = tuple(ks)
    except TypeError:
        raise bad from None
    if any(not _is_int(k) or k < 1 for k in ks):
        raise bad
    return tuple(sorted({int(k) for k in ks}))


def check_bins(bins) -> int:
    """``bins`` as a positive int; else ValueError."""
    if not _is_int(bins) or bins < 1:
        raise ValueError(f"bins must be a positive int (e.g. 15); got {bins!r}")
    return int(bins)


def calibration_bins(conf: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin, min(floor(confidence * bins), bins - 1) of the exact product (0 for
    a confidence below 0): bins [k / bins, (k + 1) / bins), the last one closed at 1."""
    p = np.clip(conf * bins, 0, bins - 1)
    b = np.floor(p)
    # the float product can round up onto an integer n when the exact one is just below n (it
    # never rounds across one otherwise): such rows are floored exactly, once per distinct value
    edge = (b == p) & (b > 0)
    if edge.any():
        vals, where = np.unique(conf[edge], return_inverse=True)
        exact = [
            min(num * bins // den, bins - 1)
            for num, den in map(float.as_integer_ratio, vals.tolist())
        ]
        b[edge] = np.asarray(exact, np.float64)[where.reshape(-1)]
    return b.astype(np.int64)


def _calibration(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple:
    """(row counts, correct counts, exact confidence sums in units of 2^-1074), one per bin."""
    b = calibration_bins(conf, bins)
    counts = np.bincount(b, minlength=bins)
    right = np.bincount(b[correct], minlength=bins)
    units = _units_by_group(conf, b, bins)
    return tuple(counts.tolist()), tuple(right.tolist()), tuple(units)


def _ratio(count: int, n: int) -> float:
    return count / n if n else math.nan  # int / int: correctly rounded


def _calibration_errors(calibration: tuple, n: int) -> tuple[float, float]:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| = sum_b |correct_b - conf_sum_b| / n and
    MCE = max over non-empty bins of |accuracy_b - confidence_b|, each correctly rounded from
    exact integers; NaN over no rows."""
    if n == 0:
        return math.nan, math.nan
    counts, right, units = calibration
    one = 1 << 1074
    gaps = [abs(c * one - u) for c, u in zip(right, units, strict=True)]
    ece = sum(gaps) / (n * one)
    worst = max(
        (Fraction(g, m * one) for g, m in zip(gaps, counts, strict=True) if m), default=None
    )
    return ece, (math.nan if worst is None else float(worst))


@dataclass(frozen=True)
class SummaryState:
    """Exact sums and counts behind ``Scores.summary()`` for a set of rows; ``merge`` (or ``+``)
    gives the state of the union of two disjoint row sets, ``result()`` the summary dict.

    Besides the exact sums of the means (``sums``) it holds the counts of the kept rows (not
    ignored, not NaN) whose label ranks below each ``top_k`` (``top_k_counts``), and the
    calibration histogram over ``bins`` equal-width confidence bins (``calibration``: per bin the
    row count, the count of correct rows and the exact sum of the confidences in units of
    2^-1074). Fields whose inputs were not given are None (a missing mean is absent from
    ``sums``)."""

    rows: int = 0
    ignored: int = 0
    base: float | None = None
    labels: bool = False
    sums: dict = field(default_factory=dict)  # name -> ExactSum over the kept rows (or absent)
    nan_rows: int = 0  # non-ignored rows whose model statistics are NaN (left out of every mean)
    top_k: tuple = DEFAULT_TOP_K
    bins: int = DEFAULT_BINS
    top_k_counts: tuple | None = None  # per top_k entry: kept rows with 0 <= rank < k
    calibration: tuple | None = None  # (counts, correct counts, confidence units), per bin

    @classmethod
    def of_arrays(
        cls, *, rows, ignored=None, base=None, top_k=DEFAULT_TOP_K, bins=DEFAULT_BINS, **stats
    ) -> SummaryState:
        """The state of one chunk of per-row statistics (NumPy arrays; None: not computed).
        ``stats``: the ``MEAN_KEYS`` (``accuracy`` from ``correct``) and ``rank``, over rows not
        ``ignored`` whose model statistics are not NaN (a NaN ``entropy`` or ``confidence``: a
        NaN or +inf logit, or a row of -inf); such rows are counted in ``nan_rows``. A NaN
        ``kl_divergence`` alone (a NaN teacher row) leaves the row out of the KL mean only.
        ``top_k``: positive ints (the top-k counts need ``rank``); ``bins``: a positive int (the
        calibration histogram needs ``confidence`` and ``accuracy``)."""
        top_k = check_top_k(top_k)
        bins = check_bins(bins)
        n = int(rows)
        keep = np.ones(n, bool) if ignored is None else ~np.asarray(ignored, bool).reshape(-1)
        n_ign = int(keep.size - np.count_nonzero(keep))
        model_nan = np.zeros(n, bool)
        if stats.get("entropy") is not None:
            model_nan |= np.isnan(np.asarray(stats["entropy"], np.float64).reshape(-1))
        if (
            stats.get("confidence") is not None
        ):  # (a confidence is NaN exactly where the entropy is)
            model_nan |= ~np.isfinite(np.asarray(stats["confidence"], np.float64).reshape(-1))
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
        counts = None
        if stats.get("rank") is not None:
            r = np.asarray(stats["rank"]).reshape(-1)[keep]
            counts = tuple(int(np.count_nonzero((r >= 0) & (r < k))) for k in top_k)
        calibration = None
        if stats.get("confidence") is not None and stats.get("accuracy") is not None:
            conf = np.asarray(stats["confidence"], np.float64).reshape(-1)[keep]
            correct = np.asarray(stats["accuracy"], bool).reshape(-1)[keep]
            calibration = _calibration(conf, correct, bins)
        return cls(n, n_ign, base, ignored is not None, sums, n_nan, top_k, bins, counts,
                   calibration)  # fmt: skip

    def _is_empty(self) -> bool:
        return self.rows == 0 and not self.sums

    def merge(self, other: SummaryState) -> SummaryState:
        """The state of the union of this state's rows and ``other``'s (disjoint row sets);
        neither operand changes. An empty ``SummaryState()`` is the identity. States of different
        ``top_k``, ``bins``, ``base``, labels or computed fields raise ``ValueError``."""
        if not isinstance(other, SummaryState):
            raise TypeError(f"can only merge SummaryState objects; got {type(other).__name__}")
        if self._is_empty():
            return other
        if other._is_empty():
            return self
        a, b = self._layout(), other._layout()
        if a != b:
            diff = ", ".join(f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
            raise ValueError(f"summary states of different scores do not merge ({diff})")
        sums = {k: self.sums[k] + other.sums[k] for k in self.sums}
        counts = None
        if self.top_k_counts is not None:
            counts = tuple(
                x + y for x, y in zip(self.top_k_counts, other.top_k_counts, strict=True)
            )
        calibration = None
        if self.calibration is not None:
            calibration = tuple(
                tuple(x + y for x, y in zip(p, q, strict=True))
                for p, q in zip(self.calibration, other.calibration, strict=True)
            )
        return SummaryState(self.rows + other.rows, self.ignored + other.ignored, self.base,
                            self.labels, sums, self.nan_rows + other.nan_rows, self.top_k,
                            self.bins, counts, calibration)  # fmt: skip

    __add__ = merge

    def _layout(self) -> dict:
        """What two states must share to merge."""
        return {
            "top_k": self.top_k,
            "bins": self.bins,
            "base": self.base,
            "labels": self.labels,
            "computed fields": sorted(self.sums)
            + ["top_k_accuracy"] * (self.top_k_counts is not None)
            + ["ece"] * (self.calibration is not None),
        }

    def result(self) -> dict:
        """Means over non-ignored, non-NaN rows (``cross_entropy``, ``accuracy``, ``brier``,
        ``confidence``, ``entropy``, ``kl_divergence``), ``perplexity`` = base**CE (e**CE in
        nats), ``top_k_accuracy`` ({k: fraction of rows with rank < k}), ``ece`` and ``mce``
        (expected and maximum calibration error over the equal-width confidence bins), and the
        counts ``rows``, ``ignored`` and ``nan_rows``. None: not computed; over no rows every
        mean, ``ece`` and ``mce`` are NaN. Every value is the correctly rounded value of the
        exact one, so it does not depend on how the rows were split."""
        means = {k: (self.sums[k].mean() if k in self.sums else None) for k in MEAN_KEYS}
        kept = self.rows - self.ignored - self.nan_rows
        top = None
        if self.top_k_counts is not None:
            top = {k: _ratio(c, kept) for k, c in zip(self.top_k, self.top_k_counts, strict=True)}
        ece = mce = None
        if self.calibration is not None:
            ece, mce = _calibration_errors(self.calibration, kept)
        return {
            "cross_entropy": means["cross_entropy"],
            "perplexity": perplexity(means["cross_entropy"], self.base),
            "accuracy": means["accuracy"],
            "top_k_accuracy": top,
            "brier": means["brier"],
            "ece": ece,
            "mce": mce,
            "confidence": means["confidence"],
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
