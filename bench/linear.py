"""Workloads from hidden states: ``numbaent.linear_score(hidden, weight, labels)`` against the
chunked matrix product alone (its limit) and the peers' materialised ``hidden @ weight.T``.

``linear_score`` never holds the (N, V) logits: it cuts the rows and the vocabulary into the chunks
of ``numbaent.linear._plan``, each chunk's logits come from NumPy's matmul (BLAS) into a reused
scratch, are scored by numbaent's kernels and folded into per-row states. Its work is 2 N V d
flops of products plus a few passes over each chunk while it is in cache, so its yardstick is:

* ``chunked matmul (limit)``: exactly the products ``linear_score`` does (the same row and class
  chunks from ``_plan``, ``np.matmul(h[r0:r1], w[c0:c1].T, out=scratch)`` into one buffer of the
  same size, reused), nothing else: the limit of numbaent's approach with NumPy's BLAS.

Peers, each with its materialised logits (N x V x 4 bytes), computing fewer fields than numbaent
(every field of ``numbaent.score`` but the KL): cross_entropy, argmax and correct:

* ``torch cpu``: ``F.linear(h, w)``, ``F.cross_entropy(logits, y, reduction="none")``,
  ``logits.argmax(-1)``, ``argmax == y`` on ``torch.from_numpy`` views;
* ``JAX jit cpu``: ``jax.jit`` of ``jnp.dot(h, w.T)``, ``-take(log_softmax)``, ``argmax``, ``==``,
  compiled ahead of time for the inputs' shapes (``lower(...).compile()``), inputs ``device_put``
  once, ``block_until_ready``.

Reported per contender: min and median time, GFLOP/s = 2 N V d / min time, time over the chunked
matmul's (same run, interleaved), and the peak memory above the inputs, measured in a fresh
subprocess per contender and workload (``python -m bench.linear --memory KEY ...``): the child
imports, calls the contender once on tiny inputs (JIT compilation, thread pools, BLAS
initialisation), generates the full inputs, prepares the contender (JAX: device_put and the
ahead-of-time compile), collects garbage and trims the malloc heap, resets the kernel's RSS
high-water mark (``/proc/self/clear_refs`` = 5), reads VmRSS (the baseline: interpreter,
libraries, the inputs as the contender holds them), makes one full call and reads VmHWM. Peak above
the inputs = VmHWM - baseline: the most resident memory the call added at any moment (whatever it
allocated and touched: scratch, BLAS packing buffers, materialised logits, the outputs). Without
``clear_refs`` the child uses ``ru_maxrss`` (exact when the call raised the process's lifetime
peak, else only an upper bound, marked ``<=``).

Inputs: hidden ``standard_normal`` (N, d) float32, weight ``standard_normal * 3 / sqrt(d)`` (V, d)
float32 (logits of standard deviation 3, as the other workloads' ``standard_normal * 3``), int64
labels uniform in [0, V), from a generator seeded by ``--seed`` and the workload's full-size name.

Check: every contender's first call against a float64 reference on ``CHECK_ROWS`` rows spread
over N (their logits from a float64 product, then the harness's float64 score formula), with the
bench's tolerance; the rank may be anything between the float64 counts of classes above
``x_y + tol`` and at or above ``x_y - tol`` (``tol = RANK_TOL * (1 + |x_y|)``): a float32 product
rounds logits within ~1e-6 of the label's either way.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import formulas
from bench.impls import NotApplicable, NotInstalled, optional_import
from bench.runner import (
    RTOL,
    Result,
    compare,
    gc_paused,
    short_error,
    time_sample,
    to_host_fields,
)
from bench.workloads import LOGIT_SCALE

ROOT = Path(__file__).resolve().parents[1]

#: timed samples per contender after its untimed first call (full size; --quick: 1)
DEFAULT_REPS = 3
#: rows of the float64 reference the first calls are checked on
CHECK_ROWS = 128
#: logits within RANK_TOL * (1 + |x_y|) of the label's (float64) may rank either way
RANK_TOL = 1e-4
#: the issue's targets: time <= TARGET_RATIO x the chunked matmul's at V = TARGET_V, and the peak
#: memory above the inputs <= TARGET_MIB + O(N), the O(N) taken as PER_ROW_BYTES per row (about
#: 32 float64 per row: linear_score's ~15 per-row state arrays, the 10 result fields, temporaries)
TARGET_RATIO = 1.15
TARGET_V = 128000
TARGET_MIB = 64
PER_ROW_BYTES = 256
MIB = 1 << 20
#: the full-size run of the group, measured on the 2-vCPU AMD EPYC VM (see bench/README.md)
FULL_RUN_NOTE = "about 10 min on a 2-vCPU VM, and 5 GB of free memory for torch's logits"


@dataclass(frozen=True)
class LinearWorkload:
    """``linear_score(hidden (N, d), weight (V, d), labels (N,))``, float32."""

    rows: int  # N
    dim: int  # d
    classes: int  # V
    nominal: tuple[int, int, int]  # the full-size (N, d, V) (differs under --quick)
    op: str = "linear_score"
    kind: str = "linear_score"
    dtype: str = "float32"

    @staticmethod
    def _name(n: int, d: int, v: int) -> str:
        return f"linear_score f32 {n}x{d} V={v}"

    @property
    def name(self) -> str:
        return self._name(self.rows, self.dim, self.classes)

    @property
    def nominal_name(self) -> str:
        return self._name(*self.nominal)

    @property
    def cols(self) -> int:  # the logits' columns, for the bench's generic code
        return self.classes

    @property
    def flops(self) -> int:
        """2 N V d: the products' multiply-adds."""
        return 2 * self.rows * self.classes * self.dim

    @property
    def input_bytes(self) -> int:
        return self.rows * self.dim * 4 + self.classes * self.dim * 4 + self.rows * 8

    @property
    def logits_bytes(self) -> int:
        """N x V x 4: the materialised float32 logits."""
        return self.rows * self.classes * 4

    @property
    def bytes_formula(self) -> str:
        return "N*d*4 + V*d*4 + N*8 (hidden, weight, int64 labels); flops 2*N*V*d"

    @property
    def target_bytes(self) -> int:
        """The memory target: TARGET_MIB + PER_ROW_BYTES * N."""
        return TARGET_MIB * MIB + PER_ROW_BYTES * self.rows

    def matches(self, pattern: str) -> bool:
        p = pattern.lower()
        return p in self.name.lower() or p in self.nominal_name.lower()

    def make_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, zlib.crc32(self.nominal_name.encode())])
        n, d, v = self.rows, self.dim, self.classes
        h = rng.standard_normal((n, d), dtype=np.float32)
        w = rng.standard_normal((v, d), dtype=np.float32)
        w *= np.float32(LOGIT_SCALE / math.sqrt(d))
        y = rng.integers(0, v, size=n, dtype=np.int64)
        out = {"hidden": h, "weight": w, "labels": y}
        assert sum(a.nbytes for a in out.values()) == self.input_bytes
        return out


