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
from numba import njit, types
from numba.extending import overload

from .._vmath import cst, expk32, exps32, f32_from_bits, key, ld, prefetch, unkey, vexps, vexpz

# np.float64(x), never float(x), to widen: inside Numba, float() of a float32 is a float32, so
# float(m) - float(x) for m = 3e38, x = -3e38 overflowed (and 0 * inf made a softmax entropy NaN)
BLOCK = 1024
# Rows with a KL (softmax_kl_divergence, score with a teacher) take blocks of KL_BLOCK: the float32
# sums of a block of similar terms (a row in sorted order) lost 1.25e-6 of a KL of 3.9 at C =
# 262144 over 1024 elements on AVX2 (torch float32: 8.8e-7), 3.4e-7 over 256, for ~3% of the time
# (128: 4.3e-7, 12%; float64 sums: 1.5e-8, 2x; the accuracy sweep of tests/test_trust.py).
KL_BLOCK = 256
# Only the innermost block loops (the block_* functions) get FASTMATH: reassociation is what lets a
# float reduction vectorise. Row-level code and kernels are compiled WITHOUT it (KERNEL), because
# reassociating e.g. (m - x[y]) + log(S) into m + (log(S) - x[y]) loses everything for logits of
# 1e30. Never nnan / ninf: inf and NaN are part of the contract.
FASTMATH = {"nsz", "contract", "reassoc", "arcp"}
# cache=True: compiled code is stored next to the sources (or in NUMBA_CACHE_DIR), so a new process
# loads instead of compiling (tests/test_coldstart.py checks that a changed thread count still works)
# nogil: calls from several Python threads run their kernels concurrently
KERNEL = {"parallel": True, "nogil": True, "fastmath": False, "error_model": "numpy", "cache": True}
ROW = {"fastmath": False, "error_model": "numpy", "cache": True}
BLK = {"fastmath": FASTMATH, "error_model": "numpy", "cache": True}
NINF = -np.inf
INF = np.inf
FLOOR = 1e30  # below any x - ref whose exp is not 0, and finite in float32


@njit(**BLK)
def block_max(r, lo, hi, like):
    """Max of ld(r[lo:hi]) as the math type of ``like`` (NaN-ignoring except NaN with sign clear)."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    k = key(cst(like, NINF))
    for j in range(hi - lo):
        kk = key(cst(like, ld(r[j])))
        k = kk if kk > k else k
    return unkey(k, like)


@njit(**BLK)
def block_max_scaled(r, lo, hi, like, scale):
    """Max of ld(r[j]) * scale (scale > 0)."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    k = key(cst(like, NINF))
    for j in range(hi - lo):
        kk = key(cst(like, ld(r[j])) * scale)
        k = kk if kk > k else k
    return unkey(k, like)


@njit(**BLK)
def block_sumexp(r, lo, hi, m):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    s = cst(m, 0.0)
    for j in range(hi - lo):
        s += vexpz(cst(m, ld(r[j])) - m)
    return s


@njit(**BLK)
def block_sumexp_max(r, lo, hi, ref):
    """One pass: (sum exp(x - ref), max x) for a reference ``ref`` taken from earlier blocks. Terms
    may exceed 1 (x > ref); the caller redoes the block when its max is more than SLACK above ref."""
    r = r[lo:hi]
    z = cst(ref, 0.0)
    s = z
    k = key(cst(ref, NINF))
    for j in range(hi - lo):
        v = cst(ref, ld(r[j]))
        kk = key(v)
        k = kk if kk > k else k
        s += vexpz(v - ref)
    return s, unkey(k, ref)


