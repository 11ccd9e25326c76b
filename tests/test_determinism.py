"""Bit-identical results across repeated calls and across thread counts (1 vs the default).

Each row is reduced by one thread with fixed block boundaries, so the thread count cannot change
the order of any floating-point operation. Shapes cover the block path (C > 64, several blocks),
the few-class tile path (C = 10) and few rows x huge C.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import numbaent as ne

SHAPES = [(257, 3000), (1000, 10), (3, 70000)]


def _all_results(x, t, y, p, q):
    s = ne.score(x, y, teacher_logits=t, temperature=1.5, backend="cpu")
    return [
        ne.softmax_cross_entropy(x, y, backend="cpu"),
        ne.softmax_cross_entropy(
            x, y, label_smoothing=0.1, weight=np.linspace(0.5, 1.5, x.shape[1]), backend="cpu"
        ),
        ne.softmax_cross_entropy(x, p, backend="cpu"),
        ne.logsumexp(x, backend="cpu"),
        ne.softmax_entropy(x, backend="cpu"),
        ne.softmax_kl_divergence(x, t, temperature=2.0, backend="cpu"),
        ne.log_softmax(x, backend="cpu"),
        ne.entropy(p, backend="cpu"),
        ne.cross_entropy(p, q, backend="cpu"),
        ne.kl_divergence(p, q, normalize=True, backend="cpu"),
        ne.js_divergence(p, q, backend="cpu"),
        *[v for v in s.as_dict().values() if isinstance(v, np.ndarray)],
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bit_identical_across_runs_and_threads(shape):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    t = (rng.standard_normal(shape) * 4).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    p = rng.random(shape).astype(np.float32)
    p /= p.sum(axis=1, keepdims=True)
    q = rng.random(shape).astype(np.float32)
    first = _all_results(x, t, y, p, q)
    again = _all_results(x, t, y, p, q)
    default = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = _all_results(x, t, y, p, q)
    finally:
        numba.set_num_threads(default)
    for a, b, c in zip(first, again, single, strict=True):
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() == c.tobytes()
