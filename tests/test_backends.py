"""Every public function x backend x dtype x awkward shape against the float64 NumPy oracle.

The reference is the oracle (backend="numpy") on the float64 image of the very same input values,
so only the backend's own rounding is measured (tolerances in conftest.TOL).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, SHAPES, assert_close, logits, probs

import numbaent as ne

PROB2 = ["cross_entropy", "kl_divergence", "js_divergence"]


def f64(a):
    return np.asarray(a, dtype=np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("normalize", [False, True])
def test_entropy(backend, dtype, shape, normalize, rng):
    p = probs(rng, shape, dtype)
    if normalize:
        p = (f64(p) * 7).astype(dtype)
    got = ne.entropy(p, normalize=normalize, backend=backend)
    ref = ne.entropy(f64(p), normalize=normalize, backend="numpy")
    assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB2)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("normalize", [False, True])
def test_two_distributions(backend, func, dtype, shape, normalize, rng):
    p = probs(rng, shape, dtype)
    q = probs(rng, shape, dtype, zeros=(func == "js_divergence"))
    f = getattr(ne, func)
    got = f(p, q, normalize=normalize, backend=backend)
    ref = f(f64(p), f64(q), normalize=normalize, backend="numpy")
    assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB2)
def test_shared_q_and_axis(backend, func, rng):
    p = probs(rng, (3, 4, 9), np.float64)
    q = probs(rng, (9,), np.float64, zeros=False)
    f = getattr(ne, func)
    got = f(p, q, backend=backend)
    ref = f(p, np.broadcast_to(q, p.shape).copy(), backend="numpy")
    assert got.shape == (3, 4)
    assert_close(got, ref, np.float64)
    # class axis in the middle, q 1-D along it
    pt = np.moveaxis(p, -1, 1)
    assert_close(f(pt, q, axis=1, backend=backend), ref, np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("func", ["logsumexp", "softmax_entropy", "log_softmax", "softmax"])
def test_single_logit_functions(backend, dtype, shape, func, rng):
    x = logits(rng, shape, dtype)
    f = getattr(ne, func)
    got = f(x, backend=backend)
    ref = f(f64(x), backend="numpy")
    assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_softmax_kl(backend, dtype, shape, temperature, rng):
    a, b = logits(rng, shape, dtype), logits(rng, shape, dtype)
    got = ne.softmax_kl_divergence(a, b, temperature=temperature, backend=backend)
    ref = ne.softmax_kl_divergence(f64(a), f64(b), temperature=temperature, backend="numpy")
    assert_close(got, ref, dtype)
    same = ne.softmax_kl_divergence(a, a, temperature=temperature, backend=backend)
    assert np.all(np.asarray(same)[~np.isnan(same)] == 0)  # exactly zero for identical rows


def _labels(rng, n, c, ignore=True):
    y = rng.integers(0, max(c, 1), size=n)
    if ignore and n:
        y[rng.random(n) < 0.2] = -100
    if c == 0:
        y[:] = -100
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_labels(backend, dtype, shape, smoothing, weighted, rng):
    x = logits(rng, shape, dtype)
    n, c = shape
    y = _labels(rng, n, c)
    w = rng.random(c) + 0.5 if weighted else None
    for reduction in ("none", "sum", "mean"):
        kw = dict(weight=w, label_smoothing=smoothing, reduction=reduction)
        got = ne.softmax_cross_entropy(x, y, backend=backend, **kw)
        ref = ne.softmax_cross_entropy(f64(x), y, backend="numpy", **kw)
        assert_close(got, ref, dtype, scale=1 if reduction == "none" else 10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_soft(backend, dtype, shape, smoothing, rng):
    x = logits(rng, shape, dtype)
    t = probs(rng, shape, dtype)
    w = rng.random(shape[1]) + 0.5
    for weight in (None, w):
        got = ne.softmax_cross_entropy(
            x, t, weight=weight, label_smoothing=smoothing, backend=backend
        )
        ref = ne.softmax_cross_entropy(
            f64(x), f64(t), weight=weight, label_smoothing=smoothing, backend="numpy"
        )
        assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_score(backend, dtype, shape, temperature, rng):
    x = logits(rng, shape, dtype)
    t = logits(rng, shape, dtype)
    y = _labels(rng, shape[0], shape[1])
    got = ne.score(x, y, teacher_logits=t, temperature=temperature, backend=backend)
    ref = ne.score(f64(x), y, teacher_logits=f64(t), temperature=temperature, backend="numpy")
    fields = ("logsumexp", "entropy", "cross_entropy", "kl_divergence", "confidence", "margin",
              "brier")  # fmt: skip
    for field in fields:
        assert_close(getattr(got, field), getattr(ref, field), dtype)
    for field in ("argmax", "correct", "rank"):
        np.testing.assert_array_equal(getattr(got, field), getattr(ref, field))
    gs, rs = got.summary(), ref.summary()
    assert gs.keys() == rs.keys()
    for k in gs:
        if k == "top_k_accuracy":  # from the ranks, which are equal: exactly equal
            assert gs[k] == rs[k] or np.isnan(list(rs[k].values())).all()
        elif k in ("ece", "mce"):
            # the calibration bins come from float32 confidences here, float64 in the oracle: a
            # row within rounding of a bin edge may land in the neighbouring bin. The state of the
            # oracle's own rows with the backend's confidences must match exactly.
            mixed = ne.Scores(**{**ref.as_dict(), "confidence": got.confidence.astype(np.float64)})
            assert_close(gs[k], mixed.summary()[k], dtype, scale=10)
        else:
            assert_close(gs[k], rs[k], dtype, scale=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_score_fields_match_the_single_functions(backend, rng):
    x = logits(rng, (33, 2500), np.float32)
    t = logits(rng, (33, 2500), np.float32)
    y = _labels(rng, 33, 2500, ignore=False)
    s = ne.score(x, y, teacher_logits=t, temperature=1.7, backend=backend)
    # the temperature applies to every field: the model's distribution is softmax(x / 1.7)
    xt = x.astype(np.float64) / 1.7
    assert_close(s.logsumexp, ne.logsumexp(xt, backend=backend), np.float32)
    assert_close(s.entropy, ne.softmax_entropy(xt, backend=backend), np.float32)
    assert_close(s.cross_entropy, ne.softmax_cross_entropy(xt, y, backend=backend), np.float32)
    assert_close(
        s.kl_divergence,
        ne.softmax_kl_divergence(t, x, temperature=1.7, backend=backend),
        np.float32,
    )
    np.testing.assert_array_equal(s.argmax, np.argmax(x, axis=1))
    assert s.summary()["accuracy"] == pytest.approx(np.mean(np.argmax(x, axis=1) == y))


EDGE_ROWS = [
    [0.0, 0.0, 0.0],
    [-np.inf, 0.0, 1.0],
    [-np.inf, -np.inf, -np.inf],
    [np.inf, 0.0, 1.0],
    [np.nan, 0.0, 1.0],
    [1e30, -1e30, 0.0],
    [88.0, 89.0, -3e38],
    [3e38, 3e38, 3e38],
    [-1e30, -1e30, -1e30],
    [5.0, 5.0, -np.inf],
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=str)
def test_edge_rows(backend, dtype):
    x = np.array(EDGE_ROWS, dtype=dtype)
    y = np.array([0, 1, 0, 1, 1, 0, 1, 2, 1, 2])
    for f in ("logsumexp", "softmax_entropy", "log_softmax", "softmax"):
        got = getattr(ne, f)(x, backend=backend)
        ref = getattr(ne, f)(f64(x), backend="numpy")
        assert_close(got, ref, dtype)
    got = ne.softmax_cross_entropy(x, y, backend=backend)
    ref = ne.softmax_cross_entropy(f64(x), y, backend="numpy")
    assert_close(got, ref, dtype)
    got = ne.softmax_kl_divergence(x, x[::-1].copy(), backend=backend)
    ref = ne.softmax_kl_divergence(f64(x), f64(x[::-1]), backend="numpy")
    assert_close(got, ref, dtype)
    s = ne.score(x, y, teacher_logits=x[::-1].copy(), backend=backend)
    r = ne.score(f64(x), y, teacher_logits=f64(x[::-1]), backend="numpy")
    np.testing.assert_array_equal(s.argmax, r.argmax)
    np.testing.assert_array_equal(s.correct, r.correct)
    for field in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
        assert_close(getattr(s, field), getattr(r, field), dtype)


def test_documented_special_values():
    inf, nan = np.inf, np.nan
    assert ne.logsumexp(np.array([-inf, -inf])) == -inf
    assert np.isnan(ne.softmax_entropy(np.array([-inf, -inf])))
    assert np.isnan(ne.logsumexp(np.array([inf, 0.0])))
    assert np.isnan(ne.softmax_cross_entropy(np.array([[nan, 0.0]]), np.array([1]))[0])
    # a zero target on a -inf logit contributes 0 (torch gives NaN)
    got = ne.softmax_cross_entropy(np.array([[-inf, 0.0]]), np.array([[0.0, 1.0]]))
    assert got[0] == 0.0
    # ... but a +inf logit makes the row NaN whatever the targets are
    assert np.isnan(ne.softmax_cross_entropy(np.array([[np.inf, 0.0]]), np.array([[0.0, 0.0]]))[0])
    assert ne.entropy(np.zeros((1, 0)))[0] == 0.0
    assert ne.cross_entropy([[1.0, 0.0]], [[0.0, 1.0]])[0] == inf
    assert ne.kl_divergence([[0.0, 1.0]], [[0.0, 1.0]])[0] == 0.0
    assert np.isnan(ne.cross_entropy([[0.0, 1.0]], [[nan, 1.0]])[0])
    assert np.isnan(ne.entropy([[0.0, 0.0]], normalize=True)[0])


@pytest.mark.parametrize("backend", BACKENDS + ["numpy"])
def test_non_contiguous_and_axes(backend, rng):
    x = logits(rng, (6, 50, 4), np.float32)
    ref = ne.softmax_entropy(np.ascontiguousarray(np.moveaxis(x, 1, -1)), backend="numpy")
    assert_close(ne.softmax_entropy(x, axis=1, backend=backend), ref, np.float32)
    assert_close(ne.softmax_entropy(x, axis=-2, backend=backend), ref, np.float32)
    sl = x[::2, :, ::-1]  # negative and non-unit strides
    ref = ne.logsumexp(np.ascontiguousarray(np.moveaxis(sl, 1, -1)), backend="numpy")
    assert_close(ne.logsumexp(sl, axis=1, backend=backend), ref, np.float32)
    ls = ne.log_softmax(x, axis=1, backend=backend)
    assert ls.shape == x.shape
    assert_close(ls, ne.log_softmax(f64(x), axis=1, backend="numpy"), np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_argument(backend, rng):
    x = logits(rng, (7, 30), np.float32)
    out = np.empty(7, np.float32)
    r = ne.softmax_entropy(x, backend=backend, out=out)
    assert r is out
    assert_close(out, ne.softmax_entropy(f64(x), backend="numpy"), np.float32)
    out2 = np.empty((7, 30), np.float32)
    assert ne.softmax(x, backend=backend, out=out2) is out2
    strided = np.empty((7, 2), np.float32)[:, 0]
    assert ne.logsumexp(x, backend=backend, out=strided) is strided
    assert_close(strided, ne.logsumexp(f64(x), backend="numpy"), np.float32)


def test_inputs_are_never_modified(rng):
    x = logits(rng, (9, 40), np.float32)
    t = logits(rng, (9, 40), np.float32)
    y = _labels(rng, 9, 40)
    p = probs(rng, (9, 40), np.float32)
    copies = [a.copy() for a in (x, t, y, p)]
    for a in (x, t, y, p):
        a.flags.writeable = False  # read-only inputs must be accepted too
    ne.score(x, y, teacher_logits=t, temperature=2.0)
    ne.softmax_cross_entropy(x, p, label_smoothing=0.1, weight=np.ones(40))
    ne.softmax_cross_entropy(x, y, label_smoothing=0.1, reduction="mean")
    ne.log_softmax(x)
    ne.js_divergence(p, p[::-1], normalize=True)
    for a, c in zip((x, t, y, p), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_half_inputs_are_not_copied(rng, monkeypatch):
    """float16 / bfloat16 reach the kernels as views of the caller's buffer (decoded in registers)."""
    from numbaent._kernels import cpu

    x = logits(rng, (4, 100), np.float16)
    seen = []
    orig = cpu.kernel_view

    def spy(a):
        v = orig(a)
        seen.append(v)
        return v

    monkeypatch.setattr(cpu, "kernel_view", spy)
    ne.logsumexp(x, backend="cpu")
    assert seen and np.shares_memory(seen[0], x)