@njit(**BLK)
def _scored(r, n, ref, xy, ge, s, t, s2, c, k):
    """The one-pass loop over r[:n] against ``ref``: the sums s (e = exp(x - ref)) and t (e d),
    the max key k, and unless ``ge`` is None (a compile-time case: the entropy's loop alone) the
    sum of squares s2 and the count c of x >= xy (``ge``) or x > xy. The entropy term e d takes d
    clamped to -FLOOR (one max instead of a compare and select): a -inf logit adds 0 * -FLOOR =
    0, not 0 * -inf; a NaN is kept by s (exp(NaN) is NaN)."""
    z = cst(ref, 0.0)
    one = cst(ref, 1.0)
    lo_d = cst(ref, -FLOOR)
    for j in range(n):
        v = cst(ref, ld(r[j]))
        kk = key(v)
        k = kk if kk > k else k
        d = v - ref
        e = vexpz(d)
        s += e
        t += e * (d if d > lo_d else lo_d)
        if ge is not None:
            s2 += e * e
            if ge:
                c += one if v >= xy else z
            else:
                c += one if v > xy else z
    return s, t, s2, c, k


@njit(**BLK)
def block_sumexp_t_max(r, lo, hi, ref):
    """block_sumexp_t against a reference from earlier blocks (T = 1), plus the block max (one
    pass)."""
    z = cst(ref, 0.0)
    s, t, _, _, k = _scored(r[lo:hi], hi - lo, ref, ref, None, z, z, z, z, key(cst(ref, NINF)))
    return s, t, unkey(k, ref)


@njit(**BLK)
def block_score(r, lo, hi, ref, y, xy):
    """score's one pass over a block (T = 1): block_sumexp_t_max plus sum e^2 and the count of
    elements ranked above the label y whose logit is xy (x > xy, or x == xy at an index below y:
    the loop is split at y, so that neither half compares indices; the count is kept in float
    lanes, exact for a block and as wide as the compares). Returns (s, t, s2, count, max)."""
    z = cst(ref, 0.0)
    k = key(cst(ref, NINF))
    if y >= hi:  # one loop where the block does not hold y (the two-loop split cost 10%)
        s, t, s2, c, k = _scored(r[lo:hi], hi - lo, ref, xy, True, z, z, z, z, k)
    elif y <= lo:
        s, t, s2, c, k = _scored(r[lo:hi], hi - lo, ref, xy, False, z, z, z, z, k)
    else:
        cut = y - lo
        s, t, s2, c, k = _scored(r[lo:y], cut, ref, xy, True, z, z, z, z, k)
        s, t, s2, c, k = _scored(r[y:hi], hi - y, ref, xy, False, s, t, s2, c, k)
    return s, t, s2, np.int64(c), unkey(k, ref)


