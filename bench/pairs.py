"""Paired ratios: two numbaent cpu calls on the SAME inputs, timed alternately in one loop.

Issue #3 states two of its targets as ratios of numbaent's own timings: bfloat16 rows/s against
float32's (CE 4096x32000) and score(labels, teacher) against softmax_kl_divergence (4096x32000).
The score with every field (confidence, margin, rank, brier beside the rest) is paired with
softmax_cross_entropy on the same logits (4096x32000, 65536x1000), and score with a teacher with
score without one (4096x32000).
Read from two separate workloads, such a ratio compares timings taken minutes apart, and on a
shared 2-vCPU host the same code drifts 20-50% between minutes. Here the two calls alternate
(A B, then B A, ...) with the same settle before each, and the median of the per-repetition ratios
is reported next to the ratio of the min times.
"""

from __future__ import annotations

import gc
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.runner import calls_per_sample, gc_paused, short_error, time_sample
from bench.workloads import LOGIT_SCALE


@dataclass(frozen=True)
class Pair:
    name: str
    a: str
    b: str
    statement: str
    target: str
    ratio_sense: str
    full: tuple[int, int]
    quick: tuple[int, int]
    make: Callable[[Any, np.random.Generator, int, int], tuple[Callable, Callable]]
    note: str = ""  # how to read the target, under the table


@dataclass
class PairResult:
    pair: Pair
    rows: int
    cols: int
    times_a: list[float] = field(default_factory=list)
    times_b: list[float] = field(default_factory=list)
    calls: int = 1
    status: str = "ok"
    detail: str = ""

    def _q(self, ta: float, tb: float) -> float:
        return ta / tb if self.pair.ratio_sense == "a/b" else tb / ta

    @property
    def ratio_of_mins(self) -> float | None:
        if not (self.times_a and self.times_b):
            return None
        return self._q(min(self.times_a), min(self.times_b))

    @property
    def median_ratio(self) -> float | None:
        """Median over repetitions of the ratio of that repetition's two (adjacent) calls."""
        qs = [self._q(ta, tb) for ta, tb in zip(self.times_a, self.times_b, strict=False)]
        return statistics.median(qs) if qs else None

    def to_json(self) -> dict[str, Any]:
        p = self.pair
        return {
            "name": p.name,
            "a": p.a,
            "b": p.b,
            "statement": p.statement,
            "target": p.target,
            "rows": self.rows,
            "cols": self.cols,
            "status": self.status,
            "detail": self.detail,
            "calls_per_sample": self.calls,
            "times_a": self.times_a,
            "times_b": self.times_b,
            "ratio_of_mins": self.ratio_of_mins,
            "median_ratio": self.median_ratio,
        }


