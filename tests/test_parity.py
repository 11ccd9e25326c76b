"""Parity with the reference implementations numbaent claims to match (the README).

* ``softmax_cross_entropy`` against ``torch.nn.functional.cross_entropy`` for every combination of
  integer labels / soft targets, weight, ignore_index, label_smoothing and reduction, float64 and
  float32, 1-D, 2-D and N-d inputs (class axis 1, as torch expects).
* the probability functions against ``scipy.stats.entropy``, ``scipy.special`` (``entr``, ``xlogy``,
  ``rel_entr``, ``kl_div``) and ``scipy.spatial.distance.jensenshannon``;
* the logit functions against ``scipy.special`` (``logsumexp``, ``softmax``, ``log_softmax``) and
  torch (``torch.logsumexp``, ``torch.special.entr``, ``Categorical.entropy``, ``F.kl_div``).

The deliberate differences from torch that the README lists are tested as differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional

import numbaent as ne  # noqa: E402

BACKENDS = ["numpy", "cpu"]
F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
# torch parity tolerance (rtol = atol): the two libraries round differently in float32
TORCH_TOL = {F64: 1e-10, F32: 2e-5}
# scipy parity (scipy computes in float64 whatever the input)
SCIPY_TOL = {F64: 1e-12, F32: 2e-6}


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_matches(got, ref, tol):
    """|got - ref| <= tol * (1 + |ref|), NaN where the reference is NaN, same shape."""
    if isinstance(ref, torch.Tensor):
        ref = ref.detach().numpy()
    got, ref = f64(got), f64(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, equal_nan=True)


def rand_probs(rng, shape, class_axis=-1, zeros=0.2):
    """Rows that sum to 1 along ``class_axis`` with ~``zeros`` exact zeros (never an all-zero row)."""
    shape = tuple(shape)
    last = (
        shape[: class_axis % len(shape)]
        + shape[class_axis % len(shape) + 1 :]
        + (shape[class_axis],)
    )
    x = rng.random(last)
    if x.size and zeros:
        x[rng.random(last) < zeros] = 0.0
        x[..., 0] += 1e-3  # at least one positive entry per row
    x /= x.sum(axis=-1, keepdims=True)
    return np.moveaxis(x, -1, class_axis)


# --------------------------------------------------------------------------------------------------
# softmax_cross_entropy vs torch.nn.functional.cross_entropy

# Shapes (logits; class axis 1 when 2-D or more, as torch expects), and why they are here:
# 256x1000 (a real-ish classifier batch, several kernel blocks); 3x423 (C odd, no SIMD multiple);
# 1x1 (smallest: softmax is 1, loss is 0); 7x5x3 and 4x6x2x3 (N-d: class axis 1 is not last, so
# numbaent moves it; labels are (7, 3) / (4, 2, 3)); (9,) (torch's unbatched input, 0-d label).
CE_SHAPES = [(256, 1000), (3, 423), (1, 1), (7, 5, 3), (4, 6, 2, 3), (9,)]
SMOOTHING = [0.0, 0.1, 0.37, 1.0]
REDUCTIONS = ["none", "sum", "mean"]


def _class_axis(shape):
    return 0 if len(shape) == 1 else 1


def _batch_shape(shape):
    ax = _class_axis(shape)
    return shape[:ax] + shape[ax + 1 :]


def make_ce_case(rng, *, shape, dtype, soft, weighted, ignore_index, smoothing):
    """(logits, target, weight) as NumPy arrays for one cross-entropy case."""
    ax = _class_axis(shape)
    c = shape[ax]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if soft:
        target = rand_probs(rng, shape, class_axis=ax).astype(dtype)
    else:
        batch = _batch_shape(shape)
        target = np.array(rng.integers(0, c, size=batch))  # 0-d for unbatched (C,) logits
        target[np.asarray(rng.random(batch) < 0.25)] = ignore_index
        # labels may come in any integer type; unsigned ones cannot hold the default -100
        ltype = rng.choice(["int64", "int32"] + (["uint8", "uint16"] if ignore_index >= 0 else []))
        target = target.astype(ltype)
    weight = (rng.random(c) * 2 + 0.1).astype(dtype) if weighted else None
    return x, target, weight


def torch_ce(x, target, weight, **kw):
    """F.cross_entropy on NumPy arrays. Unbatched (C,) logits go to torch as a batch of one row
    (torch's own unbatched path fails for weight + label_smoothing + mean: 'output with shape []
    doesn't match the broadcast shape [1]')."""
    unbatched = np.ndim(x) == 1
    if unbatched:
        x, target = x[None], np.asarray(target)[None]
    tt = torch.from_numpy(np.ascontiguousarray(target))
    if tt.dtype not in (torch.float32, torch.float64):
        tt = tt.to(torch.int64)
    res = F.cross_entropy(
        torch.from_numpy(np.ascontiguousarray(x)),
        tt,
        weight=None if weight is None else torch.from_numpy(weight),
        **kw,
    )
    return res[0] if unbatched and res.ndim == 1 else res


def ce_case_params(seed):
    rng = np.random.default_rng(seed)
    shape = CE_SHAPES[int(rng.integers(len(CE_SHAPES)))]
    c = shape[_class_axis(shape)]
    soft = bool(rng.random() < 0.35)
    ignore_index = -100 if soft or rng.random() < 0.5 else int(rng.integers(0, c))
    return dict(
        shape=shape,
        dtype=[F64, F32][int(rng.integers(2))],
        soft=soft,
        weighted=bool(rng.random() < 0.5),
        ignore_index=ignore_index,
        smoothing=SMOOTHING[int(rng.integers(len(SMOOTHING)))],
        reduction=REDUCTIONS[int(rng.integers(len(REDUCTIONS)))],
    )


def _case_id(seed):
    p = ce_case_params(seed)
    return (
        f"{seed}-{'x'.join(map(str, p['shape']))}-{p['dtype'].name}-"
        f"{'soft' if p['soft'] else 'labels'}-{'w' if p['weighted'] else 'now'}-"
        f"ii{p['ignore_index']}-ls{p['smoothing']}-{p['reduction']}"
    )


CE_SEEDS = list(range(60))


def check_ce_against_torch(backend, rng, *, reduction, **case):
    dtype = case["dtype"]
    x, target, weight = make_ce_case(
        rng,
        **{k: case[k] for k in ("shape", "dtype", "soft", "weighted", "ignore_index", "smoothing")},
    )
    kw = dict(
        ignore_index=case["ignore_index"], label_smoothing=case["smoothing"], reduction=reduction
    )
    x_before, t_before = x.copy(), target.copy()
    got = ne.softmax_cross_entropy(
        x, target, weight=weight, axis=_class_axis(x.shape), backend=backend, **kw
    )
    ref = torch_ce(x, target, weight, **kw)
    assert_matches(got, ref, TORCH_TOL[dtype])
    if reduction == "none":
        assert np.asarray(got).dtype == dtype
    else:
        assert isinstance(got, float)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(target, t_before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", CE_SEEDS, ids=_case_id)
def test_cross_entropy_matches_torch(backend, seed):
    case = ce_case_params(seed)
    check_ce_against_torch(backend, np.random.default_rng(10_000 + seed), **case)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 12),
    c=st.integers(1, 40),
    extra=st.sampled_from([(), (1,), (3,), (2, 2)]),
    dtype=st.sampled_from([F64, F32]),
    soft=st.booleans(),
    weighted=st.booleans(),
    custom_ignore=st.booleans(),
    smoothing=st.sampled_from(SMOOTHING) | st.floats(0.0, 1.0),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_cross_entropy_matches_torch_hypothesis(
    backend, n, c, extra, dtype, soft, weighted, custom_ignore, smoothing, reduction, seed
):
    rng = np.random.default_rng(seed)
    ignore_index = int(rng.integers(0, c)) if custom_ignore and not soft else -100
    check_ce_against_torch(
        backend,
        rng,
        shape=(n, c, *extra),
        dtype=dtype,
        soft=soft,
        weighted=weighted,
        ignore_index=ignore_index,
        smoothing=smoothing,
        reduction=reduction,
    )


# ---- the torch behaviours the README spells out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_ignored_rows_give_zero_and_leave_the_mean(backend, ignore_index, rng):
    x = rng.standard_normal((20, 7))
    y = rng.integers(0, 7, 20)
    y[y == ignore_index] = (ignore_index + 1) % 7
    y[[1, 4, 5, 17]] = ignore_index
    keep = y != ignore_index
    per_row = ne.softmax_cross_entropy(x, y, ignore_index=ignore_index, backend=backend)
    assert np.all(per_row[~keep] == 0.0)
    assert np.all(per_row[keep] > 0.0)
    mean = ne.softmax_cross_entropy(
        x, y, ignore_index=ignore_index, reduction="mean", backend=backend
    )
    assert mean == pytest.approx(per_row[keep].mean(), rel=1e-12)
    assert_matches(mean, torch_ce(x, y, None, ignore_index=ignore_index), 1e-10)
    # the ignored rows' logits do not matter at all
    x2 = x.copy()
    x2[~keep] = np.nan
    assert ne.softmax_cross_entropy(
        x2, y, ignore_index=ignore_index, reduction="mean", backend=backend
    ) == pytest.approx(mean, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_weighted_mean_divides_by_the_labels_weights(backend, smoothing, rng):
    x = rng.standard_normal((30, 6))
    y = rng.integers(0, 6, 30)
    y[::7] = -100
    w = rng.random(6) + 0.2
    kw = dict(weight=w, label_smoothing=smoothing, backend=backend)
    per_row = ne.softmax_cross_entropy(x, y, **kw)
    keep = y != -100
    mean = ne.softmax_cross_entropy(x, y, reduction="mean", **kw)
    assert mean == pytest.approx(per_row.sum() / w[y[keep]].sum(), rel=1e-12)
    assert mean != pytest.approx(per_row[keep].mean(), rel=1e-6)  # not the plain row mean
    ref = torch_ce(x, y, w, label_smoothing=smoothing, reduction="mean")
    assert_matches(mean, ref, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_targets_weighted_mean_divides_by_the_rows(backend, rng):
    x = rng.standard_normal((12, 5))
    t = rand_probs(rng, (12, 5))
    w = rng.random(5) + 0.2
    per_row = ne.softmax_cross_entropy(x, t, weight=w, backend=backend)
    mean = ne.softmax_cross_entropy(x, t, weight=w, reduction="mean", backend=backend)
    assert mean == pytest.approx(per_row.sum() / 12, rel=1e-12)
    assert_matches(mean, torch_ce(x, t, w, reduction="mean"), 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_all_rows_ignored(backend, dtype, weighted, smoothing, rng):
    x = rng.standard_normal((4, 3)).astype(dtype)
    w = (rng.random(3) + 0.5).astype(dtype) if weighted else None
    for ignore_index, y in ((-100, np.full(4, -100)), (2, np.full(4, 2))):
        kw = dict(ignore_index=ignore_index, label_smoothing=smoothing)
        for reduction in REDUCTIONS:
            got = ne.softmax_cross_entropy(
                x, y, weight=w, reduction=reduction, backend=backend, **kw
            )
            ref = torch_ce(x, y, w, reduction=reduction, **kw)
            assert_matches(got, ref, TORCH_TOL[dtype])
        assert np.isnan(
            ne.softmax_cross_entropy(x, y, weight=w, reduction="mean", backend=backend, **kw)
        )
        assert ne.softmax_cross_entropy(x, y, weight=w, reduction="sum", backend=backend, **kw) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_total_weight(backend, rng):
    x = rng.standard_normal((5, 4))
    y = np.array([0, 1, 1, 0, -100])
    w = np.array([0.0, 0.0, 1.0, 2.0])
    mean = ne.softmax_cross_entropy(x, y, weight=w, reduction="mean", backend=backend)
    assert np.isnan(mean)
    assert np.isnan(torch_ce(x, y, w, reduction="mean").item())
    assert ne.softmax_cross_entropy(x, y, weight=w, reduction="sum", backend=backend) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_matches_torch(backend):
    x = np.zeros((0, 5))
    y = np.zeros(0, np.int64)
    for reduction in REDUCTIONS:
        got = ne.softmax_cross_entropy(x, y, reduction=reduction, backend=backend)
        assert_matches(got, torch_ce(x, y, None, reduction=reduction), 1e-12)


# ---- deliberate differences from torch (the README)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_zero_target_on_minus_inf_logit_contributes_zero(backend, dtype, rng):
    """torch gives NaN; numbaent gives the loss over the remaining classes."""
    x = rng.standard_normal((6, 5)).astype(dtype)
    t = rand_probs(rng, (6, 5), zeros=0).astype(dtype)
    x[:, [1, 3]] = -np.inf
    t[:, [1, 3]] = 0.0
    t /= t.sum(axis=1, keepdims=True)
    got = ne.softmax_cross_entropy(x, t, backend=backend)
    assert np.all(np.isfinite(got))
    live = [0, 2, 4]  # the same problem without the impossible classes
    assert_matches(got, torch_ce(x[:, live], t[:, live], None, reduction="none"), TORCH_TOL[dtype])
    assert torch.isnan(torch_ce(x, t, None, reduction="none")).all()  # the documented difference


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_targets_take_no_ignore_index(backend, rng):
    x = rng.standard_normal((3, 4))
    t = rand_probs(rng, (3, 4))
    with pytest.raises(ValueError, match="ignore_index"):
        ne.softmax_cross_entropy(x, t, ignore_index=1, backend=backend)
    with pytest.raises(RuntimeError):  # torch refuses too
        torch_ce(x, t, None, ignore_index=1)
    # the default is accepted, and matches torch
    assert_matches(
        ne.softmax_cross_entropy(x, t, backend=backend),
        torch_ce(x, t, None, reduction="none"),
        1e-10,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("smoothing", [-0.1, 1.5])
def test_label_smoothing_outside_unit_interval_raises(backend, smoothing, rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="label_smoothing"):
        ne.softmax_cross_entropy(x, np.array([0, 1, 2]), label_smoothing=smoothing, backend=backend)
    if smoothing > 1:  # torch refuses this one too (it accepts a negative value: numbaent does not)
        with pytest.raises(RuntimeError, match="label_smoothing"):
            torch_ce(x, np.array([0, 1, 2]), None, label_smoothing=smoothing)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [4, -1, 99])
def test_label_out_of_range_raises_index_error(backend, bad, rng):
    x = rng.standard_normal((3, 4))
    y = np.array([0, bad, 2])
    with pytest.raises(IndexError, match=rf"label {bad} at row 1"):
        ne.softmax_cross_entropy(x, y, backend=backend)
    with pytest.raises((IndexError, RuntimeError)):  # torch refuses too (no silent NaN either way)
        torch_ce(x, y, None)


# --------------------------------------------------------------------------------------------------
# probability space vs scipy


def _counts(rng, shape):
    """Non-negative integer counts with zeros, never an all-zero row (last axis)."""
    c = rng.integers(0, 5, size=shape)
    c[..., 0] += 1
    return c


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", [None, 2, 10, np.e, 0.5])
@pytest.mark.parametrize(("shape", "axis"), [((6, 9), -1), ((9, 6), 0), ((3, 7, 4), 1), ((11,), 0)])
def test_entropy_matches_scipy_stats(backend, base, shape, axis, rng):
    raw = np.moveaxis(_counts(rng, np.moveaxis(np.empty(shape), axis, -1).shape), -1, axis)
    for p in (raw, raw * 0.37):  # integer counts, and unnormalised floats
        got = ne.entropy(p, base=base, axis=axis, normalize=True, backend=backend)
        ref = scipy.stats.entropy(p, base=base, axis=axis)
        assert_matches(got, ref, SCIPY_TOL[F64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", [None, 2, 10])
@pytest.mark.parametrize(("shape", "axis"), [((6, 9), -1), ((9, 6), 0), ((3, 7, 4), 1)])
def test_kl_matches_scipy_stats_entropy_with_qk(backend, base, shape, axis, rng):
    moved = np.moveaxis(np.empty(shape), axis, -1).shape
    p = np.moveaxis(_counts(rng, moved), -1, axis).astype(np.float64)
    q = np.moveaxis(rng.random(moved) + 0.05, -1, axis)
    got = ne.kl_divergence(p, q, base=base, axis=axis, normalize=True, backend=backend)
    ref = scipy.stats.entropy(p, q, base=base, axis=axis)
    assert_matches(got, ref, SCIPY_TOL[F64])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_sums_of_scipy_special_terms(backend, dtype, rng):
    """entr, xlogy, rel_entr and kl_div row sums, zeros included (p = 0 terms and q = 0 -> inf)."""
    p = rand_probs(rng, (40, 13), zeros=0.3).astype(dtype)
    q = rand_probs(rng, (40, 13), zeros=0.3)
    q[:10] = rand_probs(rng, (10, 13), zeros=0)  # some rows where KL is certainly finite
    q = q.astype(dtype)
    pp, qq = f64(p), f64(q)
    tol = SCIPY_TOL[dtype]
    assert_matches(ne.entropy(p, backend=backend), scipy.special.entr(pp).sum(-1), tol)
    assert_matches(
        ne.cross_entropy(p, q, backend=backend), -scipy.special.xlogy(pp, qq).sum(-1), tol
    )
    kl = ne.kl_divergence(p, q, backend=backend)
    ref = scipy.special.rel_entr(pp, qq).sum(-1)
    assert np.isinf(ref).any() and np.isfinite(ref).any()  # both regimes are exercised
    assert_matches(kl, ref, tol)
    # kl_div = rel_entr - p + q: for unnormalised rows its sum is KL + sum(q) - sum(p)
    ps, qs = pp * 3.0, qq * 0.5
    with np.errstate(invalid="ignore"):
        ref2 = scipy.special.kl_div(ps, qs).sum(-1) - qs.sum(-1) + ps.sum(-1)
    assert_matches(ne.kl_divergence(ps, qs, backend=backend), ref2, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", [None, 2, 10])
@pytest.mark.parametrize(("shape", "axis"), [((8, 10), -1), ((10, 8), 0), ((2, 9, 3), 1)])
def test_js_matches_scipy_jensenshannon_squared(backend, base, shape, axis, rng):
    moved = np.moveaxis(np.empty(shape), axis, -1).shape
    p = np.moveaxis(_counts(rng, moved), -1, axis).astype(np.float64)
    q = np.moveaxis(_counts(rng, moved), -1, axis).astype(np.float64)
    got = ne.js_divergence(p, q, base=base, axis=axis, normalize=True, backend=backend)
    ref = scipy.spatial.distance.jensenshannon(p, q, base=base, axis=axis) ** 2
    assert_matches(got, ref, 1e-12)
    if base == 2:
        assert np.all(np.asarray(got) <= 1 + 1e-12)  # at most one bit


# --------------------------------------------------------------------------------------------------
# logit space vs scipy.special and torch


def _logit_rows(rng, dtype):
    x = rng.standard_normal((9, 31)) * 4
    x[1] = -np.inf  # all -inf: logsumexp -inf (scipy agrees)
    x[2, ::3] = -np.inf  # some impossible classes
    x[3] *= 1e3  # large logits
    x[4] += 700.0  # exp would overflow without the max shift
    return x.astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("axis", [-1, 0])
def test_logsumexp_softmax_match_scipy(backend, dtype, axis, rng):
    x = _logit_rows(rng, dtype)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    tol = SCIPY_TOL[dtype]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ref_lse = scipy.special.logsumexp(f64(x), axis=axis)
        ref_sm = scipy.special.softmax(f64(x), axis=axis)
        ref_lsm = scipy.special.log_softmax(f64(x), axis=axis)
    assert_matches(ne.logsumexp(x, axis=axis, backend=backend), ref_lse, tol)
    finite = np.isfinite(ref_lse)  # all -inf rows: numbaent softmax is NaN by contract
    sel = (slice(None), finite) if axis == 0 else finite
    sm = ne.softmax(x, axis=axis, backend=backend)
    lsm = ne.log_softmax(x, axis=axis, backend=backend)
    assert sm.shape == lsm.shape == x.shape
    assert_matches(sm[sel], ref_sm[sel], tol)
    assert_matches(lsm[sel], ref_lsm[sel], tol)
    assert np.isnan(sm[(slice(None), ~finite) if axis == 0 else ~finite]).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_logit_functions_match_torch(backend, dtype, rng):
    x = _logit_rows(rng, dtype)[[0, 2, 3, 4, 5, 6, 7, 8]]
    tx = torch.from_numpy(x)
    tol = TORCH_TOL[dtype]
    assert_matches(ne.logsumexp(x, backend=backend), torch.logsumexp(tx, dim=-1), tol)
    ref_h = torch.distributions.Categorical(logits=tx).entropy()
    assert_matches(ne.softmax_entropy(x, backend=backend), ref_h, tol)
    assert_matches(ne.softmax(x, backend=backend), torch.softmax(tx, dim=-1), tol)
    assert_matches(ne.log_softmax(x, backend=backend), torch.log_softmax(tx, dim=-1), tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
def test_entropy_matches_torch_special_entr(backend, dtype, rng):
    p = rand_probs(rng, (25, 17), zeros=0.3).astype(dtype)
    ref = torch.special.entr(torch.from_numpy(p)).sum(-1)
    assert_matches(ne.entropy(p, backend=backend), ref, TORCH_TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
@pytest.mark.parametrize(("shape", "axis"), [((64, 100), -1), ((3, 423), -1), ((5, 7, 3), 1)])
def test_softmax_kl_matches_torch_kl_div_log_target(backend, dtype, temperature, shape, axis, rng):
    teacher = (rng.standard_normal(shape) * 3).astype(dtype)
    student = (rng.standard_normal(shape) * 3).astype(dtype)
    got = ne.softmax_kl_divergence(
        teacher, student, temperature=temperature, axis=axis, backend=backend
    )
    lp = torch.log_softmax(torch.from_numpy(teacher) / temperature, dim=axis)
    lq = torch.log_softmax(torch.from_numpy(student) / temperature, dim=axis)
    ref = F.kl_div(lq, lp, log_target=True, reduction="none").sum(axis)
    assert_matches(got, ref, TORCH_TOL[dtype])
    rows = teacher.size // shape[axis]
    batchmean = F.kl_div(lq, lp, log_target=True, reduction="sum") / rows
    mean = ne.softmax_kl_divergence(
        teacher, student, temperature=temperature, axis=axis, reduction="mean", backend=backend
    )
    assert_matches(mean, batchmean, TORCH_TOL[dtype] * 10)
