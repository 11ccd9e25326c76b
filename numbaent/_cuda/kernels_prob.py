"""CUDA kernels for probability rows: entropy, cross-entropy, KL and JS divergence.

Same layout as ``kernels_logits``: one block per row, each thread sums its strided tiles in the math
type and adds each tile's partial to float64 sums, then the block adds its threads' sums in a fixed
tree. Terms with p == 0 contribute exactly 0 (the test is ``p == 0``, so a NaN p still poisons the
sum); a NaN in q where p == 0 is caught by counting NaNs in q (as ``cpu_prob``).

Row faults: ``flags[i]`` gets bit 1 for a negative value in p, bit 2 for one in q (every row is
written), and ``first[0]`` the smallest row with one of them (atomic min; the caller initialises
``first`` to the number of rows), so the host reads one integer per call to know whether anything
was flagged. Bit 4 (``REDO``, ``exact.redo_bit``) asks for the exact path
(``numbaent._kernels.exact``): a NaN result from inputs without NaN, a +inf row sum (an infinite
probability: the row is NaN), a non-finite result where a row sum exceeds ``huge``, or, with
normalize, a row sum outside [tiny, huge] (limits of the math type, ``exact.limits``); ``first[1]``
gets the smallest such row, so ``first`` has two slots.
``q`` may have a single row shared by every row: ``q_step = 0``.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from .._kernels import exact
from ._devmath import (
    F64,
    SHARED_T,
    block_reduce,
    combine_sums,
    dev,
    dev_cuda,
    loader,
    log_,
    quiet,
    row_kernel,
)


@dev
def _flags(negp, negq):
    return (1 if negp > 0 else 0) | (2 if negq > 0 else 0)


_redo = dev(exact.redo_bit)  # the same REDO decision as the cpu kernels


@dev_cuda
def _write_flags(flags, first, i, f, redo):
    flags[i] = f | redo
    if f:
        cuda.atomic.min(first, 0, i)
    if redo:
        cuda.atomic.min(first, 1, i)


@dev
def _bits(neg):
    """Fault bits (1: p < 0, 2: q < 0) as a float whose block sum keeps both counts apart:
    (#threads with p < 0) + 1024 (#threads with q < 0) (at most 1024 threads per block)."""
    b = int(neg)
    return F64((b & 1) + 1024 * ((b >> 1) & 1))


@functools.cache
def entropy(kp, mt, threads, warp, tile):
    """H = -sum p log p; with normalize: H(p / S) = log S - (sum p log p) / S."""
    ldp = loader(kp, mt)
    red = block_reduce(combine_sums(3), 3, threads, warp)
    step = threads * tile
    zero = mt(0.0)
    tiny, huge = exact.limits(mt)

    @dev
    def row(p, i, c, tid):
        S = F64(0.0)
        A = F64(0.0)
        neg = 0
        for j0 in range(tid, c, step):
            s = zero
            a = zero
            for k in range(tile):
                j = j0 + k * threads
                if j < c:
                    v = ldp(p, i, j)
                    s += v
                    a += zero if v == 0 else v * log_(v)
                    neg += 1 if v < 0 else 0
            S += F64(s)
            A += F64(a)
        return S, A, neg

    @row_kernel(threads)
    def kernel(p, normalize, out, flags, first):
        quiet()
        tid = cuda.threadIdx.x
        n, c = p.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(3, np.float64)
        ot = cuda.local.array(3, np.float64)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            S, A, neg = row(p, i, c, tid)
            st[0] = S
            st[1] = A
            st[2] = neg
            red(st, ot, sh, 0.0)
            if tid == 0:
                f = 1 if st[2] > 0 else 0
                norm = normalize and c > 0  # an empty row is 0, normalized or not
                if norm:
                    res = log_(st[0]) - st[1] / st[0]
                else:
                    res = 0.0 - st[1]  # +0.0 for an empty row, as the cpu kernel
                out[i] = res
                _write_flags(flags, first, i, f, _redo(res, st[0], 1.0, norm, tiny, huge, False))

    return kernel


def _pq_kernel(kp, kq, mt, threads, warp, tile, kl):
    ldp = loader(kp, mt)
    ldq = loader(kq, mt)
    red = block_reduce(combine_sums(6), 6, threads, warp)
    step = threads * tile
    zero = mt(0.0)
    tiny, huge = exact.limits(mt)

    @dev
    def row(p, q, i, iq, c, tid, st):
        """(sum p, sum q, sum p log q  [or sum p (log p - log q) when kl], #p<0, #q<0, #NaN q)."""
        Sp = F64(0.0)
        Sq = F64(0.0)
        B = F64(0.0)
        negp = 0
        negq = 0
        nanq = 0
        for j0 in range(tid, c, step):
            sp = zero
            sq = zero
            b = zero
            for k in range(tile):
                j = j0 + k * threads
                if j < c:
                    pv = ldp(p, i, j)
                    qv = ldq(q, iq, j)
                    sp += pv
                    sq += qv
                    if kl:
                        b += zero if pv == 0 else pv * (log_(pv) - log_(qv))
                    else:
                        b += zero if pv == 0 else pv * log_(qv)
                    negp += 1 if pv < 0 else 0
                    negq += 1 if qv < 0 else 0
                    nanq += 1 if qv != qv else 0
            Sp += F64(sp)
            Sq += F64(sq)
            B += F64(b)
        st[0] = Sp
        st[1] = Sq
        st[2] = B
        st[3] = negp
        st[4] = negq
        st[5] = nanq

    @row_kernel(threads)
    def kernel(p, q, q_step, normalize, out, flags, first):
        quiet()
        tid = cuda.threadIdx.x
        n, c = p.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(6, np.float64)
        ot = cuda.local.array(6, np.float64)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            row(p, q, i, i * q_step, c, tid, st)
            red(st, ot, sh, 0.0)
            if tid == 0:
                f = _flags(st[3], st[4])
                Sp = st[0]
                Sq = st[1]
                B = st[2]
                norm = normalize and c > 0
                if kl:  # D(p || q); with normalize: K / Sp - log Sp + log Sq
                    res = B / Sp + (log_(Sq) - log_(Sp)) if norm else B
                else:  # H(p, q); with normalize: log Sq - (sum p log q) / Sp
                    res = log_(Sq) - B / Sp if norm else 0.0 - B
                if st[5] > 0:
                    res = np.nan
                out[i] = res
                _write_flags(flags, first, i, f, _redo(res, Sp, Sq, norm, tiny, huge, False))

    return kernel


@functools.cache
def cross_entropy(kp, kq, mt, threads, warp, tile):
    return _pq_kernel(kp, kq, mt, threads, warp, tile, False)


@functools.cache
def kl_divergence(kp, kq, mt, threads, warp, tile):
    return _pq_kernel(kp, kq, mt, threads, warp, tile, True)


@functools.cache
def js_divergence(kp, kq, mt, threads, warp, tile, normalize):
    """JS = 1/2 sum [p log(p/m) + q log(q/m)], m = (p + q) / 2. With normalize, a first pass takes
    the row sums (p and q are scaled by 1 / sum before the mixture is formed); without, the one
    pass also takes the row sums (for REDO) and counts the negative entries."""
    ldp = loader(kp, mt)
    ldq = loader(kq, mt)
    red = block_reduce(combine_sums(4), 4, threads, warp)
    step = threads * tile
    zero = mt(0.0)
    ln2 = mt(0.6931471805599453)
    tiny, huge = exact.limits(mt)

    @dev
    def sums(p, q, i, iq, c, tid, st):
        Sp = F64(0.0)
        Sq = F64(0.0)
        neg = 0
        for j0 in range(tid, c, step):
            sp = zero
            sq = zero
            for k in range(tile):
                j = j0 + k * threads
                if j < c:
                    pv = ldp(p, i, j)
                    qv = ldq(q, iq, j)
                    sp += pv
                    sq += qv
                    neg |= (1 if pv < 0 else 0) | (2 if qv < 0 else 0)
            Sp += F64(sp)
            Sq += F64(sq)
        st[0] = Sp
        st[1] = Sq
        st[2] = neg
        st[3] = F64(0.0)

    @dev
    def js(p, q, i, iq, c, tid, fp, fq, st):
        J = F64(0.0)
        Sp = F64(0.0)
        Sq = F64(0.0)
        neg = 0
        for j0 in range(tid, c, step):
            a = zero
            sp = zero
            sq = zero
            for k in range(tile):
                j = j0 + k * threads
                if j < c:
                    p0 = ldp(p, i, j)
                    q0 = ldq(q, iq, j)
                    if not normalize:
                        neg |= (1 if p0 < 0 else 0) | (2 if q0 < 0 else 0)
                        sp += p0
                        sq += q0
                    pv = p0 * fp
                    qv = q0 * fq
                    lm = log_(pv + qv) - ln2  # log((p + q) / 2) without halving a subnormal to 0
                    a += zero if pv == 0 else pv * (log_(pv) - lm)
                    a += zero if qv == 0 else qv * (log_(qv) - lm)
            J += F64(a)
            Sp += F64(sp)
            Sq += F64(sq)
        st[0] = J
        st[1] = Sp
        st[2] = Sq
        st[3] = neg

    @row_kernel(threads)
    def kernel(p, q, q_step, out, flags, first):
        quiet()
        tid = cuda.threadIdx.x
        n, c = p.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(4, np.float64)
        ot = cuda.local.array(4, np.float64)
        # per-thread fault bits are OR-ed, not added: each thread contributes 0..3 and the sums of
        # the block stay exact; a row is flagged for p (q) if any thread saw bit 1 (2)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            iq = i * q_step
            fp = mt(1.0)
            fq = mt(1.0)
            negp = 0.0
            negq = 0.0
            Sp = F64(0.0)
            Sq = F64(0.0)
            if normalize:
                sums(p, q, i, iq, c, tid, st)
                st[2] = _bits(st[2])
                red(st, ot, sh, 0.0)
                Sp = st[0]
                Sq = st[1]
                fp = mt(1.0 / Sp)
                fq = mt(1.0 / Sq)
                negp = st[2] % 1024.0
                negq = st[2] // 1024.0
            js(p, q, i, iq, c, tid, fp, fq, st)
            if not normalize:
                st[3] = _bits(st[3])
            red(st, ot, sh, 0.0)
            if not normalize:
                Sp = st[1]
                Sq = st[2]
                negp = st[3] % 1024.0
                negq = st[3] // 1024.0
            if tid == 0:
                res = 0.5 * st[0]
                out[i] = res
                redo = _redo(res, Sp, Sq, normalize and c > 0, tiny, huge, True)  # JS: bounded
                _write_flags(flags, first, i, _flags(negp, negq), redo)

    return kernel
