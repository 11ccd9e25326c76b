"""The bfloat16 row path of the cpu backend (_blocks.row_lse_bf16): two passes per block over the
row read as 32-bit words of two elements each. These cases aim at what is special about it: odd C
and rows that start 2 bytes past a 4-byte boundary, a max that moves on every block, the NaN rule
(NaN with either sign bit), +-inf, all -inf rows, huge and subnormal values, the few-rows split
path (row slices starting anywhere), and whether the exp-sum still matches the float64 oracle."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import BF16, assert_close

import numbaent

CS = [1, 2, 3, 1023, 1024, 1025, 2047, 3001, 4098]


def _bf16(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


def _check_all(x, rng):
    """logsumexp, cross-entropy with labels and log_softmax of x, cpu against the oracle."""
    n, c = x.shape
    y = rng.integers(0, c, n)
    for fn, args in (
        (numbaent.logsumexp, (x,)),
        (numbaent.softmax_cross_entropy, (x, y)),
    ):
        got = fn(*args, backend="cpu")
        ref = fn(*args, backend="numpy")
        assert got.dtype == np.float32
        assert_close(got, ref, BF16)


@pytest.mark.parametrize("c", CS)
def test_odd_and_even_widths(c):
    rng = np.random.default_rng(c)
    x = _bf16(rng.standard_normal((5, c)) * 4)  # rows 1 and 3 start 2 bytes off when C is odd
    _check_all(x, rng)


@pytest.mark.parametrize("c", [7, 2048, 3001])
def test_buffer_starting_two_bytes_past_a_word(c):
    rng = np.random.default_rng(1)
    flat = _bf16(rng.standard_normal(4 * c + 1) * 3)
    x = flat[1:].reshape(4, c)  # contiguous, data pointer = 2 mod 4
    assert x.flags.c_contiguous and x.ctypes.data % 4 == 2
    _check_all(x, rng)
    _check_all(np.ascontiguousarray(x), rng)


def test_max_moves_every_block():
    rng = np.random.default_rng(2)
    up = np.linspace(-60, 60, 5000)
    x = _bf16(np.stack([up, up[::-1], up + rng.standard_normal(5000), np.sin(up) * 80]))
    _check_all(x, rng)


def _bits(v):
    return np.array([v], np.uint16).view(ml_dtypes.bfloat16)[0]


@pytest.mark.parametrize("c", [5, 1030, 2049])
def test_special_values(c):
    rng = np.random.default_rng(3)
    pos_nan, neg_nan = _bits(0x7FC0), _bits(0xFFC0)
    x = _bf16(rng.standard_normal((9, c)) * 3)
    last = c - 1
    x[0, last] = pos_nan  # NaN that sorts as the max
    x[1, last // 2] = neg_nan  # NaN that sorts below -inf: only the sum sees it
    x[2, last] = np.inf  # +inf logit: NaN row
    x[3, :] = -np.inf  # all -inf: lse -inf, loss NaN
    x[4, ::2] = -np.inf  # some -inf: ignored
    x[5, :] = _bf16(-3e38)
    x[5, last] = _bf16(3e38)  # huge spread
    x[6, :] = _bits(0x0001)  # subnormal bfloat16 everywhere
    x[7, 0] = neg_nan
    x[7, 1:] = -np.inf  # a sign-set NaN in an all -inf row
    x[8, :] = _bf16(1e30)  # identical huge values: lse = 1e30 + log(C)
    got = numbaent.logsumexp(x, backend="cpu")
    ref = numbaent.logsumexp(x, backend="numpy")
    assert_close(got, ref, BF16)
    assert np.isnan(got[[0, 1, 2, 7]]).all()
    assert got[3] == -np.inf
    y = np.full(9, last)
    y[4] = 1  # a finite logit
    got = numbaent.softmax_cross_entropy(x, y, backend="cpu")
    ref = numbaent.softmax_cross_entropy(x, y, backend="numpy")
    assert_close(got, ref, BF16)
    assert np.isnan(got[[0, 1, 2, 3, 7]]).all()


def test_few_rows_split_path():
    """2 x 131075: the class axis is split across threads in chunks; odd C puts every other
    chunk of row 1 at a 2-byte offset."""
    rng = np.random.default_rng(4)
    x = _bf16(rng.standard_normal((2, 131075)) * 5)
    x[1, 70000] = 40.0
    _check_all(x, rng)


def test_matches_float32_path_on_exact_values():
    """The same (bfloat16-exact) values through the float32 kernels agree to float32 rounding."""
    rng = np.random.default_rng(6)
    x = _bf16(rng.standard_normal((64, 32000)) * 3)
    y = rng.integers(0, 32000, 64)
    a = numbaent.softmax_cross_entropy(x, y, backend="cpu")
    b = numbaent.softmax_cross_entropy(x.astype(np.float32), y, backend="cpu")
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
