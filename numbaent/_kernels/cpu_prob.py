"""CPU kernels for probability rows. Pure arithmetic, no validation.

Inputs are C-contiguous 2-D arrays (float32, float64, int16 = float16 bits, uint16 = bfloat16 bits);
``q`` may have a single row shared by all rows (``q_step = 0``). Each kernel writes its result to
``out`` and sets ``flags[i]`` for row faults the validation layer turns into errors:
bit 1 = a negative value in p, bit 2 = a negative value in q.

Terms with p == 0 contribute exactly 0 (0 log 0 = 0, 0 log(0/0) = 0). The test is ``p == 0``, not
``p > 0``, so a NaN p still poisons the sum. A NaN in q where p == 0 is caught by counting NaNs in q.
Block sums are in the math type over at most BLOCK elements and are added up in float64, so the error
does not grow with C.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._vmath import cst, ld, vlog
from ._blocks import BLOCK, FASTMATH


@njit(parallel=True, fastmath=FASTMATH)
def entropy(p, normalize, out, flags):
    """H = -sum p log p; with normalize: H(p / S) = log S - (sum p log p) / S."""
    c = p.shape[1]
    z = cst(out, 0.0)
    for i in prange(p.shape[0]):
        r = p[i]
        S = 0.0
        A = 0.0
        neg = 0
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            s = z
            a = z
            for j in range(lo, hi):
                v = cst(out, ld(r[j]))
                s += v
                a += z if v == 0 else v * vlog(v)
                neg += v < 0
            S += float(s)
            A += float(a)
        flags[i] = 1 if neg > 0 else 0
        if normalize:
            out[i] = np.log(S) - A / S
        else:
            out[i] = -A


@njit(parallel=True, fastmath=FASTMATH)
def cross_entropy(p, q, q_step, normalize, out, flags):
    """H(p, q) = -sum p log q; with normalize: log Sq - (sum p log q) / Sp."""
    c = p.shape[1]
    z = cst(out, 0.0)
    for i in prange(p.shape[0]):
        rp = p[i]
        rq = q[i * q_step]
        Sp = 0.0
        Sq = 0.0
        B = 0.0
        negp = 0
        negq = 0
        nanq = 0
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            sp = z
            sq = z
            b = z
            for j in range(lo, hi):
                pv = cst(out, ld(rp[j]))
                qv = cst(out, ld(rq[j]))
                sp += pv
                sq += qv
                b += z if pv == 0 else pv * vlog(qv)
                negp += pv < 0
                negq += qv < 0
                nanq += qv != qv
            Sp += float(sp)
            Sq += float(sq)
            B += float(b)
        flags[i] = (1 if negp > 0 else 0) | (2 if negq > 0 else 0)
        res = np.log(Sq) - B / Sp if normalize else -B
        out[i] = np.nan if nanq > 0 else res


@njit(parallel=True, fastmath=FASTMATH)
def kl_divergence(p, q, q_step, normalize, out, flags):
    """D(p || q) = sum p (log p - log q); with normalize: K / Sp - log Sp + log Sq."""
    c = p.shape[1]
    z = cst(out, 0.0)
    for i in prange(p.shape[0]):
        rp = p[i]
        rq = q[i * q_step]
        Sp = 0.0
        Sq = 0.0
        K = 0.0
        negp = 0
        negq = 0
        nanq = 0
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            sp = z
            sq = z
            k = z
            for j in range(lo, hi):
                pv = cst(out, ld(rp[j]))
                qv = cst(out, ld(rq[j]))
                sp += pv
                sq += qv
                k += z if pv == 0 else pv * (vlog(pv) - vlog(qv))
                negp += pv < 0
                negq += qv < 0
                nanq += qv != qv
            Sp += float(sp)
            Sq += float(sq)
            K += float(k)
        flags[i] = (1 if negp > 0 else 0) | (2 if negq > 0 else 0)
        res = K / Sp - np.log(Sp) + np.log(Sq) if normalize else K
        out[i] = np.nan if nanq > 0 else res


@njit(fastmath=FASTMATH)
def _row_sum_neg(r, like):
    c = r.shape[0]
    S = 0.0
    neg = 0
    z = cst(like, 0.0)
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        s = z
        for j in range(lo, hi):
            v = cst(like, ld(r[j]))
            s += v
            neg += v < 0
        S += float(s)
    return S, neg


@njit(parallel=True, fastmath=FASTMATH)
def js_divergence(p, q, q_step, normalize, out, flags):
    """JS = 1/2 sum [p log(p/m) + q log(q/m)], m = (p + q) / 2; normalize scales p, q first
    (a first pass for the sums: the mixture m does not allow a closed-form correction)."""
    c = p.shape[1]
    z = cst(out, 0.0)
    half = cst(out, 0.5)
    for i in prange(p.shape[0]):
        rp = p[i]
        rq = q[i * q_step]
        Sp, negp = _row_sum_neg(rp, out)
        Sq, negq = _row_sum_neg(rq, out)
        flags[i] = (1 if negp > 0 else 0) | (2 if negq > 0 else 0)
        fp = cst(out, 1.0 / Sp) if normalize else cst(out, 1.0)
        fq = cst(out, 1.0 / Sq) if normalize else cst(out, 1.0)
        J = 0.0
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            a = z
            for j in range(lo, hi):
                pv = cst(out, ld(rp[j])) * fp
                qv = cst(out, ld(rq[j])) * fq
                lm = vlog((pv + qv) * half)
                a += z if pv == 0 else pv * (vlog(pv) - lm)
                a += z if qv == 0 else qv * (vlog(qv) - lm)
            J += float(a)
        out[i] = 0.5 * J
