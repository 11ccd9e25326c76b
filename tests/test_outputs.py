"""Inputs, outputs and ``out=``.

* Inputs are never modified, on success and on every error path, whatever their layout: each input
  is a view into a private buffer and the WHOLE buffer (gaps of strided views included) is compared
  byte for byte after the call.
* Results never alias an input (nor each other, for ``Scores``), are writable, and are fresh on
  every call (writing into one result changes no later result).
* A wrong ``out`` (shape, dtype, byte order, not an ndarray, read-only) raises TypeError / ValueError
  naming ``out`` and leaves that array untouched; a good ``out`` (contiguous, strided, reversed,
  Fortran-ordered, 0-d for reductions, any class axis) is filled with exactly the result computed
  without it and returned; an ``out`` overlapping an input (in place) still gives that result.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbaent as ne

BACKENDS = ["cpu", "numpy"]
if ne.backends()["cuda"].available:
    BACKENDS.append("cuda")

N, C = 6, 70  # C > 64: the block path; the few-class tile path is covered by the C = 5 inputs


def _data(c=C, n=N, seed=3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    t = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    p = rng.random((n, c)).astype(np.float32)
    p[:, ::7] = 0.0
    with np.errstate(invalid="ignore"):  # C = 1: the only class is zeroed, 0 / 0 is a NaN row
        p /= p.sum(axis=1, keepdims=True)
    q = rng.random((n, c)).astype(np.float32)
    q /= q.sum(axis=1, keepdims=True)
    y = rng.integers(0, c, n)
    y[2] = -100
    w = (rng.random(c) + 0.5).astype(np.float64)
    return dict(x=x, t=t, p=p, q=q, y=y, w=w)


LAYOUTS = ["contiguous", "strided", "reversed", "fortran", "half", "counts"]


def _place(a, layout):
    """(view with a's values in ``layout``, the buffer that owns its memory)."""
    if layout == "half" and a.dtype.kind == "f" and a.ndim == 2:
        a = a.astype(np.float16)
    if layout == "counts" and a.ndim == 2:
        with np.errstate(invalid="ignore"):  # a NaN row (C = 1) casts to an arbitrary count
            a = np.round(a * 100).astype(np.int32)  # integer counts (probabilities); logits reject
    if layout == "strided":
        buf = np.full((*a.shape[:-1], 2 * a.shape[-1]), 7, a.dtype)
        v = buf[..., ::2]
        v[...] = a
        return v, buf
    if layout == "reversed":
        buf = np.ascontiguousarray(a[::-1])
        return buf[::-1], buf
    if layout == "fortran" and a.ndim == 2:
        buf = np.asfortranarray(a)
        return buf, buf
    buf = a.copy()
    return buf, buf


def _calls(a, be):
    """(name, call, expected exception or None) for every function: valid calls and error paths.
    Calls whose inputs a layout cannot serve (integer logits) expect the TypeError."""
    b = dict(backend=be)
    xi = a["x"].dtype.kind in "iu"  # "counts" layout: integer logits are rejected
    tx = TypeError if xi else None
    return [
        ("entropy", lambda: ne.entropy(a["p"], normalize=True, **b), None),
        ("entropy[axis0]", lambda: ne.entropy(a["p"], axis=0, **b), None),
        ("cross_entropy", lambda: ne.cross_entropy(a["p"], a["q"], reduction="mean", **b), None),
        ("kl_divergence[q 1-D]", lambda: ne.kl_divergence(a["p"], a["q"][0], **b), None),
        ("js_divergence", lambda: ne.js_divergence(a["p"], a["q"], normalize=True, **b), None),
        ("logsumexp", lambda: ne.logsumexp(a["x"], **b), tx),
        ("log_softmax", lambda: ne.log_softmax(a["x"], **b), tx),
        ("softmax[axis0]", lambda: ne.softmax(a["x"], axis=0, **b), tx),
        ("softmax_entropy", lambda: ne.softmax_entropy(a["x"], base=2, **b), tx),
        (
            "softmax_kl_divergence",
            lambda: ne.softmax_kl_divergence(a["t"], a["x"], temperature=2.0, **b),
            tx,
        ),
        ("softmax_cross_entropy", lambda: ne.softmax_cross_entropy(a["x"], a["y"], **b), tx),
        (
            "softmax_cross_entropy[general]",
            lambda: ne.softmax_cross_entropy(
                a["x"], a["y"], weight=a["w"], label_smoothing=0.1, reduction="mean", **b
            ),
            tx,
        ),
        (
            "softmax_cross_entropy[soft]",
            lambda: ne.softmax_cross_entropy(a["x"], a["p"], weight=a["w"], **b),
            tx,
        ),
        ("score", lambda: ne.score(a["x"], a["y"], teacher_logits=a["t"], **b), tx),
        # error paths
        ("entropy[negative]", lambda: ne.entropy(-a["p"] - 1, **b), ValueError),
        ("kl_divergence[shape]", lambda: ne.kl_divergence(a["p"], a["q"][:3], **b), ValueError),
        ("entropy[base]", lambda: ne.entropy(a["p"], base=1, **b), ValueError),
        ("entropy[reduction]", lambda: ne.entropy(a["p"], reduction="max", **b), ValueError),
        ("entropy[axis]", lambda: ne.entropy(a["p"], axis=5, **b), ValueError),
        ("entropy[out]", lambda: ne.entropy(a["p"], out=np.empty(3), **b), ValueError),
        (
            "softmax_entropy[nan raise]",
            lambda: ne.softmax_entropy(a["xn"], nan_policy="raise", **b),
            TypeError if xi else ValueError,
        ),
        (
            "softmax_cross_entropy[label]",
            lambda: ne.softmax_cross_entropy(a["x"], a["ybad"], **b),
            TypeError if xi else IndexError,
        ),
        (
            "softmax_cross_entropy[soft ignore_index]",
            lambda: ne.softmax_cross_entropy(a["x"], a["p"], ignore_index=0, **b),
            TypeError if xi else ValueError,
        ),
        (
            "score[label]",
            lambda: ne.score(a["x"], a["ybad"], teacher_logits=a["t"], **b),
            TypeError if xi else IndexError,
        ),
        (
            "score[teacher shape]",
            lambda: ne.score(a["x"], a["y"], teacher_logits=a["t"][:, :3], **b),
            TypeError if xi else ValueError,
        ),
    ]


def _inputs(layout, c=C):
    d = _data(c)
    xn = d["x"].copy()
    xn[3, min(2, c - 1)] = np.nan
    ybad = d["y"].copy()
    ybad[4] = c + 3
    d.update(xn=xn, ybad=ybad)
    views, bufs = {}, {}
    for k, v in d.items():
        views[k], bufs[k] = _place(v, layout)
    return views, bufs


# --------------------------------------------------------------------------------------------------
# inputs are never modified


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
@pytest.mark.parametrize("c", [C, 5], ids=["C70", "C5"])
def test_inputs_are_never_modified(backend, layout, read_only, c):
    views, bufs = _inputs(layout, c)
    before = {k: b.tobytes() for k, b in bufs.items()}
    if read_only:
        for v in views.values():
            v.flags.writeable = False
    for name, call, exc in _calls(views, backend):
        if exc is None:
            call()
        else:
            with pytest.raises(exc):
                call()
        for k, b in bufs.items():
            assert b.tobytes() == before[k], f"{name} modified input {k} ({layout})"


# --------------------------------------------------------------------------------------------------
# results never alias inputs, each other, or earlier results


def _arrays_of(res):
    if isinstance(res, ne.Scores):
        return {k: v for k, v in res.as_dict().items() if isinstance(v, np.ndarray)}
    if isinstance(res, np.ndarray):
        return {"result": res}
    return {}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "half"])
