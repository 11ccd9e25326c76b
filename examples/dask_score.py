"""Score a data set of logits that does not fit in memory, on a Dask cluster, with ``numbaent.dask``.

Random logits, built lazily (each worker generates its own chunks; nothing is read)::

    python examples/dask_score.py --rows 1000000 --classes 1000 --chunk-rows 65536
    python examples/dask_score.py --rows 100000 --classes 32000 --chunk-rows 2048 --class-chunk 8000

Logits in a ``.npy`` file (memory-mapped by each task; every worker must see the same path)::

    python examples/dask_score.py --logits logits.npy --labels labels.npy --chunk-rows 65536 \\
        --scheduler tcp://scheduler:8786

Without ``--scheduler`` a ``LocalCluster`` of ``--workers`` processes (one thread each; Numba's
threads do the parallel work inside each) is started and shut down. ``--workers 0`` uses Dask's
default threaded scheduler in this process instead. The summary (means over non-ignored rows:
cross-entropy, perplexity, accuracy, entropy, KL to the teacher) is printed as a table, or as JSON
with ``--json``, followed by the throughput. See ``docs/scaling.md`` for sizing chunks and
workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np


def _load_block(path: str, block_info=None) -> np.ndarray:
    """One chunk of a ``.npy`` file: open it memory-mapped and copy the chunk's slice."""
    loc = block_info[None]["array-location"]
    arr = np.load(path, mmap_mode="r")
    return np.array(arr[tuple(slice(a, b) for a, b in loc)])


def lazy_npy(path: str, chunks) -> Any:
    """A dask array over a ``.npy`` file whose tasks read their own chunk (nothing but the path
    travels in the task graph, unlike ``da.from_array(np.load(path, mmap_mode="r"))``)."""
    import dask.array as da

    header = np.load(path, mmap_mode="r")
    shape, dtype = header.shape, header.dtype
    del header
    return da.map_blocks(
        _load_block,
        os.path.abspath(path),
        chunks=da.core.normalize_chunks(chunks, shape, dtype=dtype),
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype),
    )


def build_inputs(args) -> tuple[Any, Any, Any]:
    """(logits, labels, teacher_logits or None) as lazy dask arrays."""
    import dask.array as da

    class_chunk = args.class_chunk or -1
    if args.logits:
        logits = lazy_npy(args.logits, (args.chunk_rows, class_chunk))
        rows = logits.shape[0]
        labels = lazy_npy(args.labels, (args.chunk_rows,)) if args.labels else None
        teacher = lazy_npy(args.teacher, (args.chunk_rows, class_chunk)) if args.teacher else None
        return logits, labels, teacher
    rows, classes = args.rows, args.classes
    rng = da.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    chunks = (args.chunk_rows, class_chunk)
    logits = rng.standard_normal((rows, classes), chunks=chunks, dtype=np.float32) * 3
    logits = logits.astype(dtype)
    labels = rng.integers(0, classes, rows, chunks=args.chunk_rows)
    teacher = None
    if args.teacher_noise is not None:  # a "teacher" that agrees with the model up to noise
        noise = rng.standard_normal((rows, classes), chunks=chunks, dtype=np.float32)
        teacher = (logits + args.teacher_noise * noise).astype(dtype)
    return logits, labels, teacher


def input_bytes(logits, labels, teacher) -> int:
    n = math.prod(logits.shape) * logits.dtype.itemsize
    if labels is not None:
        n += math.prod(labels.shape) * labels.dtype.itemsize
    if teacher is not None:
        n += math.prod(teacher.shape) * teacher.dtype.itemsize
    return n


@contextlib.contextmanager
def cluster(args):
    """A dask.distributed Client for --scheduler, or a LocalCluster of --workers processes, or
    nothing (the default threaded scheduler) for --workers 0."""
    if args.scheduler is None and args.workers == 0:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    if args.scheduler is not None:
        with Client(args.scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as lc,
        Client(lc) as client,
    ):
        yield client


def run(args) -> dict[str, Any]:
    """Score the inputs; returns the summary plus ``seconds``, ``gb`` and ``gb_per_s``."""
    import numbaent.dask as nd

    logits, labels, teacher = build_inputs(args)
    scores = nd.score(
        logits,
        labels,
        teacher_logits=teacher,
        temperature=args.temperature,
        base=args.base,
        backend=args.backend,
    )
    nbytes = input_bytes(logits, labels, teacher)
    with cluster(args):
        t0 = time.perf_counter()
        summary = scores.summary()
        seconds = time.perf_counter() - t0
    summary["seconds"] = seconds
    summary["gb"] = nbytes / 1e9
    summary["gb_per_s"] = nbytes / 1e9 / seconds if seconds > 0 else math.inf
    summary["chunks"] = [len(c) for c in logits.chunks]
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of random logits")
    p.add_argument("--classes", type=int, default=1000, help="classes of random logits")
    p.add_argument("--chunk-rows", type=int, default=65536, help="rows per chunk")
    p.add_argument(
        "--class-chunk",
        type=int,
        default=None,
        help="classes per chunk (default: all; smaller values use partial log-sum-exp states)",
    )
    p.add_argument("--dtype", default="float32", help="dtype of random logits (float32, float64)")
    p.add_argument("--teacher-noise", type=float, default=None, help="add a random teacher")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logits", help=".npy file of logits (rows x classes) instead of random ones")
    p.add_argument("--labels", help=".npy file of int labels (with --logits)")
    p.add_argument("--teacher", help=".npy file of teacher logits (with --logits)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--base", type=float, default=None, help="log base (2: bits); default nats")
    p.add_argument("--backend", default=None, help="numbaent backend of each task")
    p.add_argument("--scheduler", help="address of a running dask scheduler")
    p.add_argument(
        "--workers", type=int, default=2, help="LocalCluster worker processes (0: threads)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = run(args)
    if args.json:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in summary.items()
        }
        print(json.dumps(clean, indent=2))
    else:
        for k, v in summary.items():
            text = "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
            print(f"  {k:14s} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
