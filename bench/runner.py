"""Run one workload: generate inputs, warm up + check every implementation, then time them
interleaved (round robin per repetition, rotating the starting implementation)."""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench import formulas
from bench.impls import Impl, NotApplicable, NotInstalled
from bench.workloads import Workload

RTOL = 1e-3  # loose sanity tolerance vs the reference (relative, see compare())
RTOL_HALF = 1e-2  # results returned in bfloat16 / float16 (e.g. torch on bf16 input)
FLOAT_FIELDS = (
    "value",
    "logsumexp",
    "entropy",
    "confidence",
    "margin",
    "cross_entropy",
    "brier",
    "kl_divergence",
)
INT_FIELDS = ("argmax",)  # agree on >= 99.9% of rows
EXACT_INT_FIELDS = ("rank",)  # equal on every row, but for the rows with ties (compare())
SCORE_FIELDS = (
    "logsumexp",
    "entropy",
    "argmax",
    "confidence",
    "margin",
    "cross_entropy",
    "correct",
    "rank",
    "brier",
    "kl_divergence",
)
SCORE_KINDS = ("score", "score_teacher")


@dataclass
class Result:
    impl: str
    status: str  # "ok" | "not installed" | "n/a" | "error" | "skipped"
    detail: str = ""
    error: str = ""  # exception class name when status == "error"
    first_call_s: float | None = None
    times: list[float] = field(default_factory=list)
    check: str = "unchecked"  # "ok" | "MISMATCH" | "unchecked" | "reference"
    max_rel_err: float | None = None
    check_detail: str = ""
    calls: int = 1  # calls per timed sample (times are per call: sample time / calls)

    @property
    def min_s(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def to_json(self, wl: Workload) -> dict[str, Any]:
        d = asdict(self)
        d["min_s"] = self.min_s
        d["median_s"] = self.median_s
        t = self.min_s
        d["gb_per_s"] = wl.input_bytes / t / 1e9 if t else None
        d["rows_per_s"] = wl.rows / t if t else None
        return d


def short_error(e: BaseException, limit: int = 160) -> str:
    msg = " ".join(str(e).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ---------------------------------------------------------------------------------------------
# results -> host float64, and the comparison


def _host(a: Any) -> tuple[np.ndarray, bool]:
    """(NumPy array, was 16-bit float) from NumPy / CuPy / torch / JAX arrays."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        a = a.detach().to("cpu")
        half = str(a.dtype) in ("torch.bfloat16", "torch.float16")
        arr = (a.float() if half else a).numpy()
    elif mod.startswith("cupy"):
        arr = a.get()
        half = arr.dtype == np.float16
    else:
        arr = np.asarray(a)
        half = arr.dtype == np.float16 or arr.dtype.name == "bfloat16"
    if arr.dtype.kind in "fV" or half:
        arr = arr.astype(np.float64)
    return arr, bool(half)


def as_fields(raw: Any) -> dict[str, Any]:
    """A per-row array -> {"value": it}; Scores / dict -> its per-row fields."""
    if isinstance(raw, dict):
        return dict(raw)
    if hasattr(raw, "cross_entropy") and hasattr(raw, "logsumexp"):  # numbaent.Scores
        return {n: getattr(raw, n, None) for n in SCORE_FIELDS}
    return {"value": raw}


def to_host_fields(raw: Any) -> tuple[dict[str, np.ndarray], bool]:
    out, half = {}, False
    for k, v in as_fields(raw).items():
        if v is None:
            continue
        out[k], h = _host(v)
        half |= h
    return out, half


def compare(
    got: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    rtol: float,
    rank_window: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[bool, float | None, str]:
    """Float fields: max |g - r| / (|r| + mean|r|) <= rtol, NaNs in the same places.
    Integer fields (argmax): agree on >= 99.9% of rows. ``rank``: equal on every row, except that
    a row whose label's logit ties other classes may give any count from the strict one (classes
    with x_j > x_y) to the strict one plus every tie: ``rank_window`` = (those two counts per row,
    from the inputs; without it every row must be equal). numbaent counts the ties at a lower
    index, the peers' ``(x > x_y).sum()`` none. Returns (ok, max_rel_err, note)."""
    worst, notes, compared = 0.0, [], 0
    for name in FLOAT_FIELDS + INT_FIELDS + EXACT_INT_FIELDS:
        if name not in ref:
            continue
        if name not in got:
            notes.append(f"{name}: missing")
            continue
        g, r = np.asarray(got[name]), np.asarray(ref[name])
        if g.shape != r.shape:
            notes.append(f"{name}: shape {g.shape} != {r.shape}")
            continue
        compared += 1
        if name in INT_FIELDS:
            frac = float(np.mean(g != r)) if r.size else 0.0
            if frac > 1e-3:
                notes.append(f"{name}: {frac:.2%} rows differ")
            continue
        if name in EXACT_INT_FIELDS:
            differ = g != r
            if rank_window is not None and differ.any():
                lo, hi = rank_window
                differ &= (g < lo) | (g > hi)
            if differ.any():
                notes.append(f"{name}: {int(differ.sum())} rows differ (beyond ties)")
            continue
        g, r = g.astype(np.float64), r.astype(np.float64)
        nan_g, nan_r = np.isnan(g), np.isnan(r)
        if not np.array_equal(nan_g, nan_r):
            notes.append(f"{name}: NaN in {int(nan_g.sum())} rows vs {int(nan_r.sum())}")
            continue
        both = ~nan_r
        if not both.any():
            continue
        g, r = g[both], r[both]
        inf_r = ~np.isfinite(r)
        if not np.array_equal(g[inf_r], r[inf_r]):
            notes.append(f"{name}: inf mismatch")
            continue
        g, r = g[~inf_r], r[~inf_r]
        if r.size == 0:
            continue
        scale = float(np.mean(np.abs(r))) or 1.0
        err = float(np.max(np.abs(g - r) / (np.abs(r) + scale)))
        if not np.isfinite(err):
            err = float("inf")
        worst = max(worst, err)
        if err > rtol:
            notes.append(f"{name}: rel err {err:.2e} > {rtol:g}")
    if compared == 0 and not notes:
        notes.append(f"no comparable fields (got {sorted(got)}, ref {sorted(ref)})")
    return not notes, worst, "; ".join(notes)


# ---------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _reference64(wl: Workload, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The harness's own float64 formula result (independent of numbaent), computed in row
    blocks of ~2**24 elements so its float64 temporaries stay small."""
    step = max(1, 2**24 // max(wl.cols, 1))
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, wl.rows, step):
        block = {k: v[lo : lo + step] for k, v in inputs.items()}
        out = formulas.run(np, wl.kind, block, np.float64, exact_rank=True)
        for k, v in to_host_fields(out)[0].items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def rank_window(
    wl: Workload, inputs: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """For score workloads, per row: (classes strictly above the label's logit, that plus the
    other classes equal to it), the counts between which any tie rule's rank lies (compare())."""
    if wl.kind not in SCORE_KINDS:
        return None
    x, y = inputs["logits"], inputs["labels"]
    step = max(1, 2**24 // max(wl.cols, 1))
    lo, hi = np.empty(wl.rows, np.int64), np.empty(wl.rows, np.int64)
    for a in range(0, wl.rows, step):
        b = slice(a, a + step)
        xb = x[b].astype(np.float32)  # exact for float32 and bfloat16
        x_y = np.take_along_axis(xb, y[b, None], axis=1)
        lo[b] = (xb > x_y).sum(axis=1)
        hi[b] = (xb >= x_y).sum(axis=1) - 1  # less the label itself
    return lo, hi


def run_workload(
    wl: Workload,
    impls: list[Impl],
    reps: int,
    seed: int = 0,
    oracle_max_s: float = 10.0,
    settle_s: float = 0.0,
    min_sample_s: float = 0.0,
) -> dict[str, Result]:
    """Benchmark ``wl`` on ``impls``; returns impl key -> Result (in ``impls`` order).

    ``settle_s``: before every timed call (not timed), the same for all, wait until no other
    thread of this process is busy, at most ``settle_s`` (see _settle). On a 2-core machine the
    OpenMP / Eigen worker threads of the previous call (torch, JAX, numbaent's own) keep
    spinning for a while after it returns and take a core from whoever runs next.

    ``min_sample_s``: a timed sample is a loop of as many back-to-back calls as take at least this
    long (one untimed calibration call decides, as timeit's autorange does), and its time is the
    loop's over the calls. Calls that take longer are timed one by one. A single call of 0.2 ms
    measures how long the VM takes to wake the worker threads and refill the caches more than the
    call itself (see calls_per_sample)."""
    t0 = time.perf_counter()
    inputs = wl.make_inputs(seed)
    _log(
        f"[{wl.name}] inputs {wl.input_bytes / 1e6:.1f} MB generated in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    results: dict[str, Result] = {i.key: Result(i.key, "pending") for i in impls}
    active: list[tuple[Impl, Callable[[], Any]]] = []

    ref, ref_name, window = None, "", None
    try:
        ref, ref_name = _reference64(wl, inputs), "harness float64 formula"
    except Exception as e:
        _log(f"[{wl.name}] harness float64 reference failed: {short_error(e)}")
    try:
        window = rank_window(wl, inputs)
    except Exception as e:  # then every rank must equal the reference's
        _log(f"[{wl.name}] rank tie window failed: {short_error(e)}")
    gc.collect()

    # oracle first: its result is the reference for everyone else
    order = sorted(impls, key=lambda i: i.role != "oracle")
    for impl in order:
        res = results[impl.key]
        try:
            fn = impl.prepare(wl, inputs)
        except NotInstalled as e:
            res.status, res.detail = "not installed", str(e)
            _log(f"[{wl.name}] {impl.label}: not installed ({e})")
            continue
        except NotApplicable as e:
            res.status, res.detail = "n/a", str(e)
            _log(f"[{wl.name}] {impl.label}: n/a ({e})")
            continue
        except Exception as e:
            res.status, res.detail = "error", "prepare: " + short_error(e)
            res.error = type(e).__name__
            _log(f"[{wl.name}] {impl.label}: error in prepare: {short_error(e)}")
            continue
        try:
            t = time.perf_counter()
            out = fn()
            res.first_call_s = time.perf_counter() - t
        except Exception as e:
            res.status, res.detail = "error", short_error(e)
            res.error = type(e).__name__
            _log(f"[{wl.name}] {impl.label}: error on first call: {short_error(e)}")
            del fn
            continue

        if impl.checked:
            try:
                got, half = to_host_fields(out)
                if ref is None:
                    res.check, res.check_detail = "unchecked", "no reference"
                else:
                    ok, err, note = compare(got, ref, RTOL_HALF if half else RTOL, window)
                    res.max_rel_err = err
                    res.check = "ok" if ok else "MISMATCH"
                    res.check_detail = f"vs {ref_name}" + (f": {note}" if note else "")
                if impl.role == "oracle" and res.check == "ok":
                    ref, ref_name = got, "numbaent numpy oracle"
            except Exception as e:
                res.check, res.check_detail = "MISMATCH", "check failed: " + short_error(e)
        del out

        _log(
            f"[{wl.name}] {impl.label}: first call {res.first_call_s:.3f} s, check {res.check}"
            + (f" (max rel err {res.max_rel_err:.1e})" if res.max_rel_err is not None else "")
            + (f" [{res.check_detail}]" if res.check not in ("ok", "unchecked") else "")
        )
        if impl.role == "oracle" and res.first_call_s > oracle_max_s:
            res.status = "skipped"
            res.detail = f"oracle too slow: {res.first_call_s:.1f} s/call > {oracle_max_s:g} s"
            del fn
            continue
        try:
            res.calls = calls_per_sample(fn, min_sample_s, settle_s)
        except Exception as e:
            res.status, res.detail = "error", "calibration: " + short_error(e)
            res.error = type(e).__name__
            del fn
            continue
        res.status = "ok"
        active.append((impl, fn))
        del fn

    # timed repetitions, round robin, start rotated each repetition
    with gc_paused():
        for rep in range(reps):
            if not active:
                break
            k = rep % len(active)
            for impl, fn in active[k:] + active[:k]:
                res = results[impl.key]
                if res.status != "ok":
                    continue
                try:
                    res.times.append(time_sample(fn, res.calls, settle_s))
                except Exception as e:
                    res.status, res.detail = "error", f"rep {rep}: " + short_error(e)
                    res.error = type(e).__name__

    for impl in impls:
        res = results[impl.key]
        if res.status == "ok" and res.times:
            gbs = wl.input_bytes / res.min_s / 1e9
            _log(
                f"[{wl.name}] {impl.label:24s} min {res.min_s:.4f} s  "
                f"median {res.median_s:.4f} s  {gbs:7.2f} GB/s"
            )
    fn = None  # drop every closure (and the device arrays it holds) before freeing pools
    active.clear()
    del fn, active, inputs, ref, window
    _free_device_memory()
    gc.collect()
    return results


MAX_CALLS = 1000


def calls_per_sample(fn: Callable[[], Any], min_sample_s: float, settle_s: float = 0.0) -> int:
    """How many back-to-back calls make a timed sample of at least ``min_sample_s`` (1 when one
    call is that long), from one more (untimed) call. On this 2-vCPU VM an 8x262144 CE call took
    0.18 ms back to back and 0.45-1 ms when timed alone after a pause or another library's call:
    the rest was waking the halted vCPU and refetching the input from DRAM, for every library."""
    if min_sample_s <= 0:
        return 1
    t = time_sample(fn, 1, settle_s)
    if t >= min_sample_s:
        return 1
    return min(MAX_CALLS, math.ceil(min_sample_s / max(t, 1e-9)))


def time_sample(fn: Callable[[], Any], calls: int = 1, settle_s: float = 0.0) -> float:
    """Seconds per call of ``calls`` back-to-back calls, after settling (see _settle) for at most
    ``settle_s``, untimed."""
    if settle_s > 0:
        _settle(settle_s)
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the garbage collector off (a collection inside a timed call would be
    timed), restoring its state afterwards."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


QUIET_WINDOW_S = 0.005


def _settle(max_s: float) -> float:
    """Busy-wait until this process is quiet: a QUIET_WINDOW_S window in which all its threads
    together used no more CPU than this one spinning thread (time.process_time counts every
    thread). Other libraries' worker threads keep spinning after a call returns (JAX's for
    20-50 ms: a bf16 numbaent call right after a JAX call took 12.8-18 ms instead of 8.5, and the
    round robin put numbaent after JAX in 4 of 5 repetitions). At most ``max_s``; returns the
    time spent. Busy, not sleeping: this VM halts idle vCPUs and the next call then pays
    milliseconds to wake them (a 0.2 ms call took 0.9 ms after time.sleep(0.1))."""
    start = time.perf_counter()
    end = start + max_s
    while True:
        w0, c0 = time.perf_counter(), time.process_time()
        stop = w0 + QUIET_WINDOW_S
        while time.perf_counter() < stop:
            pass
        w1, c1 = time.perf_counter(), time.process_time()
        if c1 - c0 <= 1.25 * (w1 - w0) or w1 >= end:
            return w1 - start


def _free_device_memory() -> None:
    mods = sys.modules
    try:
        if "cupy" in mods:
            mods["cupy"].get_default_memory_pool().free_all_blocks()
        if "torch" in mods and mods["torch"].cuda.is_available():
            mods["torch"].cuda.empty_cache()
    except Exception:  # best effort
        pass
