"""CUDA kernel for ``score``: every per-row statistic in ONE pass over the logits (and the teacher).

Per thread and tile (see ``kernels_logits``): the tile maximum of the logits moves the running max
m; the first index of the maximum and of the first NaN are tracked in index order; one fused loop
then accumulates S = sum e, T = sum e (x - m) (entropy), and with a teacher a at temperature T_,
St = sum et, et = exp((a - mt) / T_), U = sum et ((a - mt) - (x - m)) in raw logit units against
the raw maxima mt (teacher) and m (logits) and, when T_ != 1, the model's own sum at that
temperature Sb = sum exp((x - m) / T_); KL = U / (T_ St) + log Sb - log St (as ``cpu_score``:
nothing is divided by T_ before a maximum is subtracted). The block combines the threads' SCORE
states (``_devmath.combine_score``); thread 0 writes the row. A non-finite KL (a finite teacher
logit over a -inf logit, float32 overflow) is recomputed by the host's exact path.

argmax follows np.argmax: the first index of the maximum, or of the first NaN if there is one.
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
    kl_move,
    loader,
    log_,
    lset_move,
    quiet,
    ref64,
    rescale_t,
    row_kernel,
)

NC = 9  # m, S, T, Sb, mt, St, U, argmax, first NaN


@functools.cache
def score(kx, kt, mt, threads, warp, tile, has_labels, has_teacher, one_t):
    """``kt`` is the teacher's element kind (the logits' on the host path, where the teacher is
    converted to the logits' dtype first)."""
    ldx = loader(kx, mt)
    ldt = loader(kt, mt)
    red = block_reduce(combine_score(mt), NC, threads, warp)
    step = threads * tile
    zero = mt(0.0)

    @dev
    def row(x, tq, it, it64, i, c, tid, xbuf, tbuf, st):
        m = mt(NINF)
        S = F64(0.0)
        T = F64(0.0)
        Sb = F64(0.0)
        mt_ = mt(NINF)
        St = F64(0.0)
        U = F64(0.0)
        best = mt(NINF)
        bi = BIG
        ni = BIG
        for j0 in range(tid, c, step):
            bm = mt(NINF)
            bmt = mt(NINF)
            for k in range(tile):
                j = j0 + k * threads
                v = mt(NINF)
                a = mt(NINF)
                if j < c:
                    v = ldx(x, i, j)
                    if v > best or (bi == BIG and v == best):
                        best = v
                        bi = j
                    if v != v and ni == BIG:
                        ni = j
                    if has_teacher:
                        a = ldt(tq, i, j)
                xbuf[k] = v
                tbuf[k] = a
                if v > bm:
                    bm = v
                if a > bmt:
                    bmt = a
            nm = bm if bm > m else m
            if has_teacher:  # KL(teacher || model) against the raw maxima mt_, m
                nmt = bmt if bmt > mt_ else mt_
                if nmt != mt_ or nm != m:
                    U, St = kl_move(U, St, mt_, nmt, ref64(m), ref64(nm), it64)
                    mt_ = nmt
            if nm != m:
                S, T = lset_move(S, T, m, nm)
                if has_teacher and not one_t:
                    Sb = Sb * rescale_t(m, nm, it64)
                m = nm
            rm = m if m != NINF else zero
            s = zero
            t = zero
            sb = zero
            st_ = zero
            u = zero
            rt = mt_ if mt_ != NINF else zero
            for k in range(tile):
                xv = xbuf[k]
                d = xv - rm
                e = exp_(d)
                s += e
                t += zero if e == 0 else e * d
                if has_teacher:
                    da = tbuf[k] - rt
                    if one_t:
                        et = exp_(da)
                    else:
                        et = exp_(da * it)
                        sb += exp_(d * it)
                    st_ += et
                    u += zero if tbuf[k] == NINF else et * (da - d)  # raw teacher logit decides
            S += F64(s)
            T += F64(t)
            Sb += F64(sb)
            St += F64(st_)
            U += F64(u)
        st[0] = m
        st[1] = S
        st[2] = T
        st[3] = Sb
        st[4] = mt_
        st[5] = St
        st[6] = U
        st[7] = bi
        st[8] = ni

    @row_kernel(threads)
    def kernel(x, y, ignore_index, tq, inv_t, lse, ent, amax, ce, correct, kl, bad, first):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        it = mt(inv_t)
        it64 = F64(inv_t)
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(NC, np.float64)
        ot = cuda.local.array(NC, np.float64)
        xbuf = cuda.local.array(tile, mt)
        tbuf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            row(x, tq, it, it64, i, c, tid, xbuf, tbuf, st)
            red(st, ot, sh, it64)
            if tid == 0:
                m = st[0]
                S = st[1]
                logS = log_(S)
                lse[i] = m + logS
                ent[i] = logS - st[2] / S
                am = 0
                if st[8] < BIG:  # a NaN: np.argmax gives its first index
                    am = int(st[8])
                elif st[7] < BIG:
                    am = int(st[7])
                amax[i] = am
                if has_teacher:
                    Sb = S if one_t else st[3]
                    kl[i] = (it64 * st[6]) / st[5] + (log_(Sb) - log_(st[5]))
                if has_labels:
                    lab = y[i]
                    if lab == ignore_index:
                        ce[i] = 0
                        correct[i] = False
                        bad[i] = 0
                    elif lab < 0 or lab >= c:
                        ce[i] = np.nan
                        correct[i] = False
                        bad[i] = 1
                        cuda.atomic.min(first, 0, i)
                    else:
                        cev = (m - F64(ldx(x, i, lab))) + logS
                        ce[i] = cev
                        correct[i] = am == lab and cev == cev
                        bad[i] = 0

    return kernel