@pytest.mark.parametrize("c", [C, 5, 1], ids=["C70", "C5", "C1"])
def test_results_do_not_alias_inputs(backend, layout, c):
    views, bufs = _inputs(layout, c)
    for name, call, exc in _calls(views, backend):
        if exc is not None:
            continue
        res = call()
        arrays = _arrays_of(res)
        for rk, r in arrays.items():
            assert r.flags.writeable, (name, rk)
            for k, b in bufs.items():
                assert not np.shares_memory(r, b), f"{name}: result {rk} aliases input {k}"
            for rk2, r2 in arrays.items():
                if rk2 != rk:
                    assert not np.shares_memory(r, r2), f"{name}: {rk} aliases {rk2}"
        # fresh buffers on every call: scribbling on this result changes no later one
        snapshot = {k: v.copy() for k, v in arrays.items()}
        for r in arrays.values():
            r[...] = 1 if r.dtype == np.bool_ else 7
        again = _arrays_of(call())
        for k, v in snapshot.items():
            np.testing.assert_array_equal(again[k], v, err_msg=f"{name}.{k}")


def test_scalar_results_are_numbers():
    p = np.array([0.25, 0.75])
    assert isinstance(ne.entropy(p), np.floating)
    assert isinstance(ne.entropy(p[None], reduction="mean"), float)
    assert isinstance(ne.logsumexp(np.zeros(3, np.float32)), np.float32)


