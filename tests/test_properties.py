"""Mathematical properties every backend must satisfy, checked with hypothesis.

The inputs are bounded (probabilities in [1e-6, 1] plus exact zeros; logits on a 1/64 grid in
[-32, 32], so that adding an integer shift is exact in float32 too) and each property holds to
rounding, with a tolerance per dtype. The float64 and float32 paths are both exercised.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import numbaent as ne

BACKENDS = ["numpy", "cpu"]
F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
DTYPES = st.sampled_from([F64, F32])
# identities hold to rounding: |a - b| <= TOL * scale, scale ~ the size of the quantities involved
TOL = {F64: 1e-11, F32: 2e-5}
LN2 = math.log(2.0)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROB2 = ["cross_entropy", "kl_divergence", "js_divergence"]


def f64(a):
    return np.asarray(a, dtype=np.float64)


def near(got, ref, dtype, scale=1.0, what=""):
    got, ref = f64(got), f64(ref)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    t = TOL[np.dtype(dtype)] * scale
    np.testing.assert_allclose(got, ref, rtol=t, atol=t, equal_nan=True, err_msg=what)


# --------------------------------------------------------------------------------------------------
# strategies

dims = st.tuples(st.integers(1, 6), st.integers(1, 24))


@st.composite
def raw_rows(draw, n, c, zeros=True):
    """Non-negative float64 rows, each with a positive entry; exact zeros when ``zeros``."""
    elem = st.floats(1e-6, 1.0)
    if zeros:
        elem = st.just(0.0) | elem
    a = draw(hnp.arrays(np.float64, (n, c), elements=elem))
    j = draw(st.integers(0, c - 1))
    a[:, j] += 0.25
    return a


@st.composite
def dist(draw, n, c, dtype, zeros=True):
    """Rows that sum to 1 (in float64; then rounded to ``dtype``)."""
    a = draw(raw_rows(n, c, zeros))
    return (a / a.sum(axis=1, keepdims=True)).astype(dtype)


@st.composite
def pq(draw, zeros_q=True):
    n, c = draw(dims)
    dtype = draw(DTYPES)
    return dtype, draw(dist(n, c, dtype)), draw(dist(n, c, dtype, zeros=zeros_q))


@st.composite
def grid_logits(draw, n, c, dtype):
    """Logits k/64, |k| <= 2048: exact in float32, and x + integer shift stays exact."""
    k = draw(hnp.arrays(np.int32, (n, c), elements=st.integers(-2048, 2048)))
    return (k / 64.0).astype(dtype)


@st.composite
def logit_case(draw, labels_ignored=True):
    """(dtype, logits, teacher logits, integer labels (some -100), soft targets)."""
    n, c = draw(dims)
    dtype = draw(DTYPES)
    x = draw(grid_logits(n, c, dtype))
    t = draw(grid_logits(n, c, dtype))
    lab = st.integers(0, c - 1)
    if labels_ignored:
        lab = lab | st.just(-100)
    y = draw(hnp.arrays(np.int64, (n,), elements=lab))
    soft = draw(dist(n, c, dtype))
    return dtype, x, t, y, soft


def _scale(*arrays):
    """1 + the largest finite magnitude among the arrays (for absolute tolerances)."""
    m = 0.0
    for a in arrays:
        a = f64(a)
        fin = a[np.isfinite(a)]
        if fin.size:
            m = max(m, float(np.abs(fin).max()))
    return 1.0 + m


# --------------------------------------------------------------------------------------------------
# probability space


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=pq(zeros_q=False))
def test_kl_is_cross_entropy_minus_entropy(backend, case):
    dtype, p, q = case
    h = ne.entropy(p, backend=backend)
    ce = ne.cross_entropy(p, q, backend=backend)
    kl = ne.kl_divergence(p, q, backend=backend)
    near(kl, f64(ce) - f64(h), dtype, scale=_scale(ce, h))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=pq())
def test_cross_entropy_is_at_least_entropy(backend, case):
    """Gibbs' inequality; q may have zeros where p does not (CE = +inf)."""
    dtype, p, q = case
    h = f64(ne.entropy(p, backend=backend))
    ce = f64(ne.cross_entropy(p, q, backend=backend))
    assert np.all(ce >= h - TOL[dtype] * _scale(h, ce))
    assert np.all(np.isinf(ce) == ((f64(p) > 0) & (f64(q) == 0)).any(axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=pq())
def test_kl_is_nonnegative_and_zero_only_for_equal_rows(backend, case):
    dtype, p, q = case
    kl = f64(ne.kl_divergence(p, q, backend=backend))
    tol = TOL[dtype] * _scale(kl)
    # Pinsker: KL >= 1/2 ||p - q||_1^2, so KL > 0 whenever the rows differ noticeably
    l1 = np.abs(f64(p) - f64(q)).sum(axis=1)
    assert np.all(kl >= 0.5 * l1**2 - tol)
    assert np.all(kl[0.5 * l1**2 > 10 * tol] > 0)
    same = f64(ne.kl_divergence(p, p, backend=backend))
    assert np.all(np.abs(same) <= TOL[dtype])
    h = ne.entropy(p, backend=backend)
    near(ne.cross_entropy(p, p, backend=backend), h, dtype, scale=_scale(h))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=pq())
