"""Shared fixtures: backends under test, dtypes, the tolerance table and input generators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import numbaent

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16), BF16]

# backends compared with the oracle; the cuda backend joins when it is available (simulator in CI)
BACKENDS = ["cpu"]
if os.environ.get("NUMBAENT_TEST_CUDA", "") == "1" or numbaent.backends()["cuda"].available:
    BACKENDS.append("cuda")

# |got - ref| <= atol + rtol * |ref|, ref = float64 oracle on the same (rounded) inputs
TOL = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (2e-6, 2e-6),
    np.dtype(np.float16): (2e-6, 2e-6),  # math is float32 on the exact half values
    BF16: (2e-6, 2e-6),
}

# Shapes and why they are here: 1x1 (smallest); 3x423 (C odd, not a multiple of any SIMD width);
# 5x1 (C = 1: every softmax is 1); 0x7 (no rows); 4x0 (empty rows); 2x3000 (several kernel
# blocks of 1024, last one partial); 17x64 (rows not a multiple of the thread count).
SHAPES = [(1, 1), (3, 423), (5, 1), (0, 7), (4, 0), (2, 3000), (17, 64)]


def tol(dtype):
    return TOL[np.dtype(dtype)]


def assert_close(got, ref, dtype, scale=1.0):
    atol, rtol = tol(dtype)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=rtol * scale, atol=atol * scale, equal_nan=True)


def logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def probs(rng, shape, dtype, zeros=True):
    x = rng.random(shape)
    if zeros and x.size:
        x[rng.random(shape) < 0.2] = 0.0
    s = x.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(s > 0, x / np.where(s > 0, s, 1), x)
    return x.astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


REPO = Path(__file__).resolve().parents[1]
# variables that would change what a fresh interpreter does (simulator, default backend, layer)
_FRESH_DROP = (
    "NUMBA_ENABLE_CUDASIM",
    "NUMBAENT_BACKEND",
    "NUMBA_THREADING_LAYER",
    "NUMBA_THREADING_LAYER_PRIORITY",
)


def run_python(code: str, timeout: float = 120, **env_overrides) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter importing this checkout's numbaent; ``VAR=None`` removes
    ``VAR`` from its environment, ``VAR="x"`` sets it."""
    env = dict(os.environ)
    for var in _FRESH_DROP:
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for k, v in env_overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(REPO),
    )