# (full (N, d, V), --quick (N, d, V)): the quick shapes still cut V into two or three chunks
_TABLE = [
    ((4096, 2048, 32000), (48, 32, 5000)),
    ((4096, 2048, 128000), (64, 64, 9000)),
]
#: the tiny call every contender makes first (compilation, thread pools), in-process and in the
#: memory subprocess
WARM = LinearWorkload(8, 16, 300, (8, 16, 300))


def all_workloads(quick: bool = False) -> list[LinearWorkload]:
    return [LinearWorkload(*(q if quick else f), f) for f, q in _TABLE]


def select(
    quick: bool, only: list[str] | None, include: bool, exclude: bool
) -> list[LinearWorkload]:
    """The group's workloads for a run: none with ``--no-linear``; those matching ``--only``;
    else all of them under ``--quick`` (tiny shapes) or ``--linear``, and none in a plain full run
    (see bench/README.md: the group alone takes FULL_RUN_NOTE)."""
    wls = all_workloads(quick)
    if exclude:
        return []
    if only:
        return [w for w in wls if any(w.matches(o) for o in only)]
    return wls if (quick or include) else []


# ---------------------------------------------------------------------------------------------
# contenders


Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class LinearImpl:
    key: str
    label: str
    role: str  # "numbaent" | "peer" | "limit"
    prepare: Callable[[LinearWorkload, Inputs], Callable[[], Any]]
    computes: str  # the fields it returns, for the report
    checked: bool = True