def test_js_is_symmetric_and_bounded_by_ln2(backend, case):
    dtype, p, q = case
    pq_ = f64(ne.js_divergence(p, q, backend=backend))
    qp = f64(ne.js_divergence(q, p, backend=backend))
    near(pq_, qp, dtype)
    assert np.all(np.isfinite(pq_))
    assert np.all(pq_ >= -TOL[dtype])
    assert np.all(pq_ <= LN2 + TOL[dtype])
    assert np.all(f64(ne.js_divergence(p, q, base=2, backend=backend)) <= 1 + TOL[dtype])
    assert np.all(np.abs(f64(ne.js_divergence(p, p, backend=backend))) <= TOL[dtype])
    # JS = 1/2 KL(p||m) + 1/2 KL(q||m), m = (p + q) / 2, through the public KL
    m = (f64(p) + f64(q)) / 2
    ref = 0.5 * ne.kl_divergence(f64(p), m, backend=backend)
    ref += 0.5 * ne.kl_divergence(f64(q), m, backend=backend)
    near(pq_, ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(dims=dims, data=st.data(), dtype=DTYPES, mult=st.floats(0.01, 100.0))
def test_normalize_equals_dividing_by_the_row_sum(backend, dims, data, dtype, mult):
    n, c = dims
    a = (data.draw(raw_rows(n, c)) * mult).astype(dtype)
    b = (data.draw(raw_rows(n, c)) * mult).astype(dtype)
    an = f64(a) / f64(a).sum(axis=1, keepdims=True)
    bn = f64(b) / f64(b).sum(axis=1, keepdims=True)
    got = ne.entropy(a, normalize=True, backend=backend)
    near(got, ne.entropy(an, backend="numpy"), dtype, scale=_scale(got))
    for func in PROB2:
        f = getattr(ne, func)
        got = f(a, b, normalize=True, backend=backend)
        near(got, f(an, bn, backend="numpy"), dtype, scale=_scale(got))
    # integer counts are probabilities too
    counts = data.draw(hnp.arrays(np.int64, (n, c), elements=st.integers(0, 50)))
    counts[:, 0] += 1
    cn = counts / counts.sum(axis=1, keepdims=True)
    near(ne.entropy(counts, normalize=True, backend=backend), ne.entropy(cn, backend="numpy"), F64)


# --------------------------------------------------------------------------------------------------
# base change, reductions, permutations (both spaces)


def _base_functions(dtype, p, q, x, t, y, soft):
    """name -> callable(**kw) for every function that takes ``base`` and ``reduction``."""
    return {
        "entropy": lambda **kw: ne.entropy(p, **kw),
        "cross_entropy": lambda **kw: ne.cross_entropy(p, q, **kw),
        "kl_divergence": lambda **kw: ne.kl_divergence(p, q, **kw),
        "js_divergence": lambda **kw: ne.js_divergence(p, q, **kw),
        "softmax_entropy": lambda **kw: ne.softmax_entropy(x, **kw),
        "softmax_kl_divergence": lambda **kw: ne.softmax_kl_divergence(t, x, temperature=1.5, **kw),
        "softmax_cross_entropy[labels]": lambda **kw: ne.softmax_cross_entropy(x, y, **kw),
        "softmax_cross_entropy[soft]": lambda **kw: ne.softmax_cross_entropy(x, soft, **kw),
    }


@st.composite
def everything(draw):
    """One batch for both spaces: (dtype, p, q, logits, teacher, labels, soft targets)."""
    dtype, x, t, y, soft = draw(logit_case())
    n, c = x.shape
    p = draw(dist(n, c, dtype))
    q = draw(dist(n, c, dtype, zeros=False))
    return dtype, p, q, x, t, y, soft


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    case=everything(),
    base=st.floats(0.05, 100.0).filter(lambda b: abs(math.log(b)) > 0.05)
    | st.sampled_from([2, 10]),
)
def test_base_change_divides_by_ln_base(backend, case, base):
    dtype = case[0]
    lnb = math.log(base)
    for name, f in _base_functions(*case).items():
        nats = f64(f(backend=backend))
        got = f(base=base, backend=backend)
        near(got, nats / lnb, dtype, scale=_scale(nats / lnb), what=name)
    _, _, _, x, t, y, _ = case
    s_nats = ne.score(x, y, teacher_logits=t, temperature=1.5, backend=backend)
    s_b = ne.score(x, y, teacher_logits=t, temperature=1.5, base=base, backend=backend)
    for field in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
        ref = f64(getattr(s_nats, field)) / lnb
        near(getattr(s_b, field), ref, dtype, scale=_scale(ref))
    np.testing.assert_array_equal(s_b.argmax, s_nats.argmax)
    np.testing.assert_array_equal(s_b.correct, s_nats.correct)
    # perplexity does not depend on the units: base ** (CE / ln base) = e ** CE
    ppl_b, ppl_e = s_b.summary()["perplexity"], s_nats.summary()["perplexity"]
    assert ppl_b == pytest.approx(ppl_e, rel=100 * TOL[dtype], nan_ok=True)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=everything(), weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.3]))
