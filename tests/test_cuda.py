"""The cuda backend beyond the oracle suite (tests/test_backends.py runs that with "cuda" too).

Three kinds of test, by where they can run:

* PTX (a normal process, no GPU needed, NVVM + NVRTC needed): every kernel, for every element-type
  signature and static variant the backend can launch, compiles to real PTX for sm_80 and sm_90,
  keeps its per-thread arrays in registers (no local memory) and uses warp shuffles.
* simulator (``NUMBA_ENABLE_CUDASIM=1``) or a real GPU: determinism, launch shapes (threads per
  block, tiles, grids smaller than the number of rows), the row-flag interface, and the device path
  on numba device arrays (validation, layout, reductions, errors, ``out``).
* ``gpu`` (a real GPU only): CuPy and torch in and out, devices, the caller's stream, bfloat16.

The simulator runs blocks as Python threads: keep shapes small here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BF16, assert_close, logits, probs

import numbaent
import numbaent as ne

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
INFO = ne.backends()["cuda"]
REAL_GPU = INFO.available and not SIM
CUDA_RUNS = INFO.available  # simulator or GPU

needs_cuda = pytest.mark.skipif(not CUDA_RUNS, reason=f"cuda backend unavailable: {INFO.reason}")
gpu = [pytest.mark.gpu, pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")]


def f64(a):
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# availability and imports (anywhere)


def test_availability_never_raises_and_says_why():
    info = ne.backends()["cuda"]
    assert isinstance(info.available, bool) and info.reason
    if SIM:
        assert info.available and info.reason == "CUDA simulator"
    if not info.available:
        with pytest.raises(ne.BackendUnavailableError, match=info.reason.split(" (")[0]):
            ne.logsumexp(np.zeros((1, 2)), backend="cuda")


def test_import_does_not_touch_cuda():
    code = (
        "import sys, numbaent; "
        "bad = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', "
        "'numbaent._cuda', 'cupy', 'torch'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------------
# a real GPU: CuPy and torch in, the same kind out, on the caller's device and stream


def _torch():
    return pytest.importorskip("torch")


def _cupy():
    return pytest.importorskip("cupy")


@pytest.mark.gpu
@pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_torch_in_torch_out(dtype, rng):
    torch = _torch()
    x = torch.randn(64, 1000, device="cuda").mul(3).to(getattr(torch, dtype))
    t = torch.randn(64, 1000, device="cuda").mul(3).to(getattr(torch, dtype))
    y = torch.randint(0, 1000, (64,), device="cuda")
    y[::7] = -100
    xh = x.float().cpu().numpy().astype(np.float64)  # the exact input values (bf16 included)
    th = t.float().cpu().numpy().astype(np.float64)
    yh = y.cpu().numpy()
    npdt = BF16 if dtype == "bfloat16" else np.dtype(dtype)
    out_dt = torch.float64 if dtype == "float64" else torch.float32
    for f in FUNCS_1:
        r = getattr(ne, f)(x)
        assert isinstance(r, torch.Tensor) and r.device == x.device and r.dtype == out_dt
        assert_close(r.cpu().numpy(), getattr(ne, f)(xh, backend="numpy"), npdt)
    for red in ("none", "mean", "sum"):
        for kw in ({}, {"label_smoothing": 0.1}, {"weight": torch.rand(1000, device="cuda") + 0.5}):
            r = ne.softmax_cross_entropy(x, y, reduction=red, **kw)
            ref = torch.nn.functional.cross_entropy(
                x.double(), y, reduction=red, ignore_index=-100,
                **{k: (w.double() if k == "weight" else w) for k, w in kw.items()},
            )  # fmt: skip
            assert isinstance(r, torch.Tensor) and r.dtype == out_dt
            assert_close(r.cpu().numpy(), ref.cpu().numpy(), npdt, scale=10)
    s = ne.score(x, y, teacher_logits=t, temperature=2.0)
    ref = ne.score(xh, yh, teacher_logits=th, temperature=2.0, backend="numpy")
    for field, rv in ref.as_dict().items():
        g = getattr(s, field)
        assert isinstance(g, torch.Tensor) and g.device == x.device
        if rv.dtype.kind == "f":
            assert_close(g.cpu().numpy(), rv, npdt)
        else:
            np.testing.assert_array_equal(g.cpu().numpy(), rv, err_msg=field)
    # requires_grad inputs are read (detached), axis != -1 returns a view of the same kind
    xg = x.float().requires_grad_()
    r = ne.log_softmax(xg.T, axis=0)
    assert isinstance(r, torch.Tensor) and r.shape == xg.T.shape
    assert_close(r.detach().cpu().numpy(), ne.log_softmax(xh.T, axis=0, backend="numpy"), npdt)


@pytest.mark.gpu
@pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")
def test_torch_runs_on_the_current_stream():
    """Queue a slow producer on a side stream, then call numbaent on that stream without any
    synchronisation: a call on another stream would read the old data."""
    torch = _torch()
    x_old = torch.zeros(256, 4096, device="cuda")
    x_new = torch.randn(256, 4096, device="cuda")
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x = x_old.clone()
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on this stream
        x.copy_(x_new)
        r = ne.logsumexp(x)  # no host sync in logsumexp
        r2 = ne.softmax_cross_entropy(x, torch.zeros(256, dtype=torch.int64, device="cuda"),
                                      reduction="mean")  # fmt: skip
    s.synchronize()
    ref = torch.logsumexp(x_new.double(), dim=1)
    assert_close(r.cpu().numpy(), ref.cpu().numpy(), np.float32)
    ref2 = torch.nn.functional.cross_entropy(x_new.double(), torch.zeros(256, dtype=torch.int64,
                                             device="cuda"))  # fmt: skip
    assert_close(r2.cpu().numpy(), ref2.cpu().numpy(), np.float32, scale=10)


@pytest.mark.gpu
@pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_cupy_in_cupy_out(dtype, rng):
    cp = _cupy()
    xh = logits(rng, (40, 700), np.dtype(dtype))
    x = cp.asarray(xh)
    yh = rng.integers(0, 700, 40)
    y = cp.asarray(yh)
    p = cp.asarray(probs(rng, (40, 700), np.dtype(dtype)))
    for f in FUNCS_1:
        r = getattr(ne, f)(x)
        assert isinstance(r, cp.ndarray) and r.device == x.device
        assert_close(cp.asnumpy(r), getattr(ne, f)(f64(xh), backend="numpy"), np.dtype(dtype))
    r = ne.softmax_cross_entropy(x, y, reduction="mean")
    assert isinstance(r, cp.ndarray) and r.shape == ()
    ref = ne.softmax_cross_entropy(f64(xh), yh, reduction="mean", backend="numpy")
    assert_close(cp.asnumpy(r), ref, np.dtype(dtype), scale=10)
    r = ne.entropy(p, base=2)
    assert_close(cp.asnumpy(r), ne.entropy(f64(cp.asnumpy(p)), base=2, backend="numpy"),
                 np.dtype(dtype))  # fmt: skip
    # the current stream: a non-default stream gets the launches
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        r = ne.logsumexp(x)
    s.synchronize()
    assert_close(cp.asnumpy(r), ne.logsumexp(f64(xh), backend="numpy"), np.dtype(dtype))
    with pytest.raises(IndexError, match="target: label 700 at row 0"):
        ne.softmax_cross_entropy(x, cp.full(40, 700))


@pytest.mark.gpu
@pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU")
def test_gpu_deterministic_large():
    torch = _torch()
    x = torch.randn(512, 32000, device="cuda")
    y = torch.randint(0, 32000, (512,), device="cuda")
    a = ne.softmax_cross_entropy(x, y)
    b = ne.softmax_cross_entropy(x, y)
    assert torch.equal(a, b)
    ref = torch.nn.functional.cross_entropy(x.double(), y, reduction="none")
    assert_close(a.cpu().numpy(), ref.cpu().numpy(), np.float32)


# --------------------------------------------------------------------------------------------------
# simulator or GPU: determinism, launch shapes, row flags

FUNCS_1 = ["logsumexp", "softmax_entropy", "log_softmax", "softmax"]


def _all_calls(rng, dtype, shape):
    x, t = logits(rng, shape, dtype), logits(rng, shape, dtype)
    p, q = probs(rng, shape, dtype), probs(rng, shape, dtype)
    n, c = shape
    y = rng.integers(0, c, n)
    y[:: max(n // 3, 1)] = -100
    w = rng.random(c) + 0.5
    calls = [(f, (x,), {}) for f in FUNCS_1]
    calls += [("entropy", (p,), {"normalize": True})]
    calls += [(f, (p, q), {}) for f in ("cross_entropy", "kl_divergence", "js_divergence")]
    calls += [("softmax_cross_entropy", (x, y), {"weight": w, "label_smoothing": 0.1})]
    calls += [("softmax_cross_entropy", (x, t.astype(np.float32) ** 2), {"label_smoothing": 0.1})]
    calls += [("softmax_kl_divergence", (x, t), {"temperature": 1.7})]
    calls += [("score", (x, y), {"teacher_logits": t, "temperature": 0.5})]
    return calls


def _values(res):
    if isinstance(res, ne.Scores):
        return [np.asarray(a) for a in res.as_dict().values()]
    return [np.asarray(res)]


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=str)
def test_deterministic(dtype, rng):
    """Same input, same launch constants: bit-identical output (fixed reduction order)."""
    for name, args, kw in _all_calls(rng, dtype, (5, 77)):
        f = getattr(ne, name)
        a = _values(f(*args, backend="cuda", **kw))
        b = _values(f(*args, backend="cuda", **kw))
        for u, w in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, w, err_msg=name)


# --------------------------------------------------------------------------------------------------
# the device path on numba device arrays (simulator or GPU)


def _dev(a):
    from numba import cuda

    if a.dtype == BF16:
        a = a.view(np.uint16)  # numba arrays cannot hold bfloat16: only torch tensors carry it
    return cuda.to_device(np.ascontiguousarray(a))


def _host(r):
    if r is None:
        return None
    return r.copy_to_host() if hasattr(r, "copy_to_host") else np.asarray(r)


def dcall(func, *args, **kw):
    """Public function ``func`` on device arrays (the backend picked for them: cuda)."""
    return getattr(numbaent, func)(*args, **kw)


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=str)
def test_device_path_matches_oracle(dtype, rng):
    for name, args, kw in _all_calls(rng, dtype, (6, 33)):
        dargs = [_dev(a) for a in args]
        dkw = {
            k: (_dev(v) if isinstance(v, np.ndarray) and v.ndim > 1 else v) for k, v in kw.items()
        }
        ref = getattr(ne, name)(*[f64(a) if a.dtype.kind == "f" else a for a in args],
                                backend="numpy", **kw)  # fmt: skip
        got = dcall(name, *dargs, **dkw)
        if isinstance(got, ne.Scores):
            for field, r in ref.as_dict().items():
                g = _host(getattr(got, field))
                if r.dtype.kind == "f":
                    assert_close(g, r, dtype, scale=2)
                else:
                    np.testing.assert_array_equal(g, r, err_msg=field)
        else:
            assert_close(_host(got), ref, dtype, scale=2)


@needs_cuda
def test_row_faults_of_host_arrays_on_the_cuda_backend(rng):
    """Host arrays with backend="cuda" take the device path: its row faults name the row, and
    results, reductions and out= are those of a host backend."""
    p, q = probs(rng, (6, 9), np.float64), probs(rng, (6, 9), np.float64)
    q[1, 0] = -0.2
    x = logits(rng, (6, 9), np.float32)
    y = np.array([0, 9, -100, -1, 8, 100])
    with pytest.raises(IndexError, match=r"label 9 at row 1 is outside \[0, 9\)"):
        ne.softmax_cross_entropy(x, y, backend="cuda")
    with pytest.raises(IndexError, match=r"labels: label 9 at row 1"):
        ne.score(x, y, backend="cuda")
    with pytest.raises(ValueError, match="q has a negative entry in row 1"):
        ne.kl_divergence(np.abs(p), q, backend="cuda")
    ok = np.array([0, 3, -100, 2, 8, 1])
    got = ne.softmax_cross_entropy(x, ok, backend="cuda", reduction="mean")
    assert isinstance(got, float)
    np.testing.assert_allclose(got, ne.softmax_cross_entropy(x, ok, reduction="mean"), rtol=1e-6)
    out = np.empty(6, np.float32)
    assert ne.softmax_entropy(x, backend="cuda", out=out) is out
    np.testing.assert_allclose(out, ne.softmax_entropy(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out"):
        ne.softmax_entropy(x, backend="cuda", out=np.empty(5, np.float32))
    assert isinstance(ne.softmax_entropy(x[0], backend="cuda"), np.float32)


@needs_cuda
def test_device_path_layout_reductions_and_out(rng):
    from numba import cuda

    x = logits(rng, (3, 11, 4), np.float32)
    dx = _dev(x)
    for f in FUNCS_1:
        for axis in (0, 1, -1):
            ref = getattr(ne, f)(f64(x), axis=axis, backend="numpy")
            assert_close(_host(dcall(f, dx, axis=axis)), ref, np.float32)
    # a strided, non-contiguous view of a device array
    ref = ne.logsumexp(f64(x)[:, ::2, :], axis=1, backend="numpy")
    assert_close(_host(dcall("logsumexp", dx[:, ::2, :], axis=1)), ref, np.float32)
    # reductions give a 0-d device array in the math dtype; units apply
    p = probs(rng, (5, 8), np.float32)
    for red in ("sum", "mean"):
        r = dcall("entropy", _dev(p), reduction=red, base=2)
        assert r.shape == () and np.dtype(r.dtype) == np.float32
        assert_close(_host(r), ne.entropy(f64(p), reduction=red, base=2, backend="numpy"),
                     np.float32, scale=10)  # fmt: skip
    y = np.array([-100, -100, -100, -100, -100])
    r = dcall("softmax_cross_entropy", _dev(x[0, :5, :]), _dev(y), reduction="mean")
    assert np.isnan(_host(r))  # all rows ignored: mean NaN, sum 0
    r = dcall("softmax_cross_entropy", _dev(x[0, :5, :]), _dev(y), reduction="sum")
    assert _host(r) == 0
    # out: contiguous (written in place), strided (copied into), reductions (0-d)
    out = cuda.device_array(3 * 11, np.float32)
    assert dcall("logsumexp", _dev(x[..., 0].reshape(-1, 1)), out=out) is out
    o2 = cuda.device_array((3, 11, 2), np.float32)
    strided = o2[:, :, 1]
    dcall("softmax_entropy", dx, out=strided)
    assert_close(
        o2.copy_to_host()[:, :, 1], ne.softmax_entropy(f64(x), backend="numpy"), np.float32
    )
    o3 = cuda.device_array((4, 11, 3), np.float32)
    o3t = o3[::-1, :, :].transpose((2, 1, 0)) if SIM else None  # numba arrays transpose 2-D only
    if o3t is not None:
        assert dcall("log_softmax", dx, axis=0, out=o3t) is o3t
        ref = ne.log_softmax(f64(x), axis=0, backend="numpy")
        assert_close(np.asarray(o3t._ary), ref, np.float32)
    o0 = cuda.device_array((), np.float32)
    assert dcall("entropy", _dev(p), reduction="mean", out=o0) is o0
    with pytest.raises(ValueError, match="out has shape"):
        dcall("logsumexp", dx, out=cuda.device_array(5, np.float32))
    with pytest.raises(TypeError, match="out has dtype"):
        dcall("logsumexp", dx, out=cuda.device_array((3, 11), np.float64))


@needs_cuda
def test_device_path_errors(rng):
    x = logits(rng, (4, 6), np.float32)
    with pytest.raises(TypeError, match="logits must be a floating array"):
        dcall("logsumexp", _dev(np.arange(6).reshape(2, 3)))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        dcall("logsumexp", _dev(x), axis=2)
    with pytest.raises(ValueError, match="p has a negative entry in row 2"):
        dcall("entropy", _dev(np.array([[0.5, 0.5], [1, 0], [-1, 2.0]])))
    with pytest.raises(ValueError, match="p and q must have the same shape"):
        dcall("kl_divergence", _dev(np.ones((2, 3))), _dev(np.ones((3, 3))))
    with pytest.raises(IndexError, match=r"target: label 6 at row 3 is outside \[0, 6\)"):
        dcall("softmax_cross_entropy", _dev(x), _dev(np.array([0, 1, -100, 6])))
    with pytest.raises(ValueError, match="target must have shape"):
        dcall("softmax_cross_entropy", _dev(x), _dev(np.array([0, 1])))
    with pytest.raises(ValueError, match="weight must be a 1-D array of length C = 6"):
        dcall("softmax_cross_entropy", _dev(x), _dev(np.array([0, 1, 2, 3])), weight=np.ones(5))
    xn = x.copy()
    xn[2, 1] = np.nan
    with pytest.raises(ValueError, match="nan_policy='raise': logits has a NaN in row 2"):
        dcall("softmax_entropy", _dev(xn), nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy='raise': logits_q has a NaN in row 2"):
        dcall("softmax_kl_divergence", _dev(x), _dev(xn), nan_policy="raise")
    with pytest.raises(ValueError, match="teacher_logits must have the logits' shape"):
        dcall("score", _dev(x), teacher_logits=_dev(x[:2]))
    # host side inputs (labels, weights) mix with device logits
    y = np.array([0, 1, -100, 5])
    got = dcall("softmax_cross_entropy", _dev(x), y, weight=np.arange(1.0, 7.0))
    ref = ne.softmax_cross_entropy(f64(x), y, weight=np.arange(1.0, 7.0), backend="numpy")
    assert_close(_host(got), ref, np.float32)


@needs_cuda
def test_device_path_edge_rows():
    from test_backends import EDGE_ROWS

    x = np.array(EDGE_ROWS, dtype=np.float32)
    y = np.array([0, 1, 0, 1, 1, 0, 1, 2, 1, 2])
    for f in FUNCS_1:
        assert_close(_host(dcall(f, _dev(x))), getattr(ne, f)(f64(x), backend="numpy"), np.float32)
    s = dcall("score", _dev(x), _dev(y), teacher_logits=_dev(x[::-1]))
    r = ne.score(f64(x), y, teacher_logits=f64(x[::-1]), backend="numpy")
    for field, ref in r.as_dict().items():
        g = _host(getattr(s, field))
        if ref.dtype.kind == "f":
            assert_close(g, ref, np.float32)
        else:
            np.testing.assert_array_equal(g, ref, err_msg=field)


def _exact_cases():
    """(func, args, kwargs) whose rows need the exact path (the test_fuzz ``test_known_*`` inputs),
    each next to an ordinary row and a NaN row, so that the redone rows land in their places."""
    f32, f64_, inf, nan = np.float32, np.float64, np.inf, np.nan

    def rows(*r, dt=f64_):
        return np.array(r, dt)

    kl = "softmax_kl_divergence"
    cases = [
        # KL at an inexact temperature; a -inf student logit under a finite teacher one: +inf
        (kl, (rows([1e20, 0.0], [0.1, 0.2], [nan, 0.0]), rows([0.3, 0.8], [0.5, 0.1], [0.0, 0.0])),
         {"temperature": 1e-3}),
        (kl, (rows([1e8, 0.0], [0.1, 0.2], dt=f32), rows([0.3, 0.8], [0.5, 0.1], dt=f32)),
         {"temperature": 1e-3}),
        (kl, (rows([0.0, -1000.0], [0.1, 0.2], [0.0, nan]), rows([0.0, -inf], [0.5, 0.1],
                                                                  [0.0, -inf])), {}),
        (kl, (rows([5.0, -100.0], [0.1, 0.2], dt=f32), rows([0.377, -inf], [0.5, 0.1], dt=f32)),
         {"base": 2}),
        (kl, (rows([5.0, -5.0, 0.0], dt=f32), rows([0.0, -2e38, 0.0], dt=f32)),
         {"temperature": 0.5}),
        # score's teacher path (with labels: the KL redo comes after the label check)
        ("score", (rows([0.3, 0.8], [0.5, 0.1], dt=f32), np.array([1, 0])),
         {"teacher_logits": rows([1e10, 0.0], [0.1, 0.2], dt=f32), "temperature": 0.3}),
        ("score", (rows([0.0] * 4 + [-inf], [0.5, 0.1, 0.0, 0.0, 0.0], dt=f32),
                   np.array([0, 1])),
         {"teacher_logits": rows([0.0] * 4 + [-1000.0], [0.1, 0.2, 0.0, 0.0, 0.0], dt=f32),
          "temperature": 2.0, "base": 2}),
        ("score", (rows([0.3, 0.8, 0.1], [0.0, -inf, 1.0]),),
         {"teacher_logits": rows([1e12, 0.0, -3.3e11], [0.0, 0.0, 0.0]), "temperature": 0.7}),
        # float32 overflow: label smoothing, soft targets, weights
        ("softmax_cross_entropy", (rows([3e38, -3e38] + [0.0] * 10, [0.1] * 12, dt=f32),
                                   np.array([0, 3])), {"label_smoothing": 0.01}),
        ("softmax_cross_entropy", (rows([3e38, -3e38] + [0.0] * 10, [0.1] * 12, dt=f32),
                                   np.array([0, 3])),
         {"label_smoothing": 0.01, "weight": np.linspace(0.5, 1.5, 12), "reduction": "sum"}),
        ("softmax_cross_entropy", (rows([3e38, -3e38, 0.0], [0.1, 0.2, 0.3], dt=f32),
                                   rows([1.0, 1e-8, 0.0], [0.2, 0.3, 0.5], dt=f32)), {}),
        ("softmax_cross_entropy", (rows([3.77], [nan], [1.0], dt=f32), rows([3e38], [1.0], [1.0],
                                                                              dt=f32)),
         {"weight": np.array([1.5])}),
        ("softmax_cross_entropy", (rows([0.4, -0.4], [0.1, 0.2]), rows([inf, inf], [0.5, 0.5])),
         {}),
        # probabilities: float32 products overflow, subnormal rows, infinite probabilities
        ("kl_divergence", (rows([1e37, 1e37], [0.5, 0.5], dt=f32),
                           rows([1e-30, 1.0], [0.3, 0.7], dt=f32)), {"normalize": True}),
        ("kl_divergence", (rows([1e37, 1e37], [0.5, 0.5], [1.0, 0.0], dt=f32),
                           np.array([1e-30, 1.0], f32)), {"normalize": True}),  # shared q
        ("cross_entropy", (rows([3e38], [1.0], dt=f32), rows([1e-45], [1.0], dt=f32)),
         {"normalize": True}),
        ("entropy", (rows([1e-45, 3e-45], [0.5, 0.5], [nan, 1.0], dt=f32),), {"normalize": True}),
        ("entropy", (rows([5e-324, 1e-323], [0.5, 0.5]),), {"normalize": True, "base": 2}),
        ("js_divergence", (rows([1e-310, 3e-310], [0.5, 0.5]), rows([3e-310, 1e-310], [0.2, 0.8])),
         {"normalize": True}),
        ("js_divergence", (rows([inf, 1.0], [0.5, 0.5]), rows([1.0, 1.0], [0.2, 0.8])), {}),
        ("kl_divergence", (rows([inf], [1.0]), rows([1.0], [1.0])), {"reduction": "mean"}),
        # +inf where p == 0: a finite kernel result, NaN by the contract
        ("cross_entropy", (rows([1.0, 0.0], [0.5, 0.5]), rows([1.0, inf], [0.5, 0.5])), {}),
    ]  # fmt: skip
    return cases


@needs_cuda
@pytest.mark.parametrize("chunk", [None, 3], ids=["chunk-default", "chunk-3"])
def test_device_path_exact_rows(chunk, monkeypatch):
    """Rows a kernel cannot get right in its precision take the exact path on the device path
    too (gathered to the host in chunks, redone by the oracle, scattered back), as on the host."""
    from numbaent._kernels import exact

    if chunk is not None:  # one row of a few classes per step: several chunks per call
        monkeypatch.setattr(exact, "CHUNK_ELEMS", chunk)
    for name, args, kw in _exact_cases():
        ref = getattr(ne, name)(*[f64(a) if a.dtype.kind == "f" else a for a in args],
                                backend="numpy", **kw)  # fmt: skip
        dkw = {k: (_dev(v) if k == "teacher_logits" else v) for k, v in kw.items()}
        got = dcall(name, *[_dev(a) for a in args], **dkw)
        host = getattr(ne, name)(*args, backend="cuda", **kw)
        dt = np.float64 if any(a.dtype == np.float64 for a in args) else np.float32
        if isinstance(got, ne.Scores):
            got, host, ref = got.kl_divergence, host.kl_divergence, ref.kl_divergence
        what = f"{name} {kw}"
        assert_close(_host(got), ref, dt), what
        assert_close(np.asarray(host), ref, dt), what


def test_decoded_bfloat16_bits():
    from numbaent._cuda.device import _decoded

    vals = np.array([[1.5, -np.inf, np.nan, 3e38]], BF16)
    got = _decoded(vals.view(np.uint16))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, vals.astype(np.float64))
    np.testing.assert_array_equal(_decoded(np.array([[3, -1]])), [[3, -1]])  # labels unchanged


# --------------------------------------------------------------------------------------------------
# launch constants (simulator or GPU; on a GPU each setting compiles new kernels)


@needs_cuda
@pytest.mark.parametrize(
    ("threads", "tile", "blocks"),
    # one warp of one lane; several warps; tile of 1; a grid of 1 block striding over every row
    [(1, 1, 1), (2, 3, 2), (8, 2, 3), (16, 1, 1)]
    if SIM
    else [(32, 1, 2), (64, 4, 3), (1024, 16, 5)],
)
def test_launch_shapes(threads, tile, blocks, monkeypatch, rng):
    """Results do not depend on the launch constants beyond rounding."""
    from numbaent._cuda import _config

    monkeypatch.setattr(_config, "THREADS", threads)
    monkeypatch.setattr(_config, "TILE", tile)
    monkeypatch.setattr(_config, "MAX_BLOCKS", blocks)
    for name, args, kw in _all_calls(rng, np.float32, (7, 45)):
        f = getattr(ne, name)
        got = _values(f(*args, backend="cuda", **kw))
        ref = _values(f(*[f64(a) if a.dtype.kind == "f" else a for a in args], backend="numpy",
                        **{k: f64(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}))  # fmt: skip
        for g, r in zip(got, ref, strict=True):
            assert_close(g, r, np.float32, scale=5)


def test_bad_threads_rejected(monkeypatch):
    from numbaent._cuda import _config, ops

    monkeypatch.setattr(_config, "THREADS", 48)
    with pytest.raises(ValueError, match="NUMBAENT_CUDA_THREADS"):
        ops.consts()


# --------------------------------------------------------------------------------------------------
# PTX for sm_80 and sm_90 (normal process, no GPU)


def _ptx_ready():
    if SIM:
        return "PTX compilation needs a normal (non-simulator) process"
    if os.environ.get("NUMBAENT_TEST_PTX", "") == "off":
        return "NUMBAENT_TEST_PTX=off"
    try:
        from numba.cuda.cudadrv import nvrtc, nvvm

        if not nvvm.is_available():
            return "NVVM not found (pip install nvidia-nvvm)"
        nvrtc.get_supported_ccs()
    except Exception as exc:  # pragma: no cover - depends on the CI image
        return f"NVVM / NVRTC unavailable: {exc!r}"
    return None


PTX_SKIP = _ptx_ready()
KINDS = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "bf16": np.uint16}
# Each kernel variant takes 1-5 s to compile on a CPU: the full matrix (about 260 compilations) is
# for CI, NUMBAENT_TEST_PTX=all; by default one bfloat16 variant per kernel family, sm_90 only.
# Marked ptx: deselected from the default run, `pytest -m ptx` runs them (CI's PTX step).
PTX_MODE = os.environ.get("NUMBAENT_TEST_PTX", "")  # "" (quick), "all" or "off"
PTX_ALL = PTX_MODE == "all"
PTX_QUICK = {
    "entropy-bf16", "cross_entropy-bf16", "kl_divergence-bf16", "js-bf16-normTrue",
    "logsumexp-bf16", "log_softmax-bf16", "softmax-bf16", "softmax_entropy-bf16",
    "ce_labels-bf16-wTrue-eps0.1-invt1.0", "ce_labels-bf16-wTrue-eps0.0-invt0.5",
    "ce_soft-bf16-wTrue-invt1.0", "ce_soft-bf16-wTrue-invt0.5", "softmax_kl-bf16",
    "score-bf16-labelsTrue-teacherTrue-invt0.5", "copy-2d-int64-float64", "reduce-float32",
    "redo_rows-bf16-f32", "count_above-f32", "label_logits-bf16-biasTrue",
    "weighted_sum-bf16-perTrue", "take_cols-f32", "widen-bf16-float32",
    "score-f32-out64-teacherTrue-invt0.5",
}  # fmt: skip
CCS = [(8, 0), (9, 0)] if PTX_ALL else [(9, 0)]


def _selected(make_cases):
    if PTX_SKIP is not None:
        return []
    return [c for c in make_cases() if PTX_ALL or c[0] in PTX_QUICK]


def _ptx_cases():
    """(id, op, args) for every kernel variant: numpy stand-ins with the launch's element types."""
    z = np.zeros
    i8, i64 = np.int8, np.int64
    cases = []

    def mt(*ks):
        return np.float64 if "f64" in ks else np.float32

    for k, dt in KINDS.items():
        x = z((2, 5), dt)
        o = z(2, mt(k))
        flags, first = z(2, i8), z(1, i64)
        cases.append((f"entropy-{k}", "entropy", (x, True, o, flags, first)))
        for op in ("logsumexp", "softmax_entropy"):
            cases.append((f"{op}-{k}", op, (x, o)))
        for op in ("log_softmax", "softmax"):
            cases.append((f"{op}-{k}", op, (x, z((2, 5), mt(k)))))
        for op in ("cross_entropy", "kl_divergence"):
            cases.append((f"{op}-{k}", op, (x, x, 1, True, o, flags, first)))
        for norm in (False, True):
            cases.append((f"js-{k}-norm{norm}", "js_divergence", (x, x, 0, norm, o, flags, first)))
        for has_w in (False, True):
            w = z(5, mt(k))
            for inv_t in (1.0, 0.5):  # 0.5: the tempered variants (the linear pass at 1 / T)
                for eps in (0.0, 0.1):
                    a = (x, z(2, i64), w, has_w, -100, eps, inv_t, o, z(2, np.float64), flags,
                         first)  # fmt: skip
                    cases.append((f"ce_labels-{k}-w{has_w}-eps{eps}-invt{inv_t}", "ce_labels", a))
                cases.append((f"ce_soft-{k}-w{has_w}-invt{inv_t}", "ce_soft",
                              (x, x, w, has_w, 0.1, inv_t, o)))  # fmt: skip
        cases.append((f"softmax_kl-{k}", "softmax_kl", (x, x, 0.5, o)))
        for lab, teach, inv_t in [(False, False, 1.0), (True, False, 1.0), (False, True, 1.0),
                                  (True, True, 1.0), (True, True, 0.5), (False, True, 0.5)]:  # fmt: skip
            # lse, entropy, argmax, confidence, margin, ce, correct, rank, brier, kl, first
            a = (x, z(2, i64), lab, -100, x, teach, inv_t, o, o, z(2, i64), o, o, o,
                 z(2, np.bool_), z(2, i64), o, o, first)  # fmt: skip
            cases.append((f"score-{k}-labels{lab}-teacher{teach}-invt{inv_t}", "score", a))
    # mixed element types: the math type follows the widest input
    for kp, kq in (("f16", "f64"), ("bf16", "f32")):
        p, q = z((2, 5), KINDS[kp]), z((2, 5), KINDS[kq])
        o = z(2, mt(kp, kq))
        cases.append((f"kl-{kp}-{kq}", "kl_divergence", (p, q, 0, False, o, z(2, i8), z(1, i64))))
        cases.append((f"ce_soft-{kp}-{kq}", "ce_soft", (p, q, z(5, o.dtype), True, 0.0, 1.0, o)))
        cases.append((f"softmax_kl-{kp}-{kq}", "softmax_kl", (p, q, 1.0, o)))
    f = np.float32
    a = (z((2, 5), f), z(2, i64), True, -100, z((2, 5), np.uint16), True, 1.0, z(2, f), z(2, f),
         z(2, i64), z(2, f), z(2, f), z(2, f), z(2, np.bool_), z(2, i64), z(2, f), z(2, f),
         z(1, i64))  # fmt: skip
    cases.append(("score-f32-teacher-bf16", "score", a))
    # numbaent.linear on the device: the rank's count, the label logits, the smoothing sum
    f64 = np.float64
    for k, dt in KINDS.items():
        x = z((2, 5), dt)
        cases.append((f"count_above-{k}", "count_above", (x, z(2, f64), z(2, i64), z(2, i64))))
        for bias in (False, True):
            b = z(4, dt) if bias else None
            cases.append((f"label_logits-{k}-bias{bias}", "label_logits",
                          (x, z((4, 5), dt), b, z(2, i64), -100, z(2, f64))))  # fmt: skip
        for per in (False, True):
            cases.append((f"weighted_sum-{k}-per{per}", "weighted_sum",
                          (x, z(5 if per else 1, f64), per, z(2, f64))))  # fmt: skip
    # ... and its score of a float32 chunk into float64 outputs (the per-chunk states)
    for teach, inv_t in ((False, 1.0), (True, 1.0), (False, 0.5), (True, 0.5)):
        x, o = z((2, 5), f), z(2, f64)
        a = (x, z(2, i64), True, -1, x, teach, inv_t, o, o, z(2, i64), o, o, o, z(2, np.bool_),
             z(2, i64), o, o, z(1, i64))  # fmt: skip
        cases.append((f"score-f32-out64-teacher{teach}-invt{inv_t}", "score", a))
    cases.append(("label_logits-bf16-f32-f64", "label_logits",
                  (z((2, 5), np.uint16), z((4, 5), f), z(4, f64), z(2, i64), -100, z(2, f64))))  # fmt: skip
    return cases


