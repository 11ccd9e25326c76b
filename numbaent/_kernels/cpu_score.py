"""CPU kernel for ``score``: every per-row statistic in ONE pass over the logits (and the teacher).

Per row and block, at temperature T_ (it = 1 / T_): the block max (integer keys) of the logits gives
the running max m, the argmax (the first index of the first block that raises m) and the second
maximum m2 (the largest of the other blocks' maxima and of the displaced maxima; the argmax's block
is rescanned once at the end for its own second value); one fused loop then accumulates, with
u = (x - m) it and e = exp(u), S = sum e, T = sum e u (entropy), S2 = sum e^2 (sum p^2 = S2 / S^2,
the Brier score), and, with a teacher, St = sum et, U = sum et ((a - mt) - (x - m)) in raw logit
units (a the teacher logit, et = exp((a - mt) it); see kl_move in _blocks). With labels, the
classes ranked above the label are counted in the same pass (block_score; block_rank in
the max pass of two-pass blocks, a pass of its own over the L1 block with a teacher).
Nothing is divided by T_ before the max is subtracted. ``like`` (an empty array of the logits' math
dtype) sets the working precision; the outputs may be wider (float64 outputs of float32 logits:
the per-chunk states of numbaent.linear, at float32 speed). From these: confidence = 1 / S, margin =
(1 - exp((m2 - m) it)) / S, brier = S2 / S^2 - 2 p_y + 1.
"""

from __future__ import annotations

import math

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
    block_rank,
    block_score,
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

NAN = np.nan
# score's blocks without a teacher: twice BLOCK, which halves the per-block work around the one
# loop (its five sums' reductions, the running max, the ranks' bookkeeping: 3% at C = 32000)
SCORE_BLOCK = 2 * BLOCK


@njit(**BLK)
def _blk_teacher(r, rt, lo, hi, rm, rt_):
    """T = 1: (sum e, sum e d, sum e^2, sum et, sum et ((a - ra) - d)) with d = x - rm, a = teacher
    logit."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    rt = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    s2 = z
    st = z
    u = z
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        d = xv - rm
        e = vexpz(d)
        s += e
        t += z if e == 0 else e * d
        s2 += e * e
        av = cst(rm, ld(rt[j]))
        da = av - rt_
        et = vexpz(da)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides (a - ref overflows)
    return s, t, s2, st, u


@njit(**BLK)
def _blk_teacher_fused(r, rt, lo, hi, rm, rt_, y, xy):
    """As _blk_teacher against the references of earlier blocks, plus both block maxima (see
    SLACK in _blocks: the caller redoes the block when a max jumps too far), and in a second,
    exp-free loop over the L1 block (block_rank) the model's block min (KL_FAR) and the count
    above the label. All in one loop, the accumulators spilled registers inside the kernel and it
    ran at half the speed."""
    rv = r[lo:hi]
    rtv = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    s2 = z
    st = z
    u = z
    k = key(cst(rm, NINF))
    kt = k
    for j in range(hi - lo):
        xv = cst(rm, ld(rv[j]))
        av = cst(rm, ld(rtv[j]))
        kk = key(xv)
        k = kk if kk > k else k
        kk = key(av)
        kt = kk if kk > kt else kt
        d = xv - rm
        e = vexpz(d)
        s += e
        t += z if e == 0 else e * d
        s2 += e * e
        da = av - rt_
        et = vexpz(da)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides
    _, bmin, cnt = block_rank(r, lo, hi, y, xy)
    return s, t, s2, cnt, st, u, unkey(k, rm), unkey(kt, rm), bmin


@njit(**BLK)
def _blk_teacher_t(r, rt, lo, hi, rm, rt_, it):
    """T != 1: the model's sums at the temperature, (sum e, sum e w, sum e^2) with w = (x - rm) it
    and e = exp(w), and the teacher's, et = exp((a - rt_) it); U stays in raw units."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    rt = rt[lo:hi]
    z = cst(rm, 0.0)
    s = z
    t = z
    s2 = z
    st = z
    u = z
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        d = xv - rm
        w = d * it
        e = vexpz(w)
        s += e
        t += z if e == 0 else e * w
        s2 += e * e
        av = cst(rm, ld(rt[j]))
        da = av - rt_
        et = vexpz(da * it)
        st += et
        u += z if av == NINF else et * (da - d)  # the raw teacher logit decides
    return s, t, s2, st, u


@njit(**ROW)
def _teacher_exact_block(r, rt, lo, hi, rm, rt_, s, t, s2, st, u):
    """T = 1, when a KL term flushed to 0 counts (KL_FAR): a float32 block's sums again in
    float64; a float64 block's U is FLUSHED (the row's KL goes to the exact path)."""
    if kl_flush_risk(rt, r, lo, hi, rt_, rm, cst(rm, 1.0)):
        if is_f32(rm):
            return _blk_teacher(r, rt, lo, hi, np.float64(rm), np.float64(rt_))
        return np.float64(s), np.float64(t), np.float64(s2), np.float64(st), FLUSHED
    return np.float64(s), np.float64(t), np.float64(s2), np.float64(st), np.float64(u)