def test_reductions_are_the_sum_and_mean_of_the_rows(backend, case, weighted, smoothing):
    dtype, p, q, x, t, y, soft = case
    for name, f in _base_functions(*case).items():
        rows = f64(f(backend=backend))
        total = f(reduction="sum", backend=backend)
        mean = f(reduction="mean", backend=backend)
        assert isinstance(total, float), name
        assert isinstance(mean, float), name
        if name == "softmax_cross_entropy[labels]":
            n_kept = int(np.count_nonzero(y != -100))
            ref_mean = rows.sum() / n_kept if n_kept else math.nan
        else:
            ref_mean = rows.mean()
        near(total, rows.sum(), dtype, scale=_scale(rows.sum()), what=name)
        near(mean, ref_mean, dtype, scale=_scale(ref_mean), what=name)
    # weighted and smoothed cross-entropy: the mean divides by the kept labels' weights
    w = np.linspace(0.5, 2.0, x.shape[1]) if weighted else None
    kw = dict(weight=w, label_smoothing=smoothing, backend=backend)
    rows = f64(ne.softmax_cross_entropy(x, y, **kw))
    keep = y != -100
    denom = (np.ones(x.shape[1]) if w is None else w)[y[keep]].sum()
    ref_mean = rows.sum() / denom if denom else math.nan
    near(
        ne.softmax_cross_entropy(x, y, reduction="sum", **kw),
        rows.sum(),
        dtype,
        scale=_scale(rows.sum()),
    )
    near(
        ne.softmax_cross_entropy(x, y, reduction="mean", **kw),
        ref_mean,
        dtype,
        scale=_scale(ref_mean),
    )
    assert np.all(rows[~keep] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=everything(), data=st.data())
