"""Array kinds: torch (incl. bfloat16 and requires_grad), JAX and ``__dlpack__``-only host arrays in,
results of the first array argument's kind out, with the bits of the same call on NumPy input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BF16

import numbaent as ne
from numbaent._kernels import cpu

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(5)
X = RNG.standard_normal((6, 9)).astype(np.float32) * 3
T = (X + RNG.standard_normal((6, 9)).astype(np.float32)).astype(np.float32)
Y = RNG.integers(0, 9, 6)
P = RNG.random((6, 9)).astype(np.float32)
Q = RNG.random((6, 9)).astype(np.float32)
SOFT = np.abs(T) / np.abs(T).sum(1, keepdims=True)


class DLPackOnly:
    """A host array that offers nothing but DLPack (no __array__, no buffer protocol)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def _jax():
    return pytest.importorskip("jax.numpy")


KINDS = ["torch", "torch_grad", "torch_bf16", "jax", "jax_bf16", "dlpack"]


def to_kind(a, kind):
    """``a`` (NumPy) as an array of ``kind``; float arrays in bfloat16 for the *_bf16 kinds."""
    floating = a.dtype.kind == "f"
    if kind.startswith("torch"):
        if kind == "torch_bf16" and floating:
            bits = np.ascontiguousarray(a.astype(BF16)).view(np.int16)
            return torch.from_numpy(bits.copy()).view(torch.bfloat16)
        t = torch.from_numpy(a.copy())
        return t.requires_grad_(True) if kind == "torch_grad" and floating else t
    if kind.startswith("jax"):
        jnp = _jax()
        return jnp.asarray(a.astype(BF16) if kind == "jax_bf16" and floating else a)
    return DLPackOnly(a.copy())


def numpy_twin(a, kind):
    """The NumPy array whose results a call on ``to_kind(a, kind)`` must reproduce bit for bit."""
    return a.astype(BF16) if kind.endswith("bf16") and a.dtype.kind == "f" else a


def result_kind(kind):
    return {"torch": "torch", "jax": "jax", "dlpack": "numpy"}[kind.split("_")[0]]


def as_numpy(r):
    if isinstance(r, torch.Tensor):
        return r.numpy()
    return np.asarray(r)


def check_kind(got, kind, ref):
    """``got`` is of ``kind``'s result kind, with ``ref``'s (NumPy) dtype, shape and bits."""
    want = result_kind(kind)
    if want == "torch":
        assert isinstance(got, torch.Tensor), type(got)
        assert got.device.type == "cpu" and not got.requires_grad
    elif want == "jax":
        import jax

        assert isinstance(got, jax.Array), type(got)
    elif isinstance(ref, float):
        assert isinstance(got, float), type(got)
    else:
        assert isinstance(got, type(ref)), (type(got), type(ref))
    g, r = as_numpy(got), np.asarray(ref)
    if isinstance(ref, float) and want != "numpy":  # a 0-d array in the math dtype (the device
        r = np.asarray(ref, dtype=g.dtype)  # path's rule): the float64 reduction, rounded once
        assert g.dtype in (np.float32, np.float64)
    if want == "jax" and r.dtype == np.int64 and g.dtype == np.int32:
        r = r.astype(np.int32)  # JAX without jax_enable_x64 has no int64 (argmax < 2**31)
    assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, g.dtype, r.shape, r.dtype)
    np.testing.assert_array_equal(g, r)


CALLS = [
    ("logsumexp", (X,), {}),
    ("log_softmax", (X,), {}),
    ("softmax", (X,), {}),
    ("softmax_entropy", (X,), {}),
    ("softmax_entropy", (X,), {"reduction": "mean", "base": 2}),
    ("softmax_kl_divergence", (T, X), {"temperature": 2.0}),
    ("softmax_cross_entropy", (X, Y), {}),
    ("softmax_cross_entropy", (X, Y), {"reduction": "sum", "label_smoothing": 0.1}),
    ("softmax_cross_entropy", (X, SOFT), {}),
    ("entropy", (P,), {"normalize": True}),
    ("cross_entropy", (P, Q), {"normalize": True}),
    ("kl_divergence", (P, Q), {"normalize": True, "reduction": "mean"}),
    ("js_divergence", (P, Q), {"normalize": True}),
]


PROBABILITY = ("entropy", "cross_entropy", "kl_divergence", "js_divergence")
CASES = [
    pytest.param(kind, call, id=f"{call[0]}-{call[2].get('reduction', 'none')}-{kind}")
    for call in CALLS
    for kind in KINDS
    if not (call[0] in PROBABILITY and kind.endswith("bf16"))  # bf16 kinds: the logit functions
]


