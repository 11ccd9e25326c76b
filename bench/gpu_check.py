"""One-shot check of the cuda backend on a real GPU (H100 / H200): tests, then a benchmark.

    python bench/gpu_check.py [--test-budget 150] [--reps 20] [--no-tests] [--no-sweep]

1. Runs ``pytest tests/test_cuda.py tests/test_backends.py -m "gpu or not gpu" -x -q`` on the GPU
   (never the simulator) within a time budget; a failure or a timeout is reported, not fatal.
2. Benchmarks softmax cross-entropy, 4096 x 32000 logits with int64 labels, float32 and bfloat16:
   numbaent (public API on torch / CuPy inputs, and the bare kernel launch), torch
   ``F.cross_entropy``, a CuPy formula, and a device copy ``y[...] = x`` as the read-bandwidth
   limit. CUDA events around each call; min and median of ``--reps`` calls after a warm-up.
   GB/s counts input bytes read (R*C*itemsize + R*8). Then, time permitting, a sweep of the
   kernel's launch constants (threads per block x tile).

Prints markdown tables and writes them (plus the pytest log) under ``$OUT`` when it is set.
Needs torch (CUDA) and numba-cuda; CuPy is optional. Whole run: under 5 minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T0 = time.time()
REPORT = io.StringIO()


def say(line: str = "") -> None:
    print(line, flush=True)
    REPORT.write(line + "\n")


def out_dir() -> Path | None:
    o = os.environ.get("OUT")
    if not o:
        return None
    p = Path(o)
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------------------------------
# 1. tests


def run_tests(budget: float) -> None:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["NUMBAENT_TEST_CUDA"] = "1"
    env["NUMBAENT_TEST_PTX"] = "off"  # PTX is checked on CPUs in CI; the GPU's time is for the rest
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "tests/test_backends.py",
           "-m", "gpu or not gpu", "-x", "-q", "-p", "no:cacheprovider", "-rs"]  # fmt: skip
    say(f"## tests (budget {budget:.0f} s)\n\n`{' '.join(cmd[2:])}`\n")
    t = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
        log, status = r.stdout + r.stderr, f"exit status {r.returncode}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log, status = out + err, f"TIMED OUT after {budget:.0f} s (partial log below)"
    except Exception as exc:  # noqa: BLE001 - report and go on to the benchmark
        log, status = traceback.format_exc(), f"could not run: {exc!r}"
    od = out_dir()
    if od:
        (od / "pytest.log").write_text(log)
    tail = "\n".join(log.strip().splitlines()[-25:])
    say(f"{status} in {time.time() - t:.0f} s\n\n```\n{tail}\n```\n")


# --------------------------------------------------------------------------------------------------
# 2. benchmark


class Timer:
    """CUDA-event timing of a zero-argument callable on torch's current stream."""

    def __init__(self, torch, reps: int):
        self.torch = torch
        self.reps = reps

    def __call__(self, fn):
        torch = self.torch
        fn()  # warm-up: JIT compilation, allocator
        torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return min(times), statistics.median(times)


def bench(reps: int, sweep: bool, deadline: float) -> None:
    import torch

    import numbaent as ne

    try:
        import cupy as cp
    except Exception:  # noqa: BLE001 - optional
        cp = None
    R, C = 4096, 32000
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    say(f"## softmax cross-entropy {R}x{C}, int64 labels, reduction='none' ({name})\n")
    timer = Timer(torch, reps)
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = []

    def add(impl, dtype, nbytes, fn, ref=None, check=None):
        try:
            tmin, tmed = timer(fn)
            err = ""
            if check is not None and ref is not None:
                got = check()
                err = f"{float((got.double() - ref.double()).abs().max()):.1e}"
            rows.append((impl, dtype, tmin, tmed, nbytes / tmin / 1e9, err))
        except Exception as exc:  # noqa: BLE001 - a failing row must not stop the others
            rows.append((impl, dtype, None, None, None, f"error: {type(exc).__name__}: {exc}"[:90]))
            traceback.print_exc()

    for dtype in (torch.float32, torch.bfloat16):
        dname = str(dtype).replace("torch.", "")
        x = (torch.randn(R, C, device=dev, generator=gen) * 3).to(dtype)
        y = torch.randint(0, C, (R,), device=dev, generator=gen)
        nbytes = R * C * x.element_size() + R * 8
        ref = torch.nn.functional.cross_entropy(x.double(), y, reduction="none")
        dst = torch.empty_like(x)
        add("device copy y[...] = x (read limit)", dname, R * C * x.element_size(),
            lambda x=x, dst=dst: dst.copy_(x))  # fmt: skip
        add("torch F.cross_entropy", dname, nbytes,
            lambda x=x, y=y: torch.nn.functional.cross_entropy(x, y, reduction="none"), ref,
            lambda x=x, y=y: torch.nn.functional.cross_entropy(x, y, reduction="none"))  # fmt: skip
        add("numbaent (torch in/out)", dname, nbytes,
            lambda x=x, y=y: ne.softmax_cross_entropy(x, y), ref,
            lambda x=x, y=y: ne.softmax_cross_entropy(x, y))  # fmt: skip
        add(
            "numbaent mean (torch)",
            dname,
            nbytes,
            lambda x=x, y=y: ne.softmax_cross_entropy(x, y, reduction="mean"),
        )
        add("numbaent kernel launch only", dname, nbytes, kernel_launch(x, y, torch))
        if cp is not None and dtype == torch.float32:
            xc, yc = cp.asarray(x), cp.asarray(y)
            add("numbaent (CuPy in/out)", dname, nbytes,
                lambda xc=xc, yc=yc: ne.softmax_cross_entropy(xc, yc), ref,
                lambda xc=xc, yc=yc: torch.as_tensor(ne.softmax_cross_entropy(xc, yc), device=dev))  # fmt: skip

            def cupy_formula(xc=xc, yc=yc):
                m = xc.max(axis=1, keepdims=True)
                lse = m[:, 0] + cp.log(cp.exp(xc - m).sum(axis=1))
                return lse - xc[cp.arange(R), yc]

            add("CuPy formula", dname, nbytes, cupy_formula, ref,
                lambda: torch.as_tensor(cupy_formula(), device=dev))  # fmt: skip
        del x, dst
        torch.cuda.empty_cache()

    table(rows)
    if sweep and time.time() < deadline:
        sweep_constants(torch, deadline, reps)


