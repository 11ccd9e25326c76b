"""Streaming benchmark: ``numbaent score`` on a memory-mapped ``.npy`` larger than a chunk, vs the
in-memory kernel.

    python bench/stream_mmap.py                 # 8 GB of float32 logits (C = 32000) + labels
    python bench/stream_mmap.py --gb 1 --json   # quick check

Steps:

1. Write ``logits.npy`` (``--gb`` GB of float32, ``--classes`` columns, rows to fit) and
   ``labels.npy`` (int64) under a temporary directory (``--dir``); a 64 MB block of random
   normals times 3 is written repeatedly, each copy shifted by a random per-row constant (the
   results do not depend on it: softmax is shift invariant; the kernels' work does not depend on
   the values).
2. Run ``python -m numbaent score logits.npy --labels labels.npy --json`` in a subprocess,
   twice: ``cold`` after evicting the files from the page cache (``posix_fadvise(DONTNEED)``,
   so the file is read from disk, as data much larger than memory would be) and ``warm``
   (whatever the page cache kept). While it runs, its memory is sampled every 20 ms from
   ``/proc/<pid>/status`` (``VmHWM``, ``RssAnon``, ``RssFile``; psutil's RSS where ``/proc`` is
   missing); the peak RSS is ``VmHWM`` (``wait4``'s ``ru_maxrss`` is reported too, but it
   includes the parent's own peak: Linux carries it into a forked child across exec). RSS counts the memory-mapped file pages that are resident at the time
   (``RssFile``, reclaimable page cache); ``RssAnon`` is the process's own memory.
3. The subprocess runs the CLI's entry point (``numbaent.cli.main``) after loading the JIT cache
   with a 1-row call, and reports the time spent in ``main``: throughput is given with and
   without the interpreter start-up, imports and JIT load.
4. Time ``numbaent.score`` in this process on a subset that fits in memory (``--subset-gb``,
   default 0.5; one warm-up call, best of ``--reps``) with the same backend.
5. Print both throughputs (GB/s of input: logits + labels) and their ratio; delete the files.

Throughput ratios near 1 mean the stream is compute-bound (the kernels are the bottleneck);
well below 1 with ``cold`` means the disk is. Run it on an idle machine: other processes' load
skews both numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BLOCK_BYTES = 64 * 2**20


def write_inputs(d: Path, gb: float, classes: int, seed: int) -> tuple[Path, Path, int]:
    rows = max(1, int(gb * 1e9) // (classes * 4))
    rng = np.random.default_rng(seed)
    block_rows = max(1, min(rows, BLOCK_BYTES // (classes * 4)))
    block = (rng.standard_normal((block_rows, classes), dtype=np.float32) * 3).astype(np.float32)
    lpath, ypath = d / "logits.npy", d / "labels.npy"
    out = np.lib.format.open_memmap(lpath, mode="w+", dtype=np.float32, shape=(rows, classes))
    for r0 in range(0, rows, block_rows):
        r1 = min(rows, r0 + block_rows)
        shift = rng.standard_normal((r1 - r0, 1), dtype=np.float32)
        np.add(block[: r1 - r0], shift, out=out[r0:r1])
    out.flush()
    del out
    np.save(ypath, rng.integers(0, classes, rows, dtype=np.int64))
    return lpath, ypath, rows


def evict(*paths: Path) -> bool:
    """Drop the files' pages from the page cache (clean pages only: fsync first)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _proc_status(pid: int) -> dict[str, int] | None:
    """VmHWM, VmRSS, RssAnon, RssFile in bytes from /proc/<pid>/status (None if unreadable)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples a process's memory every ``interval`` seconds until it exits; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()
        try:
            import psutil

            self._ps = psutil.Process(pid)
        except Exception:  # psutil missing, or the process is already gone
            self._ps = None

    def _sample(self) -> dict[str, int] | None:
        st = _proc_status(self.pid)
        if st is None and self._ps is not None:
            try:
                rss = self._ps.memory_info().rss
            except Exception:
                return None
            st = {"VmRSS": rss}
        return st

    def run(self) -> None:
        while not self.stop.is_set():
            st = self._sample()
            if st:
                for k, v in st.items():
                    self.peak[k] = max(self.peak.get(k, 0), v)
            time.sleep(self.interval)


# The subprocess runs the CLI's entry point, ``numbaent.cli.main([...])`` (what the ``numbaent``
# command runs), after one 1-row ``numbaent.score`` call that loads the JIT cache, and reports how
# long ``main`` itself took on stderr: the interpreter start, imports and JIT load are timed apart.
_RUNNER = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import numbaent
from numbaent.cli import main
c = int(sys.argv[1])
numbaent.score(np.zeros((1, c), np.float32), np.zeros(1, np.int64))
t1 = time.perf_counter()
rc = main(sys.argv[2:])
t2 = time.perf_counter()
sys.stderr.write("\\n@@" + json.dumps({"setup_s": t1 - t0, "main_s": t2 - t1}) + "\\n")
sys.exit(rc)
"""