def _util_cases():
    from numbaent._cuda import kernels_util as ku
    from numbaent._cuda import ops

    z = np.zeros
    t, w, _ = ops.consts()
    i64 = np.int64
    out = []
    for nd in (1, 2, 3):
        tup = (i64(1),) * nd
        for src, dst in ((np.float32, np.float32), (np.int64, np.float64), (np.uint16, np.uint16),
                         (np.bool_, np.float64), (np.float64, np.float32)):  # fmt: skip
            out.append((f"copy-{nd}d-{np.dtype(src)}-{np.dtype(dst)}", ku.copy_strided(nd),
                        (z(4, src), i64(0), tup, z(4, dst), i64(0), tup, tup)))  # fmt: skip
    out.append(("fill", ku.fill_i64, (z(3, i64), i64(1))))
    for dt in (np.float32, np.float64):
        out.append((f"divide-{np.dtype(dt)}", ku.divide, (z(3, dt), 2.0)))
        out.append((f"reduce-{np.dtype(dt)}", ku.reduce_rows(t, w),
                    (z(3, dt), z(3, np.float64), True, 1, 1.0, z(1, dt))))  # fmt: skip
    out.append(("equals", ku.equals, (z(3, i64), i64(-100), True, z(3, np.bool_))))
    for k, dt in KINDS.items():
        out.append((f"nan_rows-{k}", ku.nan_rows(k), (z(2, np.float32), z((2, 3), dt), i64(1),
                                                        z(1, i64))))  # fmt: skip
    # the exact path of the device path: row search, gather, scatter
    for ka, kb in (("f32", None), ("f64", "f64"), ("bf16", "f32"), ("f16", None)):
        res = z(2, np.float64 if "f64" in (ka, kb) else np.float32)
        a, b = z((2, 3), KINDS[ka]), z((2, 3), KINDS[kb or ka])
        out.append((f"redo_rows-{ka}-{kb}", ku.redo_rows(ka, kb),
                    (res, a, i64(1), b, i64(0), z(2, np.int8), z(1, i64))))  # fmt: skip
    for dt in (np.float32, np.uint16, np.int64):
        out.append((f"gather-{np.dtype(dt)}", ku.gather_rows,
                    (z((2, 3), dt), i64(1), z(2, i64), z((2, 3), dt))))  # fmt: skip
    for dt in (np.float32, np.float64):
        out.append((f"scatter-{np.dtype(dt)}", ku.scatter, (z(3, dt), z(2, i64), z(2, np.float64))))
    # numbaent.linear on the device: one logit per row, half / float32 chunks widened for a product
    for k, dt in KINDS.items():
        take = (z((2, 3), dt), z(2, i64), z(2, np.float64))
        out.append((f"take_cols-{k}", ku.take_cols(k), take))
        for mt in (np.float32, np.float64):
            if k != "f64" and (k, mt) != ("f32", np.float32):
                out.append((f"widen-{k}-{np.dtype(mt)}", ku.widen(k, mt),
                            (z((2, 3), dt), z((2, 3), mt))))  # fmt: skip
            out.append((f"widen1-{k}-{np.dtype(mt)}", ku.widen1(k, mt), (z(3, dt), z(3, mt))))
    return out


