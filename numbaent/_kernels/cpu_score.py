"""CPU kernel for ``score``: every per-row statistic in ONE pass over the logits (and the teacher).

Per row and block: the block max (integer keys) of the logits gives the running max m and the argmax
(the first index of the first block that raises m); one fused loop then accumulates
S = sum e, T = sum e (x - m) (entropy), and, with a teacher at temperature T_,
St = sum et, U = sum et (a - b) with a = teacher / T_, b = logits / T_, and, when T_ != 1, the model's
own sum at that temperature, Sb = sum exp(b - m / T_) (max(b) = m / T_ since rounding is monotone).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._vmath import cst, ld, vexpm
from ._blocks import (
    BLOCK,
    FASTMATH,
    NINF,
    block_max,
    block_max_scaled,
    ref_of,
    rescale,
    update_max,
)


@njit
def _first_index(r, lo, hi, v, like):
    for j in range(lo, hi):
        if cst(like, ld(r[j])) == v:
            return j
    return lo


@njit
def _first_nan(r):
    for j in range(r.shape[0]):
        v = ld(r[j])
        if v != v:
            return j
    return -1


@njit(parallel=True, fastmath=FASTMATH)
def score(x, y, has_labels, ignore_index, tq, has_teacher, inv_t, lse, ent, amax, ce, correct, kl, bad):
    c = x.shape[1]
    it = cst(lse, inv_t)
    one_t = inv_t == 1.0
    for i in prange(x.shape[0]):
        r = x[i]
        rt = tq[i]  # tq is x itself when there is no teacher
        m = cst(lse, NINF)
        S = 0.0
        T = 0.0
        am = 0
        mt = cst(lse, NINF)
        St = 0.0
        U = 0.0
        Sb = 0.0
        for lo in range(0, c, BLOCK):
            hi = min(lo + BLOCK, c)
            bm = update_max(m, block_max(r, lo, hi, lse))
            if bm != m:
                f = rescale(m, bm)
                if m != NINF:
                    T = f * (T + (float(m) - float(bm)) * S)
                S *= f
                if not one_t:
                    Sb *= rescale(m * it, bm * it)
                if bm > m:
                    am = _first_index(r, lo, hi, bm, lse)
                m = bm
            rm = ref_of(m)
            s = rm * 0
            t = rm * 0
            if not has_teacher:
                for j in range(lo, hi):
                    d = cst(lse, ld(r[j])) - rm
                    e = vexpm(d)
                    s += e
                    t += rm * 0 if e == 0 else e * d
            else:
                bmt = update_max(mt, block_max_scaled(rt, lo, hi, lse, it))
                if bmt != mt:
                    f = rescale(mt, bmt)
                    St *= f
                    U *= f
                    mt = bmt
                rt_ = ref_of(mt)
                st = rm * 0
                u = rm * 0
                if one_t:
                    for j in range(lo, hi):
                        xv = cst(lse, ld(r[j]))
                        d = xv - rm
                        e = vexpm(d)
                        s += e
                        t += rm * 0 if e == 0 else e * d
                        av = cst(lse, ld(rt[j]))
                        et = vexpm(av - rt_)
                        st += et
                        u += rm * 0 if et == 0 else et * (av - xv)
                else:
                    rb = rm * it
                    sb = rm * 0
                    for j in range(lo, hi):
                        xv = cst(lse, ld(r[j]))
                        d = xv - rm
                        e = vexpm(d)
                        s += e
                        t += rm * 0 if e == 0 else e * d
                        bv = xv * it
                        sb += vexpm(bv - rb)
                        av = cst(lse, ld(rt[j])) * it
                        et = vexpm(av - rt_)
                        st += et
                        u += rm * 0 if et == 0 else et * (av - bv)
                    Sb += float(sb)
                St += float(st)
                U += float(u)
            S += float(s)
            T += float(t)
        logS = np.log(S)
        lse[i] = float(m) + logS
        ent[i] = logS - T / S
        if S != S:
            nan_at = _first_nan(r)
            if nan_at >= 0:
                am = nan_at
        amax[i] = am
        if has_teacher:
            if one_t:
                lb = float(m) + logS
            else:
                lb = float(m * it) + np.log(Sb)
            kl[i] = U / St - (float(mt) + np.log(St)) + lb
        if has_labels:
            lab = y[i]
            if lab == ignore_index:
                ce[i] = 0
                correct[i] = False
            elif lab < 0 or lab >= c:
                bad[i] = 1
                ce[i] = np.nan
                correct[i] = False
            else:
                cev = (float(m) - float(ld(r[lab]))) + logS
                ce[i] = cev
                correct[i] = am == lab and cev == cev
