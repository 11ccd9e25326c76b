"""Every bad input the README names: the exception type, and a message that names the argument (and the
row, for per-row faults). Per-row faults are detected by the kernels, so they run on both the cpu
and the numpy backend. Inputs are never modified, on the error paths either.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbaent as ne

BACKENDS = ["numpy", "cpu"]

RNG = np.random.default_rng(7)
P = RNG.random((4, 5))
P /= P.sum(axis=1, keepdims=True)
Q = RNG.random((4, 5)) + 0.1
Q /= Q.sum(axis=1, keepdims=True)
X = RNG.standard_normal((4, 5))
T = RNG.standard_normal((4, 5))
Y = np.array([0, 4, -100, 2])

# every public function, called on valid inputs with extra keyword arguments
CALLS = {
    "entropy": lambda **kw: ne.entropy(P, **kw),
    "cross_entropy": lambda **kw: ne.cross_entropy(P, Q, **kw),
    "kl_divergence": lambda **kw: ne.kl_divergence(P, Q, **kw),
    "js_divergence": lambda **kw: ne.js_divergence(P, Q, **kw),
    "logsumexp": lambda **kw: ne.logsumexp(X, **kw),
    "log_softmax": lambda **kw: ne.log_softmax(X, **kw),
    "softmax": lambda **kw: ne.softmax(X, **kw),
    "softmax_entropy": lambda **kw: ne.softmax_entropy(X, **kw),
    "softmax_kl_divergence": lambda **kw: ne.softmax_kl_divergence(T, X, **kw),
    "softmax_cross_entropy[labels]": lambda **kw: ne.softmax_cross_entropy(X, Y, **kw),
    "softmax_cross_entropy[soft]": lambda **kw: ne.softmax_cross_entropy(X, P, **kw),
    "score": lambda **kw: ne.score(X, Y, teacher_logits=T, **kw),
}
WITH_BASE = [k for k in CALLS if k not in ("logsumexp", "log_softmax", "softmax")]
WITH_REDUCTION = [k for k in WITH_BASE if k != "score"]
PROB = ["entropy", "cross_entropy", "kl_divergence", "js_divergence"]
PROB2 = PROB[1:]


def raises(exc, *patterns):
    """pytest.raises(exc) whose message must contain every regex in ``patterns``."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{p})" for p in patterns))


def shape_id(a):
    return "x".join(map(str, np.shape(a))) or "0d"


def _cuda_available():
    return ne.backends()["cuda"].available


# --------------------------------------------------------------------------------------------------
# scalar options


@pytest.mark.parametrize("func", WITH_BASE)
@pytest.mark.parametrize("base", [0, -2, -0.5, 0.0, float("nan"), float("inf"), -float("inf")])
def test_base_not_positive_finite(func, base):
    with raises(ValueError, "base"):
        CALLS[func](base=base, backend="numpy")


@pytest.mark.parametrize("func", WITH_BASE)
@pytest.mark.parametrize("base", [1, 1.0, np.float64(1.0)])
def test_base_one(func, base):
    with raises(ValueError, "base", "1"):
        CALLS[func](base=base, backend="numpy")


@pytest.mark.parametrize("func", WITH_BASE)
@pytest.mark.parametrize("base", ["2", b"2", [2], 2j, True, object()])
def test_base_not_a_number(func, base):
    # the README: any positive number other than 1; a non-number is the wrong *type*
    with raises(TypeError, "base"):
        CALLS[func](base=base, backend="numpy")


@pytest.mark.parametrize("func", WITH_BASE)
@pytest.mark.parametrize("base", [2, 10, np.e, 0.5, np.float32(2), np.int64(3)])
def test_valid_bases_are_accepted(func, base):
    got = CALLS[func](base=base, backend="numpy")
    nats = CALLS[func](backend="numpy")
    if isinstance(got, ne.Scores):
        got, nats = got.entropy, nats.entropy
    np.testing.assert_allclose(got, np.asarray(nats) / np.log(float(base)), rtol=1e-12)


