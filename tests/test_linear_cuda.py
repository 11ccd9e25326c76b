"""linear_score / linear_cross_entropy on the cuda backend: host arrays with backend="cuda" and numba
device arrays, against score / softmax_cross_entropy of the materialised logits (within float32
tolerance) and against the cpu backend's linear functions; the device adapter's pieces of the op
(count_above, take, label_logits, weighted_sum, product) against the host adapter's.

Runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, as in CI) or on a GPU; skipped where the
cuda backend is unavailable. The simulator runs blocks as Python threads: sizes stay tiny (N <= 20,
V <= 50, d <= 8), with small ``chunk_classes`` and a small scratch so that several class chunks
and several row chunks are folded.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import numbaent as ne
from numbaent import linear

INFO = ne.backends()["cuda"]
pytestmark = pytest.mark.skipif(
    not INFO.available, reason=f"cuda backend unavailable: {INFO.reason}"
)

BF16 = np.dtype(ml_dtypes.bfloat16)
CHUNK = 8  # classes per chunk: V = 41 gives 6 chunks, the last one partial


def _inputs(n=17, d=6, nv=41, dtype=np.float32, seed=0, td=5, batch=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if batch is None else batch
    h = rng.standard_normal(shape + (d,)).astype(dtype)
    w = rng.standard_normal((nv, d)).astype(dtype)
    b = rng.standard_normal(nv).astype(dtype)
    y = rng.integers(0, nv, shape)
    y.reshape(-1)[::4] = -100
    th = rng.standard_normal(shape + (td,)).astype(dtype)
    tw = rng.standard_normal((nv, td)).astype(dtype)
    tb = rng.standard_normal(nv).astype(dtype)
    return h, w, b, y, (th, tw, tb)


def _logits(h, w, b=None):
    """hidden @ weight.T + bias from a float64 product, in the inputs' math dtype."""
    x = np.asarray(h, np.float64) @ np.asarray(w, np.float64).T
    if b is not None:
        x = x + np.asarray(b, np.float64)
    dt = np.float64 if np.float64 in (np.dtype(h.dtype), np.dtype(w.dtype)) else np.float32
    return x.astype(dt)


def _dev(a):
    from numba import cuda

    if a is None:
        return None
    if np.dtype(a.dtype) == BF16:  # numba has no bfloat16: its bits, as torch's are viewed
        raise TypeError("bfloat16 goes in as a host array")
    return cuda.to_device(np.ascontiguousarray(a))


def _host(a):
    if a is None or isinstance(a, (np.ndarray, np.generic, float)):
        return a
    return a.copy_to_host()


def _close(got, ref, tol, field=""):
    got, ref = np.asarray(_host(got)), np.asarray(ref)
    assert got.shape == ref.shape, (field, got.shape, ref.shape)
    if ref.dtype.kind in "biu":
        assert got.dtype == ref.dtype, (field, got.dtype, ref.dtype)
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


def _tol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-5


# ------------------------------------------------------------------------------------------------
# linear_score


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["host", "device"])
def test_linear_score_cuda_equals_score_of_the_logits(dtype, where, monkeypatch):
    """Every field, with labels (some ignored), a teacher with its own d and bias, temperature 0.7
    and a bias: 6 class chunks and, through a small scratch, several row chunks."""
    h, w, b, y, (th, tw, tb) = _inputs(dtype=dtype)
    monkeypatch.setattr(linear, "SCRATCH_BYTES", np.dtype(dtype).itemsize * 2 * CHUNK * 5)
    rows, vc = linear._plan(17, 41, h, w, (th, tw, tb), np.dtype(dtype), CHUNK)
    assert vc == CHUNK and 1 < rows < 17  # several row chunks, several class chunks
    kw = dict(temperature=0.7, chunk_classes=CHUNK)
    args = (h, w, y, b, th, tw, tb)
    if where == "device":
        args = tuple(_dev(a) for a in args)
        hh, ww, yy, bb, t0, t1, t2 = args
        s = ne.linear_score(hh, ww, yy, bias=bb, teacher=(t0, t1, t2), **kw)
        assert type(s.entropy).__name__ in ("DeviceNDArray", "FakeCUDAArray")
    else:
        s = ne.linear_score(h, w, y, bias=b, teacher=(th, tw, tb), backend="cuda", **kw)
        assert isinstance(s.entropy, np.ndarray)
    r = ne.score(_logits(h, w, b), y, teacher_logits=_logits(th, tw, tb), temperature=0.7)
    _same_scores(s, r, _tol(dtype))
    c = ne.linear_score(h, w, y, bias=b, teacher=(th, tw, tb), backend="cpu", **kw)
    _same_scores(s, c, _tol(dtype))


