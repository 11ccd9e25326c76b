"""Launch constants of the CUDA backend, read once from the environment (tests patch them).

=============================  =====================================================================
``THREADS``                    threads per block (one block per row). ``$NUMBAENT_CUDA_THREADS``;
                               default 256 on a GPU, 4 in the simulator (so that the per-thread
                               strides, the warp stage and the cross-warp stage all do real work).
``WARP``                       lanes per warp of the reduction tree: 32 on a GPU. The simulator has
                               no shuffles; they are emulated through shared memory over a "warp"
                               of 2 lanes for 4 threads (the smallest power of two whose square
                               holds ``THREADS``), so both reduction stages run there too.
``TILE``                       elements per thread per tile: each thread loads ``TILE`` strided
                               elements (coalesced across the block, all loads in flight before
                               the first use), takes the tile maximum, then sums the tile in the
                               math type before adding it to its float64 state. Kernels whose
                               first input has two-byte elements use twice ``TILE``.
                               ``$NUMBAENT_CUDA_TILE``; default 8 (4 in the simulator).
``MAX_BLOCKS``                 largest grid; rows are grid-strided (``$NUMBAENT_CUDA_BLOCKS``;
                               default 8192 on a GPU, 3 in the simulator).
=============================  =====================================================================

A kernel is specialised on (THREADS, WARP, TILE) when it is built, so changing them (tests use
``monkeypatch.setattr``) gives new kernels rather than stale ones.
"""

from __future__ import annotations

import os


def _simulator() -> bool:
    try:
        from numba.cuda.core import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover - older numba-cuda layouts
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


SIM = _simulator()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {raw!r}") from None
    if value < 1:
        raise ValueError(f"environment variable {name} must be positive; got {raw!r}")
    return value


THREADS = _env_int("NUMBAENT_CUDA_THREADS", 4 if SIM else 256)
TILE = _env_int("NUMBAENT_CUDA_TILE", 4 if SIM else 8)
MAX_BLOCKS = _env_int("NUMBAENT_CUDA_BLOCKS", 3 if SIM else 8192)


def warp_for(threads: int) -> int:
    """Lanes per warp for ``threads`` threads per block (the reduction tree's first stage)."""
    if not SIM:
        return 32
    w = 1
    while w * w < threads:
        w *= 2
    return w


def check_threads(threads: int) -> None:
    """THREADS must be a power of two, a multiple of the warp, with at most a warp of warps."""
    warp = warp_for(threads)
    ok = threads & (threads - 1) == 0 and threads % warp == 0 and threads <= warp * warp
    if not ok:
        lim = "32 .. 1024" if not SIM else "1 .. 1024"
        raise ValueError(f"NUMBAENT_CUDA_THREADS must be a power of two in {lim}; got {threads}")