def _logits(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    x = rng.standard_normal((r, c), dtype=np.float32)
    x *= np.float32(LOGIT_SCALE)
    return x


def _make_bf16(ne: Any, rng: np.random.Generator, r: int, c: int) -> tuple[Callable, Callable]:
    import ml_dtypes

    x = _logits(rng, r, c)
    xb = x.astype(ml_dtypes.bfloat16)
    x = xb.astype(np.float32)  # the same values in both dtypes
    y = rng.integers(0, c, size=r, dtype=np.int64)
    f = ne.softmax_cross_entropy
    return (lambda: f(x, y, backend="cpu")), (lambda: f(xb, y, backend="cpu"))


def _make_score(ne: Any, rng: np.random.Generator, r: int, c: int) -> tuple[Callable, Callable]:
    x = _logits(rng, r, c)
    t = _logits(rng, r, c)
    y = rng.integers(0, c, size=r, dtype=np.int64)
    kl, sc = ne.softmax_kl_divergence, ne.score
    return (lambda: kl(t, x, backend="cpu")), (lambda: sc(x, y, teacher_logits=t, backend="cpu"))


def _make_score_ce(ne: Any, rng: np.random.Generator, r: int, c: int) -> tuple[Callable, Callable]:
    x = _logits(rng, r, c)
    y = rng.integers(0, c, size=r, dtype=np.int64)
    ce, sc = ne.softmax_cross_entropy, ne.score
    return (lambda: ce(x, y, reduction="none", backend="cpu")), (lambda: sc(x, y, backend="cpu"))


def _make_teacher(ne: Any, rng: np.random.Generator, r: int, c: int) -> tuple[Callable, Callable]:
    x = _logits(rng, r, c)
    t = _logits(rng, r, c)
    y = rng.integers(0, c, size=r, dtype=np.int64)
    sc = ne.score
    return (lambda: sc(x, y, backend="cpu")), (lambda: sc(x, y, teacher_logits=t, backend="cpu"))


#: the score before confidence, margin, rank and brier: the parent of the commit that added them
SCORE_BEFORE_FIELDS = "c0ffb34"

_SCORE_CE_NOTE = (
    "B returns every field but the KL. The target is on score's own time: score with every "
    "field <= 1.15 x the score of before "
    f"confidence, margin, rank and brier (commit {SCORE_BEFORE_FIELDS}, labels, no teacher). "
    "Timings minutes or commits apart do not compare on a shared host, a ratio to "
    "softmax_cross_entropy on the same inputs does: the target holds when this ratio is <= 1.15 "
    f"x the same pair's ratio measured with numbaent at {SCORE_BEFORE_FIELDS} (this bench, that "
    "commit's package on the path) on the same machine"
)


def _score_ce(full: tuple[int, int], quick: tuple[int, int]) -> Pair:
    return Pair(
        "pair score/softmax_ce",
        'softmax_cross_entropy(logits, labels, reduction="none")',
        "score(logits, labels)",
        "score time over softmax_cross_entropy's",
        "<= 1.15 x today's score (see the note)",
        "b/a",
        full,
        quick,
        _make_score_ce,
        _SCORE_CE_NOTE,
    )


PAIRS = [
    Pair(
        "pair bf16/f32 softmax_ce",
        "float32",
        "bfloat16",
        "bfloat16 rows/s over float32's (float32 time / bfloat16 time)",
        ">= 1.6",
        "a/b",
        (4096, 32000),
        (64, 2000),
        _make_bf16,
    ),
    Pair(
        "pair score/softmax_kl",
        "softmax_kl_divergence(teacher, logits)",
        "score(logits, labels, teacher_logits=teacher)",
        "score time over softmax_kl_divergence's",
        "<= 1.2",
        "b/a",
        (4096, 32000),
        (64, 2000),
        _make_score,
    ),
    _score_ce((4096, 32000), (64, 2000)),
    _score_ce((65536, 1000), (512, 100)),
    Pair(
        "pair score+teacher/score",
        "score(logits, labels)",
        "score(logits, labels, teacher_logits=teacher)",
        "score+teacher time over score's",
        "",  # no target: what the teacher's second read costs
        "b/a",
        (4096, 32000),
        (64, 2000),
        _make_teacher,
    ),
]


def select(quick: bool, only: list[str] | None) -> list[tuple[Pair, int, int]]:
    out = []
    for p in PAIRS:
        r, c = p.quick if quick else p.full
        full = f"{p.name} {p.full[0]}x{p.full[1]}"
        if only and not any(o.lower() in full.lower() for o in only):
            continue
        out.append((p, r, c))
    return out


def run_pair(
    p: Pair, rows: int, cols: int, reps: int, seed: int, settle_s: float, min_sample_s: float
) -> PairResult:
    res = PairResult(p, rows, cols)
    try:
        import numbaent as ne

        rng = np.random.default_rng([seed, 3])
        fa, fb = p.make(ne, rng, rows, cols)
        fa()
        fb()
        # one sample length for both, from the faster of the two
        res.calls = min(
            calls_per_sample(fa, min_sample_s, settle_s),
            calls_per_sample(fb, min_sample_s, settle_s),
        )
    except Exception as e:
        res.status, res.detail = "error", short_error(e)
        print(f"[{p.name}] error: {res.detail}", file=sys.stderr, flush=True)
        return res
    with gc_paused():
        try:
            for rep in range(reps):
                order = ((fa, res.times_a), (fb, res.times_b))
                for fn, times in order if rep % 2 == 0 else order[::-1]:
                    times.append(time_sample(fn, res.calls, settle_s))
        except Exception as e:
            res.status, res.detail = "error", f"rep {rep}: " + short_error(e)
    del fa, fb
    gc.collect()
    if res.ratio_of_mins is not None:
        print(
            f"[{p.name} {rows}x{cols}] {p.statement}: {res.ratio_of_mins:.3f} (min times), "
            f"{res.median_ratio:.3f} (median of paired)",
            file=sys.stderr,
            flush=True,
        )
    return res


def markdown(results: list[PairResult], quick: bool = False) -> list[str]:
    """The paired ratios' section. ``quick``: a smoke test's shapes, where a ratio says nothing
    about its full-size target, so the target is shown as not evaluated."""
    if not results:
        return []
    rows = []
    for r in results:
        p = r.pair
        name = f"{p.name} {r.rows}x{r.cols}"
        if r.status != "ok" or r.ratio_of_mins is None:
            rows.append(f"| {name} | {p.statement} | {r.status}: {r.detail} | | | | |")
            continue
        if not p.target:
            target = "— (none)"
        elif quick:
            target = f"not evaluated (--quick; {p.target} at {p.full[0]}x{p.full[1]})"
        else:
            target = p.target
        rows.append(
            f"| {name} | {p.statement} | **{r.ratio_of_mins:.2f}** | {r.median_ratio:.2f} | "
            f"{target} | {min(r.times_a) * 1e3:.3g} / {min(r.times_b) * 1e3:.3g} | "
            f"{len(r.times_a)} x {r.calls} |"
        )
    head = "| pair | ratio | of min times | median of paired | issue #3 | min ms (A / B) | reps x calls |"
    return [
        "## Paired ratios (numbaent cpu, same inputs, A and B alternated in one loop)",
        "",
        head,
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[
            f"- {r.pair.name} {r.rows}x{r.cols}: A = `{r.pair.a}`, B = `{r.pair.b}`"
            for r in results
        ],
        *_notes(results),
        "",
    ]


def _notes(results: list[PairResult]) -> list[str]:
    """Each distinct pair note once, after the A / B lines."""
    seen: dict[str, str] = {}
    for r in results:
        if r.pair.note and r.pair.note not in seen:
            seen[r.pair.note] = r.pair.name
    return [f"- Note ({name}): {note}." for note, name in seen.items()]
