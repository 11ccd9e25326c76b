"""score()'s evaluator fields (confidence, margin, rank, brier) and the temperature rule, on every
backend against the float64 oracle, plus their identities and parity with sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, BF16, DTYPES, assert_close, logits

import numbaent as ne

FLOAT_FIELDS = ("logsumexp", "entropy", "confidence", "margin", "cross_entropy", "brier")
EXACT_FIELDS = ("argmax", "rank", "correct", "ignored")


def f64(a):
    return np.asarray(a, dtype=np.float64)


def _labels(rng, n, c, ignore=True):
    y = rng.integers(0, max(c, 1), size=n)
    if ignore and n:
        y[rng.random(n) < 0.2] = -100
    return y


def _check(got, ref, dtype, fields=FLOAT_FIELDS):
    for f in fields:
        assert_close(getattr(got, f), getattr(ref, f), dtype)
    for f in EXACT_FIELDS:
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)


def _awkward(rng, dtype):
    """Rows that test ties (at the top and at the label), -inf logits, C = 1 and C = 2."""
    cases = []
    x = logits(rng, (6, 40), np.float64)
    x[0, [3, 17]] = x[0].max() + 1.0  # a tie at the top: margin 0
    x[1, :] = 0.5  # all tied
    x[2, [5, 9, 30]] = 2.0  # label 9 tied with an earlier and a later class
    x[3, :20] = -np.inf
    x[4, 7] = -np.inf  # the label's logit is -inf
    x[5, [0, 39]] = x[5].max() + 3.0
    cases.append((x, np.array([3, 0, 9, 25, 7, 39])))
    cases.append((logits(rng, (9, 1), np.float64), np.array([0, 0, -100, 0, 0, 0, 0, 0, 0])))
    x2 = logits(rng, (7, 2), np.float64)
    x2[0] = [1.0, 1.0]
    cases.append((x2, np.array([1, 0, 1, 0, -100, 1, 0])))
    # rows of several blocks, a label at a tie with the max in a later block
    x3 = logits(rng, (3, 3000), np.float64)
    x3[0, [100, 2500]] = 20.0
    x3[1, 2999] = 30.0
    cases.append((x3, np.array([2500, 2999, 1500])))
    return [(a.astype(dtype), y) for a, y in cases]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_fields_match_the_oracle(backend, dtype, temperature, rng):
    for x, y in _awkward(rng, dtype) + [(logits(rng, (13, 423), dtype), _labels(rng, 13, 423))]:
        got = ne.score(x, y, temperature=temperature, backend=backend)
        ref = ne.score(f64(x), y, temperature=temperature, backend="numpy")
        _check(got, ref, dtype)
        assert got.confidence.dtype == got.logsumexp.dtype and got.rank.dtype == np.int64


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=str)
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_fields_with_a_teacher(backend, dtype, temperature, rng):
    x = logits(rng, (11, 2600), dtype)
    t = logits(rng, (11, 2600), np.float32)
    y = _labels(rng, 11, 2600)
    got = ne.score(x, y, teacher_logits=t, temperature=temperature, backend=backend)
    ref = ne.score(f64(x), y, teacher_logits=f64(t), temperature=temperature, backend="numpy")
    _check(got, ref, dtype, FLOAT_FIELDS + ("kl_divergence",))


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_rows(backend):
    x = np.array(
        [[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf] * 3, [0.0, -np.inf, -np.inf]],
        np.float32,
    )
    y = np.array([1, 1, 0, 0])
    s = ne.score(x, y, backend=backend)
    np.testing.assert_array_equal(s.rank, [-1, -1, -1, 0])
    np.testing.assert_array_equal(s.correct, [False, False, False, True])
    assert np.isnan(s.confidence[:3]).all() and np.isnan(s.margin[:3]).all()
    assert np.isnan(s.brier[:3]).all()
    assert (s.confidence[3], s.margin[3], s.brier[3]) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_identities(backend, rng):
    c = 57
    x = logits(rng, (200, c), np.float32, scale=4.0)
    x[:20, 3] = x[:20, 8]  # ties
    y = _labels(rng, 200, c)
    s = ne.score(x, y, backend=backend)
    ok = ~s.ignored
    np.testing.assert_array_equal(s.correct, s.rank == 0)
    np.testing.assert_array_equal(s.rank[~ok], -1)
    assert (s.brier[~ok] == 0).all() and (s.cross_entropy[~ok] == 0).all()
    assert ((s.brier >= 0) & (s.brier <= 2 + 1e-6)).all()
    assert ((s.confidence >= 1 / c * (1 - 1e-6)) & (s.confidence <= 1)).all()
    assert ((s.margin >= 0) & (s.margin <= 1)).all()
    assert (s.rank[ok] < c).all()
    # rank by its definition, with the tie rule
    for i in np.flatnonzero(ok)[:40]:
        above = (x[i] > x[i, y[i]]) | ((x[i] == x[i, y[i]]) & (np.arange(c) < y[i]))
        assert s.rank[i] == above.sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.25, 2.0, 1.7])
def test_temperature_applies_to_every_field(backend, temperature, rng):
    x = logits(rng, (40, 300), np.float64)
    t = logits(rng, (40, 300), np.float64)
    y = _labels(rng, 40, 300)
    a = ne.score(x, y, teacher_logits=t, temperature=temperature, backend=backend)
    b = ne.score(x / temperature, y, teacher_logits=t / temperature, backend=backend)
    _check(a, b, np.float32, FLOAT_FIELDS + ("kl_divergence",))


def test_sklearn_parity(rng):
    sk = pytest.importorskip("sklearn.metrics")
    c = 10
    x = logits(rng, (500, c), np.float64)
    y = rng.integers(0, c, 500)
    s = ne.score(x, y)
    p = ne.softmax(x)
    assert np.mean(s.cross_entropy) == pytest.approx(sk.log_loss(y, p, labels=range(c)), rel=1e-12)
    # sklearn breaks ties among equal scores differently (a stable sort, reversed: the higher
    # index ranks first); these float64 logits have no ties
    for k in (1, 2, 5):
        want = sk.top_k_accuracy_score(y, x, k=k, labels=range(c))
        assert np.mean(s.rank < k) == pytest.approx(want, rel=1e-12)
    # the multiclass Brier score: sklearn's brier_score_loss takes probabilities per class
    want = sk.brier_score_loss(y, p, labels=range(c))
    assert np.mean(s.brier) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, BF16], ids=str)
def test_softmax_entropy_at_a_temperature(backend, dtype, rng):
    x = logits(rng, (9, 1500), dtype, scale=6.0)
    for temperature in (0.3, 2.0):
        got = ne.softmax_entropy(x, temperature=temperature, backend=backend)
        ref = ne.softmax_entropy(f64(x) / temperature, backend="numpy")
        assert_close(got, ref, dtype)
        np.testing.assert_array_equal(
            got, ne.score(x, temperature=temperature, backend=backend).entropy
        )
    with pytest.raises(ValueError, match="temperature"):
        ne.softmax_entropy(x, temperature=0.0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, BF16], ids=str)
def test_softmax_cross_entropy_at_a_temperature(backend, dtype, rng):
    x = logits(rng, (11, 700), dtype, scale=6.0)
    y = _labels(rng, 11, 700)
    for temperature in (0.3, 2.0):
        for reduction in ("none", "mean", "sum"):
            got = ne.softmax_cross_entropy(
                x, y, temperature=temperature, reduction=reduction, backend=backend
            )
            ref = ne.softmax_cross_entropy(
                f64(x) / temperature, y, reduction=reduction, backend="numpy"
            )
            assert_close(got, ref, dtype)
        got = ne.softmax_cross_entropy(x, y, temperature=temperature, backend=backend)
        np.testing.assert_array_equal(
            got, ne.score(x, y, temperature=temperature, backend=backend).cross_entropy
        )
    bad = y.copy()
    bad[4] = 700
    with pytest.raises(IndexError, match="row 4"):
        ne.softmax_cross_entropy(x, bad, temperature=2.0, backend=backend)


def _ce_options(rng, c):
    w = rng.random(c) + 0.2
    w[rng.random(c) < 0.1] = 0.0  # weight-0 classes: their rows contribute exactly 0
    return [
        {"weight": w},
        {"label_smoothing": 0.15},
        {"weight": w, "label_smoothing": 0.3},
        {"label_smoothing": 1.0},
    ]


@pytest.mark.parametrize("backend", ["numpy", *BACKENDS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_cross_entropy_at_a_temperature_with_weight_and_smoothing(backend, dtype, temperature, rng):
    """The weighted and smoothed losses at T are those of the logits x / T (computed in float64
    here, by division), for every reduction; rows of several blocks and C = 1, 2."""
    for n, c in ((11, 700), (5, 3000), (4, 1), (6, 2)):
        x = logits(rng, (n, c), dtype, scale=6.0)
        y = _labels(rng, n, c)
        for kw in _ce_options(rng, c):
            for reduction in ("none", "mean", "sum"):
                got = ne.softmax_cross_entropy(
                    x, y, temperature=temperature, reduction=reduction, backend=backend, **kw
                )
                ref = ne.softmax_cross_entropy(
                    f64(x) / temperature, y, reduction=reduction, backend="numpy", **kw
                )
                assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", ["numpy", *BACKENDS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_cross_entropy_at_a_temperature_with_soft_targets(backend, dtype, temperature, rng):
    for n, c in ((9, 700), (3, 3000), (4, 1)):
        x = logits(rng, (n, c), dtype, scale=6.0)
        t = ne.softmax(logits(rng, (n, c), np.float64), backend="numpy").astype(dtype)
        t[0, : c // 2] = 0  # zero targets
        w = rng.random(c) + 0.2
        for kw in (
            {},
            {"weight": w},
            {"label_smoothing": 0.2},
            {"weight": w, "label_smoothing": 1},
        ):
            for reduction in ("none", "mean"):
                got = ne.softmax_cross_entropy(
                    x, t, temperature=temperature, reduction=reduction, backend=backend, **kw
                )
                ref = ne.softmax_cross_entropy(
                    f64(x) / temperature, f64(t), reduction=reduction, backend="numpy", **kw
                )
                assert_close(got, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_cross_entropy_at_a_temperature_special_rows(backend, temperature):
    """-inf logits (the label's too, at class weight 0 and not), an all -inf row, NaN and +inf
    rows, huge logits: the backend equals the oracle (the contract's answers at T)."""
    c = 40
    y = np.array([20, 5, 6, 0, 1, 2, 3, -100])
    w = np.ones(c)
    w[6] = 0.0
    soft = np.full((8, c), 1.0 / c)
    for dt in (np.float64, np.float32):
        x = np.linspace(-3, 3, 8 * c).reshape(8, c)
        x[0, :10] = -np.inf
        x[1, 5] = -np.inf  # the label's logit: +inf loss, 0 at class weight 0 (row 2)
        x[2, 6] = -np.inf
        x[3, :] = -np.inf  # no valid softmax: NaN
        x[4, 7] = np.nan
        x[5, 8] = np.inf
        x[6] *= 1e300 if dt is np.float64 else 1e36  # x / T would overflow at T < 1 in float64
        x = x.astype(dt)
        for kw in ({"weight": w}, {"weight": w, "label_smoothing": 0.2}, {"label_smoothing": 0.5},
                   {"target": soft.astype(dt)}):  # fmt: skip
            kw = dict(kw)
            target = kw.pop("target", y)
            got = ne.softmax_cross_entropy(x, target, temperature=temperature, backend=backend,
                                           **kw)  # fmt: skip
            ref = ne.softmax_cross_entropy(x, target, temperature=temperature, backend="numpy",
                                           **kw)  # fmt: skip
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=str(kw))
            assert_close(got, ref, np.dtype(dt))


def test_cross_entropy_at_a_temperature_torch_parity(rng):
    """torch's cross_entropy of logits / T, float64, with weight, label smoothing, ignore_index
    and soft targets, every reduction."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    n, c, temperature = 13, 300, 0.7
    x = logits(rng, (n, c), np.float64, scale=5.0)
    y = _labels(rng, n, c)
    w = rng.random(c) + 0.1
    t = ne.softmax(logits(rng, (n, c), np.float64), backend="numpy")
    xt = torch.from_numpy(x / temperature)
    for reduction in ("none", "mean", "sum"):
        for eps in (0.0, 0.25):
            got = ne.softmax_cross_entropy(x, y, weight=w, label_smoothing=eps, reduction=reduction,
                                           temperature=temperature)  # fmt: skip
            ref = F.cross_entropy(xt, torch.from_numpy(y), weight=torch.from_numpy(w),
                                  label_smoothing=eps, reduction=reduction).numpy()  # fmt: skip
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
            got = ne.softmax_cross_entropy(x, t, weight=w, label_smoothing=eps, reduction=reduction,
                                           temperature=temperature)  # fmt: skip
            ref = F.cross_entropy(xt, torch.from_numpy(t), weight=torch.from_numpy(w),
                                  label_smoothing=eps, reduction=reduction).numpy()  # fmt: skip
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