@pytest.mark.parametrize("dtype", [np.float16, BF16, "mixed"])
def test_linear_score_cuda_half_and_mixed_dtypes(dtype):
    """float16 / bfloat16 hidden states and weights (host arrays: bfloat16 goes in as its bits),
    widened per chunk into float32 on the device; a float64 weight with float32 hidden states
    gives float64 results."""
    if dtype == "mixed":
        h, w, b, y, _ = _inputs(n=9)
        w = w.astype(np.float64)
    else:
        h, w, b, y, _ = _inputs(n=9, dtype=dtype)
    s = ne.linear_score(h, w, y, bias=b, chunk_classes=CHUNK * 2, backend="cuda")
    r = ne.score(_logits(h, w, b), y)
    assert s.logsumexp.dtype == r.logsumexp.dtype
    tol = 1e-10 if r.logsumexp.dtype == np.float64 else 2e-5
    _same_scores(s, r, tol)
    _same_scores(s, ne.linear_score(h, w, y, bias=b, chunk_classes=CHUNK * 2, backend="cpu"), tol)


def test_linear_score_cuda_float16_device_arrays():
    h, w, b, y, _ = _inputs(n=7, dtype=np.float16)
    s = ne.linear_score(_dev(h), _dev(w), _dev(y), bias=_dev(b), chunk_classes=CHUNK)
    _same_scores(s, ne.score(_logits(h, w, b), y), 2e-5)


def test_linear_score_cuda_shapes_strides_and_no_labels():
    """A batch shape, a 1-D hidden state (0-d results), a transposed (strided) device weight, no
    labels, no rows."""
    h, w, b, y, _ = _inputs(batch=(2, 3))
    s = ne.linear_score(h, w, y, bias=b, chunk_classes=CHUNK, backend="cuda")
    assert s.cross_entropy.shape == (2, 3)
    _same_scores(s, ne.score(_logits(h, w, b), y), 2e-5)
    s = ne.linear_score(h[0, 0], w, y[0, 1], chunk_classes=CHUNK, backend="cuda")
    _same_scores(s, ne.score(_logits(h[0, 0], w), y[0, 1]), 2e-5)
    wt = _dev(np.ascontiguousarray(w.T)).T  # (V, d) with strides (4, 4 V)
    bs = _dev(np.repeat(b, 2))[::2]  # (V,) with stride 8
    s = ne.linear_score(_dev(h[1]), wt, bias=bs, chunk_classes=CHUNK)
    assert s.cross_entropy is None and s.rank is None
    _same_scores(s, ne.score(_logits(h[1], w, b)), 2e-5)
    s = ne.linear_score(h[:0, 0], w, y[:0, 0], chunk_classes=CHUNK, backend="cuda")
    _same_scores(s, ne.score(_logits(h[:0, 0], w), y[:0, 0]), 2e-5)


