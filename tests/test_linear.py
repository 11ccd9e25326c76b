"""linear_score / linear_cross_entropy: equal to score / softmax_cross_entropy of the materialised
logits ``hidden @ weight.T + bias`` (within float32 tolerance: the chunked product rounds
differently) for every field, dtype, chunking and edge, and their memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest

import numbaent as ne
from numbaent import linear

BACKENDS = ["cpu", "numpy"]
BF16 = ml_dtypes.bfloat16


def _inputs(n=29, d=12, nv=203, dtype=np.float32, seed=0, td=7, batch=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if batch is None else batch
    h = rng.standard_normal(shape + (d,)).astype(dtype)
    w = rng.standard_normal((nv, d)).astype(dtype)
    b = rng.standard_normal(nv).astype(dtype)
    y = rng.integers(0, nv, shape)
    y.reshape(-1)[::5] = -100
    th = rng.standard_normal(shape + (td,)).astype(dtype)
    tw = rng.standard_normal((nv, td)).astype(dtype)
    tb = rng.standard_normal(nv).astype(dtype)
    return h, w, b, y, (th, tw, tb)


def _logits(h, w, b=None):
    """The logits the linear functions score, from a float64 product, in the inputs' math dtype."""
    x = np.asarray(h, np.float64) @ np.asarray(w, np.float64).T
    if b is not None:
        x = x + np.asarray(b, np.float64)
    dt = np.float64 if np.float64 in (np.dtype(h.dtype), np.dtype(w.dtype)) else np.float32
    return x.astype(dt)


def _close(got, ref, tol, field=""):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, field
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=field)
        return
    assert got.dtype == ref.dtype, (field, got.dtype, ref.dtype)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=field)
    ok = ~np.isnan(r)
    np.testing.assert_array_equal(np.isinf(g[ok]), np.isinf(r[ok]), err_msg=field)
    fin = ok & np.isfinite(r)
    np.testing.assert_allclose(g[fin], r[fin], rtol=tol, atol=tol, err_msg=field)


def _same_scores(s, r, tol):
    for k, ref in r.as_dict().items():
        got = getattr(s, k)
        assert (got is None) == (ref is None), k
        if ref is not None:
            _close(got, ref, tol, k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1, 17, 64, None])
def test_every_field_equals_score_of_the_logits(backend, temperature, chunk):
    h, w, b, y, (th, tw, tb) = _inputs()
    s = ne.linear_score(h, w, y, bias=b, teacher=(th, tw, tb), temperature=temperature,
                        chunk_classes=chunk, backend=backend)  # fmt: skip
    r = ne.score(_logits(h, w, b), y, teacher_logits=_logits(th, tw, tb), temperature=temperature)
    _same_scores(s, r, 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_chunks(backend, monkeypatch):
    """A scratch of a few rows: rows chunked too, the states of each row chunk kept apart."""
    h, w, b, y, teacher = _inputs(n=41)
    monkeypatch.setattr(linear, "SCRATCH_BYTES", 4 * 2 * 16 * 5)  # 5 rows of 16 classes x 2
    assert linear._plan(41, 203, h, w, teacher, np.float32, 16) == (5, 16)
    s = ne.linear_score(h, w, y, bias=b, teacher=teacher, chunk_classes=16, backend=backend)
    r = ne.score(_logits(h, w, b), y, teacher_logits=_logits(*teacher))
    _same_scores(s, r, 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float16, BF16, "mixed"])