def test_class_permutation_invariance(backend, case, data):
    dtype, p, q, x, t, y, soft = case
    c = x.shape[1]
    perm = np.array(data.draw(st.permutations(range(c))), dtype=np.int64)
    inv = np.argsort(perm)  # old class k sits at new position inv[k]
    yp = np.where(y == -100, -100, inv[np.clip(y, 0, None)])
    w = np.linspace(0.5, 2.0, c)
    pp, qp, xp, tp, sp = (a[:, perm] for a in (p, q, x, t, soft))
    for f, args, args_p in (
        (ne.entropy, (p,), (pp,)),
        (ne.cross_entropy, (p, q), (pp, qp)),
        (ne.kl_divergence, (p, q), (pp, qp)),
        (ne.js_divergence, (p, q), (pp, qp)),
        (ne.logsumexp, (x,), (xp,)),
        (ne.softmax_entropy, (x,), (xp,)),
        (ne.softmax_kl_divergence, (t, x), (tp, xp)),
        (ne.softmax_cross_entropy, (x, y), (xp, yp)),
        (ne.softmax_cross_entropy, (x, soft), (xp, sp)),
    ):
        ref = f(*args, backend=backend)
        near(f(*args_p, backend=backend), ref, dtype, scale=_scale(ref))
    ref = ne.softmax_cross_entropy(x, y, weight=w, label_smoothing=0.2, backend=backend)
    got = ne.softmax_cross_entropy(xp, yp, weight=w[perm], label_smoothing=0.2, backend=backend)
    near(got, ref, dtype, scale=_scale(ref))
    # softmax / log_softmax permute with their input
    near(ne.softmax(xp, backend=backend), ne.softmax(x, backend=backend)[:, perm], dtype)
    ref = ne.log_softmax(x, backend=backend)[:, perm]
    near(ne.log_softmax(xp, backend=backend), ref, dtype, scale=_scale(ref))
    # score: real-valued fields invariant; argmax is a maximising class (ties may pick another)
    s = ne.score(x, y, teacher_logits=t, backend=backend)
    sp_ = ne.score(xp, yp, teacher_logits=tp, backend=backend)
    for field in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
        ref = getattr(s, field)
        near(getattr(sp_, field), ref, dtype, scale=_scale(ref))
    rows = np.arange(x.shape[0])
    np.testing.assert_array_equal(xp[rows, sp_.argmax], x[rows, s.argmax])
    unique_max = (x == x.max(axis=1, keepdims=True)).sum(axis=1) == 1
    np.testing.assert_array_equal(sp_.correct[unique_max], s.correct[unique_max])


