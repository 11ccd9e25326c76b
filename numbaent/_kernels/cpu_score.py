"""CPU kernel for ``score``: every per-row statistic in ONE pass over the logits (and the teacher).

Per row and block: the block max (integer keys) of the logits gives the running max m and the argmax
(the first index of the first block that raises m); one fused loop then accumulates
S = sum e, T = sum e (x - m) (entropy), and, with a teacher at temperature T_,
St = sum et, U = sum et ((a - mt) - (x - m)) in raw logit units (a the teacher logit, et =
exp((a - mt) / T_); see kl_move in _blocks) and, when T_ != 1, the model's own sum at that
temperature, Sb = sum exp((x - m) / T_). Nothing is divided by T_ before the max is subtracted.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._vmath import cst, key, ld, unkey, vexpz
from ._blocks import (
    BLK,
    BLOCK,
    FLUSHED,
    KERNEL,
    KL_BLOCK,
    NINF,
    ROW,
    SLACK,
    at_least_one,
    block_max,
    block_max_min,
    block_sumexp_t,
    block_sumexp_t_max,
    is_f32,
    kl_far_below,
    kl_flush_risk,
    kl_from_states,
    kl_move,
    move_t,
    nonneg,
    ref_of,
    rescale,
    rescale_t,
    update_max,
)


@njit(**BLK)
def _blk_teacher(r, rt, lo, hi, rm, rt_):
    """T = 1: (sum e, sum e d, sum et, sum et ((a - ra) - d)) with d = x - rm, a = teacher logit."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    rt = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    st = z
    u = z
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        d = xv - rm
        e = vexpz(d)
        s += e
        t += z if e == 0 else e * d
        av = cst(rm, ld(rt[j]))
        da = av - rt_
        et = vexpz(da)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides (a - ref overflows)
    return s, t, st, u


@njit(**BLK)
def _blk_teacher_fused(r, rt, lo, hi, rm, rt_):
    """As _blk_teacher against the references of earlier blocks, plus both block maxima and the
    model's block min in the same pass (see SLACK in _blocks: the caller redoes the block when a
    max jumps too far; KL_FAR for the min)."""
    r = r[lo:hi]
    rt = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    st = z
    u = z
    k = key(cst(rm, NINF))
    kt = k
    kmin = key(cst(rm, np.inf))
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        av = cst(rm, ld(rt[j]))
        kk = key(xv)
        k = kk if kk > k else k
        kmin = kk if kk < kmin else kmin
        kk = key(av)
        kt = kk if kk > kt else kt
        d = xv - rm
        e = vexpz(d)
        s += e
        t += z if e == 0 else e * d
        da = av - rt_
        et = vexpz(da)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides
    return s, t, st, u, unkey(k, rm), unkey(kt, rm), unkey(kmin, rm)