def test_dtypes(backend, dtype):
    """float64 multiplies in float64; float16 / bfloat16 widened per chunk into float32; a float64
    weight with float32 hidden states makes float64 results."""
    if dtype == "mixed":
        h, w, b, y, _ = _inputs()
        w = w.astype(np.float64)
    else:
        h, w, b, y, _ = _inputs(dtype=dtype)
    s = ne.linear_score(h, w, y, bias=b, chunk_classes=50, backend=backend)
    r = ne.score(_logits(h, w, b), y)
    tol = 1e-11 if s.logsumexp.dtype == np.float64 else 2e-5
    assert s.logsumexp.dtype == r.logsumexp.dtype
    _same_scores(s, r, tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_and_empty(backend):
    h, w, b, y, _ = _inputs(batch=(3, 4))
    s = ne.linear_score(h, w, y, bias=b, chunk_classes=30, backend=backend)
    assert s.cross_entropy.shape == (3, 4)
    _same_scores(s, ne.score(_logits(h, w, b), y), 2e-5)
    for n in (0, 1):
        h1, w1, b1, y1, t1 = _inputs(n=n)
        s = ne.linear_score(h1, w1, y1, bias=b1, teacher=t1, chunk_classes=40, backend=backend)
        r = ne.score(_logits(h1, w1, b1), y1, teacher_logits=_logits(*t1))
        _same_scores(s, r, 2e-5)
    s = ne.linear_score(h1, w1, backend=backend)  # no labels
    assert s.cross_entropy is None and s.rank is None
    _same_scores(s, ne.score(_logits(h1, w1)), 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edges_through_the_bias(backend):
    """-inf, +inf and NaN logits (from the bias), rows of all -inf, a label at -inf, and ties at
    the top across chunks: as score gives them."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((6, 4)).astype(np.float32)
    w = rng.standard_normal((40, 4)).astype(np.float32)
    w[30] = w[3]  # class 30 ties class 3 in every row (different chunks)
    b = np.zeros(40, np.float32)
    b[3] = b[30] = 50.0  # ... at the top
    b[7] = -np.inf
    y = np.array([30, 3, 7, 0, -100, 39])
    s = ne.linear_score(h, w, y, bias=b, chunk_classes=8, backend=backend)
    r = ne.score(_logits(h, w, b), y)
    _same_scores(s, r, 2e-5)
    assert (s.argmax == 3).all() and (s.margin == 0).all()
    assert s.rank[0] == 1 and s.rank[1] == 0  # the tie at a lower index ranks above
    for bad in (np.nan, np.inf):
        b2 = b.copy()
        b2[20] = bad
        s = ne.linear_score(h, w, y, bias=b2, chunk_classes=8, backend=backend)
        _same_scores(s, ne.score(_logits(h, w, b2), y), 2e-5)
    b3 = np.full(40, -np.inf, np.float32)
    s = ne.linear_score(h, w, y, bias=b3, chunk_classes=8, backend=backend)
    _same_scores(s, ne.score(_logits(h, w, b3), y), 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_base_and_summary(backend):
    h, w, b, y, t = _inputs()
    s = ne.linear_score(h, w, y, bias=b, teacher=t, base=2, chunk_classes=33, backend=backend)
    r = ne.score(_logits(h, w, b), y, teacher_logits=_logits(*t), base=2)
    _same_scores(s, r, 2e-5)
    a, c = s.summary(top_k=(1, 5)), r.summary(top_k=(1, 5))
    for k in ("cross_entropy", "accuracy", "brier", "ece", "kl_divergence", "entropy"):
        np.testing.assert_allclose(a[k], c[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert a["top_k_accuracy"] == c["top_k_accuracy"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_linear_cross_entropy(backend, reduction):
    h, w, b, y, _ = _inputs()
    x = _logits(h, w, b)
    cw = np.random.default_rng(1).random(w.shape[0])
    for kw in ({}, {"weight_classes": cw}, {"label_smoothing": 0.2},
               {"weight_classes": cw, "label_smoothing": 0.1}, {"temperature": 0.5},
               {"weight_classes": cw, "label_smoothing": 0.3, "temperature": 1.7},
               {"label_smoothing": 0.2, "temperature": 0.6}):  # fmt: skip
        got = ne.linear_cross_entropy(h, w, y, bias=b, reduction=reduction, chunk_classes=45,
                                      backend=backend, **kw)  # fmt: skip
        ref_kw = dict(kw)
        if "weight_classes" in ref_kw:
            ref_kw["weight"] = ref_kw.pop("weight_classes")
        ref = ne.softmax_cross_entropy(x, y, reduction=reduction, **ref_kw)
        if reduction == "none":
            _close(got, ref, 2e-5, str(kw))
        else:
            assert isinstance(got, float)
            assert got == pytest.approx(ref, rel=2e-6), kw


def test_bit_identical_across_runs_and_threads():
    h, w, b, y, t = _inputs(n=300, nv=5000)
    a = ne.linear_score(h, w, y, bias=b, teacher=t)
    with ne.threads(1):
        c = ne.linear_score(h, w, y, bias=b, teacher=t)
    for k, v in a.as_dict().items():
        np.testing.assert_array_equal(v, getattr(c, k), err_msg=k)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    h, w, b, y, _ = _inputs()
    ht = torch.from_numpy(h).requires_grad_(True)
    wt = torch.from_numpy(w).to(torch.bfloat16)
    s = ne.linear_score(ht, wt, torch.from_numpy(y), chunk_classes=50)
    assert isinstance(s.cross_entropy, torch.Tensor) and not s.cross_entropy.requires_grad
    wf = wt.float().numpy()
    r = ne.score(_logits(h, wf), y)
    _close(s.cross_entropy.numpy(), r.cross_entropy, 2e-5)
    loss = ne.linear_cross_entropy(ht, wt, torch.from_numpy(y), reduction="mean")
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


def test_matches_torch_linear_cross_entropy():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, w, b, y, _ = _inputs(n=64, d=32, nv=1000)
    ref = F.cross_entropy(F.linear(torch.from_numpy(h), torch.from_numpy(w), torch.from_numpy(b)),
                          torch.from_numpy(y), reduction="none").numpy()  # fmt: skip
    got = ne.linear_cross_entropy(h, w, y, bias=b)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_errors():
    h, w, b, y, t = _inputs()
    with pytest.raises(ValueError, match="last dimensions"):
        ne.linear_score(h, w[:, :5])
    with pytest.raises(ValueError, match="weight must be 2-D"):
        ne.linear_score(h, w[0])
    with pytest.raises(ValueError, match=r"bias must have shape \(203,\)"):
        ne.linear_score(h, w, bias=b[:5])
    with pytest.raises(ValueError, match="teacher must be a tuple"):
        ne.linear_score(h, w, teacher=t[0])
    with pytest.raises(ValueError, match="teacher"):
        ne.linear_score(h, w, teacher=(t[0][:3], t[1]))
    with pytest.raises(ValueError, match="chunk_classes must be >= 1"):
        ne.linear_score(h, w, chunk_classes=0)
    with pytest.raises(TypeError, match="hidden"):
        ne.linear_score(h.astype(np.int32), w)
    y2 = y.copy()
    y2[4] = 203
    with pytest.raises(IndexError, match=r"labels: label 203 at row 4 is outside \[0, 203\)"):
        ne.linear_score(h, w, y2)
    with pytest.raises(IndexError, match="target: label 203 at row 4"):
        ne.linear_cross_entropy(h, w, y2)
    with pytest.raises(ValueError, match="temperature"):
        ne.linear_score(h, w, temperature=0.0)


CHILD = textwrap.dedent(
    """
    import json, sys
    import ml_dtypes
    import numpy as np
    import numbaent as ne

    n, d, nv, dt, teacher = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
    DT = {"f32": np.float32, "bf16": ml_dtypes.bfloat16}[dt]

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

    def make(shape, seed):
        a = np.empty(shape, DT)
        rng = np.random.default_rng(seed)
        for i in range(0, shape[0], 1024):
            a[i:i + 1024] = (rng.standard_normal((min(1024, shape[0] - i),) + shape[1:], np.float32) * 0.05).astype(DT)
        return a

    h, w = make((n, d), 0), make((nv, d), 1)
    y = np.random.default_rng(2).integers(0, nv, n)
    t = (make((n, d), 3), make((nv, d), 4)) if teacher else None
    ne.linear_score(h[:4], w[:300], y[:4] % 300, teacher=None if t is None else (t[0][:4], t[1][:300]), chunk_classes=100)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    ne.linear_score(h, w, y, teacher=t)
    print(json.dumps({"added": status("VmHWM") - before}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("dt,teacher", [("f32", False), ("bf16", True)])
def test_peak_memory_is_the_scratch(dt, teacher):
    """Above the inputs a call holds the scratch (SCRATCH_BYTES), never rows x V: 2048 x 50000
    logits would be 400 MB."""
    n, d, nv = 2048, 256, 50000
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), str(nv), dt,
                          "1" if teacher else "0"],
                         capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    added = json.loads(out.stdout.strip().splitlines()[-1])["added"]
    limit = 64 * 2**20 + 200 * n  # 64 MB + O(rows)
    assert added <= limit, f"added {added / 2**20:.1f} MB above the inputs"


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(n=st.integers(0, 9), d=st.integers(1, 6), nv=st.integers(1, 70),
       chunk=st.integers(1, 80), seed=st.integers(0, 2**31 - 1), t=st.sampled_from([1.0, 0.5, 3.0]),
       tie=st.booleans(), backend=st.sampled_from(BACKENDS))  # fmt: skip
def test_property_any_chunking_is_score_of_the_logits(n, d, nv, chunk, seed, t, tie, backend):
    """For any shape and chunking: the fields of score(hidden @ weight.T + bias), and the
    identities (correct == (rank == 0), brier in [0, 2], 1/V <= confidence <= 1, margin in
    [0, 1], KL >= 0). Integer-valued inputs make exact logits, so ties are real ties."""
    rng = np.random.default_rng(seed)
    h = rng.integers(-3, 4, (n, d)).astype(np.float32)
    w = rng.integers(-3, 4, (nv, d)).astype(np.float32)
    if tie and nv > 1:
        w[rng.integers(0, nv, nv // 2)] = w[0]  # duplicated classes: tied logits in many chunks
    b = rng.integers(-2, 3, nv).astype(np.float32)
    y = rng.integers(0, nv, n)
    if n:
        y[rng.random(n) < 0.2] = -100
    th = rng.standard_normal((n, 3)).astype(np.float32)
    tw = rng.standard_normal((nv, 3)).astype(np.float32)
    s = ne.linear_score(h, w, y, bias=b, teacher=(th, tw), temperature=t, chunk_classes=chunk,
                        backend=backend)  # fmt: skip
    x = _logits(h, w, b)
    r = ne.score(x, y, teacher_logits=_logits(th, tw), temperature=t)
    _same_scores(s, r, 2e-5)
    kept = y != -100
    np.testing.assert_array_equal(s.correct[kept], s.rank[kept] == 0)
    assert ((s.brier >= 0) & (s.brier <= 2 + 1e-6)).all()
    assert ((s.confidence >= 1 / nv - 1e-6) & (s.confidence <= 1 + 1e-6)).all()
    assert ((s.margin >= 0) & (s.margin <= 1 + 1e-6)).all()
    assert (s.kl_divergence >= 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_ties_with_duplicated_classes(backend):
    """Classes whose weight row and bias equal the label's tie with it in every row, whatever the
    chunk: the rank counts the copies at lower indices, as score does (a duplicated class before
    the label's chunk is compared with the label's logit as the products make it)."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        d = int(rng.integers(2, 300))
        h = rng.standard_normal((6, d)).astype(np.float32)
        w = rng.standard_normal((40, d)).astype(np.float32)
        w[30] = w[17] = w[3]
        b = np.zeros(40, np.float32)
        b[[3, 17, 30]] = 50.0
        y = np.array([30, 3, 17, 0, -100, 39])
        s = ne.linear_score(h, w, y, bias=b, chunk_classes=8, backend=backend)
        r = ne.score(h @ w.T + b, y)
        np.testing.assert_array_equal(s.rank, r.rank, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(s.correct, r.correct, err_msg=f"seed {seed}")