# --------------------------------------------------------------------------------------------------
# logit space


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=logit_case(), data=st.data())
def test_shift_invariance(backend, case, data):
    """x + c (c an integer per row, exact on the grid): logsumexp moves by c, nothing else moves."""
    dtype, x, t, y, soft = case
    n = x.shape[0]
    c = data.draw(hnp.arrays(np.int64, (n, 1), elements=st.integers(-1000, 1000))).astype(dtype)
    c2 = data.draw(hnp.arrays(np.int64, (n, 1), elements=st.integers(-1000, 1000))).astype(dtype)
    xs, ts = x + c, t + c2
    assert np.array_equal(xs - c, x)  # the shift is exact
    lse = ne.logsumexp(x, backend=backend)
    near(
        ne.logsumexp(xs, backend=backend), f64(lse) + f64(c[:, 0]), dtype, scale=_scale(lse) + 1000
    )
    for f, args, args_s in (
        (ne.softmax_entropy, (x,), (xs,)),
        (ne.softmax, (x,), (xs,)),
        (ne.log_softmax, (x,), (xs,)),
        (ne.softmax_cross_entropy, (x, y), (xs, y)),
        (ne.softmax_cross_entropy, (x, soft), (xs, soft)),
        (ne.softmax_kl_divergence, (t, x), (ts, xs)),
    ):
        ref = f(*args, backend=backend)
        near(f(*args_s, backend=backend), ref, dtype, scale=_scale(ref))
    s = ne.score(x, y, teacher_logits=t, temperature=2.0, backend=backend)
    ss = ne.score(xs, y, teacher_logits=ts, temperature=2.0, backend=backend)
    # at T = 2 every field is of softmax(x / 2): its log-sum-exp moves by c / 2
    near(ss.logsumexp, f64(s.logsumexp) + f64(c[:, 0]) / 2, dtype, scale=_scale(lse) + 1000)
    for field in ("entropy", "cross_entropy", "kl_divergence", "confidence", "margin", "brier"):
        ref = getattr(s, field)
        near(getattr(ss, field), ref, dtype, scale=_scale(ref))
    np.testing.assert_array_equal(ss.argmax, s.argmax)
    np.testing.assert_array_equal(ss.correct, s.correct)
    np.testing.assert_array_equal(ss.rank, s.rank)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(case=logit_case(), axis_last=st.booleans())
