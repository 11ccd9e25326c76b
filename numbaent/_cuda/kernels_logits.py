"""CUDA kernels for logit rows: logsumexp, log_softmax, softmax, softmax_entropy, softmax
cross-entropy (labels and soft targets) and the softmax KL divergence at a temperature.

One block per row (rows grid-strided), ``threads`` threads per block. Each thread walks its row in
tiles: it loads ``tile`` elements spaced ``threads`` apart (so a warp's loads are coalesced, and all
of a thread's loads are in flight before the first use), takes the tile maximum, moves its running
state to the new maximum if it grew, then sums the tile's terms in the math type and adds that
partial to its float64 state. This is the CPU algorithm (``numbaent._kernels._blocks``) with a
tile of ``tile`` elements per thread instead of a block of 1024 per row:

    m_new = max(m, tile_max); S = S exp(m - m_new) + sum exp(x - m_new); lse = m + log(S)

Then the block combines its threads' states in a fixed tree (``_devmath.block_reduce``) and thread
0 writes the row's results. Special rows follow the CPU kernels: while the maximum is -inf the
terms are taken relative to 0 (exp(-inf) = 0, a NaN propagates); a +inf logit makes x - m NaN.

Kernels are built per (math type, input kinds, launch constants, static options) by the factories
below and cached; the math type is float64 when an input is float64, else float32.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from .._kernels import exact
from ._devmath import (
    F64,
    NINF,
    SHARED_T,
    block_reduce,
    combine_kl,
    combine_lin,
    combine_lse,
    combine_lset,
    dev,
    exp_,
    kl_move,
    loader,
    loader1,
    log_,
    lset_move,
    quiet,
    rescale,
    rescale_t,
    row_kernel,
)

_wterm = dev(exact.weighted_term)  # a term of class weight 0 adds exactly 0, as on the cpu


@functools.cache
def _row_lse(ldx, mt, threads, tile):
    """Per-thread (m, S) of row i over elements tid, tid + threads, ... (buf: local, tile)."""
    step = threads * tile
    zero = mt(0.0)

    @dev
    def row_lse(x, i, c, tid, buf):
        m = mt(NINF)
        S = F64(0.0)
        for j0 in range(tid, c, step):
            bm = mt(NINF)
            for k in range(tile):
                j = j0 + k * threads
                v = ldx(x, i, j) if j < c else mt(NINF)
                buf[k] = v
                if v > bm:
                    bm = v
            if bm > m:
                S = S * rescale(m, bm)
                m = bm
            rm = m if m != NINF else zero
            s = zero
            for k in range(tile):
                s += exp_(buf[k] - rm)
            S += F64(s)
        return m, S

    return row_lse


@functools.cache
def _row_lset(ldx, mt, threads, tile):
    """Per-thread (m, S, T), T = sum e (x - m): softmax entropy = log S - T / S."""
    step = threads * tile
    zero = mt(0.0)

    @dev
    def row_lset(x, i, c, tid, buf):
        m = mt(NINF)
        S = F64(0.0)
        T = F64(0.0)
        for j0 in range(tid, c, step):
            bm = mt(NINF)
            for k in range(tile):
                j = j0 + k * threads
                v = ldx(x, i, j) if j < c else mt(NINF)
                buf[k] = v
                if v > bm:
                    bm = v
            if bm > m:
                S, T = lset_move(S, T, m, bm)
                m = bm
            rm = m if m != NINF else zero
            s = zero
            t = zero
            for k in range(tile):
                d = buf[k] - rm
                e = exp_(d)
                s += e
                t += zero if e == 0 else e * d
            S += F64(s)
            T += F64(t)
        return m, S, T

    return row_lset


@functools.cache
def logsumexp(kx, mt, threads, warp, tile):
    ldx = loader(kx, mt)
    row = _row_lse(ldx, mt, threads, tile)
    red = block_reduce(combine_lse, 2, threads, warp)

    @row_kernel(threads)
    def kernel(x, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(2, np.float64)
        ot = cuda.local.array(2, np.float64)
        buf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            m, S = row(x, i, c, tid, buf)
            st[0] = m
            st[1] = S
            red(st, ot, sh, 0.0)
            if tid == 0:
                out[i] = st[0] + log_(st[1])

    return kernel


def _softmax_like(kx, mt, threads, warp, tile, log):
    ldx = loader(kx, mt)
    row = _row_lse(ldx, mt, threads, tile)
    red = block_reduce(combine_lse, 2, threads, warp)

    @row_kernel(threads)
    def kernel(x, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(2, np.float64)
        ot = cuda.local.array(2, np.float64)
        buf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            m, S = row(x, i, c, tid, buf)
            st[0] = m
            st[1] = S
            red(st, ot, sh, 0.0)
            mm = mt(st[0])
            ls = mt(log_(st[1]))
            for j in range(tid, c, threads):
                d = (ldx(x, i, j) - mm) - ls
                out[i, j] = d if log else exp_(d)

    return kernel


@functools.cache
def log_softmax(kx, mt, threads, warp, tile):
    return _softmax_like(kx, mt, threads, warp, tile, True)


@functools.cache
def softmax(kx, mt, threads, warp, tile):
    return _softmax_like(kx, mt, threads, warp, tile, False)


@functools.cache
def softmax_entropy(kx, mt, threads, warp, tile):
    ldx = loader(kx, mt)
    row = _row_lset(ldx, mt, threads, tile)
    red = block_reduce(combine_lset, 3, threads, warp)

    @row_kernel(threads)
    def kernel(x, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(3, np.float64)
        ot = cuda.local.array(3, np.float64)
        buf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            m, S, T = row(x, i, c, tid, buf)
            st[0] = m
            st[1] = S
            st[2] = T
            red(st, ot, sh, 0.0)
            if tid == 0:
                out[i] = log_(st[1]) - st[2] / st[1]

    return kernel


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy


@functools.cache
def _row_lin(ldx, coef, mt, threads, tile, tempered):
    """Per-thread (m, S, Csum, A): the lse state plus the linear term of a target with
    coefficients c_j = coef(i, j) (0 outside the row): A = sum_j c_j (ref - x_j), ref = ref(m)
    (the thread's running maximum, 0 while it is -inf), shifted exactly when the maximum moves;
    a term with c_j == 0 adds 0 whatever x_j is (see cpu_logits._row_lse_linear). ``tempered``
    (compile time): S = sum exp((x_j - m) it) at it = 1 / T (A stays in raw logit units)."""
    step = threads * tile
    zero = mt(0.0)

    @dev
    def row_lin(x, t, w, a, b, it, i, c, tid, buf, cbuf):
        m = mt(NINF)
        S = F64(0.0)
        Cs = F64(0.0)
        A = F64(0.0)
        itm = mt(it)
        for j0 in range(tid, c, step):
            bm = mt(NINF)
            for k in range(tile):
                j = j0 + k * threads
                v = mt(NINF)
                cj = zero
                if j < c:
                    v = ldx(x, i, j)
                    cj = coef(t, w, a, b, i, j)
                buf[k] = v
                cbuf[k] = cj
                if v > bm:
                    bm = v
            if bm > m:
                S = S * (rescale_t(m, bm, it) if tempered else rescale(m, bm))
                rnew = F64(bm)
                rold = F64(m) if m != NINF else F64(0.0)
                if rnew != rold:
                    A += (rnew - rold) * Cs
                m = bm
            rm = m if m != NINF else zero
            s = zero
            cs = zero
            lin = zero
            for k in range(tile):
                xv = buf[k]
                cj = cbuf[k]
                s += exp_((xv - rm) * itm) if tempered else exp_(xv - rm)
                cs += cj
                lin += zero if cj == 0 else cj * (rm - xv)
            S += F64(s)
            Cs += F64(cs)
            A += F64(lin)
        return m, S, Cs, A

    return row_lin


@functools.cache
def ce_labels(kx, mt, threads, warp, tile, has_weight, smooth, tempered):
    """Integer labels: out = (1 - eps) w[y] (lse - x[y]) + eps / C sum_j w[j] (lse - x[j]) (torch's
    definition; only the first term without smoothing, w = 1 without weights), of the logits x / T
    when ``tempered`` (it = 1 / T; the linear pass then gives the lse also without smoothing).
    Ignored rows give 0 and row weight 0; a label outside [0, C) gives NaN, bad[i] = 1 and
    first[0] = min such row."""
    ldx = loader(kx, mt)
    ldw = loader1("f64" if mt is np.float64 else "f32", mt)

    @dev
    def coef(t, w, a, b, i, j):
        return ldw(w, j) if has_weight else mt(1.0)

    linear = smooth or tempered
    if linear:
        row = _row_lin(ldx, coef, mt, threads, tile, tempered)
        red = block_reduce(combine_lin, 4, threads, warp)
        nc = 4
    else:
        row = _row_lse(ldx, mt, threads, tile)
        red = block_reduce(combine_lse, 2, threads, warp)
        nc = 2

    @row_kernel(threads)
    def kernel(x, y, w, ignore_index, eps, it, out, rowweight, bad, first):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(nc, np.float64)
        ot = cuda.local.array(nc, np.float64)
        buf = cuda.local.array(tile, mt)
        cbuf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            lab = y[i]
            if lab == ignore_index:  # block-uniform branches: the whole block skips the row
                if tid == 0:
                    out[i] = 0
                    rowweight[i] = 0
                    bad[i] = 0
                continue
            if lab < 0 or lab >= c:
                if tid == 0:
                    out[i] = np.nan
                    rowweight[i] = 0
                    bad[i] = 1
                    cuda.atomic.min(first, 0, i)
                continue
            if linear:
                m, S, Cs, A = row(x, x, w, mt(1.0), mt(0.0), it, i, c, tid, buf, cbuf)
                st[0] = m
                st[1] = S
                st[2] = Cs
                st[3] = A
            else:
                m, S = row(x, i, c, tid, buf)
                st[0] = m
                st[1] = S
            red(st, ot, sh, it)
            if tid == 0:
                wy = F64(ldw(w, lab)) if has_weight else F64(1.0)
                ls = log_(st[1])
                gap = st[0] - F64(ldx(x, i, lab))
                nll = (gap * it if tempered else gap) + ls
                if smooth:
                    smooth_term = st[2] * ls + (st[3] * it if tempered else st[3])
                    out[i] = _wterm((1.0 - eps) * wy, nll) + (eps / c) * smooth_term
                else:
                    out[i] = _wterm(wy, nll)
                rowweight[i] = wy
                bad[i] = 0

    return kernel


@functools.cache
def ce_soft(kx, kt, mt, threads, warp, tile, has_weight, tempered):
    """Probability targets: out = sum_j w[j] (t[j] (1 - eps) + eps / C) (lse - x[j]) of the logits
    x / T when ``tempered`` (it = 1 / T); a NaN logit gives NaN even where its coefficient is 0;
    all-zero coefficients give 0."""
    ldx = loader(kx, mt)
    ldt = loader(kt, mt)
    ldw = loader1("f64" if mt is np.float64 else "f32", mt)
    row_lin = None

    @dev
    def coef(t, w, a, b, i, j):
        cj = ldt(t, i, j) * a + b
        return ldw(w, j) * cj if has_weight else mt(1.0) * cj

    row_lin = _row_lin(ldx, coef, mt, threads, tile, tempered)
    red = block_reduce(combine_lin, 4, threads, warp)

    @row_kernel(threads)
    def kernel(x, t, w, eps, it, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        a = mt(1.0 - eps)
        b = mt(eps / c) if c > 0 else mt(0.0)
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(4, np.float64)
        ot = cuda.local.array(4, np.float64)
        buf = cuda.local.array(tile, mt)
        cbuf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            m, S, Cs, A = row_lin(x, t, w, a, b, it, i, c, tid, buf, cbuf)
            st[0] = m
            st[1] = S
            st[2] = Cs
            st[3] = A
            red(st, ot, sh, it)
            if tid == 0:
                S = st[1]
                A = st[3] * it if tempered else st[3]
                if S != S:  # a NaN logit: NaN even where its target is 0
                    out[i] = np.nan
                elif st[2] != 0:
                    out[i] = st[2] * log_(S) + A
                else:  # all-zero coefficients give 0, also on an empty or all -inf row
                    out[i] = A

    return kernel


# --------------------------------------------------------------------------------------------------
# KL divergence between two softmax rows at a temperature


@functools.cache
def softmax_kl(kp, kq, mt, threads, warp, tile):
    """D(softmax(p / T) || softmax(q / T)) against RAW references (nothing is divided by T before
    a maximum is subtracted; see _blocks.kl_move): per thread the state (ma, Sa, mb, Sb, U) with
    ra, rb the running raw maxima of p and q, ea = exp((p - ra) it), eb = exp((q - rb) it),
    U = sum ea ((p - ra) - (q - rb)) in raw units, and KL = it U / Sa + (log Sb - log Sa).
    A term with p = -inf adds 0 to U; a finite p over q = -inf adds +inf (or NaN where ea
    underflowed), which the exact path (``numbaent._kernels.exact``) turns into the contract's +inf.
    Identical rows give exactly 0."""
    ldp = loader(kp, mt)
    ldq = loader(kq, mt)
    step = threads * tile
    zero = mt(0.0)
    red = block_reduce(combine_kl, 5, threads, warp)

    @dev
    def row_kl(xp, xq, it, it64, i, c, tid, abuf, bbuf):
        ma = mt(NINF)
        mb = mt(NINF)
        Sa = F64(0.0)
        Sb = F64(0.0)
        U = F64(0.0)
        for j0 in range(tid, c, step):
            bma = mt(NINF)
            bmb = mt(NINF)
            for k in range(tile):
                j = j0 + k * threads
                av = mt(NINF)
                bv = mt(NINF)
                if j < c:
                    av = ldp(xp, i, j)
                    bv = ldq(xq, i, j)
                abuf[k] = av
                bbuf[k] = bv
                if av > bma:
                    bma = av
                if bv > bmb:
                    bmb = bv
            nma = bma if bma > ma else ma
            nmb = bmb if bmb > mb else mb
            if nma != ma or nmb != mb:
                rb_old = F64(mb) if mb != NINF else F64(0.0)
                rb_new = F64(nmb) if nmb != NINF else F64(0.0)
                U, Sa = kl_move(U, Sa, ma, nma, rb_old, rb_new, it64)
                Sb = Sb * rescale_t(mb, nmb, it64)
                ma = nma
                mb = nmb
            ra = ma if ma != NINF else zero
            rb = mb if mb != NINF else zero
            sa = zero
            sb = zero
            u = zero
            for k in range(tile):
                da = abuf[k] - ra
                db = bbuf[k] - rb
                ea = exp_(da * it)
                sa += ea
                sb += exp_(db * it)
                u += zero if abuf[k] == NINF else ea * (da - db)  # raw teacher logit decides
            Sa += F64(sa)
            Sb += F64(sb)
            U += F64(u)
        return ma, Sa, mb, Sb, U

    @row_kernel(threads)
    def kernel(xp, xq, inv_t, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = xp.shape
        it = mt(inv_t)
        it64 = F64(inv_t)
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(5, np.float64)
        ot = cuda.local.array(5, np.float64)
        abuf = cuda.local.array(tile, mt)
        bbuf = cuda.local.array(tile, mt)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            ma, Sa, mb, Sb, U = row_kl(xp, xq, it, it64, i, c, tid, abuf, bbuf)
            st[0] = ma
            st[1] = Sa
            st[2] = mb
            st[3] = Sb
            st[4] = U
            red(st, ot, sh, it64)
            if tid == 0:
                out[i] = (it64 * st[4]) / st[1] + (log_(st[3]) - log_(st[1]))

    return kernel
