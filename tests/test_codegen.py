"""The hot block loops compile to packed SIMD code (ymm / zmm registers) on this machine.

PyPI's llvmlite has no SVML, so exp and log are numbaent's own polynomials; a loop that stops
vectorising (a call under a branch, an ``or``, a helper that LLVM cannot inline) runs 8-16x
slower without any result changing. This reads the generated assembly of every hot loop (each
signature the ops compile) in a fresh process, whose kernels are compiled there rather than loaded
from numba's cache (inspect_asm cannot read cached code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MIN_PACKED = 20  # a vectorised exp-sum loop holds well over 100; a scalar one none


def _has_avx2():
    try:
        return "avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx2(), reason="needs an x86 CPU with AVX2 (ymm registers)")
def test_every_hot_loop_is_packed_simd(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, str(HERE / "_codegen_probe.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(counts) >= 20, counts
    scalar = {k: v for k, v in counts.items() if v < MIN_PACKED}
    assert not scalar, scalar