def _prepare_numbaent(wl: LinearWorkload, a: Inputs) -> Callable[[], Any]:
    ne = optional_import("numbaent")
    h, w, y = a["hidden"], a["weight"], a["labels"]
    return lambda: ne.linear_score(h, w, y, backend="cpu")


def plan(h: np.ndarray, w: np.ndarray) -> tuple[int, int]:
    """(rows, classes) per chunk, as ``linear_score`` chooses them (no teacher, default chunk)."""
    lin = optional_import("numbaent.linear")
    dtype = np.result_type(h.dtype, w.dtype)
    return lin._plan(h.shape[0], w.shape[0], h, w, None, dtype, None)


def plan_of(wl: LinearWorkload) -> tuple[int, int] | None:
    """``plan`` for the workload's shapes (arrays of no memory); None when it fails."""
    try:
        z = np.float32(0)
        return plan(np.broadcast_to(z, (wl.rows, wl.dim)), np.broadcast_to(z, (wl.classes, wl.dim)))
    except Exception:
        return None


def chunked_matmul(h: np.ndarray, w: np.ndarray) -> Callable[[], None]:
    """The products of ``linear_score`` alone: ``_plan``'s row and class chunks, each
    ``np.matmul(h[r0:r1], w[c0:c1].T)`` into one reused buffer of ``rows * classes``."""
    n, nv = h.shape[0], w.shape[0]
    rows, vc = plan(h, w)
    buf = np.empty(rows * vc, np.result_type(h.dtype, w.dtype))

    def run() -> None:
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            hr = h[r0:r1]
            for c0 in range(0, nv, vc):
                c1 = min(nv, c0 + vc)
                np.matmul(hr, w[c0:c1].T, out=buf[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, -1))

    return run


def _prepare_matmul(wl: LinearWorkload, a: Inputs) -> Callable[[], Any]:
    return chunked_matmul(a["hidden"], a["weight"])


def _prepare_torch(wl: LinearWorkload, a: Inputs) -> Callable[[], Any]:
    torch = optional_import("torch")
    F = torch.nn.functional
    h, w, y = (torch.from_numpy(a[k]) for k in ("hidden", "weight", "labels"))  # no copy

    def run() -> Any:
        x = F.linear(h, w)  # (N, V) materialised
        ce = F.cross_entropy(x, y, reduction="none")
        am = x.argmax(-1)
        return {"cross_entropy": ce, "argmax": am, "correct": am == y}

    return run


def _prepare_jax(wl: LinearWorkload, a: Inputs) -> Callable[[], Any]:
    jax = optional_import("jax")
    jnp = jax.numpy
    cpu = jax.devices("cpu")[0]
    # int64 labels become int32 (JAX default, x64 disabled); inputs are put on the device ONCE
    args = [
        jax.device_put(a["hidden"], cpu),
        jax.device_put(a["weight"], cpu),
        jax.device_put(a["labels"].astype(np.int32), cpu),
    ]

    def f(h: Any, w: Any, y: Any) -> Any:
        x = jnp.dot(h, w.T)
        ls = jax.nn.log_softmax(x, axis=1)
        am = x.argmax(1)
        ce = -jnp.take_along_axis(ls, y[:, None], axis=1)[:, 0]
        return {"cross_entropy": ce, "argmax": am, "correct": am == y}

    compiled = jax.jit(f).lower(*args).compile()  # for these shapes, outside the timing
    jax.block_until_ready(args)
    return lambda: jax.block_until_ready(compiled(*args))