@pytest.mark.parametrize(("kind", "call"), CASES)
def test_results_of_the_input_kind_with_numpys_bits(kind, call):
    name, args, kw = call
    fn = getattr(ne, name)
    ref = fn(*[numpy_twin(a, kind) for a in args], backend="cpu", **kw)
    got = fn(*[to_kind(a, kind) for a in args], backend="cpu", **kw)
    check_kind(got, kind, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_score_fields_of_the_input_kind(kind):
    ref = ne.score(numpy_twin(X, kind), Y, teacher_logits=numpy_twin(T, kind), backend="cpu")
    got = ne.score(to_kind(X, kind), to_kind(Y, kind), teacher_logits=to_kind(T, kind),
                   backend="cpu")  # fmt: skip
    for field, r in ref.as_dict().items():
        check_kind(getattr(got, field), kind, r)
    assert got.summary() == ref.summary()


def test_numpy_reductions_stay_python_floats_and_other_kinds_give_0d_arrays():
    assert isinstance(ne.softmax_entropy(X, reduction="mean"), float)
    r = ne.softmax_entropy(torch.from_numpy(X), reduction="mean")
    assert isinstance(r, torch.Tensor) and r.ndim == 0 and r.dtype == torch.float32
    r64 = ne.softmax_entropy(torch.from_numpy(X.astype(np.float64)), reduction="sum")
    assert r64.ndim == 0 and r64.dtype == torch.float64


def test_torch_out_is_filled_and_returned():
    out = torch.empty(6)
    got = ne.softmax_entropy(torch.from_numpy(X), out=out)
    assert got is out
    np.testing.assert_array_equal(out.numpy(), ne.softmax_entropy(X))
    full = torch.empty(6, 9)
    assert ne.log_softmax(torch.from_numpy(X), out=full) is full
    np.testing.assert_array_equal(full.numpy(), ne.log_softmax(X))


def test_out_of_another_kind_is_a_type_error_naming_out():
    with pytest.raises(TypeError, match="out must be a torch array"):
        ne.softmax_entropy(torch.from_numpy(X), out=np.empty(6, np.float32))
    with pytest.raises(TypeError, match="out must not require grad"):
        ne.softmax_entropy(torch.from_numpy(X), out=torch.empty(6, requires_grad=True))
    jnp = _jax()
    with pytest.raises(TypeError, match="out is not supported for JAX"):
        ne.softmax_entropy(jnp.asarray(X), out=jnp.zeros(6))


def test_traced_jax_values_are_a_clear_type_error():
    jax = pytest.importorskip("jax")
    with pytest.raises(TypeError, match="traced JAX value.*pure_callback"):
        jax.jit(lambda a: ne.softmax_entropy(a))(jax.numpy.asarray(X))


def test_host_inputs_are_read_in_place(monkeypatch):
    """torch float32, torch bfloat16 (an int16 view) and JAX CPU inputs reach the kernels as views
    of their own memory: no copy."""
    seen = []
    orig = cpu.kernel_view

    def spy(a):
        r = orig(a)
        seen.append(r.__array_interface__["data"][0])
        return r

    monkeypatch.setattr(cpu, "kernel_view", spy)
    t32 = torch.from_numpy(X.copy())
    tb = to_kind(X, "torch_bf16")
    for t in (t32, tb):
        seen.clear()
        ne.softmax_entropy(t, backend="cpu")
        assert seen == [t.data_ptr()]
    jnp = _jax()
    j = jnp.asarray(X)
    seen.clear()
    ne.softmax_entropy(j, backend="cpu")
    assert seen == [j.unsafe_buffer_pointer()]


def test_non_contiguous_and_batched_torch_inputs():
    x3 = torch.from_numpy(RNG.standard_normal((3, 9, 4)).astype(np.float32))
    got = ne.softmax_entropy(x3, axis=1)
    ref = ne.softmax_entropy(x3.numpy(), axis=1)
    check_kind(got, "torch", ref)
    tt = torch.from_numpy(X).t()  # a transposed view: not contiguous
    check_kind(ne.logsumexp(tt), "torch", ne.logsumexp(X.T))


def test_errors_are_the_same_for_every_kind():
    bad_labels = Y.copy()
    bad_labels[2] = 50
    msgs = []
    for a, y in ((X, bad_labels), (torch.from_numpy(X), torch.from_numpy(bad_labels))):
        with pytest.raises(IndexError) as e:
            ne.softmax_cross_entropy(a, y)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "row 2" in msgs[0]
    with pytest.raises(TypeError, match="logits must be a floating array"):
        ne.softmax_entropy(torch.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="must hold real numbers"):
        ne.entropy(torch.ones(2, 3, dtype=torch.complex64))