@njit(**BLK)
def _blk_teacher_t(r, rt, lo, hi, rm, rt_, it):
    """T != 1: as _blk_teacher with et = exp((a - rt_) it), plus the model's own exp-sum at the
    temperature, sum exp((x - rm) it); U stays in raw units."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    rt = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    sb = z
    st = z
    u = z
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        d = xv - rm
        e = vexpz(d)
        s += e
        t += z if e == 0 else e * d
        sb += vexpz(d * it)
        av = cst(rm, ld(rt[j]))
        da = av - rt_
        et = vexpz(da * it)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides
    return s, t, sb, st, u


@njit(**ROW)
def _teacher_exact_block(r, rt, lo, hi, rm, rt_, s, t, st, u):
    """T = 1, when a KL term flushed to 0 counts (KL_FAR): a float32 block's sums again in
    float64; a float64 block's U is FLUSHED (the row's KL goes to the exact path)."""
    if kl_flush_risk(rt, r, lo, hi, rt_, rm, cst(rm, 1.0)):
        if is_f32(rm):
            return _blk_teacher(r, rt, lo, hi, np.float64(rm), np.float64(rt_))
        return np.float64(s), np.float64(t), np.float64(st), FLUSHED
    return np.float64(s), np.float64(t), np.float64(st), np.float64(u)


@njit(**ROW)
def _first_index(r, lo, hi, v, like):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    for j in range(hi - lo):
        if cst(like, ld(r[j])) == v:
            return lo + j
    return lo


@njit(**ROW)
def _first_nan(r):
    for j in range(r.shape[0]):
        v = ld(r[j])
        if v != v:
            return j
    return -1


@njit(**KERNEL)
def score(
    x, y, has_labels, ignore_index, tq, has_teacher, inv_t, lse, ent, amax, ce, correct, kl, bad
):
    c = x.shape[1]
    it = cst(lse, inv_t)
    one_t = inv_t == 1.0
    slack = cst(lse, SLACK)
    blk = KL_BLOCK if has_teacher else BLOCK
    for i in prange(x.shape[0]):
        r = x[i]
        rt = tq[i]  # tq is x itself when there is no teacher
        m = cst(lse, NINF)  # the first block takes two passes (see SLACK in _blocks)
        mt = cst(lse, NINF)
        S = 0.0
        T = 0.0
        am = 0
        amlo = -1  # the block that first reached the current max (scanned once, at the end)
        St = 0.0
        U = 0.0
        Sb = 0.0
        for lo in range(0, c, blk):
            hi = min(lo + blk, c)
            done = False
            if one_t and m != NINF and (not has_teacher or mt != NINF):
                # one pass: sums against the current references, block maxima alongside
                if has_teacher:
                    s, t, st, u, fbm, fbt, fbmin = _blk_teacher_fused(r, rt, lo, hi, m, mt)
                    done = fbm <= m + slack and fbt <= mt + slack
                    if done and kl_far_below(fbmin, m, 1.0, lse):
                        s, t, st, u = _teacher_exact_block(r, rt, lo, hi, m, mt, s, t, st, u)
                else:
                    s, t, fbm = block_sumexp_t_max(r, lo, hi, m)
                    fbt = mt
                    done = fbm <= m + slack
                if done:
                    S += np.float64(s)
                    T += np.float64(t)
                    if has_teacher:
                        St += np.float64(st)
                        U += np.float64(u)
                    bm = update_max(m, fbm)
                    bmt = update_max(mt, fbt)
            bmin = cst(lse, np.inf)  # the model's block min (two-pass blocks with a teacher)
            if not done:
                if has_teacher:
                    fbm, bmin = block_max_min(r, lo, hi, lse)
                    bm = update_max(m, fbm)
                    bmt = update_max(mt, block_max(rt, lo, hi, lse))
                else:
                    bm = update_max(m, block_max(r, lo, hi, lse))
                    bmt = mt
            # move the references to the new maxima (the sums already added follow exactly)
            if has_teacher and (bmt != mt or bm != m):
                U, St = kl_move(U, St, mt, bmt, ref_of(m), ref_of(bm), inv_t)
                mt = bmt
            if bm != m:
                f = rescale(m, bm)
                T = move_t(T, S, m, bm, f)
                S *= f
                if not one_t:
                    Sb *= rescale_t(m, bm, inv_t)
                if bm > m:
                    amlo = lo
                m = bm
            if done:
                continue
            rm = ref_of(m)
            if not has_teacher:
                s, t = block_sumexp_t(r, lo, hi, rm)
            else:
                rt_ = ref_of(mt)
                far = kl_far_below(bmin, rm, inv_t, lse)
                if one_t:
                    s, t, st, u = _blk_teacher(r, rt, lo, hi, rm, rt_)
                    if far:
                        s, t, st, u = _teacher_exact_block(r, rt, lo, hi, rm, rt_, s, t, st, u)
                else:
                    s, t, sb, st, u = _blk_teacher_t(r, rt, lo, hi, rm, rt_, it)
                    if far and kl_flush_risk(rt, r, lo, hi, rt_, rm, it):  # as _teacher_exact_block
                        if is_f32(lse):
                            s, t, sb, st, u = _blk_teacher_t(
                                r, rt, lo, hi, np.float64(rm), np.float64(rt_), inv_t
                            )
                        else:
                            u = FLUSHED
                    Sb += np.float64(sb)
                St += np.float64(st)
                U += np.float64(u)
            S += np.float64(s)
            T += np.float64(t)
        if amlo >= 0:
            am = _first_index(r, amlo, min(amlo + blk, c), m, lse)
        S = at_least_one(S, m)
        logS = np.log(S)
        lse[i] = np.float64(m) + logS
        ent[i] = nonneg(logS - T / S)
        if S != S:
            nan_at = _first_nan(r)
            if nan_at >= 0:
                am = nan_at
        amax[i] = am
        if has_teacher:
            Sm = S if one_t else at_least_one(Sb, m)
            kl[i] = kl_from_states(U, at_least_one(St, mt), Sm, inv_t)
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
                cev = (np.float64(m) - np.float64(ld(r[lab]))) + logS
                ce[i] = cev
                correct[i] = am == lab and cev == cev
