"""CUDA kernel for ``score``: every per-row statistic in ONE pass over the logits (and the teacher).

The model's distribution is p = softmax(x / T_), it = 1 / T_; nothing is divided by T_ before a
maximum is subtracted. Per thread and tile (see ``kernels_logits``): the running max m (raw
logits) and the first index of the maximum and of the first NaN are tracked element by element in
index order, and with them the second maximum m2, counted with multiplicity (a raised maximum
leaves the old one as a candidate; a tie with the maximum makes m2 = m); with a valid label y each
thread loads x_y once per row and counts the classes ranked above it (x_j > x_y, or x_j == x_y
and j < y). One fused loop then accumulates, with d = x - m and e = exp(d it), S = sum e,
T = sum e d (raw units), S2 = sum e^2, and with a teacher a, St = sum et, et = exp((a - mt) it),
U = sum et ((a - mt) - d) in raw units against the raw maxima mt (teacher) and m (logits). The
block combines the threads' SCORE states (``_devmath.combine_score``); thread 0 writes the row:

    lse = m it + log S    entropy = log S - it T / S    confidence = 1 / S
    margin = (1 - exp((m2 - m) it)) / S    ce = (m - x_y) it + log S
    brier = S2 / S^2 - 2 exp(-ce) + 1    KL = it U / St + log S - log St

A row with a NaN or +inf logit, or only -inf, has NaN confidence, margin and brier, rank -1. A
non-finite KL (a finite teacher logit over a -inf logit, float32 overflow) is recomputed by the
host's exact path. argmax follows np.argmax: the first index of the maximum, or of the first NaN
if there is one; rank and correct (rank == 0) are decided on the raw logits.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._devmath import (
    BIG,
    F64,
    NINF,
    SHARED_T,
    block_reduce,
    combine_score,
    dev,
    exp_,
    expm1_,
    kl_move,
    loader,
    log_,
    quiet,
    ref64,
    row_kernel,
    score_move,
    score_slots,
)


@functools.cache
def score(kx, kt, mt, threads, warp, tile, has_labels, has_teacher, one_t):
    """``kt`` is the teacher's element kind (the logits' on the host path, where the teacher is
    converted to the logits' dtype first)."""
    ldx = loader(kx, mt)
    ldt = loader(kt, mt)
    nc, kr = score_slots(has_teacher, has_labels)
    red = block_reduce(combine_score(has_teacher, has_labels), nc, threads, warp)
    step = threads * tile
    zero = mt(0.0)

    @dev
    def row(x, tq, it, it64, i, c, tid, lab, xy, xbuf, tbuf, st):
        m = mt(NINF)
        m2 = mt(NINF)
        S = F64(0.0)
        T = F64(0.0)
        S2 = F64(0.0)
        mt_ = mt(NINF)
        St = F64(0.0)
        U = F64(0.0)
        bi = BIG
        ni = BIG
        above = 0
        for j0 in range(tid, c, step):
            nm = m
            nmt = mt_
            for k in range(tile):
                j = j0 + k * threads
                v = mt(NINF)
                a = mt(NINF)
                if j < c:
                    v = ldx(x, i, j)
                    if v > nm or (bi == BIG and v == nm):
                        m2 = nm
                        nm = v
                        bi = j
                    elif v > m2:  # a tie with the max included
                        m2 = v
                    if v != v and ni == BIG:
                        ni = j
                    if has_labels and (v > xy or (v == xy and j < lab)):  # xy NaN: no label
                        above += 1
                    if has_teacher:
                        a = ldt(tq, i, j)
                        if a > nmt:
                            nmt = a
                xbuf[k] = v
                tbuf[k] = a
            if has_teacher and (nmt != mt_ or nm != m):  # KL against the raw maxima mt_, m
                U, St = kl_move(U, St, mt_, nmt, ref64(m), ref64(nm), it64)
                mt_ = nmt
            S, T, S2 = score_move(S, T, S2, m, nm, it64)
            m = nm
            rm = m if m != NINF else zero
            rt = mt_ if mt_ != NINF else zero
            s = zero
            t = zero
            s2 = zero
            st_ = zero
            u = zero
            for k in range(tile):
                d = xbuf[k] - rm
                e = exp_(d if one_t else d * it)
                s += e
                t += zero if e == 0 else e * d
                s2 += e * e
                if has_teacher:
                    da = tbuf[k] - rt
                    et = exp_(da if one_t else da * it)
                    st_ += et
                    u += zero if tbuf[k] == NINF else et * (da - d)  # raw teacher logit decides
            S += F64(s)
            T += F64(t)
            S2 += F64(s2)
            St += F64(st_)
            U += F64(u)
        st[0] = m
        st[1] = S
        st[2] = T
        st[3] = S2
        st[4] = m2
        st[5] = bi
        st[6] = ni
        if has_teacher:
            st[7] = mt_
            st[8] = St
            st[9] = U
        if has_labels:
            st[kr] = above

    @row_kernel(threads)
    def kernel(x, y, ignore_index, tq, inv_t, lse, ent, amax, conf, margin, ce, correct, rank,
               brier, kl, first):  # fmt: skip
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        it = mt(inv_t)
        it64 = F64(inv_t)
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(nc, np.float64)
        ot = cuda.local.array(nc, np.float64)
        xbuf = cuda.local.array(tile, mt)
        tbuf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            lab = 0
            xy = mt(np.nan)  # no valid label: nothing counts as ranked above it
            if has_labels:
                lab = y[i]
                if lab != ignore_index and lab >= 0 and lab < c:
                    xy = ldx(x, i, lab)
            row(x, tq, it, it64, i, c, tid, lab, xy, xbuf, tbuf, st)
            red(st, ot, sh, it64)
            if tid == 0:
                m = st[0]
                S = st[1]
                logS = log_(S)
                lse[i] = m * it64 + logS
                ent[i] = logS - it64 * st[2] / S
                am = 0
                if st[6] < BIG:  # a NaN: np.argmax gives its first index
                    am = int(st[6])
                elif st[5] < BIG:
                    am = int(st[5])
                amax[i] = am
                valid = S == S and m != NINF  # not NaN, +inf or all -inf
                conf[i] = 1.0 / S if valid else np.nan
                margin[i] = (0.0 - expm1_((st[4] - m) * it64)) / S if valid else np.nan  # +0: a tie
                if has_teacher:
                    kl[i] = (it64 * st[9]) / st[8] + (logS - log_(st[8]))
                if has_labels:
                    rk = -1
                    if lab == ignore_index:
                        ce[i] = 0
                        brier[i] = 0
                    elif lab < 0 or lab >= c:
                        ce[i] = np.nan
                        brier[i] = np.nan
                        cuda.atomic.min(first, 0, i)
                    else:
                        cev = (m - F64(xy)) * it64 + logS
                        ce[i] = cev
                        b = np.nan
                        if valid:
                            b = st[3] / (S * S) - 2.0 * exp_(-cev) + 1.0
                            if b < 0:  # rounding near a one-hot row
                                b = 0.0
                            rk = int(st[kr])
                        brier[i] = b
                    rank[i] = rk
                    correct[i] = rk == 0

    return kernel