def kernel_launch(x, y, torch):
    """The ce_labels kernel alone on numba views (no validation, no flag read)."""
    import numpy as np
    from numba import cuda

    from numbaent._cuda import ops

    R, C = x.shape
    bits = x.view(torch.int16) if x.dtype == torch.bfloat16 else x
    xv = cuda.as_cuda_array(bits, sync=False)
    if x.dtype == torch.bfloat16:
        xv = xv.view(np.uint16)
    out = torch.empty(R, device=x.device)
    rw = torch.empty(R, dtype=torch.float64, device=x.device)
    bad = torch.empty(R, dtype=torch.int8, device=x.device)
    first = torch.full((1,), R, dtype=torch.int64, device=x.device)
    w = torch.ones(1, device=x.device)
    views = [cuda.as_cuda_array(t, sync=False) for t in (y, w, out, rw, bad, first)]
    stream = cuda.external_stream(torch.cuda.current_stream().cuda_stream) if (
        torch.cuda.current_stream().cuda_stream) else cuda.default_stream()  # fmt: skip
    yv, wv, ov, rv, bv, fv = views

    def launch():
        ops.run("ce_labels", R, stream, xv, yv, wv, False, -100, 0.0, ov, rv, bv, fv)

    return launch


def table(rows) -> None:
    copy = {r[1]: r[4] for r in rows if r[0].startswith("device copy") and r[4]}
    torch_t = {r[1]: r[2] for r in rows if r[0].startswith("torch") and r[2]}
    say("| implementation | dtype | min ms | median ms | GB/s (input read) | / copy GB/s | "
        "speed vs torch | max abs err vs float64 |")  # fmt: skip
    say("|---|---|---:|---:|---:|---:|---:|---|")
    for impl, dt, tmin, tmed, gbs, err in rows:
        if tmin is None:
            say(f"| {impl} | {dt} | | | | | | {err} |")
            continue
        rc = f"{gbs / copy[dt]:.2f}" if dt in copy else ""
        vt = f"{torch_t[dt] / tmin:.2f}x" if dt in torch_t else ""
        say(f"| {impl} | {dt} | {tmin * 1e3:.3f} | {tmed * 1e3:.3f} | {gbs:.0f} | {rc} | {vt} | "
            f"{err} |")  # fmt: skip
    say()


def sweep_constants(torch, deadline: float, reps: int) -> None:
    """Kernel-only time of the launch constants (each new pair compiles new kernels)."""
    from numbaent._cuda import _config

    R, C = 4096, 32000
    say("## launch constants (kernel launch only, min ms; default marked *)\n")
    say("| threads | tile | float32 | bfloat16 |")
    say("|---:|---:|---:|---:|")
    saved = (_config.THREADS, _config.TILE)
    gen = torch.Generator(device="cuda").manual_seed(1)
    xs = {dt: (torch.randn(R, C, device="cuda", generator=gen) * 3).to(dt)
          for dt in (torch.float32, torch.bfloat16)}  # fmt: skip
    y = torch.randint(0, C, (R,), device="cuda", generator=gen)
    timer = Timer(torch, max(5, reps // 2))
    try:
        for threads, tile in [(256, 8), (128, 8), (256, 4), (256, 16), (512, 8), (512, 16),
                              (1024, 4), (1024, 8)]:  # fmt: skip
            if time.time() > deadline:
                say("| (time budget reached) | | | |")
                break
            _config.THREADS, _config.TILE = threads, tile
            cells = []
            for x in xs.values():
                try:
                    cells.append(f"{timer(kernel_launch(x, y, torch))[0] * 1e3:.3f}")
                except Exception as exc:  # noqa: BLE001
                    cells.append(f"error: {type(exc).__name__}")
            star = "*" if (threads, tile) == saved else ""
            say(f"| {threads}{star} | {tile}{star} | {cells[0]} | {cells[1]} |")
    finally:
        _config.THREADS, _config.TILE = saved
    say()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--test-budget", type=float, default=150.0, help="seconds for the tests")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--total", type=float, default=280.0, help="seconds for the whole run")
    a = ap.parse_args()
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    say("# numbaent gpu_check\n")
    try:
        import numbaent as ne

        say(f"cuda backend: {ne.backends()['cuda']}\n")
    except Exception:  # noqa: BLE001
        say(f"```\n{traceback.format_exc()}```\n")
    if not a.no_tests:
        run_tests(min(a.test_budget, a.total - 100))
    try:
        bench(a.reps, not a.no_sweep, deadline=T0 + a.total - 20)
    except Exception:  # noqa: BLE001 - the report is still written
        say(f"benchmark failed:\n```\n{traceback.format_exc()}```\n")
    say(f"total {time.time() - T0:.0f} s")
    od = out_dir()
    if od:
        (od / "gpu_check.md").write_text(REPORT.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