def test_linear_score_cuda_edges_through_the_bias():
    """-inf, +inf and NaN logits from the bias, a label at -inf, ties at the top across chunks."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((5, 4)).astype(np.float32)
    w = rng.standard_normal((30, 4)).astype(np.float32)
    w[20] = w[3]  # class 20 ties class 3 in every row (different chunks)
    b = np.zeros(30, np.float32)
    b[3] = b[20] = 50.0
    b[7] = -np.inf
    y = np.array([20, 3, 7, -100, 29])
    s = ne.linear_score(_dev(h), _dev(w), _dev(y), bias=_dev(b), chunk_classes=CHUNK)
    _same_scores(s, ne.linear_score(h, w, y, bias=b, chunk_classes=CHUNK, backend="cpu"), 2e-5)
    r = ne.score(_logits(h, w, b), y)
    for k in ("logsumexp", "entropy", "argmax", "confidence", "margin", "cross_entropy", "brier"):
        _close(getattr(s, k), getattr(r, k), 2e-5, k)
    # row 0's label (20) ties class 3 in an earlier chunk: that chunk is counted against the
    # label's float64 logit, which the float32 product may round either way (linear.py's
    # documented limit of the rank), so only the label at the lower index is checked
    assert (_host(s.argmax) == 3).all() and _host(s.rank)[1] == 0
    b2 = b.copy()
    b2[11] = np.inf
    b2[25] = np.nan
    s = ne.linear_score(h, w, y, bias=b2, chunk_classes=CHUNK, backend="cuda")
    _same_scores(s, ne.linear_score(h, w, y, bias=b2, chunk_classes=CHUNK, backend="cpu"), 2e-5)


def test_linear_score_cuda_bit_identical_across_runs():
    h, w, b, y, t = _inputs(n=9)
    args = [_dev(a) for a in (h, w, y, b)]
    a = ne.linear_score(*args[:3], bias=args[3], teacher=t, chunk_classes=CHUNK, backend="cuda")
    c = ne.linear_score(*args[:3], bias=args[3], teacher=t, chunk_classes=CHUNK, backend="cuda")
    for k, v in a.as_dict().items():
        np.testing.assert_array_equal(_host(v), _host(getattr(c, k)), err_msg=k)


def test_linear_score_cuda_errors():
    h, w, b, y, _ = _inputs(n=5)
    y = y.copy()
    y[2] = 41
    with pytest.raises(IndexError, match="labels"):
        ne.linear_score(_dev(h), _dev(w), _dev(y), chunk_classes=CHUNK)
    with pytest.raises(ValueError, match="last dimensions"):
        ne.linear_score(_dev(h), _dev(w[:, :3]), chunk_classes=CHUNK)


# ------------------------------------------------------------------------------------------------
# linear_cross_entropy


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("where", ["host", "device"])
def test_linear_cross_entropy_cuda(reduction, where):
    h, w, b, y, _ = _inputs(n=11)
    x = _logits(h, w, b)
    ref = ne.softmax_cross_entropy(x, y, reduction=reduction)
    cpu = ne.linear_cross_entropy(h, w, y, bias=b, chunk_classes=CHUNK, reduction=reduction,
                                  backend="cpu")  # fmt: skip
    if where == "device":
        got = ne.linear_cross_entropy(_dev(h), _dev(w), _dev(y), bias=_dev(b), chunk_classes=CHUNK,
                                      reduction=reduction)  # fmt: skip
        assert type(got).__name__ in ("DeviceNDArray", "FakeCUDAArray")
        got = got.copy_to_host()
        assert got.shape == (11,) if reduction == "none" else got.shape == ()
        got = got if reduction == "none" else float(got)
    else:
        got = ne.linear_cross_entropy(h, w, y, bias=b, chunk_classes=CHUNK, reduction=reduction,
                                      backend="cuda")  # fmt: skip
        assert isinstance(got, np.ndarray) == (reduction == "none")
    if reduction == "none":
        _close(got, ref, 2e-5)
        _close(got, cpu, 2e-5)
    else:
        np.testing.assert_allclose(got, ref, rtol=2e-6)
        np.testing.assert_allclose(got, cpu, rtol=2e-6)


@pytest.mark.parametrize("where", ["host", "device"])
def test_linear_cross_entropy_cuda_smoothing_weights_base(where):
    """Label smoothing (the weighted sum of the logits), class weights (a weighted mean), base 2,
    temperature."""
    h, w, b, y, _ = _inputs(n=10, dtype=np.float64)
    cw = np.random.default_rng(1).random(41)
    x = _logits(h, w, b)
    put = _dev if where == "device" else (lambda a: a)
    be = None if where == "device" else "cuda"
    for kw in (dict(label_smoothing=0.1, reduction="mean"), dict(weight=cw, reduction="mean"),
               dict(weight=cw, label_smoothing=0.2, reduction="none"), dict(base=2.0),
               dict(temperature=0.7, reduction="sum")):  # fmt: skip
        ref = ne.softmax_cross_entropy(x, y, **kw)
        lk = {("weight_classes" if k == "weight" else k): (put(a) if k == "weight" else a)
              for k, a in kw.items()}  # fmt: skip
        got = ne.linear_cross_entropy(put(h), put(w), put(y), bias=put(b), chunk_classes=CHUNK,
                                      backend=be, **lk)  # fmt: skip
        got = np.asarray(_host(got))
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=str(kw))


# ------------------------------------------------------------------------------------------------
# the device adapter's pieces against the host adapter's


def _device_adapter():
    from numbaent._cuda.device import Device

    return Device()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_above_cuda_kernel(dtype):
    """Ties at lower and higher indices, NaN logits and thresholds, infinities, the label's column
    left out, lab < 0 (none lower) and lab >= C (all lower): as cpu_score.count_above."""
    from numbaent._kernels import cpu, numpy_impl

    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (12, 9)).astype(dtype)
    x[1, 4] = np.nan
    x[2, :] = np.inf
    x[3, 0] = -np.inf
    thr = x[np.arange(12), np.arange(12) % 9].astype(np.float64)
    thr[4] = np.nan
    thr[5] = np.inf
    thr[6] = -np.inf
    thr[7] = 0.5
    lab = (np.arange(12) % 9).astype(np.int64)
    lab[8], lab[9], lab[10] = -1, 9, 100
    ref = np.empty(12, np.int64)
    cpu.count_above(x, thr, lab, ref)
    alt = np.empty(12, np.int64)
    numpy_impl.count_above(x, thr, lab, alt)
    np.testing.assert_array_equal(ref, alt)
    sp = _device_adapter()
    out = sp.scratch((12,), np.int64)
    sp.count_above(sp.put(x), sp.put(thr), sp.put(lab), out)
    np.testing.assert_array_equal(sp.host(out), ref)


def test_device_adapter_pieces_cuda():
    """take, label_logits, weighted_sum, product (widened bfloat16 chunks, a bias, a chunk of the
    scratch as out), result: as the host adapter's."""
    from numbaent._op import Host

    rng = np.random.default_rng(6)
    sp = _device_adapter()
    x = rng.standard_normal((7, 5)).astype(np.float32)
    dx = sp.put(x)
    cols = rng.integers(0, 5, 7)
    np.testing.assert_array_equal(sp.take(dx, cols), Host.take(x, cols))
    wc = rng.random(5)
    np.testing.assert_allclose(sp.weighted_sum(dx, wc), Host.weighted_sum(x, wc), rtol=1e-12)
    np.testing.assert_allclose(sp.weighted_sum(dx, 0.25), Host.weighted_sum(x, 0.25), rtol=1e-12)
    h = rng.standard_normal((6, 8)).astype(np.float32)
    w = rng.standard_normal((20, 8)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    y = np.array([3, -100, 0, 19, 7, -100])
    for bias in (None, b):
        got = sp.label_logits(sp.put(h), sp.put(w), None if bias is None else sp.put(bias), y,
                              -100, np.float32)  # fmt: skip
        ref = Host.label_logits(h, w, bias, y, -100, np.float32)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    hb, wb = h.astype(BF16), w.astype(BF16)
    dh = sp.view(hb, "hidden")[0]  # bfloat16 bits
    dw = sp.view(wb, "weight")[0]
    buf = sp.scratch((6 * 8 + 3,), np.float32)
    out = buf[3 : 3 + 6 * 8].reshape(6, 8)
    wide: dict = {}
    sp.product(dh, dw[4:12], sp.put(b[4:12]), out, wide, "model")
    ref = np.empty((6, 8), np.float32)
    Host.product(hb, wb[4:12], b[4:12], ref, {}, "model")
    np.testing.assert_allclose(sp.host(out), ref, rtol=1e-6, atol=1e-6)
    assert sorted(wide) == ["model:rows", "model:weight"]  # chunks widened, bias already float32
    r = sp.result(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(_host(r), np.arange(6.0).reshape(2, 3))