_PEER_FIELDS = "cross_entropy, argmax, correct (from materialised logits)"
IMPLS: list[LinearImpl] = [
    LinearImpl(
        "numbaent_cpu",
        "numbaent cpu",
        "numbaent",
        _prepare_numbaent,
        "every score field but the KL (logsumexp, entropy, argmax, confidence, margin, "
        "cross_entropy, correct, rank, brier)",
    ),
    LinearImpl(
        "matmul_limit",
        "chunked matmul (limit)",
        "limit",
        _prepare_matmul,
        "the products only, into a reused scratch",
        checked=False,
    ),
    LinearImpl("torch", "torch cpu", "peer", _prepare_torch, _PEER_FIELDS),
    LinearImpl("jax", "JAX jit cpu", "peer", _prepare_jax, _PEER_FIELDS),
]
BY_KEY = {i.key: i for i in IMPLS}


def select_impls(peers: bool = True) -> list[LinearImpl]:
    return [i for i in IMPLS if peers or i.role != "peer"]


# ---------------------------------------------------------------------------------------------
# the check


def reference(
    wl: LinearWorkload, inputs: Inputs, k: int = CHECK_ROWS
) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(rows, float64 reference fields on them, rank window): the rows spread over N, their logits
    from a float64 product (8192 classes at a time), the harness's float64 score formula."""
    h, w, y = inputs["hidden"], inputs["weight"], inputs["labels"]
    idx = np.unique(np.linspace(0, wl.rows - 1, min(k, wl.rows)).astype(np.int64))
    h64 = h[idx].astype(np.float64)
    x = np.empty((idx.size, wl.classes))
    for c0 in range(0, wl.classes, 8192):
        x[:, c0 : c0 + 8192] = h64 @ w[c0 : c0 + 8192].astype(np.float64).T
    yi = y[idx]
    ref = to_host_fields(formulas.score(np, x, yi, exact_rank=True))[0]
    x_y = np.take_along_axis(x, yi[:, None], axis=1)
    tol = RANK_TOL * (1.0 + np.abs(x_y))
    lo = (x > x_y + tol).sum(axis=1)
    hi = (x >= x_y - tol).sum(axis=1) - 1  # less the label itself
    return idx, ref, (lo, hi)


def check(
    got_raw: Any, idx: np.ndarray, ref: dict[str, np.ndarray], window: Any
) -> tuple[bool, float | None, str]:
    """The contender's fields on the reference rows against the reference (only the fields it
    returns; ``correct`` must agree with the reference's on >= 99.9 % of the rows)."""
    got, _ = to_host_fields(got_raw)
    got = {k: v[idx] for k, v in got.items()}
    ok, err, note = compare(got, {k: v for k, v in ref.items() if k in got}, RTOL, window)
    if "correct" in got:
        frac = float(np.mean(got["correct"].astype(bool) != ref["correct"].astype(bool)))
        if frac > 1e-3:
            ok, note = False, "; ".join(filter(None, [note, f"correct: {frac:.2%} rows differ"]))
    return ok, err, note


# ---------------------------------------------------------------------------------------------
# peak memory, in a fresh subprocess


def _status_bytes() -> dict[str, int]:
    """VmRSS, VmHWM (bytes) from /proc/self/status; {} where there is none."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give the malloc heap's free pages back (glibc), so that the call cannot reuse resident
    pages freed before it and hide them from its peak."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except Exception:  # not glibc
        pass


def measure_here(key: str, shape: tuple[int, int, int], seed: int) -> dict[str, Any]:
    """The memory subprocess's work (see the module docstring); returns what it prints."""
    impl = BY_KEY[key]
    warm_in = WARM.make_inputs(seed)
    impl.prepare(WARM, warm_in)()
    del warm_in
    wl = LinearWorkload(*shape, shape)
    inputs = wl.make_inputs(seed)
    fn = impl.prepare(wl, inputs)
    gc.collect()
    _malloc_trim()
    exact = _reset_hwm()
    st0, max0 = _status_bytes(), _maxrss_bytes()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    st1, max1 = _status_bytes(), _maxrss_bytes()
    rss0 = st0.get("VmRSS")
    if exact and rss0 is not None and "VmHWM" in st1:
        method, peak, bound = "VmHWM after clear_refs", st1["VmHWM"] - rss0, False
    else:  # ru_maxrss: exact only when the call raised the lifetime peak
        base = rss0 if rss0 is not None else max0
        method, peak, bound = "ru_maxrss", max1 - base, max1 <= max0
    del out
    return {
        "method": method,
        "peak_above_inputs": int(peak),
        "upper_bound": bool(bound),
        "rss_before": rss0,
        "retained": (st1["VmRSS"] - rss0) if rss0 is not None and "VmRSS" in st1 else None,
        "call_s": dt,
    }