@njit(**BLK)
def block_sumexp_t(r, lo, hi, m, it):
    """(sum e, sum e * u, sum e^2) with u = (x - m) * it, e = exp(u) (it = 1 / T, the
    temperature; None for T = 1, a compile-time case without the product); a -inf logit adds 0
    to the second sum (see _scored)."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    z = cst(m, 0.0)  # hoisted: a cst() call inside the loop stops it vectorising
    s = z
    t = z
    s2 = z
    lo_d = cst(m, -FLOOR)
    if it is None:
        for j in range(hi - lo):
            d = cst(m, ld(r[j])) - m
            e = vexpz(d)
            s += e
            t += e * (d if d > lo_d else lo_d)  # see _scored
            s2 += e * e
    else:
        for j in range(hi - lo):
            d = (cst(m, ld(r[j])) - m) * it
            e = vexpz(d)
            s += e
            t += e * (d if d > lo_d else lo_d)
            s2 += e * e
    return s, t, s2


@njit(**BLK)
def block_rank(r, lo, hi, y, xy):
    """(max, min, count) over r[lo:hi]: block_max_min's, and the count of block_score, in one
    pass without exp."""
    one = cst(xy, 1.0)
    z = cst(xy, 0.0)
    n = z
    k = key(cst(xy, NINF))
    kmin = key(cst(xy, np.inf))
    cut = min(max(y - lo, 0), hi - lo)
    a = r[lo : lo + cut]
    for j in range(cut):
        v = cst(xy, ld(a[j]))
        kk = key(v)
        k = kk if kk > k else k
        kmin = kk if kk < kmin else kmin
        n += one if v >= xy else z
    b = r[lo + cut : hi]
    for j in range(hi - lo - cut):
        v = cst(xy, ld(b[j]))
        kk = key(v)
        k = kk if kk > k else k
        kmin = kk if kk < kmin else kmin
        n += one if v > xy else z
    return unkey(k, xy), unkey(kmin, xy), np.int64(n)


@njit(**ROW)
def rescale(m_old, m_new):
    """exp(m_old - m_new) in float64, 0 when m_old is -inf (an empty state)."""
    if m_old == NINF:
        return 0.0
    return math.exp(np.float64(m_old) - np.float64(m_new))


@njit(**ROW)
def ref_of(m):
    """Reference point for exp(x - ref): the running max, or 0 while it is -inf (then every term
    is exp(-inf) = 0 or NaN, which is exactly what such a block contributes)."""
    return cst(m, 0.0) if m == NINF else m


@njit(**ROW)
def at_least_one(S, m):
    """With m the exact row max, S = sum exp(x - m) >= 1 (the max's own term is exactly 1). A sum
    taken against an earlier reference carries the max's term with exp's 1-ulp error, which could
    leave S a hair below 1, and then a log-probability above 0 or a negative loss. Restore the
    bound (NaN and empty/all -inf states are left alone)."""
    if m > NINF and m < -NINF and S < 1.0:
        return 1.0
    return S


@njit(**ROW)
def nonneg(h):
    """A softmax entropy is >= 0; rounding of a near-one-hot row can give -1e-8. NaN stays NaN."""
    return h - h if h < 0 else h  # +0.0


@njit(**ROW)
def update_max(m, bm):
    """Running max update that lets a NaN maximum (a NaN with the sign bit clear) stick."""
    if bm > m or bm != bm:
        return bm
    return m


# One pass per block: a block whose max is at most SLACK above the reference (the running max of
# the earlier blocks) is summed in the same pass that finds its max (one read of the block instead
# of two); a larger jump (rare: the max of a row usually settles early) redoes the block against
# the new max, and the first block of a row always takes two passes (max, then sum). The bound is
# about accuracy, not range: d = x - ref is rounded in float32, which puts a relative error of up
# to |d| 2^-24 on the term exp(d); a term above the reference can dominate the row's sum, so
# d <= SLACK keeps that error within SLACK 2^-24 = 1.2e-7 (a reference 35 below the max, as the
# first element of a row once was, cost 2e-6 in log S).
SLACK = 2.0


@njit(**ROW)
def move_t(T, S, m_old, m_new, f, it):
    """T = sum e u, u = (x - m_old) it, moved to m_new: f (T + (m_old - m_new) it S) with
    f = exp((m_old - m_new) it). 0 when f is 0 (an empty state, or one that vanishes against
    m_new: m_old - m_new may then be -inf for float64 logits of 1e308, and 0 * inf is never
    formed); a NaN T stays NaN."""
    if f == 0.0 and T == T:
        return 0.0
    return f * (T + ((np.float64(m_old) - np.float64(m_new)) * it) * S)


@njit(**ROW)
def row_lse_onepass(r, like):
    """row_lse for float32/float64/float16 rows (bfloat16 rows use row_lse_bf16)."""
    c = r.shape[0]
    m = cst(like, NINF)  # the first block takes two passes (see SLACK)
    S = 0.0
    slack = cst(like, SLACK)
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        if m == NINF:  # no finite reference yet: max first, then the sum (two passes)
            bm = update_max(m, block_max(r, lo, hi, like))
            S *= rescale(m, bm)
            m = bm
            S += np.float64(block_sumexp(r, lo, hi, ref_of(m)))
            continue
        s, bm = block_sumexp_max(r, lo, hi, m)
        if not (bm <= m + slack):  # a big jump, +inf or NaN: redo the block against the new max
            bm = update_max(m, bm)
            S *= rescale(m, bm)
            m = bm
            s = block_sumexp(r, lo, hi, m)
        S += np.float64(s)
        if bm > m:  # move the reference up to the max (exact bookkeeping, keeps terms <= 1)
            S *= rescale(m, bm)
            m = bm
    return m, at_least_one(S, m)


# --------------------------------------------------------------------------------------------------
# bfloat16 rows. Reading 2 bytes per element, these kernels are bound by arithmetic, not memory, so
# they take a different route from the float32 one-pass blocks above (23 vector ops per 16 elements
# there, and a 512-bit op costs as much as two 256-bit ones on this CPU). Per block of BLOCK:
#   1. the exact max (and the min, where it matters) from the raw 16-bit patterns, 32 lanes per
#      vector (2 ops per 32 elements);
#   2. the exp-sum against the running max m, elements decoded two at a time from 32-bit words
#      (one AND or one shift each, full-width loads), with
#        - expk32 (10 ops) when the block lies in [m - 86, m] and within +-64: exp(x - K ln 2) for
#          a K fixed per max, the sum scaled by exp(K ln 2 - m) in float64; this saves the x - m;
#        - otherwise exps32 on x - m (12 ops, clamped: -inf, NaN, huge ranges).
# Terms are <= 1 (the max's own term is 1 within 1e-7; at_least_one repairs S < 1).

_I16 = np.int16
_I32 = np.int32
_U16 = np.uint16
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@njit(**BLK)
def _raw_max16(r, lo, hi):
    """(signed max, unsigned max) of the raw 16-bit patterns r[lo:hi]: 2 ops per 32 elements."""
    r = r[lo:hi]
    smax = _I16(-32768)
    umax = _U16(0)
    for j in range(hi - lo):
        u = r[j]
        b = _I16(u)
        smax = b if b > smax else smax
        umax = u if u > umax else umax
    return smax, umax


@njit(**BLK)
def _raw_umin16(r, lo, hi):
    r = r[lo:hi]
    umin = _U16(65535)
    for j in range(hi - lo):
        u = r[j]
        umin = u if u < umin else umin
    return umin


@njit(**ROW)
def block_range_bf16(r, lo, hi):
    """(max, low) of the bfloat16 bits r[lo:hi] (lo < hi) as float32: the max, and the min when the
    block holds a negative value, else 0 (a lower bound that decides the range tests the same way,
    since they also need the row max <= 64).

    From the raw patterns: non-negative values order as signed integers and sit above every
    negative one; negative values order by magnitude, as unsigned integers. So the max is the
    signed max when that is >= 0, else (all negative: a second, rarer pass) the unsigned min; the
    min of a block with a negative value is its unsigned max. NaN: a NaN with the sign bit clear is
    the max (block_max's rule); one with it set is the min, below -inf, which fails every range
    test and sends the block to exps32, which keeps the NaN (a block of nothing but such NaNs gets
    it as its max too: the row is NaN either way)."""
    smax, umax = _raw_max16(r, lo, hi)
    mx = _I32(smax) if smax >= 0 else _I32(_raw_umin16(r, lo, hi))
    mn = _I32(umax) if umax >= _U16(0x8000) else _I32(0)
    return f32_from_bits(mx << _I32(16)), f32_from_bits(mn << _I32(16))


@njit(**BLK)
def _sumexp_pairs(w, m):
    """sum exps32(x - m) over the bfloat16 pairs packed in the int32 words ``w`` (order does not
    matter to a sum: the low halves and the high halves are decoded separately, no shuffles)."""
    s = np.float32(0.0)
    for j in range(w.shape[0]):
        u = w[j]
        s += exps32(f32_from_bits(u << _I32(16)) - m) + exps32(f32_from_bits(u & _I32(-65536)) - m)
    return s


@njit(**BLK)
def _sumexpk_pairs(w, mk):
    """sum expk32(x, mk) over the pairs in ``w`` (see expk32 for the range it needs)."""
    s = np.float32(0.0)
    for j in range(w.shape[0]):
        u = w[j]
        s += expk32(f32_from_bits(u << _I32(16)), mk) + expk32(f32_from_bits(u & _I32(-65536)), mk)
    return s


@njit(**ROW)
def row_lse_bf16(r, like):
    """row_lse of a bfloat16 row (uint16 bits), float32 math: two passes per L1 block, see above.

    The exp-sum reads the row as int32 words ``w`` holding two elements each. When the row starts 2
    bytes past a 4-byte boundary (odd C, odd row), element 0 is a block of its own and the blocks
    start at 1, so that every block's pairs are whole words (a view per block cost 30%). While one
    block is summed (arithmetic only), the lines of the block after next are prefetched: without
    it the max pass waited on memory and 2 threads reached 15.1 Gel/s instead of 16.1."""
    c = r.shape[0]
    odd = (r.ctypes.data >> 1) & 1 if c > 0 else 0
    w = r[odd : odd + 2 * ((c - odd) // 2)].view(np.int32)
    m = np.float32(NINF)
    mk = np.float32(0.0)  # expk32's constant for the current m, and its sums' scale to m
    fac = 0.0
    S = 0.0
    lo = 0
    while lo < c:
        hi = min(lo + BLOCK, c) if lo >= odd else odd
        bm, bmin = block_range_bf16(r, lo, hi)
        bm = update_max(m, bm)
        for j in range(hi + BLOCK, min(hi + 2 * BLOCK, c), 32):  # 64-byte lines
            prefetch(r, j)
        if bm != m:  # a NaN max keeps S NaN: S * rescale(NaN) and every NaN term
            S *= rescale(m, bm)
            m = bm
            if m >= np.float32(-64.0) and m <= np.float32(64.0):
                K = np.floor(np.float64(m) * _LOG2E + 0.5)
                mk = np.float32(12583039.0 - K)
                fac = math.exp(K * _LN2 - np.float64(m))
        if m == NINF:  # all -inf so far: terms are 0, or NaN for a NaN (exps32 would give 4.5e-38)
            S += np.float64(block_sumexp(r, lo, hi, np.float32(0.0)))
            lo = hi
            continue
        n2 = (hi - lo) // 2
        k = (lo - odd) // 2
        # a NaN m or bmin fails this test; mk and fac are current whenever it passes (m <= 64 and
        # m >= bmin >= -64)
        if bmin >= m - np.float32(86.0) and bmin >= np.float32(-64.0) and m <= np.float32(64.0):
            s = np.float32(0.0)
            if n2 > 0:
                s = _sumexpk_pairs(w[k : k + n2], mk)
            if (hi - lo) & 1:
                s += expk32(ld(r[hi - 1]), mk)
            S += np.float64(s) * fac
        else:  # x - m <= 0, or NaN (a NaN element, a NaN or +inf max): exps32 keeps the NaN
            s = np.float32(0.0)
            if n2 > 0:
                s = _sumexp_pairs(w[k : k + n2], m)
            if (hi - lo) & 1:
                s += exps32(ld(r[hi - 1]) - m)
            S += np.float64(s)
        lo = hi
    return m, at_least_one(S, m)


def row_lse(r, like):
    """Online log-sum-exp state (m, S) of one row: lse = m + log(S), S float64 relative to m."""


@overload(row_lse)
def _ov_row_lse(r, like):
    t = like.dtype if isinstance(like, types.Array) else like
    if r.dtype == types.uint16 and t == types.float32:
        return lambda r, like: row_lse_bf16(r, like)
    return lambda r, like: row_lse_onepass(r, like)


@njit(**ROW)
def row_lse_t(r, like):
    """(m, S, T) with T = sum exp(x - m) * (x - m): softmax entropy = log S - T / S. One pass per
    block against the running reference, as row_lse."""
    c = r.shape[0]
    m = cst(like, NINF)  # the first block takes two passes (see SLACK)
    S = 0.0
    T = 0.0
    slack = cst(like, SLACK)
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        done = False
        if m != NINF:
            s, t, fbm = block_sumexp_t_max(r, lo, hi, m)
            done = fbm <= m + slack
        if done:
            S += np.float64(s)
            T += np.float64(t)
            bm = update_max(m, fbm)
        else:
            bm = update_max(m, block_max(r, lo, hi, like))
        if bm != m:
            f = rescale(m, bm)
            T = move_t(T, S, m, bm, f, 1.0)
            S *= f
            m = bm
        if not done:
            s, t, _ = block_sumexp_t(r, lo, hi, ref_of(m), None)
            S += np.float64(s)
            T += np.float64(t)
    return m, at_least_one(S, m), T


# KL between two softmax rows a (reference) and b at a temperature T (it = 1 / T) keeps
#     U = sum_j ea_j ((a_j - ra) - (b_j - rb)),   ea_j = exp((a_j - ra) * it),
# in RAW logit units relative to the running raw references ra, rb (see ref_of), so that
#     KL = it * U / Sa + (log Sb - log Sa)
# never subtracts two large log-sum-exps (logits of 1e30 would cancel to garbage) and never forms
# a / T, which is inexact (an FMA-contracted a * it - ra is not 0 at the max) and overflows for
# huge logits. A term with a_j = -inf adds 0; a finite a_j over b_j = -inf adds +inf, or NaN where
# ea_j underflowed (0 * inf): the exact path (exact.py) then gives the +inf of the contract.


@njit(**ROW)
def rescale_t(m_old, m_new, it):
    """exp((m_old - m_new) * it) in float64, 0 when m_old is -inf (an empty state)."""
    if m_old == NINF:
        return 0.0
    return math.exp((np.float64(m_old) - np.float64(m_new)) * it)


@njit(**ROW)
def kl_move(U, Sa, ma_old, ma_new, rb_old, rb_new, it):
    """Move both references at once (returns U, Sa): each ea scales by f = exp((ra - ra') it) and
    each (a - ra) - (b - rb) changes by (rb' - rb) - (ra' - ra). One step, so that identical rows,
    whose two moves are equal, keep U exactly 0."""
    f = rescale_t(ma_old, ma_new, it)
    # The old state vanishes (da or db may be infinite: 0 * inf is never formed). A NaN state stays
    # NaN, and so does an infinite U (a finite teacher logit over a -inf student one): 0 * inf
    # sends the row to the exact path, which gives the contract's +inf.
    if f == 0.0 and abs(U) < INF and Sa == Sa:
        return 0.0, 0.0
    da = np.float64(ref_of(ma_new)) - np.float64(ref_of(ma_old))
    db = np.float64(rb_new) - np.float64(rb_old)
    return f * U + (db - da) * (f * Sa), f * Sa


# A KL term exp((a - ra) it) * ((a - ra) - (b - rb)) whose exp the sums flush to 0 is not negligible
# when b sits far below its reference: with p = softmax([88, 0]) and q = softmax([3e38, 0]) it is
# the whole KL, 1.22. float32 sums flush below -86 (expz32): a term with an exponent in (-200, -86)
# counts when its factor exceeds 1e20. float64 sums flush below -708.39 (expm64), where exp is
# subnormal: e^-708.4 * 1e308 is 2.1, so a term with an exponent in (-746, -708.39) counts when its
# factor exceeds 1e290. Blocks where q holds such a value (its block min, from the one-pass loop or
# the two-pass max pass) are checked term by term; a float32 block where a flushed term counts is
# redone in float64, a float64 one marks its row for the exact path (FLUSHED).
KL_FAR = 1e20
KL_FAR64 = 1e290
FLUSHED = np.nan  # a float64 block's U when a flushed term counts: its row goes to exact.py


def _flush_limits(like):
    """(lowest exponent, flush exponent, far factor) of the sums in the float type of ``like``."""


@overload(_flush_limits)
def _ov_flush_limits(like):
    t = like.dtype if isinstance(like, types.Array) else like
    lim = (-200.0, -86.0, KL_FAR) if t == types.float32 else (-746.0, -708.39, KL_FAR64)
    return lambda like: lim


@njit(**BLK)
def kl_flush_risk(rp, rq, lo, hi, ra, rb, it):
    """Whether some term of the block has its exp flushed while its factor (a - ra) - (b - rb),
    times it, is far enough above 0 for the term to count (see _flush_limits)."""
    rp = rp[lo:hi]
    rq = rq[lo:hi]
    e_lo, e_hi, f = _flush_limits(ra)
    lo_e = cst(ra, e_lo)
    hi_e = cst(ra, e_hi)
    far = cst(ra, f)
    n = 0
    for j in range(hi - lo):
        da = cst(ra, ld(rp[j])) - ra
        e = da * it
        w = (da - (cst(ra, ld(rq[j])) - rb)) * it
        n += 1 if (e < hi_e and e > lo_e and w > far) else 0
    return n > 0


@njit(**ROW)
def kl_far_below(bmin, rb, it64, like):
    """Whether q's block min is far enough below its reference rb for kl_flush_risk to matter."""
    return np.float64(bmin) < np.float64(rb) - _flush_limits(like)[2] / it64


@njit(**BLK)
def block_max_min(r, lo, hi, like):
    """(max, min) of ld(r[lo:hi]) (block_max's NaN rule for the max; the min of keys)."""
    r = r[lo:hi]
    k = key(cst(like, NINF))
    kmin = key(cst(like, np.inf))
    for j in range(hi - lo):
        kk = key(cst(like, ld(r[j])))
        k = kk if kk > k else k
        kmin = kk if kk < kmin else kmin
    return unkey(k, like), unkey(kmin, like)


def is_f32(like):
    """Whether ``like`` (a float scalar or array) is float32, as a compile-time constant."""


@overload(is_f32)
def _ov_is_f32(like):
    t = like.dtype if isinstance(like, types.Array) else like
    v = t == types.float32
    return lambda like: v


@njit(**ROW)
def kl_from_states(U, Sa, Sb, it):
    return (it * U) / Sa + (np.log(Sb) - np.log(Sa))


# --------------------------------------------------------------------------------------------------
# Few classes (C <= SMALL_C): one row is too short to fill SIMD lanes, and a per-row libm log would
# dominate. A tile of TILE rows is transposed into a (C, TILE) buffer that stays in L1, and every
# step (max, exp-sum, log) runs across the rows of the tile, in the SIMD lanes.

SMALL_C = 64
TILE = 256
TILE_GROUP = 16  # tiles per parallel iteration of the small-C kernels (see small_rows)


@njit(**ROW)
def tile_transpose(x, r0, r1, buf):
    # column by column: contiguous stores into buf, strided loads from the tile (L1/L2). The
    # row-by-row order stored C values 1 KB apart per row: 4K-aliasing made C = 64 5x slower.
    c = x.shape[1]
    blk = x[r0:r1]
    n = r1 - r0
    for j in range(c):
        col = buf[j]
        for i in range(n):
            col[i] = cst(buf, ld(blk[i, j]))


@njit(**ROW)
def tile_lse(buf, n, m, ref, s, t, want_t):
    """Per-row (across the tile) max ``m``, reference ``ref`` (m, or 0 while m is -inf), S and, if
    ``want_t``, T = sum e (x - ref), for the first ``n`` columns of the transposed tile ``buf``."""
    c = buf.shape[0]
    z = cst(buf, 0.0)
    ninf = cst(buf, NINF)
    for i in range(n):
        m[i] = ninf
    for j in range(c):
        col = buf[j]
        for i in range(n):
            v = col[i]
            m[i] = v if v > m[i] else m[i]
    for i in range(n):
        s[i] = z
        t[i] = z
        ref[i] = z if m[i] == ninf else m[i]
    for j in range(c):
        col = buf[j]
        if want_t:
            for i in range(n):
                d = col[i] - ref[i]
                e = vexpz(d)
                s[i] += e
                t[i] += z if e == 0 else e * d
        else:  # terms <= 1 with the row's own 1 among them: the cheaper exp for sums (an all
            # -inf row gets 4.5e-38 per term instead of 0, and stays -inf through its m)
            for i in range(n):
                s[i] += vexps(col[i] - ref[i])