# --------------------------------------------------------------------------------------------------
# out=


def _out_funcs():
    """name -> (call(out, axis, be), input shape for the result, float dtype of the result, per-row).
    Inputs are 3-D so that every class axis can be chosen."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4, 5, 70)) * 3).astype(np.float32)
    t = (rng.standard_normal((4, 5, 70)) * 3).astype(np.float32)
    p = rng.random((4, 5, 70))
    q = rng.random((4, 5, 70))
    y = {ax: rng.integers(0, x.shape[ax], np.delete(x.shape, ax)) for ax in range(3)}
    red = dict(reduction="none")
    return {
        "entropy": (lambda o, ax, be, r=red: ne.entropy(p, axis=ax, out=o, backend=be, **r), p),
        "cross_entropy": (
            lambda o, ax, be, r=red: ne.cross_entropy(p, q, axis=ax, out=o, backend=be, **r),
            p,
        ),
        "kl_divergence": (
            lambda o, ax, be, r=red: ne.kl_divergence(
                p, q, normalize=True, axis=ax, out=o, backend=be, **r
            ),
            p,
        ),
        "js_divergence": (
            lambda o, ax, be, r=red: ne.js_divergence(p, q, axis=ax, out=o, backend=be, **r),
            p,
        ),
        "logsumexp": (lambda o, ax, be, r=None: ne.logsumexp(x, axis=ax, out=o, backend=be), x),
        "log_softmax": (lambda o, ax, be, r=None: ne.log_softmax(x, axis=ax, out=o, backend=be), x),
        "softmax": (lambda o, ax, be, r=None: ne.softmax(x, axis=ax, out=o, backend=be), x),
        "softmax_entropy": (
            lambda o, ax, be, r=red: ne.softmax_entropy(x, axis=ax, out=o, backend=be, **r),
            x,
        ),
        "softmax_kl_divergence": (
            lambda o, ax, be, r=red: ne.softmax_kl_divergence(
                t, x, temperature=1.5, axis=ax, out=o, backend=be, **r
            ),
            x,
        ),
        "softmax_cross_entropy": (
            lambda o, ax, be, r=red: ne.softmax_cross_entropy(
                x, y[ax % 3], axis=ax, out=o, backend=be, **r
            ),
            x,
        ),
        "softmax_cross_entropy[soft]": (
            lambda o, ax, be, r=red: ne.softmax_cross_entropy(
                x, t, label_smoothing=0.1, axis=ax, out=o, backend=be, **r
            ),
            x,
        ),
    }


OUT_FUNCS = _out_funcs()
FULL = ("log_softmax", "softmax")
NO_REDUCTION = ("logsumexp", "log_softmax", "softmax")


def _out_shape(name, arr, axis):
    return arr.shape if name in FULL else tuple(np.delete(arr.shape, axis % arr.ndim))


def _result_dtype(name, arr):
    if name.startswith("softmax_cross_entropy[soft]"):
        return np.dtype(np.float32)  # logits and soft targets are both float32
    return np.dtype(np.float64) if arr.dtype == np.float64 else np.dtype(np.float32)


def _out_views(shape, dtype):
    """name -> a fresh writable array of ``shape`` in a given memory layout (NaN-filled)."""
    views = {"contiguous": np.full(shape, np.nan, dtype)}
    if shape:
        big = np.full((*shape[:-1], 3 * shape[-1]), np.nan, dtype)
        views["strided"] = big[..., ::3]
        views["reversed"] = np.full(shape, np.nan, dtype)[..., ::-1]
    if len(shape) >= 2:
        views["fortran"] = np.asfortranarray(np.full(shape, np.nan, dtype))
    return views


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", list(OUT_FUNCS))
def test_out_in_every_layout_gives_the_result(backend, axis, name):
    call, arr = OUT_FUNCS[name]
    ref = call(None, axis, backend)
    shape = _out_shape(name, arr, axis)
    dtype = _result_dtype(name, arr)
    assert ref.shape == shape and ref.dtype == dtype
    for layout, out in _out_views(shape, dtype).items():
        got = call(out, axis, backend)
        assert got is out, (name, layout)
        np.testing.assert_array_equal(out, ref, err_msg=f"{name} {layout} axis={axis}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", [n for n in OUT_FUNCS if n not in NO_REDUCTION])
def test_out_for_reductions_is_0d(backend, reduction, name):
    call, arr = OUT_FUNCS[name]
    ref = call(None, -1, backend, dict(reduction=reduction))
    assert isinstance(ref, float)
    out = np.full((), np.nan, _result_dtype(name, arr))
    got = call(out, -1, backend, dict(reduction=reduction))
    assert got is out
    assert out[()] == np.asarray(ref, out.dtype)
    # a per-row shaped out is the wrong shape for a reduction
    with pytest.raises(ValueError, match=r"\bout\b.*shape"):
        call(np.empty(arr.shape[:-1], out.dtype), -1, backend, dict(reduction=reduction))


def test_out_for_a_single_row_is_0d():
    x = np.array([0.0, 1.0, 2.0])
    out = np.full((), np.nan)
    assert ne.softmax_entropy(x, out=out) is out
    assert out[()] == ne.softmax_entropy(x)
    out = np.full((), np.nan)
    assert ne.entropy(np.array([0.5, 0.5]), out=out) is out
    assert out[()] == np.log(2)


def _bad_outs(shape, dtype):
    """(description, bad out, exception type, message pattern)."""
    other = np.float64 if dtype == np.float32 else np.float32
    ro = np.zeros(shape, dtype)
    ro.flags.writeable = False
    bad = [
        ("shape", np.zeros((*shape, 1), dtype), ValueError, r"\bout\b.*shape"),
        ("shape()", np.zeros((), dtype), ValueError, r"\bout\b.*shape"),
        ("dtype", np.zeros(shape, other), TypeError, r"\bout\b.*dtype"),
        ("dtype int", np.zeros(shape, np.int64), TypeError, r"\bout\b.*dtype"),
        (
            "byte order",
            np.zeros(shape, np.dtype(dtype).newbyteorder(">")),
            TypeError,
            r"\bout\b.*dtype",
        ),
        ("list", np.zeros(shape, dtype).tolist(), TypeError, r"\bout\b.*ndarray"),
        ("scalar", 0.0, TypeError, r"\bout\b.*ndarray"),
        ("string", "out", TypeError, r"\bout\b.*ndarray"),
        ("read-only", ro, ValueError, r"\bout\b.*read-only"),
    ]
    if shape:
        bad.append(
            ("transposed shape", np.zeros(shape[::-1] + (2,), dtype), ValueError, r"\bout\b.*shape")
        )
    return bad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(OUT_FUNCS))
def test_wrong_out_is_a_clear_error(backend, name):
    call, arr = OUT_FUNCS[name]
    shape = _out_shape(name, arr, -1)
    dtype = _result_dtype(name, arr)
    for what, out, exc, pattern in _bad_outs(shape, dtype):
        before = out.copy() if isinstance(out, np.ndarray) else None
        with pytest.raises(exc, match=pattern) as info:
            call(out, -1, backend)
        assert re.search(r"\bout\b", str(info.value)), (what, str(info.value))
        if before is not None:
            np.testing.assert_array_equal(out, before, err_msg=f"{name}: bad out ({what}) written")


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_out_for_a_reduction(backend):
    p = np.full((3, 4), 0.25)
    for out, exc in (
        (np.zeros(3), ValueError),
        (np.zeros((), np.float32), TypeError),
        ([0.0], TypeError),
    ):
        with pytest.raises(exc, match=r"\bout\b"):
            ne.entropy(p, reduction="mean", out=out, backend=backend)


# --------------------------------------------------------------------------------------------------
# out overlapping an input


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", [5, 70, 3000])
def test_out_overlapping_the_input(backend, c):
    """An out that is (part of) the input's own memory gives the result of a separate out."""
    rng = np.random.default_rng(5)
    rows = 4000 // c + 40
    p = rng.random((rows, c))
    p /= p.sum(axis=1, keepdims=True)
    x = rng.standard_normal((rows, c))
    cases = {
        "entropy": lambda a, o: ne.entropy(a, out=o, backend=backend),
        "logsumexp": lambda a, o: ne.logsumexp(a, out=o, backend=backend),
        "softmax_entropy": lambda a, o: ne.softmax_entropy(a, out=o, backend=backend),
        "kl_divergence": lambda a, o: ne.kl_divergence(a, a[::-1].copy(), out=o, backend=backend),
        "softmax_cross_entropy": lambda a, o: ne.softmax_cross_entropy(
            a, np.zeros(rows, np.int64), out=o, backend=backend
        ),
    }
    for name, f in cases.items():
        src = p if name in ("entropy", "kl_divergence") else x
        ref = f(src, None)
        for where in ("start", "end", "column"):
            a = src.copy()
            if where == "start":
                out = a.reshape(-1)[:rows]
            elif where == "end":
                out = a.reshape(-1)[-rows:]
            else:
                out = a[:, 0]
            assert f(a, out) is out
            np.testing.assert_array_equal(out, ref, err_msg=f"{name}: out at the {where}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("c", [5, 70, 3000])
def test_softmax_in_place(backend, name, c):
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((9, c)) * 4).astype(dtype)
        ref = getattr(ne, name)(x, backend=backend)
        a = x.copy()
        assert getattr(ne, name)(a, out=a, backend=backend) is a
        np.testing.assert_array_equal(a, ref)
        # shifted by one row: out overlaps the input without being it
        buf = np.concatenate([x, np.zeros((1, c), dtype)])
        src, out = buf[:-1], buf[1:]
        assert getattr(ne, name)(src, out=out, backend=backend) is out
        np.testing.assert_array_equal(out, ref)
        # class axis not last, in place
        a = np.ascontiguousarray(x.T)
        assert getattr(ne, name)(a, axis=0, out=a, backend=backend) is a
        np.testing.assert_array_equal(a, ref.T)