def measure_memory(wl: LinearWorkload, key: str, seed: int, timeout_s: float = 900) -> dict:
    """Run ``measure_here`` in a fresh ``python -m bench.linear --memory`` subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.linear", "--memory", key, "--seed", str(seed)]
    cmd += ["--shape", str(wl.rows), str(wl.dim), str(wl.classes)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join((proc.stderr or proc.stdout).split()[-30:])
        raise RuntimeError(f"memory subprocess exit {proc.returncode}: {tail}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class LinearResult(Result):
    memory: dict[str, Any] | None = None
    memory_error: str = ""

    def to_json(self, wl: LinearWorkload) -> dict[str, Any]:  # type: ignore[override]
        d = asdict(self)
        d["min_s"], d["median_s"] = self.min_s, self.median_s
        d["gflop_per_s"] = wl.flops / self.min_s / 1e9 if self.min_s else None
        return d


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_workload(
    wl: LinearWorkload,
    impls: list[LinearImpl],
    reps: int,
    seed: int = 0,
    settle_s: float = 0.0,
    memory: bool = True,
) -> dict[str, LinearResult]:
    """Every contender: a tiny warm-up call, prepare, one untimed first call (checked), then
    ``reps`` single-call samples round robin (start rotated each repetition, settle before each);
    then, inputs freed, each one's peak memory in its own subprocess."""
    t0 = time.perf_counter()
    inputs = wl.make_inputs(seed)
    _log(f"[{wl.name}] inputs {wl.input_bytes / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    res = {i.key: LinearResult(i.key, "pending") for i in impls}
    ref = None
    try:
        t0 = time.perf_counter()
        ref = reference(wl, inputs)
        _log(
            f"[{wl.name}] float64 reference on {ref[0].size} rows: {time.perf_counter() - t0:.1f} s"
        )
    except Exception as e:
        _log(f"[{wl.name}] float64 reference failed: {short_error(e)}")
    active: list[tuple[LinearImpl, Callable[[], Any]]] = []
    for impl in impls:
        r = res[impl.key]
        try:
            impl.prepare(WARM, WARM.make_inputs(seed))()
            fn = impl.prepare(wl, inputs)
        except NotInstalled as e:
            r.status, r.detail = "not installed", str(e)
            _log(f"[{wl.name}] {impl.label}: not installed ({e})")
            continue
        except NotApplicable as e:
            r.status, r.detail = "n/a", str(e)
            continue
        except Exception as e:
            r.status, r.detail, r.error = "error", "prepare: " + short_error(e), type(e).__name__
            _log(f"[{wl.name}] {impl.label}: error in prepare: {short_error(e)}")
            continue
        try:
            t = time.perf_counter()
            out = fn()
            r.first_call_s = time.perf_counter() - t
        except Exception as e:
            r.status, r.detail, r.error = "error", short_error(e), type(e).__name__
            _log(f"[{wl.name}] {impl.label}: error on first call: {short_error(e)}")
            continue
        if impl.checked:
            if ref is None:
                r.check, r.check_detail = "unchecked", "no reference"
            else:
                try:
                    ok, err, note = check(out, *ref)
                    r.check, r.max_rel_err = ("ok" if ok else "MISMATCH"), err
                    r.check_detail = f"vs float64 on {ref[0].size} rows" + (
                        f": {note}" if note else ""
                    )
                except Exception as e:
                    r.check, r.check_detail = "MISMATCH", "check failed: " + short_error(e)
        del out
        _log(
            f"[{wl.name}] {impl.label}: first call {r.first_call_s:.2f} s, check {r.check}"
            + (f" [{r.check_detail}]" if r.check == "MISMATCH" else "")
        )
        r.status = "ok"
        active.append((impl, fn))
    with gc_paused():
        for rep in range(reps):
            k = rep % len(active) if active else 0
            for impl, fn in active[k:] + active[:k]:
                r = res[impl.key]
                if r.status != "ok":
                    continue
                try:
                    r.times.append(time_sample(fn, 1, settle_s))
                except Exception as e:
                    r.status, r.detail = "error", f"rep {rep}: " + short_error(e)
                    r.error = type(e).__name__
    for impl, _ in active:
        r = res[impl.key]
        if r.times:
            _log(
                f"[{wl.name}] {impl.label:24s} min {r.min_s:.3f} s  median {r.median_s:.3f} s  "
                f"{wl.flops / r.min_s / 1e9:6.1f} GFLOP/s"
            )
    fn = None
    active.clear()
    del fn, inputs, ref
    gc.collect()
    if memory:
        for impl in impls:
            r = res[impl.key]
            if r.status != "ok":
                continue
            try:
                r.memory = measure_memory(wl, impl.key, seed)
                m = r.memory
                _log(
                    f"[{wl.name}] {impl.label}: peak above inputs "
                    f"{'<= ' if m['upper_bound'] else ''}{m['peak_above_inputs'] / MIB:.1f} MiB "
                    f"({m['method']})"
                )
            except Exception as e:
                r.memory_error = short_error(e, 300)
                _log(f"[{wl.name}] {impl.label}: memory measurement failed: {r.memory_error}")
    return res


LinearRun = list[tuple[LinearWorkload, dict[str, LinearResult]]]


def _min(r: LinearResult | None) -> float | None:
    return min(r.times) if r is not None and r.status == "ok" and r.times else None


def ratios(res: dict[str, LinearResult], key: str = "numbaent_cpu") -> tuple[float, float] | None:
    """(``key``'s min time over the chunked matmul's, median over repetitions of the ratio of the
    two samples of the same repetition)."""
    a, b = res.get(key), res.get("matmul_limit")
    ta, tb = _min(a), _min(b)
    if not (ta and tb):
        return None
    per = [x / y for x, y in zip(a.times, b.times, strict=False)]  # type: ignore[union-attr]
    return ta / tb, statistics.median(per)


def peak(r: LinearResult | None) -> int | None:
    return r.memory["peak_above_inputs"] if r is not None and r.memory else None


def failures(run: LinearRun) -> list[str]:
    """numbaent's errors and disagreements (the exit status's concern; peers never count)."""
    out = []
    for wl, res in run:
        r = res.get("numbaent_cpu")
        if r is None:
            continue
        if r.status in ("error", "not installed"):
            out.append(f"{wl.name} / numbaent cpu: {r.status} {r.detail}".rstrip())
        elif r.check == "MISMATCH":
            out.append(f"{wl.name} / numbaent cpu: disagrees with reference: {r.check_detail}")
        elif r.memory_error:
            out.append(f"{wl.name} / numbaent cpu: memory measurement: {r.memory_error}")
    return out


# ---------------------------------------------------------------------------------------------
# report


def _mib(b: int | None, r: LinearResult | None = None) -> str:
    if b is None:
        return "—" if r is None or not r.memory_error else "error"
    bound = "<= " if r is not None and r.memory and r.memory.get("upper_bound") else ""
    return f"{bound}{b / MIB:.1f}" if abs(b) < 100 * MIB else f"{bound}{b / MIB:.0f}"


def _status_cell(r: LinearResult) -> str:
    return f"error: {r.error or 'Exception'}" if r.status == "error" else r.status


def markdown(run: LinearRun, impls: list[LinearImpl], quick: bool = False) -> list[str]:
    if not run:
        return []
    lines = [
        "## From hidden states: linear_score(hidden (N, d), weight (V, d), labels), float32",
        "",
        "| workload | implementation | min s | median s | samples | GFLOP/s | "
        "time / chunked matmul | peak MiB above inputs | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for wl, res in run:
        base = _min(res.get("matmul_limit"))
        for i in impls:
            r = res.get(i.key)
            if r is None:
                continue
            t = _min(r)
            if t is None:
                lines.append(f"| {wl.name} | {i.label} | {_status_cell(r)} | | | | | | |")
                continue
            rel = f"{t / base:.3f}" if base else "—"
            chk = r.check + (" (!)" if r.check == "MISMATCH" else "")
            lines.append(
                f"| {wl.name} | {i.label} | {t:.4g} | {r.median_s:.4g} | {len(r.times)} | "
                f"{wl.flops / t / 1e9:.1f} | {rel} | {_mib(peak(r), r)} | {chk} |"
            )
    lines += [
        "",
        "| workload | numbaent / chunked matmul (min; median of reps) | target | "
        "numbaent peak above inputs | target | materialised logits N·V·4 | chunks (rows x "
        "classes: scratch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for wl, res in run:
        q = ratios(res)
        p = peak(res.get("numbaent_cpu"))
        if quick:
            t_time = t_mem = "not evaluated (--quick)"
        else:
            if wl.classes != TARGET_V or q is None:
                t_time = f"— (<= {TARGET_RATIO} at V={TARGET_V})"
            else:
                t_time = f"<= {TARGET_RATIO}: " + ("met" if q[0] <= TARGET_RATIO else "MISSED")
            t_mem = f"<= {wl.target_bytes / MIB:.0f} MiB" + (
                "" if p is None else (": met" if p <= wl.target_bytes else ": MISSED")
            )
        lines.append(
            f"| {wl.name} | "
            + (f"**{q[0]:.3f}**; {q[1]:.3f}" if q else "—")
            + f" | {t_time} | {_mib(p, res.get('numbaent_cpu'))} MiB | {t_mem} | "
            f"{wl.logits_bytes / MIB:.0f} MiB | "
            + (f"{c[0]} x {c[1]}: {c[0] * c[1] * 4 / MIB:.3g} MiB" if (c := plan_of(wl)) else "?")
            + " |"
        )
    lines += [
        "",
        *[f"- {i.label}: {i.computes}." for i in impls],
        "- GFLOP/s = 2·N·V·d / min time (the products' flops, for every contender alike). "
        "Contenders interleaved round robin, one call per sample after an untimed first call "
        "(checked against a float64 reference on "
        f"{CHECK_ROWS} rows) and a tiny warm-up call.",
        "- Peak above inputs: a fresh subprocess per contender and workload, after a tiny "
        "warm-up call and with the inputs generated and the contender prepared: the kernel's "
        "RSS high-water mark during one full call (VmHWM, reset by /proc/self/clear_refs just "
        "before it) minus the RSS just before it. It counts everything the call made resident: "
        "scratch, BLAS packing buffers, materialised logits and their temporaries, the outputs. "
        f"Memory target: {TARGET_MIB} MiB + {PER_ROW_BYTES} B x N (the O(N) part).",
        "",
    ]
    return lines


def to_json(run: LinearRun) -> list[dict[str, Any]]:
    return [
        {
            "name": wl.name,
            "nominal_name": wl.nominal_name,
            "kind": wl.kind,
            "dtype": wl.dtype,
            "rows": wl.rows,
            "dim": wl.dim,
            "classes": wl.classes,
            "flops": wl.flops,
            "input_bytes": wl.input_bytes,
            "logits_bytes": wl.logits_bytes,
            "target_bytes": wl.target_bytes,
            "chunks": plan_of(wl),
            "numbaent_over_matmul": (q := ratios(res)) and {"of_mins": q[0], "median": q[1]},
            "results": {k: r.to_json(wl) for k, r in res.items()},
        }
        for wl, res in run
    ]


# ---------------------------------------------------------------------------------------------
# the memory subprocess: python -m bench.linear --memory KEY --shape N d V --seed S


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.linear")
    p.add_argument("--memory", required=True, choices=sorted(BY_KEY))
    p.add_argument("--shape", type=int, nargs=3, required=True, metavar=("N", "d", "V"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(measure_here(a.memory, tuple(a.shape), a.seed)), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
