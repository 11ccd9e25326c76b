"""float32 accuracy at large C: |result - float64 reference on the same inputs| <= 2e-6 max(1, |ref|).

C = 131072 with logits of scale 10 (LLM-vocabulary-sized rows); the reference is the float64 oracle
applied to the float64 image of the very same float32 values. Blocked float32 sums added in float64
keep the error independent of C; a naive float32 running sum would be ~100x worse here.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS

import numbaent as ne

C = 131072


def _bound(got, ref):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
    assert np.all(np.isfinite(got))
    assert err.max() <= 2e-6, err.max()


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(2026)
    # 16 rows: the kernels of many rows (fewer rows split the class axis; that path is checked at
    # C = 70001 in test_backends and at C = 262144 by the slow sweep in test_trust)
    x = (rng.standard_normal((16, C)) * 10).astype(np.float32)
    y = rng.integers(0, C, 16)
    p = rng.random((16, C)) ** 3
    p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return x, y, p


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "cpu"])
def test_softmax_cross_entropy_float32(big, backend):
    x, y, _ = big
    got = ne.softmax_cross_entropy(x, y, backend=backend)
    ref = ne.softmax_cross_entropy(x.astype(np.float64), y, backend="numpy")
    _bound(got, ref)
    s = ne.score(x, y, backend=backend)
    _bound(s.cross_entropy, ref)
    _bound(s.entropy, ne.softmax_entropy(x.astype(np.float64), backend="numpy"))
    _bound(ne.logsumexp(x, backend=backend), ne.logsumexp(x.astype(np.float64), backend="numpy"))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "cpu"])
def test_entropy_float32(big, backend):
    _, _, p = big
    p64 = p.astype(np.float64)
    _bound(ne.entropy(p, backend=backend), ne.entropy(p64, backend="numpy"))
    _bound(
        ne.entropy(p, normalize=True, backend=backend),
        ne.entropy(p64, normalize=True, backend="numpy"),
    )
    q = np.roll(p, 1, axis=1)
    _bound(
        ne.kl_divergence(p, q, backend=backend),
        ne.kl_divergence(p64, q.astype(np.float64), backend="numpy"),
    )
    _bound(
        ne.cross_entropy(p, q, backend=backend),
        ne.cross_entropy(p64, q.astype(np.float64), backend="numpy"),
    )