def test_reductions_and_units():
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    per_row = ne.entropy(p)
    assert ne.entropy(p, reduction="sum") == pytest.approx(per_row.sum())
    assert ne.entropy(p, reduction="mean") == pytest.approx(per_row.mean())
    assert isinstance(ne.entropy(p, reduction="mean"), float)
    np.testing.assert_allclose(ne.entropy(p, base=2), per_row / np.log(2))
    np.testing.assert_allclose(ne.entropy(p, base=10), per_row / np.log(10))
    assert np.isnan(
        ne.softmax_cross_entropy(np.zeros((2, 3)), np.array([-100, -100]), reduction="mean")
    )
    assert ne.softmax_cross_entropy(np.zeros((2, 3)), np.array([-100, -100]), reduction="sum") == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_few_rows_huge_classes(backend, dtype, rng):
    """N < 16 and C >= 65536: the class axis is split into chunks whose states are combined."""
    x = logits(rng, (5, 70001), dtype)
    x[1] = -np.inf
    x[2, 5] = np.nan
    x[3, 69999] = np.inf
    y = rng.integers(0, 70001, 5)
    y[4] = -100
    assert_close(ne.logsumexp(x, backend=backend), ne.logsumexp(f64(x), backend="numpy"), dtype)
    for reduction in ("none", "sum"):
        got = ne.softmax_cross_entropy(x, y, reduction=reduction, backend=backend)
        ref = ne.softmax_cross_entropy(f64(x), y, reduction=reduction, backend="numpy")
        assert_close(got, ref, dtype)
    with pytest.raises(IndexError, match="row 0"):
        ne.softmax_cross_entropy(x, np.array([70001, 0, 0, 0, 0]), backend=backend)
