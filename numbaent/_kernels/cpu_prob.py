"""CPU kernels for probability rows. Pure arithmetic, no validation.

Inputs are C-contiguous 2-D arrays (float32, float64, int16 = float16 bits, uint16 = bfloat16 bits);
``q`` may have a single row shared by all rows (``q_step = 0``). Each kernel writes its result to
``out`` and sets ``flags[i]`` for row faults the validation layer turns into errors:
bit 1 = a negative value in p, bit 2 = a negative value in q; bit 4 (``REDO``) asks the adapter for
the exact path (``exact.py``): a NaN result from inputs without NaN, a non-finite result from sums
beyond ``huge`` (a float32 product p log q may have overflowed; +inf inputs), or, with
``normalize``, a row sum outside [tiny, huge] (subnormal terms lose their precision).

Terms with p == 0 contribute exactly 0 (0 log 0 = 0, 0 log(0/0) = 0). The test is ``p == 0``, not
``p > 0``, so a NaN p still poisons the sum. A NaN in q where p == 0 is caught by counting NaNs in q.
Counts (negative entries, NaNs) are accumulated as floats of the math type: an integer or bool
count, like a float min, stops LLVM from vectorising the whole loop. Block sums are in the math type over at most BLOCK elements and are added up in float64, so the error
does not grow with C. Only the block loops are compiled with FASTMATH (reassociation lets them
vectorise); the kernels and their per-row epilogues are not, so no rounding-sensitive expression is
reordered.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._vmath import cst, ld, vlog
from . import exact
from ._blocks import BLK, BLOCK, KERNEL, ROW

# the REDO decision is shared with the cuda kernels (exact.redo_bit)
_redo = njit(**ROW)(exact.redo_bit)


@njit(**BLK)
def _blk_entropy(r, lo, hi, like):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    z = cst(like, 0.0)
    one = cst(like, 1.0)
    s = z
    a = z
    neg = z
    for j in range(hi - lo):
        v = cst(like, ld(r[j]))
        s += v
        a += z if v == 0 else v * vlog(v)
        neg += one if v < z else z
    return s, a, neg


@njit(**BLK)
def _blk_pq(rp, rq, lo, hi, like, kl):
    """(sum p, sum q, sum p log q  [or sum p (log p - log q) when kl], #p<0, #q<0, #NaN in q)."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    rp = rp[lo:hi]
    rq = rq[lo:hi]
    z = cst(like, 0.0)
    one = cst(like, 1.0)
    sp = z
    sq = z
    b = z
    negp = z
    negq = z
    nanq = z
    for j in range(hi - lo):
        pv = cst(like, ld(rp[j]))
        qv = cst(like, ld(rq[j]))
        sp += pv
        sq += qv
        if kl:
            b += z if pv == 0 else pv * (vlog(pv) - vlog(qv))
        else:
            b += z if pv == 0 else pv * vlog(qv)
        negp += one if pv < z else z
        negq += one if qv < z else z
        nanq += one if qv != qv else z
    return sp, sq, b, negp, negq, nanq


@njit(**BLK)
def _blk_js(rp, rq, lo, hi, fp, fq):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    rp = rp[lo:hi]
    rq = rq[lo:hi]
    z = cst(fp, 0.0)
    ln2 = cst(fp, 0.6931471805599453)
    a = z
    for j in range(hi - lo):
        pv = cst(fp, ld(rp[j])) * fp
        qv = cst(fp, ld(rq[j])) * fq
        lm = vlog(pv + qv) - ln2  # log((p + q) / 2) without halving a subnormal to 0
        a += z if pv == 0 else pv * (vlog(pv) - lm)
        a += z if qv == 0 else qv * (vlog(qv) - lm)
    return a


@njit(**BLK)
def _blk_sum_neg(r, lo, hi, like):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    z = cst(like, 0.0)
    one = cst(like, 1.0)
    s = z
    neg = z
    for j in range(hi - lo):
        v = cst(like, ld(r[j]))
        s += v
        neg += one if v < z else z
    return s, neg


@njit(**KERNEL)
def entropy(p, normalize, tiny, huge, out, flags):
    """H = -sum p log p; with normalize: H(p / S) = log S - (sum p log p) / S."""
    c = p.shape[1]
    for i in prange(p.shape[0]):
        r = p[i]
        S = 0.0
        A = 0.0
        neg = 0.0
        for lo in range(0, c, BLOCK):
            s, a, ng = _blk_entropy(r, lo, min(lo + BLOCK, c), out)
            S += np.float64(s)
            A += np.float64(a)
            neg += np.float64(ng)
        if normalize and c > 0:  # an empty row is 0, normalized or not
            res = np.log(S) - A / S
        else:
            res = 0.0 - A  # +0.0, not -0.0, for a one-hot row
        out[i] = res
        flags[i] = (1 if neg > 0 else 0) | _redo(
            res, S, 1.0, normalize and c > 0, tiny, huge, False
        )


@njit(**ROW)
def _row_pq(rp, rq, like, kl):
    c = rp.shape[0]
    Sp = 0.0
    Sq = 0.0
    B = 0.0
    negp = 0.0
    negq = 0.0
    nanq = 0.0
    for lo in range(0, c, BLOCK):
        sp, sq, b, n1, n2, n3 = _blk_pq(rp, rq, lo, min(lo + BLOCK, c), like, kl)
        Sp += np.float64(sp)
        Sq += np.float64(sq)
        B += np.float64(b)
        negp += np.float64(n1)
        negq += np.float64(n2)
        nanq += np.float64(n3)
    flag = (1 if negp > 0 else 0) | (2 if negq > 0 else 0)
    return Sp, Sq, B, flag, nanq > 0


@njit(**KERNEL)
def cross_entropy(p, q, q_step, normalize, tiny, huge, out, flags):
    """H(p, q) = -sum p log q; with normalize: log Sq - (sum p log q) / Sp."""
    c = p.shape[1]
    for i in prange(p.shape[0]):
        Sp, Sq, B, flag, has_nan = _row_pq(p[i], q[i * q_step], out, False)
        res = np.log(Sq) - B / Sp if normalize and c > 0 else 0.0 - B
        res = np.nan if has_nan else res
        out[i] = res
        flags[i] = flag | _redo(res, Sp, Sq, normalize and c > 0, tiny, huge, False)


@njit(**KERNEL)
def kl_divergence(p, q, q_step, normalize, tiny, huge, out, flags):
    """D(p || q) = sum p (log p - log q); with normalize: K / Sp - log Sp + log Sq."""
    c = p.shape[1]
    for i in prange(p.shape[0]):
        Sp, Sq, K, flag, has_nan = _row_pq(p[i], q[i * q_step], out, True)
        res = K / Sp + (np.log(Sq) - np.log(Sp)) if normalize and c > 0 else K
        res = np.nan if has_nan else res
        out[i] = res
        flags[i] = flag | _redo(res, Sp, Sq, normalize and c > 0, tiny, huge, False)


@njit(**ROW)
def _row_sum_neg(r, like):
    c = r.shape[0]
    S = 0.0
    neg = 0.0
    for lo in range(0, c, BLOCK):
        s, ng = _blk_sum_neg(r, lo, min(lo + BLOCK, c), like)
        S += np.float64(s)
        neg += np.float64(ng)
    return S, neg


@njit(**KERNEL)
def js_divergence(p, q, q_step, normalize, tiny, huge, out, flags):
    """JS = 1/2 sum [p log(p/m) + q log(q/m)], m = (p + q) / 2; normalize scales p, q first
    (a first pass for the sums: the mixture m does not allow a closed-form correction)."""
    c = p.shape[1]
    for i in prange(p.shape[0]):
        rp = p[i]
        rq = q[i * q_step]
        Sp, negp = _row_sum_neg(rp, out)
        Sq, negq = _row_sum_neg(rq, out)
        flag = (1 if negp > 0 else 0) | (2 if negq > 0 else 0)
        fp = cst(out, 1.0 / Sp) if normalize else cst(out, 1.0)
        fq = cst(out, 1.0 / Sq) if normalize else cst(out, 1.0)
        J = 0.0
        for lo in range(0, c, BLOCK):
            J += np.float64(_blk_js(rp, rq, lo, min(lo + BLOCK, c), fp, fq))
        res = 0.5 * J
        out[i] = res
        # bounded: JS <= (Sp + Sq) log(2) / 2 is never infinite for finite inputs
        flags[i] = flag | _redo(res, Sp, Sq, normalize and c > 0, tiny, huge, True)