def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log(backend, case, axis_last):
    dtype, x, *_ = case
    if not axis_last:  # the class axis first: a (C, N) array reduced along axis 0
        x = np.ascontiguousarray(x.T)
    axis = -1 if axis_last else 0
    sm = ne.softmax(x, axis=axis, backend=backend)
    lsm = ne.log_softmax(x, axis=axis, backend=backend)
    assert sm.shape == lsm.shape == x.shape
    assert sm.dtype == lsm.dtype == dtype
    # probabilities in [0, 1] and log-probabilities <= 0, up to one rounding of the row sum S
    # (a 1-ulp-low S gives log S < 0, so the top class can come out as +4.8e-8 in float32)
    eps = np.finfo(dtype).eps
    assert np.all(sm >= 0) and np.all(sm <= 1 + eps)
    sums = f64(sm).sum(axis=axis)
    near(sums, np.ones_like(sums), dtype, scale=x.shape[axis])
    assert np.all(lsm <= eps)
    # log_softmax = log(softmax) where softmax is a normal number; exp(log_softmax) = softmax
    ok = f64(sm) > np.finfo(dtype).tiny
    with np.errstate(divide="ignore"):
        near(f64(lsm)[ok], np.log(f64(sm))[ok], dtype, scale=_scale(lsm))
    near(np.exp(f64(lsm)), sm, dtype)
    # and log_softmax = x - logsumexp(x)
    lse = ne.logsumexp(x, axis=axis, backend=backend)
    ref = f64(x) - np.expand_dims(f64(lse), axis)
    near(lsm, ref, dtype, scale=_scale(x, lse))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    case=logit_case(),
    temperature=st.sampled_from([1.0, 0.5, 3.0]) | st.floats(0.1, 10.0),
    custom_ignore=st.booleans(),
    data=st.data(),
)
def test_score_fields_equal_the_single_functions(backend, case, temperature, custom_ignore, data):
    dtype, x, t, y, _ = case
    ii = -100
    if custom_ignore:  # an ignore_index that is a real class: its rows are ignored, not scored
        ii = data.draw(st.integers(0, x.shape[1] - 1))
        y = np.where(y == -100, ii, y)
    s = ne.score(x, y, teacher_logits=t, temperature=temperature, ignore_index=ii, backend=backend)
    xt = f64(x) / temperature  # the temperature applies to every field (float64: x / T is exact
    checks = {  # enough, and the single functions' float64 results compare at dtype's tolerance)
        "logsumexp": ne.logsumexp(xt, backend=backend),
        "entropy": ne.softmax_entropy(xt, backend=backend),
        "cross_entropy": ne.softmax_cross_entropy(xt, y, ignore_index=ii, backend=backend),
        "kl_divergence": ne.softmax_kl_divergence(t, x, temperature=temperature, backend=backend),
    }
    for field, ref in checks.items():
        got = getattr(s, field)
        assert got.dtype == dtype, field
        near(got, ref, dtype, scale=_scale(ref), what=field)
    np.testing.assert_array_equal(s.correct, s.rank == 0)
    keep = y != ii
    np.testing.assert_array_equal(s.argmax, np.argmax(x, axis=1))
    np.testing.assert_array_equal(s.correct, (np.argmax(x, axis=1) == y) & keep)
    np.testing.assert_array_equal(s.ignored, ~keep)
    summ = s.summary()
    assert summ["rows"] == x.shape[0] and summ["ignored"] == int((~keep).sum())
    if keep.any():
        ce = ne.softmax_cross_entropy(xt, y, ignore_index=ii, reduction="mean", backend=backend)
        assert summ["cross_entropy"] == pytest.approx(ce, rel=10 * TOL[dtype], abs=10 * TOL[dtype])
        assert summ["perplexity"] == pytest.approx(math.exp(summ["cross_entropy"]), rel=1e-12)
        assert summ["accuracy"] == pytest.approx(np.mean(s.correct[keep]))
        ent = f64(checks["entropy"])[keep].mean()
        assert summ["entropy"] == pytest.approx(ent, rel=10 * TOL[dtype], abs=10 * TOL[dtype])
    else:
        assert math.isnan(summ["cross_entropy"]) and math.isnan(summ["accuracy"])
    # without labels and teacher, those fields are None
    bare = ne.score(x, backend=backend)
    assert bare.cross_entropy is None and bare.correct is None and bare.kl_divergence is None
    assert bare.rank is None and bare.brier is None
    near(bare.entropy, ne.softmax_entropy(x, backend=backend), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    n=st.integers(1, 4),
    c=st.integers(1000, 5000) | st.sampled_from([65536, 65537, 70001, 98305]),  # + split path
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
    shift=st.integers(-1000, 1000),
)
def test_identities_across_kernel_blocks(backend, n, c, dtype, seed, shift):
    """Rows longer than one kernel block (1024): the same identities, with error independent of C."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2048, 2049, (n, c)) / 64.0).astype(dtype)
    t = (rng.integers(-2048, 2049, (n, c)) / 64.0).astype(dtype)
    y = rng.integers(0, c, n)
    p = rng.random((n, c))
    p[rng.random((n, c)) < 0.3] = 0.0
    p[:, 0] += 0.1
    p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    q = rng.random((n, c)) + 1e-3
    q = (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    b = dict(backend=backend)
    # probability identities
    h, ce, kl = ne.entropy(p, **b), ne.cross_entropy(p, q, **b), ne.kl_divergence(p, q, **b)
    near(kl, f64(ce) - f64(h), dtype, scale=_scale(ce, h))
    assert np.all(f64(kl) >= -TOL[dtype])
    near(ne.js_divergence(p, q, **b), ne.js_divergence(q, p, **b), dtype)
    # shift invariance
    xs = x + dtype.type(shift)
    assert np.array_equal(xs - dtype.type(shift), x)
    lse = ne.logsumexp(x, **b)
    near(ne.logsumexp(xs, **b), f64(lse) + shift, dtype, scale=_scale(lse) + 1000)
    for f, args, args_s in (
        (ne.softmax_entropy, (x,), (xs,)),
        (ne.softmax_cross_entropy, (x, y), (xs, y)),
        (ne.softmax_kl_divergence, (t, x), (t, xs)),
    ):
        ref = f(*args, **b)
        near(f(*args_s, **b), ref, dtype, scale=_scale(ref))
    # softmax rows sum to one
    sums = f64(ne.softmax(x, **b)).sum(axis=1)
    near(sums, np.ones(n), dtype, scale=10)
    # score = the single functions
    s = ne.score(x, y, teacher_logits=t, **b)
    near(s.logsumexp, lse, dtype, scale=_scale(lse))
    for field, ref in (
        ("entropy", ne.softmax_entropy(x, **b)),
        ("cross_entropy", ne.softmax_cross_entropy(x, y, **b)),
        ("kl_divergence", ne.softmax_kl_divergence(t, x, **b)),
    ):
        near(getattr(s, field), ref, dtype, scale=_scale(ref))
    np.testing.assert_array_equal(x[np.arange(n), s.argmax], x.max(axis=1))
    # the float64 oracle on the same values
    for f, args in (
        (ne.entropy, (p,)),
        (ne.kl_divergence, (p, q)),
        (ne.logsumexp, (x,)),
        (ne.softmax_entropy, (x,)),
        (ne.softmax_kl_divergence, (t, x)),
    ):
        ref = f(*(f64(a) for a in args), backend="numpy")
        near(f(*args, **b), ref, dtype, scale=_scale(ref))


@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    n=st.integers(200, 700),
    c=st.integers(1, 64),
    dtype=DTYPES,
    seed=st.integers(0, 2**32 - 1),
    shift=st.integers(-1000, 1000),
)
def test_identities_across_row_tiles(backend, n, c, dtype, seed, shift):
    """Many rows of few classes (the row-tiled path, tiles of a few hundred rows, a partial last
    tile): oracle agreement, shift invariance, special rows in the middle of a tile."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2048, 2049, (n, c)) / 64.0).astype(dtype)
    y = rng.integers(0, c, n)
    y[rng.random(n) < 0.1] = -100
    special = rng.choice(n, size=min(n, 6), replace=False)
    x[special[0]] = -np.inf  # all -inf: logsumexp -inf, the rest NaN
    x[special[1], 0] = np.nan  # NaN stays in its row
    x[special[2], : (c + 1) // 2] = -np.inf  # some impossible classes
    y[special[2]] = c - 1  # ... but not the label
    b = dict(backend=backend)
    for f, args in (
        (ne.logsumexp, (x,)),
        (ne.softmax_entropy, (x,)),
        (ne.softmax_cross_entropy, (x, y)),
        (ne.log_softmax, (x,)),
    ):
        ref = f(*(a if a.dtype.kind == "i" else f64(a) for a in args), backend="numpy")
        near(f(*args, **b), ref, dtype, scale=_scale(ref), what=f.__name__)
    s = ne.score(x, y, **b)
    near(s.cross_entropy, ne.softmax_cross_entropy(f64(x), y, backend="numpy"), dtype, scale=40)
    near(s.entropy, ne.softmax_entropy(f64(x), backend="numpy"), dtype, scale=40)
    ok = np.isfinite(x).any(axis=1) & ~np.isnan(x).any(axis=1)
    # shift invariance on the rows with a finite value
    xs = x + dtype.type(shift)
    lse, lse_s = f64(ne.logsumexp(x, **b)), f64(ne.logsumexp(xs, **b))
    near(lse_s[ok], lse[ok] + shift, dtype, scale=_scale(lse[ok]) + 1000)
    ce, ce_s = ne.softmax_cross_entropy(x, y, **b), ne.softmax_cross_entropy(xs, y, **b)
    near(ce_s, ce, dtype, scale=_scale(ce))
    # mean over the kept rows; NaN row included, so the mean is NaN
    mean = ne.softmax_cross_entropy(x, y, reduction="mean", **b)
    assert math.isnan(mean) == bool(np.isnan(f64(ce)).any())