def run_cli(lpath: Path, ypath: Path, extra: list[str]) -> dict:
    classes = int(np.load(lpath, mmap_mode="r").shape[-1])
    cmd = [sys.executable, "-c", _RUNNER, str(classes), "score", str(lpath), "--labels"]
    cmd += [str(ypath), "--json", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid)
    sampler.start()
    maxrss = None
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        out, err = proc.stdout.read(), proc.stderr.read()
    else:  # pragma: no cover - not Linux
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"numbaent score failed ({proc.returncode}): {err.decode()[-2000:]}")
    timing = json.loads(err.decode().rpartition("@@")[2])
    return {
        "wall_s": wall,
        "setup_s": timing["setup_s"],
        "main_s": timing["main_s"],
        "summary": json.loads(out),
        # VmHWM is the child's own high-water mark since exec (monotonic, so a 20 ms sampling
        # misses at most the last interval). wait4's ru_maxrss is NOT used as the peak: Linux
        # copies the parent's high-water mark into the forked child and keeps it across exec, so
        # it reports the bench process's own peak (the 8 GB it mapped while writing the file).
        "peak_rss": sampler.peak.get("VmHWM") or sampler.peak.get("VmRSS") or maxrss,
        "ru_maxrss_incl_parent": maxrss,
        "peak_rss_anon": sampler.peak.get("RssAnon"),
        "peak_rss_file": sampler.peak.get("RssFile"),
    }


def in_memory_throughput(lpath: Path, ypath: Path, subset_gb: float, reps: int, backend):
    import numbaent

    x_map = np.load(lpath, mmap_mode="r")
    rows = max(1, min(x_map.shape[0], int(subset_gb * 1e9) // (x_map.shape[1] * 4)))
    x = np.array(x_map[:rows])
    y = np.array(np.load(ypath, mmap_mode="r")[:rows])
    del x_map
    numbaent.score(x[: min(rows, 64)], y[: min(rows, 64)], backend=backend)  # compile / cache load
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        numbaent.score(x, y, backend=backend)
        best = min(best, time.perf_counter() - t0)
    return rows, (x.nbytes + y.nbytes) / best / 1e9, best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=8.0, help="size of the logits file (GB, 1e9 B)")
    ap.add_argument("--classes", type=int, default=32000)
    ap.add_argument("--dir", help="where to write the files (default: a new temporary directory)")
    ap.add_argument("--subset-gb", type=float, default=0.5, help="in-memory subset size (GB)")
    ap.add_argument("--reps", type=int, default=3, help="in-memory timing repetitions")
    ap.add_argument("--chunk-rows", type=int, default=None, help="passed to numbaent score")
    ap.add_argument("--backend", default=None, help="passed to numbaent score and the kernel run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    parent = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    need = args.gb * 1e9 * 1.05 + 1e8
    free = shutil.disk_usage(parent).free
    if free < need:
        print(f"not enough disk space in {parent}: {free / 1e9:.1f} GB free", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="numbaent-stream-", dir=parent))
    extra = []
    if args.chunk_rows:
        extra += ["--chunk-rows", str(args.chunk_rows)]
    if args.backend:
        extra += ["--backend", args.backend]
    res: dict = {"gb": args.gb, "classes": args.classes, "dir": str(work)}
    try:
        t0 = time.perf_counter()
        lpath, ypath, rows = write_inputs(work, args.gb, args.classes, args.seed)
        res["rows"] = rows
        res["write_s"] = time.perf_counter() - t0
        nbytes = lpath.stat().st_size + ypath.stat().st_size
        res["input_bytes"] = nbytes
        for mode in ("cold", "warm"):
            if mode == "cold":
                res["evicted"] = evict(lpath, ypath)
            r = run_cli(lpath, ypath, extra)
            r["gb_per_s"] = nbytes / r["main_s"] / 1e9
            r["gb_per_s_incl_startup"] = nbytes / r["wall_s"] / 1e9
            res[mode] = r
        sub_rows, gbps, best = in_memory_throughput(
            lpath, ypath, args.subset_gb, args.reps, args.backend
        )
        res["in_memory"] = {"rows": sub_rows, "gb_per_s": gbps, "best_s": best}
        for mode in ("cold", "warm"):
            res[mode]["ratio_to_in_memory"] = res[mode]["gb_per_s"] / gbps
        res["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    gib = 2**30
    print(f"file: {rows} x {args.classes} float32 + int64 labels = {nbytes / 1e9:.2f} GB")
    print(
        f"in-memory numbaent.score on {sub_rows} rows: {gbps:.3f} GB/s "
        f"({res['in_memory']['best_s']:.3f} s)"
    )
    for mode in ("cold", "warm"):
        r = res[mode]
        anon = r["peak_rss_anon"]
        filep = r["peak_rss_file"]
        print(
            f"numbaent score ({mode}): {r['main_s']:.2f} s in main(), {r['gb_per_s']:.3f} GB/s, "
            f"ratio to in-memory {r['ratio_to_in_memory']:.2f} (process: {r['wall_s']:.2f} s with "
            f"{r['setup_s']:.2f} s start-up, {r['gb_per_s_incl_startup']:.3f} GB/s); peak RSS "
            f"{r['peak_rss'] / gib:.2f} GiB"
            + (
                f" (anonymous {anon / gib:.2f} GiB, file-backed {filep / gib:.2f} GiB)"
                if anon
                else ""
            )
        )
    print(f"summary: {res['warm']['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
