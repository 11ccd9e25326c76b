"""Hypothesis fuzzing: every public function x backend against the float64 oracle, adversarial input.

Each example draws a shape (every axis, C = 0 and 1, the few-class tile path C <= 64, several
1024-element blocks, and few rows x C >= 65536, where the CPU splits the class axis), values (+-inf,
NaN, subnormals, +-1e30, the float32 overflow edges 88 / 89 / 3e38, ties, whole special rows), a
dtype (float16, bfloat16, float32, float64, big-endian, integer counts, every integer label width)
and a memory layout (Fortran order, negative strides, steps over poisoned gaps, permuted storage,
zero-stride broadcasts, read-only). The backend under test runs on that input; the reference is the
oracle (``backend="numpy"``) on the float64 image of the same values, class axis last, contiguous,
so only the backend's own rounding (and the public layer's layout handling) is measured.

Comparison: NaN positions must match exactly, infinities exactly (after rounding the float64
reference to the output dtype, so a float32 result that truly overflows is an inf), and finite
values to ``atol * scale + rtol * |ref|`` with the conftest tolerances, where ``scale`` is the size of
the terms that cancel in that result (1 for well-conditioned results; e.g. sum |p log p| + |p log q|
for KL). An error raised by the oracle must be raised by the backend too, same type and message.
Two documented allowances: a result within a factor 16 of the largest finite value may come out as
an infinity of the same sign (an intermediate overflowed), and rows where the oracle's own
normalisation is inexact (a normalised entry below the float64 normal range) are not compared.

Budget: the default "ci" profile (30 derandomised examples per test) keeps the whole file to a
couple of minutes; ``NUMBAENT_FUZZ=large`` selects the "large" profile (2500 examples per test,
~15 min on 2 cores) and ``NUMBAENT_FUZZ_EXAMPLES=n`` sets the number of examples of either. The
number of examples executed is printed at exit (stderr), or use ``--hypothesis-show-statistics``.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import BF16
from conftest import TOL as _TOL
from hypothesis import HealthCheck, note, settings
from hypothesis import given as _given
from hypothesis import strategies as st

import numbaent as ne

# The kernels add float32 terms in SIMD lanes over blocks of 1024 (_blocks.BLOCK), so a lane adds up
# to 128 terms before the float64 row sum: worst case 128 roundings of the same sign, 7.6e-6
# relative, reached by rows of identical terms (which this fuzzer generates on purpose; random
# data stays near 1e-7, and tests/test_accuracy.py holds the 2e-6 bound at C = 131072). The fuzz
# checks float32 math against that documented worst case.
F32_SUM_RTOL = 128 * 2.0**-24
TOL = {
    k: (a, max(r, F32_SUM_RTOL) if k != np.dtype(np.float64) else r) for k, (a, r) in _TOL.items()
}

# --------------------------------------------------------------------------------------------------
# budget

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,  # CI sees the same examples every run: no flaky red from a random draw
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "large",
    max_examples=2500,  # about a minute per test on 2 cores (~15 min for the file)
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
PROFILE = "large" if os.environ.get("NUMBAENT_FUZZ", "").strip().lower() == "large" else "ci"
FUZZ = settings.get_profile(PROFILE)
if os.environ.get("NUMBAENT_FUZZ_EXAMPLES"):  # an explicit number of examples per test
    FUZZ = settings(FUZZ, max_examples=int(os.environ["NUMBAENT_FUZZ_EXAMPLES"]))

BACKENDS = ["cpu", "numpy"]
if ne.backends()["cuda"].available:
    BACKENDS.append("cuda")
try:
    from numbaent._cuda._config import SIM as CUDA_SIM
except Exception:  # pragma: no cover - the cuda backend itself failed to import
    CUDA_SIM = False

EXAMPLES: Counter = Counter()  # examples executed per test (and backend)


def _report():
    if EXAMPLES:
        total = sum(EXAMPLES.values())
        lines = [f"  {k}: {v}" for k, v in sorted(EXAMPLES.items())]
        print(
            f"\n[test_fuzz] profile {PROFILE}: {total} examples\n" + "\n".join(lines),
            file=sys.stderr,
        )


atexit.register(_report)


def given(*args, **kwargs):
    """hypothesis.given with the active profile and an example counter."""

    def wrap(test):
        @functools.wraps(test)
        def counted(backend, data):
            test(backend, data)
            EXAMPLES[f"{test.__name__}[{backend}]"] += 1

        return FUZZ(_given(*args, **kwargs)(counted))

    return wrap


# --------------------------------------------------------------------------------------------------
# dtypes, values

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOATS = [F64, F32, F16, BF16]
# a second input of another float type: every pair (and every read-only variant) is a fresh kernel
# specialisation, seconds of compile time each on a cold cache, so only float32 <-> float64 pairs
# of writable inputs are fuzzed
MIXED = {F32: F64, F64: F32}
INTS = [
    np.dtype(t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
]
F32_TINY = float(np.finfo(np.float32).smallest_subnormal)  # 1.4e-45
F32_MAX = float(np.finfo(np.float32).max)

SPECIAL_X = [
    math.inf,
    -math.inf,
    math.nan,
    0.0,
    -0.0,
    F32_TINY,
    -F32_TINY,
    1e-40,
    5e-324,
    1e-310,
    1e30,
    -1e30,
    88.0,
    89.0,
    -88.0,
    -89.0,
    88.72,
    -103.97,
    3e38,
    -3e38,
    F32_MAX,
    -F32_MAX,
    65504.0,
    -65504.0,
    709.8,
    710.0,
    -745.2,
    1e300,
    -1e300,
    1.0,
    -1.0,
    0.5,
]
SPECIAL_P = [
    0.0,
    -0.0,
    math.inf,
    math.nan,
    F32_TINY,
    1e-40,
    5e-324,
    1e-310,
    1e-30,
    1e30,
    3e38,
    F32_MAX,
    1e300,
    1.0,
    0.5,
    1e-8,
    65504.0,
    6e-8,
]
NEGATIVE_P = [-1e-30, -1.0, -F32_TINY, -math.inf]


def f64(a):
    return np.asarray(a, dtype=np.float64)


def _single(dt):
    """float32 math: float32 and the half types."""
    return np.dtype(dt) in (F32, F16, BF16)


def cast(a, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a).astype(dtype)


# --------------------------------------------------------------------------------------------------
# shapes


@st.composite
def shapes(draw, max_elems=200_000, split=True):
    """(shape, axis, C, batch shape) with the class axis at ``axis``."""
    small = "cuda" in BACKENDS and CUDA_SIM
    kinds = ["one", "zero", "tile", "tile", "block", "multi", "multi"]
    if split and not small:
        kinds += ["split"]
    kind = draw(st.sampled_from(kinds), label="C kind")
    if kind == "one":
        c = 1
    elif kind == "zero":
        c = 0
    elif kind == "tile":
        c = draw(st.integers(2, 64))
    elif kind == "block":
        c = draw(st.integers(65, 1100))
    elif kind == "multi":
        c = draw(st.sampled_from([1023, 1024, 1025, 2047, 2048, 2049, 3000, 4097]))
    else:
        c = draw(st.sampled_from([65535, 65536, 65537, 70001]))
    if small:
        max_elems = 6000
        c = min(c, 2100)
    ndim = draw(st.integers(1, 3), label="ndim")
    axis = draw(st.integers(-ndim, ndim - 1), label="axis")
    cap = max(1, max_elems // max(c, 1))
    if kind == "split":
        cap = min(cap, 3)  # few rows: N < 16
    batch = []
    for _ in range(ndim - 1):
        n = draw(st.integers(0, 1) | st.integers(2, 40), label="batch dim")
        batch.append(min(n, cap))
        cap = max(1, cap // max(batch[-1], 1))
    batch = tuple(batch)
    shape = list(batch)
    shape.insert(axis % ndim, c)
    return tuple(shape), axis, c, batch


# --------------------------------------------------------------------------------------------------
# values: drawn in the class-last layout (N, C), then moved to ``axis`` and laid out in memory


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))


@st.composite
def logit_values(draw, n, c):
    rng = _rng(draw)
    kind = draw(
        st.sampled_from(["normal", "normal", "huge", "wide", "grid", "const", "edge"]),
        label="logit kind",
    )
    shape = (n, c)
    if kind == "normal":
        x = rng.standard_normal(shape) * float(rng.choice([1.0, 3.0, 30.0, 300.0]))
    elif kind == "huge":
        x = rng.standard_normal(shape) * 1e30
    elif kind == "wide":
        x = rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-45, 38.5, shape)
    elif kind == "grid":
        x = rng.integers(-4, 5, shape).astype(np.float64)
    elif kind == "const":
        x = np.full(shape, float(rng.choice([v for v in SPECIAL_X if math.isfinite(v)])))
    else:
        x = rng.choice([88.0, 89.0, -88.0, -89.0, 3e38, -3e38, 0.0, 1e30, -1e30], shape)
    _inject(draw, x, SPECIAL_X)
    return x


@st.composite
def prob_values(draw, n, c, negative_ok=True):
    rng = _rng(draw)
    kind = draw(
        st.sampled_from(["simplex", "simplex", "counts", "wide", "onehot", "tiny", "scaled"]),
        label="prob kind",
    )
    shape = (n, c)
    if kind in ("simplex", "scaled"):
        x = rng.random(shape)
        x[rng.random(shape) < 0.2] = 0.0
        s = x.sum(axis=1, keepdims=True)
        x = np.divide(x, s, out=np.zeros_like(x), where=s > 0)
        if kind == "scaled":
            x *= float(rng.choice([1e-30, 7.0, 1e30]))
    elif kind == "counts":
        x = rng.integers(0, 5, shape).astype(np.float64)
    elif kind == "wide":
        x = 10.0 ** rng.uniform(-45, 30, shape)
        x[rng.random(shape) < 0.2] = 0.0
    elif kind == "onehot":
        x = np.zeros(shape)
        if c:
            x[np.arange(n), rng.integers(0, c, n)] = 1.0
    else:
        x = rng.random(shape) * 1e-40
    specials = SPECIAL_P
    if negative_ok and draw(st.integers(0, 9), label="negatives?") == 0:
        specials = SPECIAL_P + NEGATIVE_P
    _inject(draw, x, specials)
    return x, kind


def _inject(draw, x, specials):
    """Special values at drawn positions, and whole special rows."""
    n, c = x.shape
    if x.size == 0:
        return
    for _ in range(draw(st.integers(0, 6), label="specials")):
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, c - 1))
        x[i, j] = draw(st.sampled_from(specials))
    for _ in range(draw(st.integers(0, 2), label="special rows")):
        i = draw(st.integers(0, n - 1))
        v = draw(st.sampled_from(specials))
        if draw(st.booleans()):
            x[i, :] = v
        else:  # the special value everywhere but one place
            keep = x[i, draw(st.integers(0, c - 1))]
            x[i, :] = v
            x[i, draw(st.integers(0, c - 1))] = keep


def _to_axis(rows, batch, c, axis, ndim):
    """(N, C) class-last rows -> an array with the class axis at ``axis``."""
    return np.moveaxis(rows.reshape(*batch, c), -1, axis % ndim)


@st.composite
def layout(draw, a, poison):
    """``a``'s values in another memory layout (a view over a different buffer). ``poison`` fills
    the gaps of stepped views, so reading outside the view shows up in the result."""
    kinds = ["c", "c", "f", "neg", "step", "perm"]
    if a.ndim >= 2 and a.size:
        kinds.append("bcast")
    kind = draw(st.sampled_from(kinds), label="layout")
    if kind == "c" or a.ndim == 0:
        v = np.ascontiguousarray(a)
    elif kind == "f":
        v = np.asfortranarray(a)
    elif kind == "neg":
        ax = draw(st.integers(0, a.ndim - 1))
        v = np.flip(np.ascontiguousarray(np.flip(a, ax)), ax)
    elif kind == "step":
        ax = draw(st.integers(0, a.ndim - 1))
        step = draw(st.sampled_from([2, 3, -2]))
        big = list(a.shape)
        big[ax] = a.shape[ax] * abs(step)
        buf = np.full(big, poison, dtype=a.dtype)
        sl = [slice(None)] * a.ndim
        sl[ax] = slice(None, None, step)
        v = buf[tuple(sl)]
        v[...] = a
    elif kind == "perm":
        perm = draw(st.permutations(range(a.ndim)))
        v = np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))
    else:  # a zero stride: every slice along ``ax`` is the first one (changes the values)
        ax = draw(st.integers(0, a.ndim - 1))
        first = np.take(a, [0], axis=ax) if a.shape[ax] else a
        v = np.broadcast_to(first, a.shape)
    note(f"layout {kind}: shape {v.shape} strides {v.strides} dtype {v.dtype}")
    return v


def big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


@st.composite
def finalize(draw, a, poison, readonly):
    """Byte order (sometimes big-endian), layout and read-only flag of one input."""
    if a.dtype != BF16 and a.dtype.itemsize > 1 and draw(st.integers(0, 4), label="BE?") == 0:
        a = big_endian(a)
    v = draw(layout(a, poison))
    if readonly and v.flags.writeable:
        v = v.view()
        v.flags.writeable = False
    return v


def poison_of(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "f" or dt == BF16:
        return np.nan
    if dt.kind == "b":
        return True
    return np.iinfo(dt).max


def ref_rows(v, axis):
    """float64 image of ``v`` with the class axis last, C-contiguous (the oracle's input)."""
    return np.ascontiguousarray(np.moveaxis(f64(v), axis, -1))


# --------------------------------------------------------------------------------------------------
# comparison


def out_dtype(*inputs):
    for a in inputs:
        if a is not None and np.dtype(a.dtype).newbyteorder("=") not in (F32, F16, BF16):
            return F64  # float64, or integer / bool counts (converted to float64)
    return F32


def tol_dtype(*inputs):
    """Tolerance class: the least precise float input (half math is float32)."""
    dts = [np.dtype(a.dtype).newbyteorder("=") for a in inputs if a is not None]
    return F32 if any(d in (F32, F16, BF16) for d in dts) else F64


NEAR_OVERFLOW = 1 / 16


def rounded(ref, dtype):
    """The float64 reference rounded to the result dtype (a true float32 overflow is an inf)."""
    return f64(cast(ref, dtype))


def assert_match(got, ref, dtype, tdtype, scale=None, what="", skip=None):
    """NaN and inf positions exact; finite values within atol * scale + rtol * |ref|. Positions
    where ``skip`` is true are not compared (the oracle itself is inexact there)."""
    got_a = np.asarray(got)
    assert got_a.dtype == dtype, (what, got_a.dtype, dtype)
    ref_r = rounded(ref, dtype)
    g = f64(got_a)
    if skip is not None and np.any(skip):
        g = np.where(skip, 0.0, g)
        ref_r = np.where(skip, 0.0, ref_r)
    assert g.shape == ref_r.shape, (what, g.shape, ref_r.shape)
    gnan, rnan = np.isnan(g), np.isnan(ref_r)
    if not np.array_equal(gnan, rnan):
        bad = np.argwhere(gnan != rnan)[:5]
        raise AssertionError(
            f"{what}: NaN positions differ at {bad.tolist()}: got {g[tuple(bad.T)]} "
            f"ref {ref_r[tuple(bad.T)]}"
        )
    # a result within a factor 16 of the largest finite value may overflow in an intermediate
    # (float32 math on logits of 3e38, scaled by 1/T): an infinity of the right sign is accepted,
    # either way round (the oracle's log q of -1e308 - 1e308 is -inf; a KL of 9.8e307 is not)
    big = NEAR_OVERFLOW * np.finfo(dtype).max
    with np.errstate(invalid="ignore"):
        near = (np.isinf(g) & (np.abs(ref_r) >= big)) | (np.isinf(ref_r) & (np.abs(g) >= big))
        near &= np.sign(g) == np.sign(ref_r)
    ref_r = np.where(near, g, ref_r)
    ginf, rinf = np.isinf(g), np.isinf(ref_r)
    both = ~rnan
    if not np.array_equal(np.where(ginf, g, 0)[both], np.where(rinf, ref_r, 0)[both]):
        bad = np.argwhere((ginf | rinf) & (g != ref_r))[:5]
        raise AssertionError(
            f"{what}: infinities differ at {bad.tolist()}: got {g[tuple(bad.T)]} "
            f"ref {f64(ref)[tuple(bad.T)]}"
        )
    fin = np.isfinite(g) & np.isfinite(ref_r)
    atol, rtol = TOL[tdtype]
    s = np.ones_like(g) if scale is None else np.broadcast_to(np.maximum(f64(scale), 1.0), g.shape)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: compared above
        err = np.abs(g - ref_r)
    lim = atol * s + rtol * np.abs(ref_r)
    over = fin & ~(err <= lim)
    if over.any():
        bad = np.argwhere(over)[:5]
        idx = tuple(bad.T)
        raise AssertionError(
            f"{what}: |got - ref| > tol at {bad.tolist()}: got {g[idx]} ref {f64(ref)[idx]} "
            f"err {err[idx]} tol {lim[idx]} (dtype {dtype}, tol class {tdtype})"
        )


def assert_reduced(got, ref_rows_, reduction, dtype, tdtype, scale=None, denom=None, what=""):
    """A "sum"/"mean" result against the float64 sum of the reference rows rounded to ``dtype``
    (the rows the backend actually adds up)."""
    assert isinstance(got, float), (what, type(got))
    rows = rounded(ref_rows_, dtype).reshape(-1)
    near = np.any(np.abs(rows) >= NEAR_OVERFLOW * np.finfo(dtype).max)
    if math.isinf(got) and near:
        return  # a row near the overflow threshold overflowed (see assert_match)
    total = float(np.sum(rows, dtype=np.float64))
    if math.isinf(total) and near and abs(got) >= NEAR_OVERFLOW * np.finfo(dtype).max:
        return  # the reverse: the backend sums rows in nats and changes the base after the sum
    if math.isinf(total) and near and math.isfinite(got):
        # rows finite in nats but beyond the dtype in bits: the backend sums in nats (float64) and
        # changes the base after the sum, so its mean is the float64 one, finite (more exact)
        rows = f64(ref_rows_).reshape(-1)  # and the tolerance is that of these rows too
        total = float(np.sum(rows, dtype=np.float64))
    if reduction == "mean":
        d = rows.size if denom is None else denom
        expect = total / d if d != 0 else math.nan
    else:
        d, expect = 1.0, total
    atol, rtol = TOL[tdtype]
    s = np.ones_like(rows) if scale is None else np.maximum(f64(scale).reshape(-1), 1.0)
    fin = np.isfinite(rows)
    lim = float(np.sum(atol * s[fin] + rtol * np.abs(rows[fin]))) / (abs(d) if d else 1.0)
    if math.isnan(expect) or math.isinf(expect):
        assert (math.isnan(got) and math.isnan(expect)) or got == expect, (what, got, expect)
    else:
        assert abs(got - expect) <= lim * 1.0001 + 1e-300, (what, got, expect, lim)


def run(call):
    """(result, None) or (None, exception)."""
    try:
        return call(), None
    except (ValueError, TypeError, IndexError) as exc:
        return None, exc


def same_error(got_exc, ref_exc, what=""):
    if ref_exc is None:
        if got_exc is not None:
            raise AssertionError(f"{what}: the backend raised, the oracle did not") from got_exc
        return False
    assert got_exc is not None, f"{what}: the oracle raised {ref_exc!r}, the backend did not"
    assert type(got_exc) is type(ref_exc) and str(got_exc) == str(ref_exc), (what, got_exc, ref_exc)
    return True


# --------------------------------------------------------------------------------------------------
# condition scales: the size of the terms a result is the (cancelling) sum of


def _xlogy_abs(x, y):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.abs(x * np.log(y))
    return np.where(x == 0, 0.0, t)


def _rowsum(t):
    with np.errstate(over="ignore", invalid="ignore"):
        return t.sum(axis=-1) if t.shape[-1] else np.zeros(t.shape[:-1])


def prob_scale(func, p, q, normalize):
    """sum |p log p| (+ sum |p log q|, + the mixture terms for JS) per row, float64. With
    normalize, also |log Sp| + |log Sq|: the kernels take H(p / S) = log S - sum p log p / S in
    one pass, whose terms cancel to ~eps |log S| (counts summing to 1e30: 4e-6 in float32)."""
    logs = 0.0
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            sp = p.sum(axis=-1, keepdims=True)
            logs = np.abs(np.log(sp[..., 0]))
            p = p / sp
            if q is not None:
                sq = q.sum(axis=-1, keepdims=True)
                logs = logs + np.abs(np.log(np.broadcast_to(sq, sp.shape)[..., 0]))
                q = q / sq
    s = _rowsum(_xlogy_abs(p, p)) + logs
    if func in ("cross_entropy", "kl_divergence"):
        s = s + _rowsum(_xlogy_abs(p, np.broadcast_to(q, p.shape)))
    elif func == "js_divergence":
        qb = np.broadcast_to(q, p.shape)
        m = (p + qb) / 2
        s = s + _rowsum(_xlogy_abs(qb, qb) + _xlogy_abs(p, m) + _xlogy_abs(qb, m))
    return np.where(np.isfinite(s), s, 1.0)


def normalize_inexact(p, q, normalize):
    """Rows where the oracle's normalisation (divide by the row sum first) is inexact in float64:
    a positive entry whose normalised value is subnormal or 0. The kernels work in the log
    domain there (log Sq - sum p log q / Sp) and are more accurate than the oracle."""
    if not normalize:
        return None
    tiny = np.finfo(np.float64).tiny
    bad = np.zeros(p.shape[:-1], bool)
    for a in (p, q):
        if a is None:
            continue
        a = np.broadcast_to(a, p.shape)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = a / a.sum(axis=-1, keepdims=True)
            bad |= np.any((a > 0) & (np.abs(r) < tiny), axis=-1)
    return bad


def logit_scale(x):
    """max |x - rowmax| over the classes that carry probability mass (exp(x - max) > 1e-30): the
    size of the log-probabilities a softmax-weighted sum is taken over."""
    if x.shape[-1] == 0:
        return np.zeros(x.shape[:-1])
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(np.where(np.isnan(x), -np.inf, x), axis=-1, keepdims=True)
        d = x - np.where(np.isfinite(m), m, 0.0)
        live = d > -70.0
        s = np.max(np.where(live & np.isfinite(d), np.abs(d), 0.0), axis=-1)
        s = s + np.abs(np.where(np.isfinite(m[..., 0]), m[..., 0], 0.0)) * 0  # shift-free
    return s


# --------------------------------------------------------------------------------------------------
# the tests


def _choose(draw, name, values):
    return draw(st.sampled_from(values), label=name)


def _out_for(draw, shape, dtype):
    """None, a contiguous out, or a strided one."""
    k = draw(st.sampled_from(["none", "none", "c", "strided"]), label="out")
    if k == "none":
        return None
    if k == "c":
        return np.full(shape, np.nan, dtype)
    buf = np.full((*shape, 2), np.nan, dtype)
    return buf[..., 1]


PROB_FUNCS = ["entropy", "cross_entropy", "kl_divergence", "js_divergence"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_probability_functions(backend, data):
    draw = data.draw
    func = _choose(draw, "func", PROB_FUNCS)
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    normalize = draw(st.booleans(), label="normalize")
    pv, pkind = draw(prob_values(n, c))
    dt = _choose(draw, "p dtype", [*FLOATS, F64, F32])
    if pkind == "counts" and draw(st.booleans(), label="integer counts"):
        dt = _choose(draw, "count dtype", [*INTS, np.dtype(bool)])
    p = _to_axis(cast(pv, dt), batch, c, axis, ndim)
    q = None
    readonly = draw(st.booleans(), label="read-only")
    if func != "entropy":
        qv, _ = draw(prob_values(n, c))
        qdt = dt if readonly or draw(st.integers(0, 4)) else MIXED.get(dt, dt)
        shared = draw(st.integers(0, 4), label="shared q") == 0 and n > 0
        if shared:
            q = cast(qv[0], qdt)
        else:
            q = _to_axis(cast(qv, qdt), batch, c, axis, ndim)
        q = draw(finalize(q, poison_of(q.dtype), readonly))
    p = draw(finalize(p, poison_of(p.dtype), readonly))
    base = _choose(draw, "base", [None, None, 2, 10.0])
    reduction = _choose(draw, "reduction", ["none", "none", "sum", "mean"])
    nan_policy = _choose(draw, "nan_policy", ["propagate", "propagate", "raise"])
    odt = out_dtype(p, q)
    out = _out_for(draw, batch, odt) if reduction == "none" and batch else None
    kw = dict(base=base, normalize=normalize, reduction=reduction, nan_policy=nan_policy)
    f = getattr(ne, func)
    args = (p,) if q is None else (p, q)
    got, got_exc = run(lambda: f(*args, axis=axis, backend=backend, out=out, **kw))
    p64 = ref_rows(p, axis)
    q64 = (
        None if q is None else (f64(q) if q.ndim == 1 and q.shape != p.shape else ref_rows(q, axis))
    )
    rargs = (p64,) if q is None else (p64, q64)
    ref, ref_exc = run(lambda: f(*rargs, backend="numpy", **kw))
    what = f"{func}[{backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    rows = f(*rargs, backend="numpy", **{**kw, "reduction": "none", "nan_policy": "propagate"})
    scale = prob_scale(func, p64, q64, normalize) / math.log(base or math.e)
    td = tol_dtype(p, q)
    skip = normalize_inexact(p64, q64, normalize)
    if reduction == "none":
        assert_match(got, ref, odt, td, scale, what, skip=skip)
        if out is not None:
            assert got is out
        elif not batch:
            assert isinstance(got, np.generic), type(got)
    elif skip is None or not skip.any():
        assert_reduced(got, rows, reduction, odt, td, scale, what=what)


SINGLE_LOGIT = ["logsumexp", "softmax_entropy", "log_softmax", "softmax"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_single_logit_functions(backend, data):
    draw = data.draw
    func = _choose(draw, "func", SINGLE_LOGIT)
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    dt = _choose(draw, "dtype", FLOATS)
    xv = draw(logit_values(n, c))
    x = draw(
        finalize(
            _to_axis(cast(xv, dt), batch, c, axis, ndim),
            np.nan,
            draw(st.booleans(), label="read-only"),
        )
    )
    f = getattr(ne, func)
    odt = out_dtype(x)
    kw = {}
    full = func in ("log_softmax", "softmax")
    if func == "softmax_entropy":
        kw = dict(
            base=_choose(draw, "base", [None, 2]),
            reduction=_choose(draw, "reduction", ["none", "none", "sum", "mean"]),
            nan_policy=_choose(draw, "nan_policy", ["propagate", "raise"]),
        )
    out = None
    if kw.get("reduction", "none") == "none" and (full or batch):
        out = _out_for(draw, shape if full else batch, odt)
    got, got_exc = run(lambda: f(x, axis=axis, backend=backend, out=out, **kw))
    x64 = ref_rows(x, axis)
    ref, ref_exc = run(lambda: f(x64, backend="numpy", **kw))
    what = f"{func}[{backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    td = tol_dtype(x)
    scale = None
    if func == "softmax_entropy":
        scale = logit_scale(x64)
    elif func == "log_softmax":
        scale = None
    if full:
        ref = np.moveaxis(ref, -1, axis)
    if kw.get("reduction", "none") == "none":
        assert_match(got, ref, odt, td, scale, what)
        if out is not None:
            assert got is out
    else:
        rows = f(x64, backend="numpy", **{**kw, "reduction": "none", "nan_policy": "propagate"})
        assert_reduced(got, rows, kw["reduction"], odt, td, scale, what=what)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_softmax_kl_divergence(backend, data):
    draw = data.draw
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    dt = _choose(draw, "dtype", FLOATS)
    readonly = draw(st.booleans(), label="read-only")
    qdt = dt if readonly or draw(st.integers(0, 4)) else MIXED.get(dt, dt)
    pv = draw(logit_values(n, c))
    if draw(st.integers(0, 2), label="q kind") == 0:  # q a perturbation of p (KL near 0)
        rng = _rng(draw)
        with np.errstate(invalid="ignore", over="ignore"):
            qv = pv + rng.standard_normal(pv.shape) * float(rng.choice([1e-3, 0.1]))
    else:
        qv = draw(logit_values(n, c))
    lp = draw(finalize(_to_axis(cast(pv, dt), batch, c, axis, ndim), np.nan, readonly))
    lq = draw(finalize(_to_axis(cast(qv, qdt), batch, c, axis, ndim), np.nan, readonly))
    temperature = _choose(draw, "temperature", [1.0, 1.0, 2.5, 0.5, 0.7, 1e-3, 1e3])
    kw = dict(
        temperature=temperature,
        base=_choose(draw, "base", [None, 2]),
        reduction=_choose(draw, "reduction", ["none", "none", "sum", "mean"]),
        nan_policy=_choose(draw, "nan_policy", ["propagate", "raise"]),
    )
    odt = out_dtype(lp, lq)
    out = _out_for(draw, batch, odt) if kw["reduction"] == "none" and batch else None
    got, got_exc = run(
        lambda: ne.softmax_kl_divergence(lp, lq, axis=axis, backend=backend, out=out, **kw)
    )
    p64, q64 = ref_rows(lp, axis), ref_rows(lq, axis)
    ref, ref_exc = run(lambda: ne.softmax_kl_divergence(p64, q64, backend="numpy", **kw))
    what = f"softmax_kl_divergence[{backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    td = tol_dtype(lp, lq)
    scale = np.maximum(logit_scale(p64 / temperature), logit_scale(q64 / temperature))
    if kw["reduction"] == "none":
        assert_match(got, ref, odt, td, scale, what)
    else:
        rows = ne.softmax_kl_divergence(
            p64, q64, backend="numpy", **{**kw, "reduction": "none", "nan_policy": "propagate"}
        )
        assert_reduced(got, rows, kw["reduction"], odt, td, scale, what=what)


@st.composite
def labels_for(draw, batch, c):
    """(labels view, ignore_index) with a drawn integer dtype; sometimes ignored rows, a label out
    of range, a uint64 label beyond int64, an ignore_index no label can equal or one that does not
    fit int64 (ValueError)."""
    dt = np.dtype(_choose(draw, "label dtype", INTS))
    info = np.iinfo(dt)
    rng = _rng(draw)
    n = math.prod(batch)
    hi = min(c, int(info.max) + 1)
    y = (rng.integers(0, hi, size=n) if hi > 0 else np.zeros(n, np.int64)).astype(dt)
    ignore_index = _choose(
        draw, "ignore_index", [-100, -100, -1, 0, c - 1, c, int(info.max), 2**62, 2**64 - 1]
    )
    representable = int(info.min) <= ignore_index <= int(info.max)
    if n and representable:
        y[rng.random(n) < 0.2] = ignore_index
        if c == 0:
            y[:] = ignore_index  # else every label is out of range: an IndexError
    if n and draw(st.integers(0, 7), label="bad label?") == 0:
        bad = [
            v
            for v in (c, -1, -101, int(info.max), int(info.min))
            if int(info.min) <= v <= int(info.max) and not 0 <= v < c and v != ignore_index
        ]
        if bad:
            y[draw(st.integers(0, n - 1))] = draw(st.sampled_from(bad))
    ya = y.reshape(batch)
    yv = draw(finalize(ya, poison_of(dt), draw(st.booleans(), label="labels read-only")))
    return yv, ignore_index


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_softmax_cross_entropy_labels(backend, data):
    draw = data.draw
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    dt = _choose(draw, "dtype", FLOATS)
    x = draw(
        finalize(
            _to_axis(cast(draw(logit_values(n, c)), dt), batch, c, axis, ndim),
            np.nan,
            draw(st.booleans(), label="read-only"),
        )
    )
    y, ignore_index = draw(labels_for(batch, c))
    weight = None
    if draw(st.booleans(), label="weighted"):
        rng = _rng(draw)
        w = rng.random(c) * 2
        w[rng.random(c) < 0.1] = 0.0  # class weight 0 (test_known_oracle_zero_weight)
        weight = draw(finalize(cast(w, _choose(draw, "weight dtype", [F64, F32])), np.nan, False))
    kw = dict(
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=_choose(draw, "label_smoothing", [0.0, 0.0, 0.1, 1.0]),
        reduction=_choose(draw, "reduction", ["none", "none", "sum", "mean"]),
        base=_choose(draw, "base", [None, 2]),
        nan_policy=_choose(draw, "nan_policy", ["propagate", "raise"]),
    )
    odt = out_dtype(x)
    out = _out_for(draw, batch, odt) if kw["reduction"] == "none" and batch else None
    got, got_exc = run(
        lambda: ne.softmax_cross_entropy(x, y, axis=axis, backend=backend, out=out, **kw)
    )
    x64 = ref_rows(x, axis)
    y_ref = np.ascontiguousarray(y).astype(y.dtype.newbyteorder("="))
    kw_ref = {**kw, "weight": None if weight is None else f64(weight)}
    ref, ref_exc = run(lambda: ne.softmax_cross_entropy(x64, y_ref, backend="numpy", **kw_ref))
    what = f"softmax_cross_entropy[{backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    td = tol_dtype(x)
    # the loss is a weighted sum of log-probabilities: scale by their size and the weights
    wmax = 1.0 if weight is None else float(np.max(f64(weight), initial=1.0))
    scale = wmax * (1.0 + logit_scale(x64) * (kw["label_smoothing"] > 0))
    if kw["reduction"] == "none":
        assert_match(got, ref, odt, td, scale, what)
    else:
        rows = ne.softmax_cross_entropy(
            x64,
            y_ref,
            backend="numpy",
            **{**kw_ref, "reduction": "none", "nan_policy": "propagate"},
        )
        yr = y_ref.astype(np.int64).reshape(-1)
        keep = (yr != ignore_index) & (yr >= 0) & (yr < c)
        wv = np.ones(c) if weight is None else f64(weight)
        denom = float(np.sum(wv[yr[keep]]))
        assert_reduced(got, rows, kw["reduction"], odt, td, scale, denom=denom, what=what)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_softmax_cross_entropy_soft(backend, data):
    draw = data.draw
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    dt = _choose(draw, "dtype", FLOATS)
    readonly = draw(st.booleans(), label="read-only")
    tdt = dt if readonly or draw(st.integers(0, 4)) else MIXED.get(dt, dt)
    x = draw(
        finalize(
            _to_axis(cast(draw(logit_values(n, c)), dt), batch, c, axis, ndim),
            np.nan,
            readonly,
        )
    )
    tv, _ = draw(prob_values(n, c, negative_ok=False))
    t = draw(finalize(_to_axis(cast(tv, tdt), batch, c, axis, ndim), np.nan, readonly))
    weight = None
    if draw(st.booleans(), label="weighted"):
        weight = _rng(draw).random(c) * 2
    kw = dict(
        weight=weight,
        label_smoothing=_choose(draw, "label_smoothing", [0.0, 0.0, 0.1, 1.0]),
        reduction=_choose(draw, "reduction", ["none", "none", "sum", "mean"]),
        base=_choose(draw, "base", [None, 2]),
        nan_policy=_choose(draw, "nan_policy", ["propagate", "raise"]),
    )
    odt = out_dtype(x, t)
    out = _out_for(draw, batch, odt) if kw["reduction"] == "none" and batch else None
    got, got_exc = run(
        lambda: ne.softmax_cross_entropy(x, t, axis=axis, backend=backend, out=out, **kw)
    )
    x64, t64 = ref_rows(x, axis), ref_rows(t, axis)
    ref, ref_exc = run(lambda: ne.softmax_cross_entropy(x64, t64, backend="numpy", **kw))
    what = f"softmax_cross_entropy[soft, {backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    td = tol_dtype(x, t)
    # sum_j coef_j (lse - x_j): the terms have the size of the coefficients times the log-probs
    with np.errstate(invalid="ignore", over="ignore"):
        wv = np.ones(c) if weight is None else weight
        coef = np.abs(t64) * (1 - kw["label_smoothing"]) + kw["label_smoothing"] / max(c, 1)
        mass = _rowsum(np.where(np.isfinite(coef), coef, 0.0) * wv)
    scale = np.maximum(mass, 1.0) * (1.0 + logit_scale(x64))
    scale = np.where(np.isfinite(scale), scale, 1.0)
    if kw["reduction"] == "none":
        assert_match(got, ref, odt, td, scale, what)
    else:
        rows = ne.softmax_cross_entropy(
            x64, t64, backend="numpy", **{**kw, "reduction": "none", "nan_policy": "propagate"}
        )
        assert_reduced(got, rows, kw["reduction"], odt, td, scale, what=what)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_score(backend, data):
    draw = data.draw
    shape, axis, c, batch = draw(shapes())
    n = math.prod(batch)
    ndim = len(shape)
    dt = _choose(draw, "dtype", FLOATS)
    readonly = draw(st.booleans(), label="read-only")
    has_teacher = draw(st.booleans(), label="teacher")
    xv = draw(logit_values(n, c))
    x = draw(finalize(_to_axis(cast(xv, dt), batch, c, axis, ndim), np.nan, readonly))
    y, ignore_index = (None, -100)
    if draw(st.booleans(), label="labels"):
        y, ignore_index = draw(labels_for(batch, c))
    teacher = None
    if has_teacher:
        tv = draw(logit_values(n, c))
        teacher = draw(finalize(_to_axis(cast(tv, dt), batch, c, axis, ndim), np.nan, readonly))
    temperature = _choose(draw, "temperature", [1.0, 2.0, 0.5, 0.7, 3.0])
    base = _choose(draw, "base", [None, 2])
    kw = dict(temperature=temperature, ignore_index=ignore_index, base=base)
    got, got_exc = run(
        lambda: ne.score(x, y, teacher_logits=teacher, axis=axis, backend=backend, **kw)
    )
    x64 = ref_rows(x, axis)
    t64 = None if teacher is None else ref_rows(teacher, axis)
    y_ref = None if y is None else np.ascontiguousarray(y).astype(y.dtype.newbyteorder("="))
    ref, ref_exc = run(lambda: ne.score(x64, y_ref, teacher_logits=t64, backend="numpy", **kw))
    what = f"score[{backend}]"
    if same_error(got_exc, ref_exc, what):
        return
    odt = out_dtype(x)
    td = tol_dtype(x)
    np.testing.assert_array_equal(got.argmax, ref.argmax, err_msg=what)
    assert got.argmax.dtype == np.int64
    for field in ("correct", "ignored", "rank"):
        g, r = getattr(got, field), getattr(ref, field)
        assert (g is None) == (r is None), field
        if g is not None:
            assert g.dtype == (np.int64 if field == "rank" else np.bool_)
            np.testing.assert_array_equal(g, r, err_msg=f"{what}.{field}")
    scales = {
        "logsumexp": None,
        "entropy": logit_scale(x64 / temperature),
        "confidence": None,
        "margin": None,
        "brier": None,
        "cross_entropy": None,
        "kl_divergence": None
        if t64 is None
        else np.maximum(logit_scale(t64 / temperature), logit_scale(x64 / temperature)),
    }
    for field, sc in scales.items():
        g, r = getattr(got, field), getattr(ref, field)
        assert (g is None) == (r is None), field
        if g is not None:
            assert_match(g, r, odt, td, sc, f"{what}.{field}")
    gs, rs = got.summary(), ref.summary()
    assert gs["rows"] == rs["rows"] and gs["ignored"] == rs["ignored"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_partial_states(backend, data):
    """The sharded-vocabulary API: partial_state over random class slices (2-D rows), combined in
    a random order and grouping, finished, against the oracle's score on the whole rows."""
    from numbaent.partial import combine, finish, partial_state

    draw = data.draw
    n = draw(st.integers(0, 5), label="rows")
    c = draw(st.integers(1, 70), label="classes")
    dt = _choose(draw, "dtype", FLOATS)
    x = cast(draw(logit_values(n, c)), dt)
    y = None
    if draw(st.booleans(), label="labels"):
        rng = _rng(draw)
        y = rng.integers(0, c, n)
        y[rng.random(n) < 0.2] = -100  # ignored rows (the default ignore_index)
    cuts = draw(st.lists(st.integers(1, max(1, c - 1)), max_size=3, unique=True), label="cuts")
    bounds = [0] + sorted(k for k in cuts if 0 < k < c) + [c]
    ll = None if y is None or not c else x[np.arange(n), np.where(y < 0, 0, y)]  # x[label]
    states = [
        partial_state(x[:, a:b], y, class_offset=a, label_logits=ll, backend=backend)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    order = draw(st.permutations(range(len(states))), label="order")
    states = [states[k] for k in order]
    if len(states) > 2 and draw(st.booleans(), label="nested"):
        states = [combine(states[:2]), *states[2:]]
    got = finish(combine(states), num_classes=c)
    ref = ne.score(f64(x), y, backend="numpy")
    what = f"partial[{backend}]"
    np.testing.assert_array_equal(got.argmax, ref.argmax, err_msg=what)
    if y is not None:
        np.testing.assert_array_equal(got.correct, ref.correct, err_msg=what)
        np.testing.assert_array_equal(got.rank, ref.rank, err_msg=what)
    odt, td = out_dtype(x), tol_dtype(x)
    for field, sc in (
        ("logsumexp", None),
        ("entropy", logit_scale(f64(x))),
        ("cross_entropy", None),
        ("confidence", None),
        ("margin", None),
        ("brier", None),
    ):
        g, r = getattr(got, field), getattr(ref, field)
        assert (g is None) == (r is None), field
        if g is not None:
            assert_match(g, r, odt, td, sc, f"{what}.{field}")


# --------------------------------------------------------------------------------------------------
# Regression tests: minimal reproducers of the bugs this fuzzer found (float32 overflow of
# intermediates, temperature scaling, reference lag, subnormal and infinite probabilities, -inf
# student logits, the oracle's class-weight-0 rows), compared with the oracle exactly as above.
# They were fixed by the raw-reference KL formulation and the exact path (numbaent/_kernels/exact.py).

KERNEL_BACKENDS = [b for b in BACKENDS if b != "numpy"]


def _vs_oracle(backend, f, args, kw, what):
    got = f(*args, backend=backend, **kw)
    ref = f(
        *[f64(a) if a.dtype.kind == "f" or a.dtype == BF16 else a for a in args],
        backend="numpy",
        **kw,
    )
    if isinstance(got, ne.Scores):
        got, ref = got.kl_divergence, ref.kl_divergence
    dt = np.asarray(got).dtype
    assert_match(got, ref, dt, tol_dtype(*args), None, what)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(
    "case",
    [
        # KL at a temperature whose 1/T scaling is inexact: NaN, huge or negative "divergences"
        ("kl f64 T=1e-3", [[1e20, 0.0]], [[0.3, 0.8]], np.float64, 1e-3),
        ("kl f32 T=1e-3", [[1e8, 0.0]], [[0.3, 0.8]], np.float32, 1e-3),
        ("score f32 T=0.3", [[1e10, 0.0]], [[0.3, 0.8]], np.float32, 0.3),
        # score's teacher path loses accuracy already at logits of 1e4 (softmax_kl_divergence is exact)
        ("score f32 T=0.7", [[1e4, 0.0, -3333.0]], [[0.3, 0.8, 0.1]], np.float32, 0.7),
        ("score f64 T=0.7", [[1e12, 0.0, -3.3e11]], [[0.3, 0.8, 0.1]], np.float64, 0.7),
    ],
    ids=lambda c: c[0],
)
def test_known_kl_temperature(backend, case):
    what, teacher, student, dt, t = case
    tp, sq = np.array(teacher, dt), np.array(student, dt)
    if what.startswith("kl"):
        _vs_oracle(backend, ne.softmax_kl_divergence, (tp, sq), dict(temperature=t), what)
    else:
        _vs_oracle(
            backend,
            lambda s, tl, **k: ne.score(s, teacher_logits=tl, **k),
            (sq, tp),
            dict(temperature=t),
            what,
        )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_f32_overflow(backend):
    """float32 logits of 1e36 and beyond: an intermediate (x - max spanning more than the float32
    range, a term times 1/T or a weight) overflows and the result is inf or NaN, although the
    exact result is a moderate float32 number."""
    x = np.array([[3e38, -3e38] + [0.0] * 100], np.float32)
    _vs_oracle(
        backend,
        ne.softmax_cross_entropy,
        (x, np.array([0])),
        dict(label_smoothing=0.01),
        "label smoothing: 3e36",
    )
    t = np.array([[1.0, 1e-8] + [0.0] * 100], np.float32)
    _vs_oracle(backend, ne.softmax_cross_entropy, (x, t), {}, "soft target 1e-8: 6e30")
    p = np.array([[5.0, -5.0, 0.0]], np.float32)
    q = np.array([[0.0, -2e38, 0.0]], np.float32)
    _vs_oracle(backend, ne.softmax_kl_divergence, (p, q), dict(temperature=0.5), "T=0.5: 8.2e29")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_f32_huge_p(backend):
    """float32 probabilities / counts / soft targets of 1e37..3e38: float32 products overflow."""
    f32 = np.float32
    _vs_oracle(
        backend,
        ne.kl_divergence,
        (np.array([[1e37, 1e37]], f32), np.array([[1e-30, 1.0]], f32)),
        dict(normalize=True),
        "kl normalize, counts 1e37: 33.85",
    )
    _vs_oracle(
        backend,
        ne.cross_entropy,
        (np.array([[3e38]], f32), np.array([[1e-45]], f32)),
        dict(normalize=True),
        "cross_entropy normalize, C = 1: 0",
    )
    _vs_oracle(
        backend,
        ne.softmax_cross_entropy,
        (np.array([[3.77]], f32), np.array([[3e38]], f32)),
        dict(weight=np.array([1.5])),
        "soft target 3e38, weight 1.5, C = 1: 0",
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_subnormal_rows(backend):
    """normalize=True on a row of subnormals (float32, and float64 too): p log q is formed on the
    raw (subnormal) values and loses all precision (the normalised row is an ordinary
    distribution); js_divergence takes 1 / S, which overflows to inf below 5.6e-309 (NaN)."""
    f32 = np.float32
    p, q = np.array([[1e-45, 3e-45]], f32), np.array([[3e-45, 1e-45]], f32)
    _vs_oracle(backend, ne.entropy, (p,), dict(normalize=True), "entropy: 0.6365")
    _vs_oracle(backend, ne.kl_divergence, (p, q), dict(normalize=True), "kl: 0.2310")
    p64 = np.array([[5e-324, 1e-323]])
    _vs_oracle(backend, ne.entropy, (p64,), dict(normalize=True), "float64 entropy: 0.6365")
    p64 = np.array([[1e-310, 3e-310]])
    _vs_oracle(
        backend,
        ne.js_divergence,
        (p64, p64[:, ::-1].copy()),
        dict(normalize=True),
        "float64 js: 0.1308",
    )
    _vs_oracle(
        backend,
        ne.cross_entropy,
        (p[:, :1], p[:, :1]),
        dict(normalize=True),
        "cross_entropy, C = 1: 0",
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_inf_probabilities(backend):
    """Infinite probabilities / soft targets: the kernels and the oracle disagree (NaN vs inf)."""
    _vs_oracle(
        backend,
        ne.softmax_cross_entropy,
        (np.array([[0.4, -0.4]]), np.array([[np.inf, np.inf]])),
        {},
        "soft targets inf: oracle +inf",
    )
    _vs_oracle(
        backend,
        ne.kl_divergence,
        (np.array([[np.inf]]), np.array([[1.0]])),
        {},
        "kl p = inf, q = 1: oracle NaN (inf log inf - inf log 1)",
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_kl_minus_inf_in_q(backend):
    """KL with a -inf logit in logits_q where logits_p is finite. (1) A softmax probability of p
    that underflows to exactly 0 contributes 0 (cpu and oracle: 0; the cuda backend: NaN, from
    0 * -inf). (2) Where the float64 oracle's p_j = exp(-105) is positive the result is +inf, but
    float32 kernels underflow it to 0 and return 0: the answer depends on the working precision.
    Mathematically softmax(finite) > 0, so (2) should be +inf in every precision (or the contract
    should say where it is not)."""
    _vs_oracle(
        backend,
        ne.softmax_kl_divergence,
        (np.array([[0.0, -1000.0]]), np.array([[0.0, -np.inf]])),
        {},
        "p_j = 0: 0",
    )
    _vs_oracle(
        backend,
        ne.softmax_kl_divergence,
        (np.array([[5.0, -100.0]], np.float32), np.array([[0.377, -np.inf]], np.float32)),
        {},
        "float32 p_j = exp(-105): +inf",
    )
    _vs_oracle(
        backend,
        ne.softmax_kl_divergence,
        (np.array([[3e38, -3e38, 1.0]], np.float32), np.array([[0.5, -np.inf, 2.0]], np.float32)),
        {},
        "teacher logit -3e38 under a max of 3e38 (a - max overflows to -inf): still finite, +inf",
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_kl_flushed_term_times_a_huge_gap(backend):
    """Found by the large fuzz profile: p = softmax([88, -0.4]), q = softmax([3e38, -0.4]). The
    KL is p_1 (log p_1 - log q_1) = e^-88.4 * 3e38 = 1.22, a term whose exp float32 flushes to 0
    (the kernels returned 0). One block, several blocks (the far value in the second), the
    two-pass path (a -inf first element) and a temperature, for softmax_kl_divergence and
    score's teacher KL."""
    kl = ne.softmax_kl_divergence

    def score(s, tl, **k):
        return ne.score(s, teacher_logits=tl, **k)

    for gap in (86.5, 88.0, 100.0):
        p = np.array([[gap, -0.4]], np.float32)
        q = np.array([[3e38, -0.4]], np.float32)
        for T in (1.0, 2.0):
            _vs_oracle(backend, kl, (p, q), {"temperature": T}, f"1 block {gap} T={T}")
            _vs_oracle(backend, score, (q, p), {"temperature": T}, f"score {gap} T={T}")
        p = np.zeros((2, 2500), np.float32)
        q = np.zeros((2, 2500), np.float32)
        p[:, 0], q[:, 0] = gap, 3e38
        p[:, 1300], q[:, 1300] = -gap, -3e38  # far below in the second block
        p[1, 0] = -np.inf  # row 1: no finite first reference, two passes per block
        for T in (1.0, 0.5):
            _vs_oracle(backend, kl, (p, q), {"temperature": T}, f"blocks {gap} T={T}")
            _vs_oracle(backend, score, (q, p), {"temperature": T}, f"score blocks {gap} T={T}")


def test_known_oracle_zero_weight():
    """The oracle (backend="numpy") gives 0 for a row whose label has class weight 0 even when the
    row's logits hold NaN, +inf or are all -inf; the contract (and torch, and the cpu kernels)
    make such rows NaN, so nan_policy="raise" also raises on the cpu backend but not on numpy."""
    y, w = np.array([1]), np.array([0.0, 0.0])
    for row in ([np.nan, 0.64], [np.inf, 0.64], [-np.inf, -np.inf]):
        got = ne.softmax_cross_entropy(np.array([row]), y, weight=w, backend="numpy")
        assert np.isnan(got[0]), (row, got)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_known_kl_reference_lag(backend):
    """KL's running reference may lag the teacher's maximum by up to 64 (no redo below that
    jump), so exp(a - ref) reaches e^64 ~ 6e27 and exp(a - ref) * (a - b) overflows once the
    student's logit gap passes ~1e11 (float32) / ~1e280 (float64): inf for a KL of 1e13 / 1e290."""
    for dt, big in ((np.float32, 1e13), (np.float64, 1e290)):
        t = np.zeros((1, 2048), dt)
        t[0, 1500] = 60.0  # the teacher's max, in the second block, 60 above the first
        x = np.zeros((1, 2048), dt)
        x[0, 0] = big
        _vs_oracle(backend, ne.softmax_kl_divergence, (t, x), {}, f"{dt.__name__}: {big / 2:g}")
        _vs_oracle(
            backend,
            lambda s, tl, **k: ne.score(s, teacher_logits=tl, **k),
            (x, t),
            {},
            f"score {dt.__name__}",
        )