# --------------------------------------------------------------------------------------------------
# The README's "What happens with bad input" table, row by row (every backend)

_X = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
_P = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
_INF, _NAN = np.inf, np.nan


class _FakeDeviceArray:
    """Anything exposing __cuda_array_interface__ counts as a device array."""

    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_INPUT = [
    # (row of the table, call(backend), exception type or None, message regex / result check)
    (
        "non-numeric array",
        lambda b: ne.entropy(np.array([["a"]]), backend=b),
        TypeError,
        r"^p must hold real numbers; got dtype <U1$",
    ),
    (
        "complex array",
        lambda b: ne.logsumexp(np.array([[1j]]), backend=b),
        TypeError,
        r"^logits must hold real numbers; got dtype complex128$",
    ),
    (
        "integer / bool logits",
        lambda b: ne.softmax(np.array([[1, 2]]), backend=b),
        TypeError,
        r"^logits must be a floating array \(float16, bfloat16, float32 or float64\); got dtype int64$",
    ),
    (
        "integer / bool probabilities",
        lambda b: ne.entropy(np.array([[1, 3]]), normalize=True, backend=b),
        None,
        lambda r: r.dtype == np.float64 and np.isclose(r[0], 0.5623351446188083),
    ),
    (
        "0-d input",
        lambda b: ne.entropy(0.5, backend=b),
        ValueError,
        r"^p must have at least one dimension \(the class axis\); got a scalar$",
    ),
    (
        "negative probability",
        lambda b: ne.kl_divergence(_P, -_P, backend=b),
        ValueError,
        r"^q has a negative entry in row 0; probabilities and counts must be >= 0$",
    ),
    (
        "NaN, nan_policy='propagate'",
        lambda b: ne.entropy(np.array([[0.5, _NAN], [0.5, 0.5]]), backend=b),
        None,
        lambda r: np.isnan(r[0]) and np.isclose(r[1], np.log(2)),
    ),
    (
        "NaN, nan_policy='raise'",
        lambda b: ne.softmax_cross_entropy(
            np.array([[0.0, 1.0], [0.0, _NAN]]), np.array([0, 1]), nan_policy="raise", backend=b
        ),
        ValueError,
        r"^nan_policy='raise': logits has a NaN in row 1$",
    ),
    (
        "+inf logit",
        lambda b: ne.softmax_entropy(np.array([[_INF, 0.0], [0.0, 0.0]]), backend=b),
        None,
        lambda r: np.isnan(r[0]) and np.isclose(r[1], np.log(2)),
    ),
    (
        "row of all -inf logits",
        lambda b: (
            ne.logsumexp(np.array([[-_INF, -_INF]]), backend=b),
            ne.softmax(np.array([[-_INF, -_INF]]), backend=b),
        ),
        None,
        lambda r: r[0][0] == -_INF and np.isnan(r[1]).all(),
    ),
    (
        "-inf logit on the label",
        lambda b: ne.softmax_cross_entropy(np.array([[-_INF, 0.0]]), np.array([0]), backend=b),
        None,
        lambda r: r[0] == _INF,
    ),
    (
        "p > 0 where q = 0",
        lambda b: ne.kl_divergence([[1.0, 0.0]], [[0.0, 1.0]], backend=b),
        None,
        lambda r: r[0] == _INF,
    ),
    (
        "normalize=True on an all-zero row",
        lambda b: ne.entropy([[0.0, 0.0]], normalize=True, backend=b),
        None,
        lambda r: np.isnan(r[0]),
    ),
    (
        "empty rows (C = 0)",
        lambda b: (
            ne.entropy(np.zeros((2, 0)), backend=b),
            ne.logsumexp(np.zeros((2, 0)), backend=b),
        ),
        None,
        lambda r: (r[0] == 0).all() and (r[1] == -_INF).all(),
    ),
    (
        "no rows, reduction='mean'",
        lambda b: ne.entropy(np.zeros((0, 3)), reduction="mean", backend=b),
        None,
        lambda r: isinstance(r, float) and np.isnan(r),
    ),
    (
        "p / q shape mismatch",
        lambda b: ne.kl_divergence(_P, _P[:, :2], backend=b),
        ValueError,
        r"^p and q must have the same shape \(or q 1-D of length C\); got \(2, 3\) and \(2, 2\)$",
    ),
    (
        "logits_p / logits_q shape mismatch",
        lambda b: ne.softmax_kl_divergence(_X, _X[:1], backend=b),
        ValueError,
        r"^logits_p and logits_q must have the same shape; got \(2, 3\) and \(1, 3\)$",
    ),
    (
        "labels of the wrong shape",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 1, 2]), backend=b),
        ValueError,
        r"^target must have shape \(2,\) \(the logits' shape without the class axis\); got \(3,\)$",
    ),
    (
        "float target of neither shape",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0.0, 1.0]), backend=b),
        ValueError,
        r"^target must be integer labels of shape \(2,\) or probabilities of the logits' shape",
    ),
    (
        "bool target",
        lambda b: ne.softmax_cross_entropy(_X, np.array([True, False]), backend=b),
        TypeError,
        r"^target must be integer class labels or floating probabilities; got bool$",
    ),
    (
        "label outside [0, C)",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 3]), backend=b),
        IndexError,
        r"^target: label 3 at row 1 is outside \[0, 3\) and is not ignore_index \(-100\)$",
    ),
    (
        "label >= 2**63 (uint64, any byte order)",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 2**64 - 100], ">u8"), backend=b),
        IndexError,
        r"^target: label 18446744073709551516 at row 1 is out of range$",
    ),
    (
        "label == ignore_index",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, -100]), reduction="mean", backend=b),
        None,
        lambda r: np.isclose(r, 2.4076059644443806),
    ),
    (
        "every label ignored",
        lambda b: (
            ne.softmax_cross_entropy(_X, np.array([-100, -100]), reduction="mean", backend=b),
            ne.softmax_cross_entropy(_X, np.array([-100, -100]), reduction="sum", backend=b),
        ),
        None,
        lambda r: np.isnan(r[0]) and r[1] == 0.0,
    ),
    (
        "ignore_index not an int",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 1]), ignore_index=1.5, backend=b),
        TypeError,
        r"^ignore_index must be an integer; got 1.5$",
    ),
    (
        "ignore_index beyond int64",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 1]), ignore_index=2**64, backend=b),
        ValueError,
        r"^ignore_index must fit in a signed 64-bit integer",
    ),
    (
        "ignore_index with soft targets",
        lambda b: ne.softmax_cross_entropy(_X, _P, ignore_index=0, backend=b),
        ValueError,
        r"^ignore_index is only supported for integer class labels",
    ),
    (
        "weight of the wrong length",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 1]), weight=np.ones(2), backend=b),
        ValueError,
        r"^weight must be a 1-D array of length C = 3; got shape \(2,\)$",
    ),
    (
        "label_smoothing outside [0, 1]",
        lambda b: ne.softmax_cross_entropy(_X, np.array([0, 1]), label_smoothing=1.5, backend=b),
        ValueError,
        r"^label_smoothing must be in \[0, 1\]; got 1.5$",
    ),
    (
        "temperature <= 0 or not finite",
        lambda b: ne.softmax_kl_divergence(_X, _X, temperature=0, backend=b),
        ValueError,
        r"^temperature must be a positive finite number whose reciprocal is finite .*; got 0$",
    ),
    (
        "base <= 0, 1, inf",
        lambda b: ne.entropy(_P, base=1, backend=b),
        ValueError,
        r"^base must be a positive finite number other than 1; got 1$",
    ),
    (
        "base not a number",
        lambda b: ne.entropy(_P, base="2", backend=b),
        TypeError,
        r"^base must be a positive real number other than 1 or None; got '2'$",
    ),
    (
        "unknown reduction / nan_policy",
        lambda b: ne.entropy(_P, reduction="avg", backend=b),
        ValueError,
        r"^reduction must be one of 'none', 'sum', 'mean'; got 'avg'$",
    ),
    (
        "axis out of range",
        lambda b: ne.entropy(_P, axis=2, backend=b),
        ValueError,
        r"^axis 2 is out of range for p with 2 dimension\(s\)$",
    ),
    (
        "axis not an int",
        lambda b: ne.entropy(_P, axis=1.0, backend=b),
        TypeError,
        r"^axis must be an integer; got 1.0$",
    ),
    (
        "out: wrong shape",
        lambda b: ne.entropy(_P, out=np.empty(3), backend=b),
        ValueError,
        r"^out has shape \(3,\); expected \(2,\)$",
    ),
    (
        "out: wrong dtype / byte order",
        lambda b: ne.entropy(_P, out=np.empty(2, np.float32), backend=b),
        TypeError,
        r"^out has dtype float32; expected float64$",
    ),
    (
        "out: not an ndarray",
        lambda b: ne.entropy(_P, out=[0.0, 0.0], backend=b),
        TypeError,
        r"^out must be a numpy.ndarray for host inputs; got list$",
    ),
    (
        "out: read-only",
        lambda b: ne.entropy(_P, out=_ro(np.zeros(2)), backend=b),
        ValueError,
        r"^out is read-only$",
    ),
    (
        "out overlapping an input",
        lambda b: (lambda a: ne.entropy(a, out=a[:, 0], backend=b))(_P.copy()),
        None,
        lambda r: np.allclose(r, ne.entropy(_P, backend="numpy")),
    ),
    (
        "teacher_logits of another shape",
        lambda b: ne.score(_X, teacher_logits=_X[:, :2], backend=b),
        ValueError,
        r"^teacher_logits must have the logits' shape \(2, 3\); got \(2, 2\)$",
    ),
    (
        "temperature not a number",
        lambda b: ne.softmax_kl_divergence(_X, _X, temperature="hot", backend=b),
        TypeError,
        r"^temperature must be a positive number; got 'hot'$",
    ),
    (
        "unknown nan_policy",
        lambda b: ne.entropy(_P, nan_policy="omit", backend=b),
        ValueError,
        r"^nan_policy must be one of 'propagate', 'raise'; got 'omit'$",
    ),
    (
        "device array with a host backend",
        lambda b: ne.logsumexp(_FakeDeviceArray(), backend=b),
        ne.BackendUnavailableError,
        r"takes host arrays; arrays on a CUDA device need backend='cuda' or 'auto'$",
    ),
    (
        "unknown backend",
        lambda b: ne.entropy(_P, backend="gpu"),
        ValueError,
        r"^backend must be one of 'auto', 'cpu', 'cuda', 'numpy'; got 'gpu'$",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row", BAD_INPUT, ids=[r[0] for r in BAD_INPUT])
def test_bad_input_table(backend, row):
    name, call, exc, expect = row
    if name == "device array with a host backend" and backend == "cuda":
        return  # the cuda backend takes device arrays
    if exc is None:
        assert expect(call(backend))
    else:
        with pytest.raises(exc) as info:
            call(backend)
        assert type(info.value) is exc
        assert re.search(expect, str(info.value)), str(info.value)


@pytest.mark.skipif(ne.backends()["cuda"].available, reason="the cuda backend is available here")
def test_bad_input_table_unavailable_backend():
    with pytest.raises(ne.BackendUnavailableError, match=r"^backend 'cuda' is unavailable: .+"):
        ne.entropy(_P, backend="cuda")
    assert issubclass(ne.BackendUnavailableError, RuntimeError)
    with ne.use_backend("cuda"), pytest.raises(ne.BackendUnavailableError):
        ne.entropy(_P)
