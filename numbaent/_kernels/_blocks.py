"""Row building blocks shared by the CPU kernels (serial, inlined by LLVM into the parallel kernels).

A row is processed in blocks of ``BLOCK`` elements that stay in L1: the block maximum is found first
(on order-preserving integer keys, which vectorise without ``nnan``), then the exp-sum over the
block is taken relative to the running maximum. The row state is kept in float64:

    m_new = max(m, block_max); S = S * exp(m - m_new) + sum(exp(x - m_new)); lse = m + log(S)

Block sums are float32 (for float32/half input) over at most BLOCK elements spread across the SIMD
lanes, and the block results are added in float64, so the rounding error of a row does not grow
with C (tests/test_accuracy.py checks C = 131072).

Special rows: while the running maximum is -inf the exp terms are taken relative to 0 (they are all
exp(-inf) = 0, or NaN for a NaN, which then propagates). A NaN with the sign bit clear sorts above
+inf and becomes the maximum, so the row is NaN too. A +inf logit makes ``x - m`` NaN, so such rows
give NaN, as the contract says.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._vmath import cst, key, ld, unkey, vexpm

BLOCK = 1024
FASTMATH = {"nsz", "contract", "reassoc", "arcp"}  # never nnan / ninf: inf and NaN are contract
NINF = -np.inf


@njit(fastmath=FASTMATH)
def block_max(r, lo, hi, like):
    """Max of ld(r[lo:hi]) as the math type of ``like`` (NaN-ignoring except NaN with sign clear)."""
    k = key(cst(like, NINF))
    for j in range(lo, hi):
        kk = key(cst(like, ld(r[j])))
        k = kk if kk > k else k
    return unkey(k, like)


@njit(fastmath=FASTMATH)
def block_max_scaled(r, lo, hi, like, scale):
    """Max of ld(r[j]) * scale (scale > 0)."""
    k = key(cst(like, NINF))
    for j in range(lo, hi):
        kk = key(cst(like, ld(r[j])) * scale)
        k = kk if kk > k else k
    return unkey(k, like)


@njit(fastmath=FASTMATH)
def block_sumexp(r, lo, hi, m):
    s = m * 0
    for j in range(lo, hi):
        s += vexpm(cst(m, ld(r[j])) - m)
    return s


@njit(fastmath=FASTMATH)
def block_sumexp_t(r, lo, hi, m):
    """(sum e, sum e * (x - m)) with e = exp(x - m); a term with e == 0 adds 0 to the second sum."""
    s = m * 0
    t = m * 0
    for j in range(lo, hi):
        d = cst(m, ld(r[j])) - m
        e = vexpm(d)
        s += e
        t += m * 0 if e == 0 else e * d
    return s, t


@njit
def rescale(m_old, m_new):
    """exp(m_old - m_new) in float64, 0 when m_old is -inf (an empty state)."""
    if m_old == NINF:
        return 0.0
    return math.exp(float(m_old) - float(m_new))


@njit
def ref_of(m):
    """Reference point for exp(x - ref): the running max, or 0 while it is -inf (then every term
    is exp(-inf) = 0 or NaN, which is exactly what such a block contributes)."""
    return m * 0 if m == NINF else m


@njit
def update_max(m, bm):
    """Running max update that lets a NaN maximum (a NaN with the sign bit clear) stick."""
    if bm > m or bm != bm:
        return bm
    return m


@njit(fastmath=FASTMATH)
def row_lse(r, like):
    """Online log-sum-exp state (m, S) of one row: lse = m + log(S). S is float64."""
    c = r.shape[0]
    m = cst(like, NINF)
    S = 0.0
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        bm = update_max(m, block_max(r, lo, hi, like))
        if bm != m:
            S *= rescale(m, bm)
            m = bm
        S += float(block_sumexp(r, lo, hi, ref_of(m)))
    return m, S


@njit(fastmath=FASTMATH)
def row_lse_t(r, like):
    """(m, S, T) with T = sum exp(x - m) * (x - m): softmax entropy = log S - T / S."""
    c = r.shape[0]
    m = cst(like, NINF)
    S = 0.0
    T = 0.0
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        bm = update_max(m, block_max(r, lo, hi, like))
        if bm != m:
            f = rescale(m, bm)
            if m != NINF:
                T = f * (T + (float(m) - float(bm)) * S)
            S *= f
            m = bm
        s, t = block_sumexp_t(r, lo, hi, ref_of(m))
        S += float(s)
        T += float(t)
    return m, S, T