@pytest.mark.parametrize("func", WITH_REDUCTION)
@pytest.mark.parametrize("bad", ["avg", "MEAN", "", None, 1])
def test_unknown_reduction(func, bad):
    with raises(ValueError, "reduction", re.escape(repr(bad))):
        CALLS[func](reduction=bad, backend="numpy")


@pytest.mark.parametrize("func", WITH_REDUCTION)
@pytest.mark.parametrize("bad", ["omit", "RAISE", None])
def test_unknown_nan_policy(func, bad):
    with raises(ValueError, "nan_policy", re.escape(repr(bad))):
        CALLS[func](nan_policy=bad, backend="numpy")


@pytest.mark.parametrize("func", list(CALLS))
@pytest.mark.parametrize("bad", ["gpu", "CPU", "", "torch", 0])
def test_unknown_backend(func, bad):
    with raises(ValueError, "backend", re.escape(repr(bad))):
        CALLS[func](backend=bad)


@pytest.mark.parametrize("func", list(CALLS))
def test_unavailable_cuda_backend(func):
    info = ne.backends()["cuda"]
    if info.available:
        pytest.skip("the cuda backend is available on this machine")
    with pytest.raises(ne.BackendUnavailableError) as exc:
        CALLS[func](backend="cuda")
    assert isinstance(exc.value, RuntimeError)
    msg = str(exc.value)
    assert "cuda" in msg
    assert info.reason and info.reason in msg  # says why


def test_unavailable_cuda_backend_through_use_backend():
    if _cuda_available():
        pytest.skip("the cuda backend is available on this machine")
    with ne.use_backend("cuda"), pytest.raises(ne.BackendUnavailableError, match="cuda"):
        ne.entropy(P)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0000001, 2, float("nan"), float("inf")])
@pytest.mark.parametrize("target", ["labels", "soft"])
def test_label_smoothing_outside_unit_interval(smoothing, target):
    t = Y if target == "labels" else P
    with raises(ValueError, "label_smoothing"):
        ne.softmax_cross_entropy(X, t, label_smoothing=smoothing, backend="numpy")


@pytest.mark.parametrize("smoothing", ["0.1", None, [0.1]])
def test_label_smoothing_not_a_number(smoothing):
    with raises(TypeError, "label_smoothing"):
        ne.softmax_cross_entropy(X, Y, label_smoothing=smoothing, backend="numpy")


# 1e-310, 5e-324 (subnormal): positive and finite, but 1 / T is inf (the results were NaN)
BAD_TEMPERATURES = [0, 0.0, -1, -1e-9, float("nan"), float("inf"), 1e-310, 5e-324, 10**400]