@pytest.fixture
def no_device(monkeypatch):
    """numba-cuda asks the current device for the compute capability of device functions even when
    compiling PTX for an explicit one; stand in for a device of the target's capability."""
    import numba.cuda.dispatcher as dispatcher

    holder = {}

    class FakeDevice:
        @property
        def compute_capability(self):
            return holder["cc"]

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: FakeDevice())
    return holder


def _compile(kernel, args, cc, holder):
    import numba
    from numba import cuda

    holder["cc"] = cc
    sig = tuple(numba.typeof(a) for a in args)
    bounds = kernel.targetoptions.get("launch_bounds")
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc, launch_bounds=bounds)
    if bounds:
        assert f".maxntid {bounds}" in ptx
    return ptx


@pytest.mark.ptx
@pytest.mark.skipif(PTX_SKIP is not None, reason=str(PTX_SKIP))
@pytest.mark.parametrize("cc", CCS, ids=lambda c: f"sm_{c[0]}{c[1]}")
@pytest.mark.parametrize("case", _selected(_ptx_cases), ids=lambda c: c[0])
def test_kernels_compile_to_ptx(case, cc, no_device):
    from numbaent._cuda import ops

    _, op, args = case
    kernel, kargs = ops.kernel_args(op, *args)
    ptx = _compile(kernel, kargs, cc, no_device)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert "shfl.sync" in ptx  # the block reduction's warp stage
    assert "st.local" not in ptx, "per-thread state or tile spilled to local memory"


@pytest.mark.ptx
@pytest.mark.skipif(PTX_SKIP is not None, reason=str(PTX_SKIP))
@pytest.mark.parametrize("cc", CCS, ids=lambda c: f"sm_{c[0]}{c[1]}")
@pytest.mark.parametrize("case", _selected(_util_cases), ids=lambda c: c[0])
def test_util_kernels_compile_to_ptx(case, cc, no_device):
    _, kernel, args = case
    ptx = _compile(kernel, args, cc, no_device)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