@njit(**BLK)
def _first_index(r, lo, hi, v, like):
    """The first index in [lo, hi) holding v (lo if none): 64 elements at a time, counted in
    SIMD lanes, and only the chunk that holds v scanned element by element (a scalar scan from lo
    cost as much as the sums for rows of 1000)."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    one = cst(like, 1.0)
    z = cst(like, 0.0)
    n = hi - lo
    for c0 in range(0, n, 64):
        w = r[c0 : min(c0 + 64, n)]
        hit = z
        for j in range(w.shape[0]):
            hit += one if cst(like, ld(w[j])) == v else z
        if hit > z:
            for j in range(w.shape[0]):
                if cst(like, ld(w[j])) == v:
                    return lo + c0 + j
    return lo


@njit(**ROW)
def _first_nan(r):
    for j in range(r.shape[0]):
        v = ld(r[j])
        if v != v:
            return j
    return -1


@njit(**ROW)
def _second_max(r, lo, hi, am, m2, like):
    """The largest of m2 and the values of r[lo:hi] other than the one at index am."""
    a = block_max(r, lo, am, like)
    b = block_max(r, am + 1, hi, like)
    a = a if a > b else b
    return a if a > m2 else m2


@njit(**ROW)
def _displace(m, m2, bx):
    """The second maximum after a block whose max is bx meets the running max m: a larger bx
    displaces m, which becomes a candidate; otherwise bx itself is one (a tie with m included)."""
    v = m if bx > m else bx
    return v if v > m2 else m2


@njit(**KERNEL)
def score(x, y, has_labels, ignore_index, tq, has_teacher, inv_t, like, lse, ent, amax, conf, margin,
          ce, correct, rank, brier, kl, bad):  # fmt: skip
    c = x.shape[1]
    it = cst(like, inv_t)
    one_t = inv_t == 1.0
    slack = cst(like, SLACK)
    blk = KL_BLOCK if has_teacher else SCORE_BLOCK
    for i in prange(x.shape[0]):
        r = x[i]
        rt = tq[i]  # tq is x itself when there is no teacher
        lab = y[i] if has_labels else ignore_index
        lab_ok = has_labels and lab != ignore_index and lab >= 0 and lab < c
        xy = cst(like, ld(r[lab])) if lab_ok else cst(like, np.inf)
        ylab = lab if lab_ok else c  # block_score counts nothing that matters without a label
        above = 0
        m = cst(like, NINF)  # the first block takes two passes (see SLACK in _blocks)
        m2 = m
        mt = cst(like, NINF)
        S = 0.0
        T = 0.0
        S2 = 0.0
        am = 0
        amlo = -1  # the block that first reached the current max (scanned once, at the end)
        St = 0.0
        U = 0.0
        for lo in range(0, c, blk):
            hi = min(lo + blk, c)
            done = False
            cnt = 0
            if one_t and m != NINF and (not has_teacher or mt != NINF):
                # one pass: sums against the current references, block maxima alongside
                if has_teacher:
                    s, t, s2, cnt, st, u, bx, fbt, fbmin = _blk_teacher_fused(
                        r, rt, lo, hi, m, mt, ylab, xy
                    )
                    done = bx <= m + slack and fbt <= mt + slack
                    if done and kl_far_below(fbmin, m, 1.0, like):
                        s, t, s2, st, u = _teacher_exact_block(r, rt, lo, hi, m, mt, s, t, s2,
                                                               st, u)  # fmt: skip
                else:
                    if has_labels:
                        s, t, s2, cnt, bx = block_score(r, lo, hi, m, ylab, xy)
                    else:  # no Brier score, no rank: the entropy's loop alone
                        s, t, bx = block_sumexp_t_max(r, lo, hi, m)
                        s2 = cst(like, 0.0)
                    fbt = mt
                    done = bx <= m + slack
                if done:
                    S += np.float64(s)
                    T += np.float64(t)
                    S2 += np.float64(s2)
                    if has_teacher:
                        St += np.float64(st)
                        U += np.float64(u)
                    bm = update_max(m, bx)
                    bmt = update_max(mt, fbt)
            bmin = cst(like, np.inf)  # the model's block min (two-pass blocks with a teacher)
            if done:
                above += cnt  # counted in block_score's loop
            elif not has_teacher and lab_ok:
                bx, _, cnt = block_rank(r, lo, hi, lab, xy)  # counted in the max pass
                above += cnt
                bm = update_max(m, bx)
                bmt = mt
            elif lab_ok:  # a two-pass block with a teacher: a pass of its own, in L1
                above += block_rank(r, lo, hi, lab, xy)[2]
            if not done and (has_teacher or not lab_ok):
                if has_teacher:
                    bx, bmin = block_max_min(r, lo, hi, like)
                    bmt = update_max(mt, block_max(rt, lo, hi, like))
                else:
                    bx = block_max(r, lo, hi, like)
                    bmt = mt
                bm = update_max(m, bx)
            m2 = _displace(m, m2, bx)
            # move the references to the new maxima (the sums already added follow exactly)
            if has_teacher and (bmt != mt or bm != m):
                U, St = kl_move(U, St, mt, bmt, ref_of(m), ref_of(bm), inv_t)
                mt = bmt
            if bm != m:
                f = rescale(m, bm) if one_t else rescale_t(m, bm, inv_t)
                T = move_t(T, S, m, bm, f, inv_t)
                S *= f
                S2 *= f * f
                if bm > m:
                    amlo = lo
                m = bm
            if done:
                continue
            rm = ref_of(m)
            if not has_teacher:
                if one_t:  # None: compiled without the product by 1 / T
                    s, t, s2 = block_sumexp_t(r, lo, hi, rm, None)
                else:
                    s, t, s2 = block_sumexp_t(r, lo, hi, rm, it)
            else:
                rt_ = ref_of(mt)
                far = kl_far_below(bmin, rm, inv_t, like)
                if one_t:
                    s, t, s2, st, u = _blk_teacher(r, rt, lo, hi, rm, rt_)
                    if far:
                        s, t, s2, st, u = _teacher_exact_block(r, rt, lo, hi, rm, rt_, s, t, s2,
                                                               st, u)  # fmt: skip
                else:
                    s, t, s2, st, u = _blk_teacher_t(r, rt, lo, hi, rm, rt_, it)
                    if far and kl_flush_risk(rt, r, lo, hi, rt_, rm, it):  # as _teacher_exact_block
                        if is_f32(like):
                            s, t, s2, st, u = _blk_teacher_t(
                                r, rt, lo, hi, np.float64(rm), np.float64(rt_), inv_t
                            )
                        else:
                            u = FLUSHED
                St += np.float64(st)
                U += np.float64(u)
            S += np.float64(s)
            T += np.float64(t)
            S2 += np.float64(s2)
        if amlo >= 0:
            hi = min(amlo + blk, c)
            am = _first_index(r, amlo, hi, m, like)
            m2 = _second_max(r, amlo, hi, am, m2, like)
        S = at_least_one(S, m)
        logS = np.log(S)
        lse[i] = np.float64(m) * inv_t + logS
        ent[i] = nonneg(logS - T / S)
        valid = S == S and m > NINF
        if S != S:
            nan_at = _first_nan(r)
            if nan_at >= 0:
                am = nan_at
        amax[i] = am
        conf[i] = 1.0 / S if valid else NAN
        margin[i] = (
            (0.0 - math.expm1((np.float64(m2) - np.float64(m)) * inv_t)) / S if valid else NAN
        )
        if has_teacher:
            kl[i] = kl_from_states(U, at_least_one(St, mt), S, inv_t)
        if has_labels:
            rank[i] = -1
            correct[i] = False
            if lab == ignore_index:
                ce[i] = 0
                brier[i] = 0
            elif not lab_ok:
                bad[i] = 1
                ce[i] = NAN
                brier[i] = NAN
            else:
                cev = (np.float64(m) - np.float64(xy)) * inv_t + logS
                ce[i] = cev
                brier[i] = nonneg(S2 / (S * S) - 2.0 * math.exp(-cev) + 1.0) if valid else NAN
                if valid:
                    rank[i] = above
                    correct[i] = above == 0


@njit(**BLK)
def _count_row(r, t, lab_i):
    """Classes j != lab_i of the row with r[j] > t, or r[j] == t at j < lab_i (in float64)."""
    c = r.shape[0]
    lo = min(max(lab_i, 0), c)
    a = r[:lo]
    n = 0
    for j in range(a.shape[0]):
        n += 1 if np.float64(a[j]) >= t else 0
    b = r[lo + 1 if 0 <= lab_i < c else lo :]
    for j in range(b.shape[0]):
        n += 1 if np.float64(b[j]) > t else 0
    return n


@njit(**KERNEL)
def count_above(x, thr, lab, out):
    """Per row i of a chunk of logits: the classes j != lab[i] with x[i, j] > thr[i], or equal at
    j < lab[i] (the rank's count in numbaent.linear; lab < 0: none lower, lab >= C: all lower).
    Compared in float64, exactly."""
    for i in prange(x.shape[0]):
        out[i] = _count_row(x[i], thr[i], lab[i])
