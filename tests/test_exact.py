"""The exact path (numbaent/_kernels/exact.py): rows a fast kernel cannot get right are recomputed
by the float64 oracle, a bounded number of rows at a time, and only those rows.

Each case mixes ordinary rows with rows that need the exact path, so the test checks both that
the flagged rows come out as the oracle's and that the ordinary rows keep the kernel's own result
(bit-identical to a call on those rows alone)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import numbaent as ne
from numbaent._kernels import exact

F32 = np.float32


def _mixed_logits(rng, n, c):
    x = rng.standard_normal((n, c)).astype(F32) * 3
    x[1::3, 0] = 3e38  # logit gaps beyond the float32 range
    x[1::3, 1] = -3e38
    return x


def _cases(rng):
    n, c = 12, 80
    x = _mixed_logits(rng, n, c)
    t = rng.random((n, c)).astype(F32)
    t[1::3] = 0  # rows with the 6e38 gap: a finite loss of 6e30 through float32 intermediates
    t[1::3, 0], t[1::3, 1] = 1.0, 1e-8
    t[2::3, 5] = 1e-45  # a subnormal target
    p = rng.random((n, c)).astype(F32)
    p[1::3] *= F32(1e37)  # counts whose p log p overflows float32
    p[2::3] = F32(1e-45) * (1 + np.arange(c) % 3)  # subnormal rows under normalize
    q = rng.random((n, c)).astype(F32)
    teacher = rng.standard_normal((n, c)).astype(F32)
    student = teacher + 0.1
    student[1::4, 3] = -np.inf  # -inf under a finite teacher logit: +inf, also where the
    teacher[1::4, 3] = -100.0  # teacher's float32 probability underflows (0 * inf in the kernel)
    y = rng.integers(0, c, n)
    return [
        ("soft CE", lambda b: ne.softmax_cross_entropy(x, t, backend=b)),
        (
            "label smoothing",
            lambda b: ne.softmax_cross_entropy(x, y, label_smoothing=0.1, backend=b),
        ),
        ("entropy normalize", lambda b: ne.entropy(p, normalize=True, backend=b)),
        ("cross_entropy normalize", lambda b: ne.cross_entropy(p, q, normalize=True, backend=b)),
        ("kl normalize", lambda b: ne.kl_divergence(p, q, normalize=True, backend=b)),
        ("js normalize", lambda b: ne.js_divergence(p, q, normalize=True, backend=b)),
        (
            "softmax KL T=0.5",
            lambda b: ne.softmax_kl_divergence(teacher, student, temperature=0.5, backend=b),
        ),
        (
            "score KL",
            lambda b: ne.score(student, y, teacher_logits=teacher, backend=b).kl_divergence,
        ),
    ]


@pytest.mark.parametrize("chunk", [exact.CHUNK_ELEMS, 1, 3 * 80])
@pytest.mark.parametrize("case", range(8))
def test_flagged_rows_match_the_oracle(monkeypatch, chunk, case):
    monkeypatch.setattr(exact, "CHUNK_ELEMS", chunk)
    what, call = _cases(np.random.default_rng(case))[case]
    got = np.asarray(call("cpu"))
    ref = np.asarray(call("numpy"))
    assert_close(got, ref, np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=what)


@pytest.fixture
def redone(monkeypatch):
    """The row indices handed to the exact path, one array per call of exact.redo."""
    calls = []
    real = exact.redo

    def spy(idx, out, c, compute):
        calls.append(idx.copy())
        return real(idx, out, c, compute)

    monkeypatch.setattr(exact, "redo", spy)
    return calls


def test_ordinary_rows_never_take_the_exact_path(redone):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 300)).astype(F32)
    t = rng.random((64, 300)).astype(F32)
    ne.softmax_cross_entropy(x, t, backend="cpu")
    ne.softmax_kl_divergence(x, x[::-1].copy(), temperature=0.7, backend="cpu")
    ne.kl_divergence(t, t[::-1].copy(), normalize=True, backend="cpu")
    assert all(c.size == 0 for c in redone), redone


def test_only_the_flagged_rows_are_recomputed(redone):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 100)).astype(F32)
    x[4, 0], x[4, 1] = 3e38, -3e38
    t = rng.random((9, 100)).astype(F32)
    got = ne.softmax_cross_entropy(x, t, backend="cpu")
    assert [i for c in redone for i in c.tolist()] == [4]
    alone = ne.softmax_cross_entropy(np.delete(x, 4, 0), np.delete(t, 4, 0), backend="cpu")
    np.testing.assert_array_equal(np.delete(got, 4), alone)  # the others: the kernel's own bits


def test_nan_rows_are_not_recomputed(redone):
    x = np.zeros((3, 100), F32)
    x[1, 7] = np.nan
    got = ne.softmax_kl_divergence(x, x, backend="cpu")
    assert np.isnan(got[1]) and all(c.size == 0 for c in redone)
