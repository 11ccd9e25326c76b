"""The vectorisable exp/log of numbaent._vmath against NumPy over the whole float range.

Each function is applied elementwise in a Numba loop (as the kernels use it) to: every float16-
spaced sample of float32 bit patterns (a random 3M of all 2**32), a dense sweep of the interesting
range, and the special values. Finite results must be within 2 ulp of the correctly rounded
float64 result; non-finite results must match exactly (inf, -inf, NaN, 0).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from numba import njit

from numbaent import _vmath as vm


def _apply(f):
    @njit
    def run(a, o):
        for i in range(a.size):
            o[i] = f(a[i])

    return run


SPECIAL32 = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        1.0,
        1e-45,
        1.1754942e-38,
        1.1754944e-38,
        3.4e38,
        88.72,
        88.73,
        -87.33,
        -103.97,
        -104.0,
        -200.0,
        1e-30,
        2.0,
        0.5,
    ],
    dtype=np.float32,
)


def _inputs32(rng):
    bits = rng.integers(0, 2**32, 3_000_000, dtype=np.uint64).astype(np.uint32)
    return np.concatenate(
        [bits.view(np.float32), SPECIAL32, np.linspace(-110, 90, 400_001, dtype=np.float32)]
    )


def _inputs64(rng):
    bits = rng.integers(0, 2**63, 2_000_000, dtype=np.uint64) * np.uint64(2)
    extra = [5e-324, 2.2250738585072014e-308, 709.78, 709.79, -745.1, -745.2, -708.4]
    return np.concatenate(
        [
            bits.view(np.float64),
            SPECIAL32.astype(np.float64),
            extra,
            np.linspace(-750, 712, 400_001),
        ]
    )


def _check(got, ref, dtype, max_ulp=2.0):
    with np.errstate(all="ignore"):
        r = ref.astype(dtype)
        fin = np.isfinite(r) & np.isfinite(got)
        ulp = np.abs(got[fin].astype(np.float64) - ref[fin]) / np.spacing(np.abs(r[fin])).astype(
            np.float64
        )
    assert ulp.max() <= max_ulp, ulp.max()
    nf = ~np.isfinite(r) | ~np.isfinite(got)
    np.testing.assert_array_equal(got[nf], r[nf])  # inf, -inf and NaN exactly (NaN == NaN here)


@pytest.mark.parametrize(("name", "ref"), [("exp32", np.exp), ("log32", np.log)])
def test_float32(name, ref):
    a = _inputs32(np.random.default_rng(1))
    o = np.empty_like(a)
    _apply(getattr(vm, name))(a, o)
    with np.errstate(all="ignore"):
        _check(o, ref(a.astype(np.float64)), np.float32)


@pytest.mark.parametrize(("name", "ref"), [("exp64", np.exp), ("log64", np.log)])
def test_float64(name, ref):
    a = _inputs64(np.random.default_rng(2))
    o = np.empty_like(a)
    _apply(getattr(vm, name))(a, o)
    with np.errstate(all="ignore"):
        # NumPy's float64 exp/log are themselves within ~0.5 ulp: allow 2 ulp against them
        _check(o, ref(a), np.float64)


@pytest.mark.parametrize(
    ("name", "dtype", "flush"), [("expm32", np.float32, -87.33), ("expm64", np.float64, -708.39)]
)
def test_exp_for_nonpositive_arguments(name, dtype, flush):
    rng = np.random.default_rng(3)
    with np.errstate(invalid="ignore"):  # the inputs hold NaN and inf on purpose
        a = (-np.abs(_inputs32(rng))).astype(dtype)
    o = np.empty_like(a)
    _apply(getattr(vm, name))(a, o)
    with np.errstate(all="ignore"):
        ref = np.where(a < flush, 0.0, np.exp(a.astype(np.float64)))
    _check(o, ref, dtype)
    assert o[a == -np.inf].max() == 0.0


def test_exp_for_sums():
    """exps32, the bfloat16 kernels' exp for terms of a sum >= 1: exact 1 at 0, NaN kept, -inf
    and anything below -86 clamped to exp(-86) (invisible next to the 1), and its documented
    accuracy: 3 ulp for d >= -10, 7 ulp down to the clamp (one Cody-Waite step, degree 5)."""
    rng = np.random.default_rng(5)
    a = (-np.abs(_inputs32(rng))).astype(np.float32)
    a = np.concatenate([a, -np.float32(rng.random(1_000_000) * 90)])
    o = np.empty_like(a)
    _apply(vm.exps32)(a, o)
    with np.errstate(all="ignore"):
        ref = np.exp(a.astype(np.float64))
    near = a >= -10
    deep = (a < -10) & (a >= -86)
    _check(o[near], ref[near], np.float32, max_ulp=3.0)
    _check(o[deep], ref[deep], np.float32, max_ulp=7.0)
    clamp = np.float32(np.exp(np.float64(-86)))
    low = a < -86
    np.testing.assert_allclose(o[low], clamp, rtol=1e-6)
    assert np.isnan(o[np.isnan(a)]).all() and np.isnan(a).any()
    one = np.zeros(1, np.float32)
    _apply(vm.exps32)(np.array([0.0], np.float32), one)
    assert one[0] == 1.0


def test_exp_for_float32_sums():
    """expz32, the float32 kernels' exp for the terms of a sum (d = x - ref <= 64): 0 below -86
    (so a term times a finite d stays 0), NaN kept, exact 1 at 0, and its documented accuracy:
    3 ulp on [-10, 10], 4 ulp on [-86, 64]."""
    rng = np.random.default_rng(6)
    with np.errstate(invalid="ignore"):  # the inputs hold NaN and inf on purpose
        a = _inputs32(rng).astype(np.float32)
        a = a[~(a > 64)]
        a = np.concatenate([a, np.float32(rng.random(1_000_000) * 150 - 86), [0.0, -86.0, 64.0]])
        a = a.astype(np.float32)
    o = np.empty_like(a)
    _apply(vm.expz32)(a, o)
    with np.errstate(all="ignore"):
        ref = np.where(a < -86, 0.0, np.exp(a.astype(np.float64)))
    _check(o, ref, np.float32)
    low = a < -86
    assert low.sum() > 1000 and (o[low] == 0).all()
    assert np.isnan(o[np.isnan(a)]).all() and np.isnan(a).any()
    assert o[a == 0].min() == 1.0 and o[a == 0].max() == 1.0
    assert (o[a == -np.inf] == 0).all() and (a == -np.inf).any()


def test_half_decoders_are_exact():
    h = np.arange(65536, dtype=np.uint16)
    o = np.empty(65536, np.float32)
    _apply(vm.f16_to_f32)(h.view(np.int16), o)
    np.testing.assert_array_equal(o, h.view(np.float16).astype(np.float32))
    _apply(vm.bf16_to_f32)(h, o)
    np.testing.assert_array_equal(o, h.view(ml_dtypes.bfloat16).astype(np.float32))


def test_keys_preserve_order():
    a = _inputs32(np.random.default_rng(4))[:200_000]
    a = np.sort(
        np.concatenate([a[~np.isnan(a)], np.array([-np.inf, np.inf, 0.0, -0.0], np.float32)])
    )
    k = np.empty(a.size, np.int64)
    _apply(vm.key32)(a, k)
    assert np.all(np.diff(k) >= 0)
    back = np.empty_like(a)

    @njit
    def unkey_all(k, o):
        for i in range(k.size):
            o[i] = vm.unkey32(k[i])

    unkey_all(k, back)
    np.testing.assert_array_equal(back.view(np.uint32), a.view(np.uint32))