@pytest.mark.parametrize("temperature", BAD_TEMPERATURES)
@pytest.mark.parametrize("func", ["softmax_kl_divergence", "score"])
def test_temperature_not_positive(func, temperature):
    with raises(ValueError, "temperature"):
        CALLS[func](temperature=temperature, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", ["softmax_kl_divergence", "score"])
def test_temperature_with_a_finite_reciprocal_is_accepted(func, backend):
    t = 1e-307  # 1 / T = 1e307: finite, so accepted (the results may overflow, never NaN)
    res = CALLS[func](temperature=t, backend=backend)
    kl = res.kl_divergence if func == "score" else res
    assert not np.isnan(kl).any()


@pytest.mark.parametrize("temperature", BAD_TEMPERATURES)
def test_temperature_dask(temperature):
    nd = pytest.importorskip("numbaent.dask")
    with raises(ValueError, "temperature"):
        nd.softmax_kl_divergence(T, X, temperature=temperature)
    with raises(ValueError, "temperature"):
        nd.score(X, Y, teacher_logits=T, temperature=temperature)


@pytest.mark.parametrize("temperature", ["2", None])
@pytest.mark.parametrize("func", ["softmax_kl_divergence", "score"])
def test_temperature_not_a_number(func, temperature):
    with raises(TypeError, "temperature"):
        CALLS[func](temperature=temperature, backend="numpy")


@pytest.mark.parametrize("bad", [1.5, "1", None, True])
def test_ignore_index_not_an_integer(bad):
    with raises(TypeError, "ignore_index"):
        ne.softmax_cross_entropy(X, Y, ignore_index=bad, backend="numpy")
    with raises(TypeError, "ignore_index"):
        ne.score(X, Y, ignore_index=bad, backend="numpy")


# --------------------------------------------------------------------------------------------------
# probability inputs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB)
@pytest.mark.parametrize("normalize", [False, True])
def test_negative_p(backend, func, normalize):
    p = P.copy()
    p[2, 3] = -1e-300
    p[3, 0] = -0.5
    args = (p,) if func == "entropy" else (p, Q)
    with raises(ValueError, r"\bp\b", "negative", r"row 2\b"):
        getattr(ne, func)(*args, normalize=normalize, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB2)
def test_negative_q(backend, func):
    q = Q.copy()
    q[1, 4] = -0.25
    with raises(ValueError, r"\bq\b", "negative", r"row 1\b"):
        getattr(ne, func)(P, q, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_entry_row_is_named_in_the_batch_shape(backend):
    p = np.tile(P, (2, 3, 1, 1))  # batch (2, 3, 4)
    p[1, 2, 3, 1] = -1.0
    with raises(ValueError, r"\bp\b", re.escape("row (1, 2, 3)")):
        ne.entropy(p, backend=backend)
    # with the class axis first, the batch axes are the remaining ones
    with raises(ValueError, re.escape("row (1, 2, 3)")):
        ne.entropy(np.moveaxis(p, -1, 0), axis=0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB2)
def test_p_q_shape_mismatch(backend, func):
    f = getattr(ne, func)
    for q in (Q[:3], Q[:, :4], Q[None], Q.T.copy(), Q.reshape(2, 2, 5)):
        with raises(ValueError, r"\bp\b", r"\bq\b", "shape"):
            f(P, q, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB2)
def test_one_dimensional_q_of_the_wrong_length(backend, func):
    f = getattr(ne, func)
    for q in (Q[0, :4], np.full(6, 1 / 6), np.zeros(0)):
        with raises(ValueError, r"\bq\b", "shape"):
            f(P, q, backend=backend)
    assert np.shape(f(P, Q[0], backend=backend)) == (4,)  # the right length is shared by rows


# --------------------------------------------------------------------------------------------------
# nan_policy


def _nan_cases():
    xn = X.copy()
    xn[[2, 3], 1] = np.nan
    pn = P.copy()
    pn[[1, 3], 0] = np.nan
    qn = Q.copy()
    qn[[2, 3], 4] = np.nan
    return [
        ("entropy", lambda **kw: ne.entropy(pn, **kw), "p", 1),
        ("cross_entropy[p]", lambda **kw: ne.cross_entropy(pn, Q, **kw), "p", 1),
        ("cross_entropy[q]", lambda **kw: ne.cross_entropy(P, qn, **kw), "q", 2),
        ("kl_divergence[q]", lambda **kw: ne.kl_divergence(P, qn, **kw), "q", 2),
        ("js_divergence[p]", lambda **kw: ne.js_divergence(pn, Q, **kw), "p", 1),
        ("softmax_entropy", lambda **kw: ne.softmax_entropy(xn, **kw), "logits", 2),
        ("softmax_kl[q]", lambda **kw: ne.softmax_kl_divergence(T, xn, **kw), "logits_q", 2),
        ("softmax_kl[p]", lambda **kw: ne.softmax_kl_divergence(xn, T, **kw), "logits_p", 2),
        (
            "sce[labels]",
            lambda **kw: ne.softmax_cross_entropy(xn, np.array([0, 1, 2, 3]), **kw),
            "logits",
            2,
        ),
        ("sce[soft]", lambda **kw: ne.softmax_cross_entropy(xn, P, **kw), "logits", 2),
        ("sce[soft target]", lambda **kw: ne.softmax_cross_entropy(X, pn, **kw), "target", 1),
    ]


NAN_CASES = _nan_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(("name", "call", "arg", "row"), NAN_CASES, ids=[c[0] for c in NAN_CASES])
def test_nan_policy_raise_names_the_first_nan_row(backend, reduction, name, call, arg, row):
    with raises(ValueError, "nan_policy", rf"\b{arg}\b", rf"row {row}\b"):
        call(nan_policy="raise", reduction=reduction, backend=backend)
    # propagate: NaN exactly in the rows that hold a NaN, other rows untouched
    res = np.asarray(call(backend=backend))
    nan_rows = np.flatnonzero(np.isnan(res))
    assert nan_rows[0] == row
    assert np.all(np.isfinite(res[:row]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_policy_raise_names_an_nd_row(backend):
    x = np.zeros((2, 3, 4))
    x[1, 1, 2] = np.nan
    with raises(ValueError, "logits", re.escape("row (1, 1)")):
        ne.softmax_entropy(x, nan_policy="raise", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_policy_raise_is_quiet_without_nan(backend):
    res = ne.entropy(P, nan_policy="raise", backend=backend)
    assert np.all(np.isfinite(res))
    # an all-zero row with normalize=True is NaN without any NaN input: not a nan_policy fault
    p = P.copy()
    p[1] = 0
    res = ne.entropy(p, normalize=True, nan_policy="raise", backend=backend)
    assert np.isnan(res[1]) and np.all(np.isfinite(res[[0, 2, 3]]))


# --------------------------------------------------------------------------------------------------
# dtypes


LOGIT_CALLS = {
    "logsumexp": lambda x: ne.logsumexp(x, backend="numpy"),
    "log_softmax": lambda x: ne.log_softmax(x, backend="numpy"),
    "softmax": lambda x: ne.softmax(x, backend="numpy"),
    "softmax_entropy": lambda x: ne.softmax_entropy(x, backend="numpy"),
    "softmax_kl_divergence[logits_p]": lambda x: ne.softmax_kl_divergence(x, T, backend="numpy"),
    "softmax_kl_divergence[logits_q]": lambda x: ne.softmax_kl_divergence(T, x, backend="numpy"),
    "softmax_cross_entropy": lambda x: ne.softmax_cross_entropy(x, Y, backend="numpy"),
    "score": lambda x: ne.score(x, Y, backend="numpy"),
    "score[teacher_logits]": lambda x: ne.score(X, Y, teacher_logits=x, backend="numpy"),
}
LOGIT_ARG = {
    "softmax_kl_divergence[logits_p]": "logits_p",
    "softmax_kl_divergence[logits_q]": "logits_q",
    "score[teacher_logits]": "teacher_logits",
}


@pytest.mark.parametrize("func", list(LOGIT_CALLS))
@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.uint8, np.bool_], ids=lambda d: np.dtype(d).name
)
def test_integer_or_bool_logits(func, dtype):
    with raises(TypeError, rf"\b{LOGIT_ARG.get(func, 'logits')}\b", "float"):
        LOGIT_CALLS[func]((X > 0).astype(dtype))


@pytest.mark.parametrize("func", list(LOGIT_CALLS))
@pytest.mark.parametrize(
    "bad",
    [X.astype(np.complex128), X.astype(str), X.astype(object), [["a", "b"]], [[1.0, 2.0], [3.0]]],
    ids=["complex", "str", "object", "strings", "ragged"],
)
def test_non_real_logits(func, bad):
    with raises(TypeError, rf"\b{LOGIT_ARG.get(func, 'logits')}\b"):
        LOGIT_CALLS[func](bad)


@pytest.mark.parametrize(("func", "which"), [(f, "p") for f in PROB] + [(f, "q") for f in PROB2])
@pytest.mark.parametrize(
    "bad",
    [P.astype(np.complex128), P.astype(str), P.astype(object), [["a", "b"]], [[1.0, 2.0], [3.0]]],
    ids=["complex", "str", "object", "strings", "ragged"],
)
def test_non_real_probabilities(func, which, bad):
    args = (bad, Q) if which == "p" else (P, bad)
    with raises(TypeError, rf"\b{which}\b"):
        getattr(ne, func)(*args[: 1 if func == "entropy" else 2], backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", PROB)
def test_bool_and_integer_probabilities_are_accepted(backend, func):
    """The README: integer or bool arrays are counts, converted to float64."""
    b = np.array([[True, False, True], [False, True, True]])
    args = (b,) if func == "entropy" else (b, b[::-1])
    got = getattr(ne, func)(*args, normalize=True, backend=backend)
    ref = getattr(ne, func)(*(a.astype(np.float64) for a in args), normalize=True, backend="numpy")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "bad",
    [np.array([True, False, True, False]), Y.astype(np.complex128), Y.astype(str)],
    ids=["bool", "complex", "str"],
)
def test_bad_target_dtype(bad):
    with raises(TypeError, r"\btarget\b"):
        ne.softmax_cross_entropy(X, bad, backend="numpy")


@pytest.mark.parametrize("bad", [Y.astype(np.float64), Y > 0], ids=["float", "bool"])
def test_score_labels_must_be_integers(bad):
    with raises(TypeError, r"\blabels\b"):
        ne.score(X, bad, backend="numpy")


@pytest.mark.parametrize(
    "bad", [np.array(["a"] * 5), np.ones(5, np.complex128)], ids=["str", "complex"]
)
def test_bad_weight_dtype(bad):
    with raises(TypeError, r"\bweight\b"):
        ne.softmax_cross_entropy(X, Y, weight=bad, backend="numpy")


# --------------------------------------------------------------------------------------------------
# labels and targets


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("label", [5, 6, -1, -99, -101, 2**40])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_label_out_of_range(backend, label, smoothing, weighted):
    y = np.array([0, 4, label, label])
    w = np.ones(5) if weighted else None
    with raises(IndexError, r"\btarget\b", rf"label {label}\b", r"row 2\b"):
        ne.softmax_cross_entropy(
            X, y, weight=w, label_smoothing=smoothing, reduction="mean", backend=backend
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("label", [5, -1])
def test_score_label_out_of_range(backend, label):
    with raises(IndexError, r"\blabels\b", rf"label {label}\b", r"row 1\b"):
        ne.score(X, np.array([0, label, 1, 2]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_label_out_of_range_with_no_classes(backend):
    x = np.zeros((3, 0))
    with raises(IndexError, r"\btarget\b", r"label 0\b", r"row 1\b"):
        ne.softmax_cross_entropy(x, np.array([-100, 0, -100]), backend=backend)
    with raises(IndexError, r"\blabels\b", r"label 0\b", r"row 1\b"):
        ne.score(x, np.array([-100, 0, -100]), backend=backend)
    # all rows ignored is fine: zero loss per row, NaN mean
    y = np.full(3, -100)
    np.testing.assert_array_equal(ne.softmax_cross_entropy(x, y, backend=backend), np.zeros(3))
    assert np.isnan(ne.softmax_cross_entropy(x, y, reduction="mean", backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_label_out_of_range_names_an_nd_row(backend):
    x = np.zeros((2, 5, 3))  # class axis 1: labels (2, 3)
    y = np.array([[0, 1, 2], [3, 9, 4]])
    with raises(IndexError, r"label 9\b", re.escape("row (1, 1)")):
        ne.softmax_cross_entropy(x, y, axis=1, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ignore_index_makes_minus_100_an_error(backend):
    with raises(IndexError, r"label -100\b", r"row 2\b"):
        ne.softmax_cross_entropy(X, Y, ignore_index=3, backend=backend)


def test_unsigned_labels_beyond_int64():
    y = np.array([0, 1, 2**64 - 1, 3], dtype=np.uint64)
    with raises(IndexError, r"\btarget\b", r"row 2\b", str(2**64 - 1)):
        ne.softmax_cross_entropy(X, y, backend="numpy")


@pytest.mark.parametrize("ignore_index", [0, 3, -1, 7])
def test_soft_targets_with_a_custom_ignore_index(ignore_index):
    with raises(ValueError, "ignore_index", str(ignore_index)):
        ne.softmax_cross_entropy(X, P, ignore_index=ignore_index, backend="numpy")


@pytest.mark.parametrize(
    "bad", [np.ones(4), np.ones(6), np.ones((1, 5)), np.ones((5, 5))], ids=shape_id
)
@pytest.mark.parametrize("target", ["labels", "soft"])
def test_weight_of_the_wrong_length(bad, target):
    t = Y if target == "labels" else P
    with raises(ValueError, r"\bweight\b", "5"):
        ne.softmax_cross_entropy(X, t, weight=bad, backend="numpy")


@pytest.mark.parametrize("bad", [Y[:3], np.append(Y, 0), Y[None], Y.reshape(2, 2)], ids=shape_id)
def test_labels_shape_mismatch(bad):
    with raises(ValueError, r"\btarget\b", "shape"):
        ne.softmax_cross_entropy(X, bad, backend="numpy")
    with raises(ValueError, r"\blabels\b", "shape"):
        ne.score(X, bad, backend="numpy")


@pytest.mark.parametrize("bad", [P[:3], P[:, :4], P.T.copy(), P[None]], ids=shape_id)
def test_soft_target_shape_mismatch(bad):
    with raises(ValueError, r"\btarget\b", "shape"):
        ne.softmax_cross_entropy(X, bad, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [T[:3], T[:, :4], T.T.copy(), T[None]], ids=shape_id)
def test_teacher_logits_shape_mismatch(backend, bad):
    with raises(ValueError, r"\bteacher_logits\b", "shape"):
        ne.score(X, Y, teacher_logits=bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [T[:3], T[:, :4], T.T.copy(), T[None]], ids=shape_id)
def test_logits_q_shape_mismatch(backend, bad):
    with raises(ValueError, r"\blogits_q\b", "shape"):
        ne.softmax_kl_divergence(X, bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_q_with_the_class_axis_last_is_not_the_same_shape(backend):
    """A (2, 4, 3) logits_q against (2, 3, 4) logits_p with axis=1 is a shape mismatch, not a
    'class axis already moved' input (the cpu backend used to read past the rows)."""
    a = np.zeros((2, 3, 4))
    b = np.zeros((2, 4, 3))
    with raises(ValueError, r"\blogits_q\b", "shape"):
        ne.softmax_kl_divergence(a, b, axis=1, backend=backend)


# --------------------------------------------------------------------------------------------------
# axis and scalars


@pytest.mark.parametrize("func", list(CALLS))
@pytest.mark.parametrize("axis", [2, -3, 10])
def test_axis_out_of_range(func, axis):
    with raises(ValueError, "axis", str(axis)):
        CALLS[func](axis=axis, backend="numpy")


@pytest.mark.parametrize("func", list(CALLS))
@pytest.mark.parametrize("axis", [1.0, "1", None])
def test_axis_not_an_integer(func, axis):
    with raises(TypeError, "axis"):
        CALLS[func](axis=axis, backend="numpy")


SCALAR_CALLS = {
    "entropy": (lambda s: ne.entropy(s), "p"),
    "cross_entropy": (lambda s: ne.cross_entropy(s, s), "p"),
    "kl_divergence": (lambda s: ne.kl_divergence(s, s), "p"),
    "js_divergence": (lambda s: ne.js_divergence(s, s), "p"),
    "logsumexp": (lambda s: ne.logsumexp(s), "logits"),
    "log_softmax": (lambda s: ne.log_softmax(s), "logits"),
    "softmax": (lambda s: ne.softmax(s), "logits"),
    "softmax_entropy": (lambda s: ne.softmax_entropy(s), "logits"),
    "softmax_kl_divergence": (lambda s: ne.softmax_kl_divergence(s, s), "logits_p"),
    "softmax_cross_entropy": (lambda s: ne.softmax_cross_entropy(s, np.int64(0)), "logits"),
    "score": (lambda s: ne.score(s), "logits"),
}


@pytest.mark.parametrize("func", list(SCALAR_CALLS))
@pytest.mark.parametrize("scalar", [np.float64(0.5), np.array(0.5), 0.5], ids=["np", "0d", "py"])
def test_scalar_input(func, scalar):
    call, name = SCALAR_CALLS[func]
    with raises(ValueError, rf"\b{name}\b", "(dimension|scalar)"):
        call(scalar)


# --------------------------------------------------------------------------------------------------
# out


OUT_CALLS = {  # name -> (call(out=...), good out)
    "entropy": (lambda out: ne.entropy(P, out=out, backend="cpu"), np.empty(4)),
    "kl_divergence": (lambda out: ne.kl_divergence(P, Q, out=out, backend="numpy"), np.empty(4)),
    "logsumexp": (lambda out: ne.logsumexp(X, out=out, backend="cpu"), np.empty(4)),
    "softmax": (lambda out: ne.softmax(X, out=out, backend="cpu"), np.empty((4, 5))),
    "log_softmax[axis0]": (
        lambda out: ne.log_softmax(X, axis=0, out=out, backend="numpy"),
        np.empty((4, 5)),
    ),
    "softmax_entropy[f32]": (
        lambda out: ne.softmax_entropy(X.astype(np.float32), out=out, backend="cpu"),
        np.empty(4, np.float32),
    ),
    "softmax_cross_entropy": (
        lambda out: ne.softmax_cross_entropy(X, Y, out=out, backend="cpu"),
        np.empty(4),
    ),
    "softmax_cross_entropy[mean]": (
        lambda out: ne.softmax_cross_entropy(X, Y, reduction="mean", out=out, backend="cpu"),
        np.empty(()),
    ),
    "js_divergence[sum]": (
        lambda out: ne.js_divergence(P, Q, reduction="sum", out=out, backend="numpy"),
        np.empty(()),
    ),
}


@pytest.mark.parametrize("func", list(OUT_CALLS))
def test_out_good(func):
    call, good = OUT_CALLS[func]
    assert call(good) is good


@pytest.mark.parametrize("func", list(OUT_CALLS))
def test_out_wrong_shape(func):
    call, good = OUT_CALLS[func]
    for bad_shape in ((), (4,), (5,), (4, 5), (5, 4), (4, 1), (1,)):
        if bad_shape == good.shape:
            continue
        with raises(ValueError, r"\bout\b", "shape"):
            call(np.empty(bad_shape, good.dtype))


@pytest.mark.parametrize("func", list(OUT_CALLS))
def test_out_wrong_dtype(func):
    call, good = OUT_CALLS[func]
    for dt in (np.float16, np.float32, np.float64, np.int64, np.complex128):
        if np.dtype(dt) == good.dtype:
            continue
        with raises(TypeError, r"\bout\b", "dtype"):
            call(np.empty(good.shape, dt))


@pytest.mark.parametrize("func", list(OUT_CALLS))
def test_out_read_only(func):
    call, good = OUT_CALLS[func]
    ro = np.zeros_like(good)
    ro.flags.writeable = False
    with raises(ValueError, r"\bout\b", "read-only"):
        call(ro)
    assert np.all(ro == 0)


@pytest.mark.parametrize("func", list(OUT_CALLS))
def test_out_not_an_ndarray(func):
    call, good = OUT_CALLS[func]
    for bad in (np.zeros_like(good).tolist(), tuple(np.zeros(good.shape).ravel()), "out", 0.0):
        with raises(TypeError, r"\bout\b", "ndarray"):
            call(bad)


# --------------------------------------------------------------------------------------------------
# inputs are never modified, on success and on every error path


def _inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7)).astype(np.float32)
    t = rng.standard_normal((6, 7)).astype(np.float32)
    p = rng.random((6, 7))
    p /= p.sum(axis=1, keepdims=True)
    q = rng.random((6, 7))
    q /= q.sum(axis=1, keepdims=True)
    y = np.array([0, 6, -100, 2, 3, 1])
    w = rng.random(7) + 0.5
    xn = x.copy()
    xn[3, 2] = np.nan
    pneg = p.copy()
    pneg[4, 1] = -0.1
    ybad = y.copy()
    ybad[5] = 7
    return dict(x=x, t=t, p=p, q=q, y=y, w=w, xn=xn, pneg=pneg, ybad=ybad)


def _calls(a, backend):
    """(call, expected exception or None) over every function, valid and invalid."""
    b = dict(backend=backend)
    return [
        (lambda: ne.entropy(a["p"], normalize=True, **b), None),
        (lambda: ne.cross_entropy(a["p"], a["q"], reduction="mean", **b), None),
        (lambda: ne.kl_divergence(a["p"], a["q"][0], normalize=True, **b), None),
        (lambda: ne.js_divergence(a["p"], a["q"], axis=0, **b), None),
        (lambda: ne.logsumexp(a["x"], axis=0, **b), None),
        (lambda: ne.log_softmax(a["x"], **b), None),
        (lambda: ne.softmax(a["x"], axis=0, **b), None),
        (lambda: ne.softmax_entropy(a["xn"], **b), None),
        (lambda: ne.softmax_kl_divergence(a["t"], a["x"], temperature=2.0, **b), None),
        (
            lambda: ne.softmax_cross_entropy(
                a["x"], a["y"], weight=a["w"], label_smoothing=0.1, reduction="mean", **b
            ),
            None,
        ),
        (lambda: ne.softmax_cross_entropy(a["x"], a["p"], weight=a["w"], **b), None),
        (lambda: ne.score(a["x"], a["y"], teacher_logits=a["t"], base=2, **b), None),
        # error paths
        (lambda: ne.entropy(a["pneg"], normalize=True, **b), ValueError),
        (lambda: ne.kl_divergence(a["p"], a["pneg"], **b), ValueError),
        (lambda: ne.js_divergence(a["p"], a["q"][:3], **b), ValueError),
        (lambda: ne.softmax_entropy(a["xn"], nan_policy="raise", **b), ValueError),
        (lambda: ne.softmax_cross_entropy(a["xn"], a["y"], nan_policy="raise", **b), ValueError),
        (lambda: ne.softmax_cross_entropy(a["x"], a["ybad"], weight=a["w"], **b), IndexError),
        (lambda: ne.softmax_cross_entropy(a["x"], a["p"], ignore_index=1, **b), ValueError),
        (lambda: ne.softmax_cross_entropy(a["x"], a["y"], weight=a["w"][:3], **b), ValueError),
        (lambda: ne.softmax_kl_divergence(a["t"], a["x"][:2], **b), ValueError),
        (lambda: ne.score(a["x"], a["ybad"], teacher_logits=a["t"], **b), IndexError),
        (lambda: ne.score(a["x"], a["y"], teacher_logits=a["t"][:, :3], **b), ValueError),
        (lambda: ne.entropy(a["p"], out=np.empty(3), **b), ValueError),
        (lambda: ne.entropy(a["p"], base=1, **b), ValueError),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("read_only", [False, True])
def test_inputs_are_never_modified(backend, read_only):
    a = _inputs()
    before = {k: v.copy() for k, v in a.items()}
    if read_only:  # read-only inputs are accepted, and fail the same way
        for v in a.values():
            v.flags.writeable = False
    for i, (call, exc) in enumerate(_calls(a, backend)):
        if exc is None:
            call()
        else:
            with pytest.raises(exc):
                call()
        for k, v in a.items():
            np.testing.assert_array_equal(v, before[k], err_msg=f"call {i} modified {k}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_native_byte_order_is_accepted(backend):
    """Big-endian floats are floats: accepted (and byte-swapped) for probabilities and logits."""
    p_be, q_be, x_be = (a.astype(a.dtype.newbyteorder(">")) for a in (P, Q, X))
    np.testing.assert_allclose(
        ne.kl_divergence(p_be, q_be, backend=backend), ne.kl_divergence(P, Q, backend="numpy")
    )
    np.testing.assert_allclose(ne.entropy(p_be, backend=backend), ne.entropy(P, backend="numpy"))
    np.testing.assert_allclose(
        ne.softmax_cross_entropy(x_be, Y, backend=backend),
        ne.softmax_cross_entropy(X, Y, backend="numpy"),
    )
