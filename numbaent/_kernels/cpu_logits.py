"""CPU kernels for logit rows (unnormalised log-probabilities). Pure arithmetic, no validation.

Every kernel takes C-contiguous 2-D inputs (rows x classes) whose element type is float32, float64,
int16 (float16 bits) or uint16 (bfloat16 bits), and preallocated outputs whose dtype is the math
type (float32 unless an input is float64). Rows run in parallel (``prange``); each row is computed
by one thread with fixed block boundaries, so results are bit-identical for any thread count.
No kernel allocates anything of size N x C; softmax is never materialised.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._vmath import cst, key, ld, mul3, unkey, vexp, vexpz, vlog
from . import exact
from ._blocks import (
    BLK,
    BLOCK,
    FLUSHED,
    KERNEL,
    KL_BLOCK,
    NINF,
    ROW,
    SLACK,
    TILE,
    TILE_GROUP,
    at_least_one,
    block_max,
    block_max_min,
    is_f32,
    kl_far_below,
    kl_flush_risk,
    kl_from_states,
    kl_move,
    nonneg,
    ref_of,
    rescale,
    rescale_t,
    row_lse,
    row_lse_t,
    tile_lse,
    tile_transpose,
    update_max,
)

# a term of class weight 0 adds exactly 0 (shared with the cuda kernels: exact.weighted_term)
_wterm = njit(**ROW)(exact.weighted_term)


@njit(**KERNEL)
def logsumexp(x, out):
    for i in prange(x.shape[0]):
        m, S = row_lse(x[i], out)
        out[i] = np.float64(m) + np.log(S)


@njit(**KERNEL)
def log_softmax(x, out):
    c = x.shape[1]
    for i in prange(x.shape[0]):
        r = x[i]
        m, S = row_lse(r, out)
        mm = cst(out, m)
        ls = cst(out, np.log(S))
        o = out[i]
        for j in range(c):
            o[j] = (cst(out, ld(r[j])) - mm) - ls


@njit(**KERNEL)
def softmax(x, out):
    c = x.shape[1]
    for i in prange(x.shape[0]):
        r = x[i]
        m, S = row_lse(r, out)
        mm = cst(out, m)
        ls = cst(out, np.log(S))
        o = out[i]
        for j in range(c):
            o[j] = vexp((cst(out, ld(r[j])) - mm) - ls)


@njit(**KERNEL)
def softmax_entropy(x, out):
    for i in prange(x.shape[0]):
        m, S, T = row_lse_t(x[i], out)
        out[i] = nonneg(np.log(S) - T / S)


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy


@njit(**BLK)
def _blk_linear(r, t, w, a, b, lo, hi, rm, it):
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    r = r[lo:hi]
    t = t[lo:hi]
    w = w[lo:hi]
    z = cst(rm, 0.0)
    s = z
    cs = z
    lin = z
    for j in range(hi - lo):
        xv = cst(rm, ld(r[j]))
        d = xv - rm
        if it is not None:  # 1 / T in the working precision; None at T = 1 (pruned at compile time)
            d = d * it
        s += vexpz(d)
        wj = cst(rm, w[j])
        qj = cst(rm, ld(t[j])) * a + b
        cs += wj * qj
        # (q (m - x)) w, never (w q) (m - x): a subnormal target times a weight would round to a
        # few bits before meeting a logit gap of 1e38 that makes it count (mul3 fixes the order).
        # Computed unconditionally and masked by two selects (no `or`, no call under a branch):
        # either of those stops the loop vectorising (15x slower)
        lj = mul3(qj, rm - xv, wj)
        lj = z if wj == 0 else lj
        lin += z if qj == 0 else lj
    return s, cs, lin


@njit(**ROW)
def _row_lse_linear(r, t, w, a, b, like, it):
    """Online (m, S) plus the linear term of a target distribution with coefficients
    c_j = w[j] * (t[j] * a + b):  returns (m, S, Csum, A) with A = sum_j c_j (m - x_j), so that
    sum_j c_j (lse - x_j) = Csum * log(S) + A. A term with w[j] == 0 or t[j] a + b == 0
    contributes 0 whatever x_j is. At a temperature (it = 1 / T, float64; None for T = 1)
    S = sum_j exp((x_j - m) / T), A stays in raw logit units (m - x_j), so that
    sum_j c_j (lse(x / T) - x_j / T) = Csum * log(S) + A / T.
    A is kept relative to a reference point that follows the running max (shifted exactly when the
    max moves: A += (ref_new - ref_old) * Csum)."""
    c = r.shape[0]
    m = cst(like, NINF)
    S = 0.0
    Csum = 0.0
    A = 0.0
    ref = 0.0
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        bm = update_max(m, block_max(r, lo, hi, like))
        if bm != m:
            if it is None:
                S *= rescale(m, bm)
            else:
                S *= rescale_t(m, bm, it)
            m = bm
        rm = ref_of(m)
        if np.float64(rm) != ref:
            A += (np.float64(rm) - ref) * Csum
            ref = np.float64(rm)
        if it is None:
            s, cs, lin = _blk_linear(r, t, w, a, b, lo, hi, rm, None)
        else:
            s, cs, lin = _blk_linear(r, t, w, a, b, lo, hi, rm, cst(rm, it))
        S += np.float64(s)
        Csum += np.float64(cs)
        A += np.float64(lin)
    if m != NINF and np.float64(m) != ref:
        A += (np.float64(m) - ref) * Csum
    return m, S, Csum, A


@njit(**KERNEL)
def ce_labels(x, y, ignore_index, out, rowweight, bad):
    """Integer labels, no weight, no smoothing: out = lse - x[y]; ignored rows 0; bad labels flagged."""
    c = x.shape[1]
    for i in prange(x.shape[0]):
        lab = y[i]
        if lab == ignore_index:
            out[i] = 0
            rowweight[i] = 0
            continue
        if lab < 0 or lab >= c:
            bad[i] = 1
            out[i] = np.nan
            rowweight[i] = 0
            continue
        m, S = row_lse(x[i], out)
        out[i] = (np.float64(m) - np.float64(ld(x[i, lab]))) + np.log(S)
        rowweight[i] = 1


@njit(**KERNEL)
def ce_labels_general(x, y, w, ignore_index, eps, it, ones, out, rowweight, bad):
    """Integer labels with class weights ``w`` (ones when none) and label smoothing ``eps``, of
    the logits x / T (it = 1 / T, float64; None for T = 1):
    out = (1 - eps) w[y] (lse - x[y]) + eps / C * sum_j w[j] (lse - x[j])   (torch's definition)."""
    c = x.shape[1]
    a = cst(out, 1.0)
    b = cst(out, 0.0)
    for i in prange(x.shape[0]):
        lab = y[i]
        if lab == ignore_index:
            out[i] = 0
            rowweight[i] = 0
            continue
        if lab < 0 or lab >= c:
            bad[i] = 1
            out[i] = np.nan
            rowweight[i] = 0
            continue
        wy = np.float64(w[lab])
        if it is None:
            if eps == 0:
                m, S = row_lse(x[i], out)
                out[i] = _wterm(wy, (np.float64(m) - np.float64(ld(x[i, lab]))) + np.log(S))
            else:
                m, S, Csum, A = _row_lse_linear(x[i], ones, w, a, b, out, None)
                ls = np.log(S)
                nll = (np.float64(m) - np.float64(ld(x[i, lab]))) + ls
                smooth = Csum * ls + A
                out[i] = _wterm((1.0 - eps) * wy, nll) + (eps / c) * smooth
        else:  # the linear pass also gives the lse at the temperature (its Csum and A are unused
            # without smoothing, and never formed into a term: 0 * inf would make a NaN)
            m, S, Csum, A = _row_lse_linear(x[i], ones, w, a, b, out, it)
            ls = np.log(S)
            nll = (np.float64(m) - np.float64(ld(x[i, lab]))) * it + ls
            loss = _wterm((1.0 - eps) * wy, nll)
            if eps != 0:
                loss += (eps / c) * (Csum * ls + A * it)
            out[i] = loss
        rowweight[i] = wy


@njit(**KERNEL)
def ce_soft(x, t, w, eps, it, out):
    """Probability targets: out = sum_j w[j] (t[j] (1 - eps) + eps / C) (lse - x[j]), of the logits
    x / T (it = 1 / T, float64; None for T = 1)."""
    c = x.shape[1]
    a = cst(out, 1.0 - eps)
    b = cst(out, eps / c) if c > 0 else cst(out, 0.0)
    for i in prange(x.shape[0]):
        if it is None:
            m, S, Csum, A = _row_lse_linear(x[i], t[i], w, a, b, out, None)
        else:
            m, S, Csum, A = _row_lse_linear(x[i], t[i], w, a, b, out, it)
            A = A * it
        if S != S:  # a NaN logit: NaN even where its target is 0
            out[i] = np.nan
        else:  # all-zero coefficients give 0, also on an empty or all -inf row
            out[i] = Csum * np.log(S) + A if Csum != 0 else A


# --------------------------------------------------------------------------------------------------
# KL divergence between two softmax rows at a temperature


@njit(**BLK)
def blk_kl(rp, rq, lo, hi, ra, rb, it):
    """Block sums for KL at a temperature (it = 1 / T) against raw references ra, rb:
    (sum ea, sum eb, sum ea ((a - ra) - (b - rb))), ea = exp((a - ra) it); see kl_move."""
    # views: indices from range(n) are provably >= 0, so Numba drops its negative-index
    # wraparound and the loads vectorise (with range(lo, hi) they become scalar gathers)
    rp = rp[lo:hi]
    rq = rq[lo:hi]
    z = cst(ra, 0.0)
    sa = z
    sb = z
    u = z
    for j in range(hi - lo):
        av = cst(ra, ld(rp[j]))
        da = av - ra
        db = cst(ra, ld(rq[j])) - rb
        ea = vexpz(da * it)
        sa += ea
        sb += vexpz(db * it)
        # the RAW teacher logit decides (a - ra overflows to -inf for a = -3e38, ra = 3e38)
        u += z if av == NINF else ea * (da - db)
    return sa, sb, u


@njit(**BLK)
def blk_kl_max(rp, rq, lo, hi, ra, rb, it):
    """blk_kl against the references of earlier blocks, plus both raw block maxima and b's raw
    block min (one pass)."""
    rp = rp[lo:hi]
    rq = rq[lo:hi]
    z = cst(ra, 0.0)
    sa = z
    sb = z
    u = z
    ka = key(cst(ra, NINF))
    kb = ka
    kbmin = key(cst(ra, np.inf))
    for j in range(hi - lo):
        av = cst(ra, ld(rp[j]))
        bv = cst(ra, ld(rq[j]))
        kk = key(av)
        ka = kk if kk > ka else ka
        kk = key(bv)
        kb = kk if kk > kb else kb
        kbmin = kk if kk < kbmin else kbmin
        da = av - ra
        db = bv - rb
        ea = vexpz(da * it)
        sa += ea
        sb += vexpz(db * it)
        u += z if av == NINF else ea * (da - db)  # the raw teacher logit decides (see blk_kl)
    return sa, sb, u, unkey(ka, ra), unkey(kb, ra), unkey(kbmin, ra)


@njit(**ROW)
def _kl_exact_block(rp, rq, lo, hi, ra, rb, it, it64, sa, sb, u):
    """When a term flushed to 0 counts (see KL_FAR): a float32 block's sums again in float64; a
    float64 block's U is FLUSHED (its row goes to the exact path)."""
    if kl_flush_risk(rp, rq, lo, hi, ra, rb, it):
        if is_f32(ra):
            return blk_kl(rp, rq, lo, hi, np.float64(ra), np.float64(rb), it64)
        return np.float64(sa), np.float64(sb), FLUSHED
    return np.float64(sa), np.float64(sb), np.float64(u)


@njit(**ROW)
def row_kl(rp, rq, it, it64, like):
    """D(softmax(p/T) || softmax(q/T)) for one pair of rows, in one pass over both
    (state and raw references: see kl_move in _blocks; one pass per block as row_lse, with the
    slack in raw units, SLACK * T)."""
    c = rp.shape[0]
    ma = cst(like, NINF)  # the first block takes two passes (see SLACK)
    mb = cst(like, NINF)
    Sa = 0.0
    Sb = 0.0
    U = 0.0
    slack = cst(like, SLACK / it64)
    for lo in range(0, c, KL_BLOCK):
        hi = min(lo + KL_BLOCK, c)
        done = False
        if ma != NINF and mb != NINF:
            sa, sb, u, fa, fb, fbmin = blk_kl_max(rp, rq, lo, hi, ma, mb, it)
            done = fa <= ma + slack and fb <= mb + slack
            if done and kl_far_below(fbmin, mb, it64, like):
                sa, sb, u = _kl_exact_block(rp, rq, lo, hi, ma, mb, it, it64, sa, sb, u)
        if done:
            Sa += np.float64(sa)
            Sb += np.float64(sb)
            U += np.float64(u)
            bma = update_max(ma, fa)
            bmb = update_max(mb, fb)
        else:
            bma = update_max(ma, block_max(rp, lo, hi, like))
            fb, fbmin = block_max_min(rq, lo, hi, like)
            bmb = update_max(mb, fb)
        if bma != ma or bmb != mb:
            U, Sa = kl_move(U, Sa, ma, bma, ref_of(mb), ref_of(bmb), it64)
            Sb *= rescale_t(mb, bmb, it64)
            ma = bma
            mb = bmb
        if not done:
            sa, sb, u = blk_kl(rp, rq, lo, hi, ref_of(ma), ref_of(mb), it)
            if kl_far_below(fbmin, ref_of(mb), it64, like):
                sa, sb, u = _kl_exact_block(
                    rp, rq, lo, hi, ref_of(ma), ref_of(mb), it, it64, sa, sb, u
                )
            Sa += np.float64(sa)
            Sb += np.float64(sb)
            U += np.float64(u)
    return kl_from_states(U, at_least_one(Sa, ma), at_least_one(Sb, mb), it64)


@njit(**KERNEL)
def softmax_kl(xp, xq, inv_t, out):
    it = cst(out, inv_t)
    for i in prange(xp.shape[0]):
        out[i] = row_kl(xp[i], xq[i], it, inv_t, out)


# --------------------------------------------------------------------------------------------------
# few classes (C <= SMALL_C): tiles of rows, vectorised across rows (see tile_lse in _blocks)


@njit(**KERNEL)
def small_rows(x, y, ignore_index, mode, out, rowweight, bad):
    """mode 0: logsumexp; 1: cross-entropy with integer labels (no weight, no smoothing);
    2: softmax entropy. ``y``, ``rowweight``, ``bad`` are only used in mode 1."""
    n, c = x.shape
    ntiles = (n + TILE - 1) // TILE
    # groups of tiles per parallel iteration, so that the tile buffers are allocated once per
    # group (an allocation per tile cost 20% at C = 10); rows do not depend on the grouping
    group = TILE_GROUP if ntiles >= 16 * TILE_GROUP else 1
    ngroups = (ntiles + group - 1) // group
    for g in prange(ngroups):
        buf = np.empty((c, TILE), out.dtype)
        m = np.empty(TILE, out.dtype)
        ref = np.empty(TILE, out.dtype)
        s = np.empty(TILE, out.dtype)
        t = np.empty(TILE, out.dtype)
        for tile in range(g * group, min(ntiles, g * group + group)):
            r0 = tile * TILE
            r1 = min(r0 + TILE, n)
            _small_tile(x, y, ignore_index, mode, out, rowweight, bad, r0, r1, buf, m, ref, s, t)


@njit(**ROW)
def _small_tile(x, y, ignore_index, mode, out, rowweight, bad, r0, r1, buf, m, ref, s, t):
    c = x.shape[1]
    k = r1 - r0
    tile_transpose(x, r0, r1, buf)
    tile_lse(buf, k, m, ref, s, t, mode == 2)
    for i in range(k):  # vectorised log across the rows of the tile
        s[i] = vlog(s[i])
    if mode == 0:
        for i in range(k):
            out[r0 + i] = ref[i] + s[i]
        for i in range(k):  # all -inf rows: ref is 0 there, lse is -inf
            if m[i] != ref[i]:
                out[r0 + i] = m[i] + s[i]
    elif mode == 2:
        for i in range(k):
            out[r0 + i] = nonneg(s[i] - t[i] / vexp(s[i]))
    else:
        for i in range(k):
            lab = y[r0 + i]
            if lab == ignore_index:
                out[r0 + i] = 0
                rowweight[r0 + i] = 0
            elif lab < 0 or lab >= c:
                bad[r0 + i] = 1
                out[r0 + i] = np.nan
                rowweight[r0 + i] = 0
            else:
                out[r0 + i] = (m[i] - buf[lab, i]) + s[i]
                rowweight[r0 + i] = 1


# --------------------------------------------------------------------------------------------------
# few rows x huge C: the class axis is split into fixed chunks of SPLIT_CHUNK classes whose (m, S)
# states are computed in parallel over (row, chunk) pairs and combined in chunk order. The split
# depends on the shape only, never on the thread count, so results stay bit-identical per input.

SPLIT_ROWS = 16
SPLIT_CHUNK = 32768


def use_split(n, c):
    return n < SPLIT_ROWS and c >= 2 * SPLIT_CHUNK


@njit(**KERNEL)
def split_lse(x, out_m, out_s):
    """(m, S) of every row, from chunk states combined in order: S = sum_k S_k exp(m_k - m)."""
    n, c = x.shape
    nch = (c + SPLIT_CHUNK - 1) // SPLIT_CHUNK
    pm = np.empty(n * nch, out_m.dtype)
    ps = np.empty(n * nch, np.float64)
    for t in prange(n * nch):
        i = t // nch
        lo = (t % nch) * SPLIT_CHUNK
        m, S = row_lse(x[i, lo : min(lo + SPLIT_CHUNK, c)], out_m)
        pm[t] = m
        ps[t] = S
    for i in range(n):
        m = cst(out_m, NINF)
        S = 0.0
        for k in range(nch):
            mk = pm[i * nch + k]
            bm = update_max(m, mk)
            if bm != m:
                S *= rescale(m, bm)
                m = bm
            S += ps[i * nch + k] * rescale(mk, m) if mk != m else ps[i * nch + k]
        out_m[i] = m
        out_s[i] = S


# --------------------------------------------------------------------------------------------------
# the float64 total of a result vector (a reduction's sum, a mean's denominator): fixed chunks
# summed in SIMD lanes (reassociated within a chunk only), the chunk sums added in order, so the
# total depends on the length alone, never on the thread count. NumPy's sum with a float64 dtype
# casts through a buffer: 1.5 ms per call at 1048576 rows, 20% of CE at C = 10.

TOTAL_CHUNK = 16384


@njit(parallel=True, nogil=True, fastmath={"reassoc", "nsz", "contract"}, cache=True)
def total(a):
    n = a.shape[0]
    nch = (n + TOTAL_CHUNK - 1) // TOTAL_CHUNK
    part = np.empty(nch, np.float64)
    for k in prange(nch):
        v = a[k * TOTAL_CHUNK : min(n, k * TOTAL_CHUNK + TOTAL_CHUNK)]
        s = 0.0
        for j in range(v.shape[0]):
            s += np.float64(v[j])
        part[k] = s
    t = 0.0
    for k in range(nch):
        t += part[k]
    return t
