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

from .._vmath import cst, ld, vexp, vexpm
from ._blocks import (
    BLOCK,
    FASTMATH,
    NINF,
    block_max,
    block_max_scaled,
    ref_of,
    rescale,
    row_lse,
    row_lse_t,
    update_max,
)


@njit(parallel=True, fastmath=FASTMATH)
def logsumexp(x, out):
    for i in prange(x.shape[0]):
        m, S = row_lse(x[i], out)
        out[i] = float(m) + np.log(S)


@njit(parallel=True, fastmath=FASTMATH)
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


@njit(parallel=True, fastmath=FASTMATH)
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


@njit(parallel=True, fastmath=FASTMATH)
def softmax_entropy(x, out):
    for i in prange(x.shape[0]):
        m, S, T = row_lse_t(x[i], out)
        out[i] = np.log(S) - T / S


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy


@njit(fastmath=FASTMATH)
def _row_lse_linear(r, t, w, a, b, like):
    """Online (m, S) plus the linear term of a target distribution with coefficients
    c_j = w[j] * (t[j] * a + b):  returns (m, S, Csum, A) with A = sum_j c_j (m - x_j), so that
    sum_j c_j (lse - x_j) = Csum * log(S) + A. A term with c_j == 0 contributes 0 whatever x_j is.
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
            S *= rescale(m, bm)
            m = bm
        rm = ref_of(m)
        if float(rm) != ref:
            A += (float(rm) - ref) * Csum
            ref = float(rm)
        s = rm * 0
        cs = rm * 0
        lin = rm * 0
        for j in range(lo, hi):
            xv = cst(like, ld(r[j]))
            s += vexpm(xv - rm)
            cj = cst(like, w[j]) * (cst(like, ld(t[j])) * a + b)
            cs += cj
            lin += rm * 0 if cj == 0 else cj * (rm - xv)
        S += float(s)
        Csum += float(cs)
        A += float(lin)
    if float(m) != ref:
        A += (float(m) - ref) * Csum
    return m, S, Csum, A


@njit(parallel=True, fastmath=FASTMATH)
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
        out[i] = (float(m) - float(ld(x[i, lab]))) + np.log(S)
        rowweight[i] = 1


@njit(parallel=True, fastmath=FASTMATH)
def ce_labels_general(x, y, w, ignore_index, eps, ones, out, rowweight, bad):
    """Integer labels with class weights ``w`` (ones when none) and label smoothing ``eps``:
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
        wy = float(w[lab])
        if eps == 0:
            m, S = row_lse(x[i], out)
            out[i] = wy * ((float(m) - float(ld(x[i, lab]))) + np.log(S))
        else:
            m, S, Csum, A = _row_lse_linear(x[i], ones, w, a, b, out)
            ls = np.log(S)
            nll = (float(m) - float(ld(x[i, lab]))) + ls
            smooth = Csum * ls + A
            out[i] = (1.0 - eps) * wy * nll + (eps / c) * smooth
        rowweight[i] = wy


@njit(parallel=True, fastmath=FASTMATH)
def ce_soft(x, t, w, eps, out):
    """Probability targets: out = sum_j w[j] (t[j] (1 - eps) + eps / C) (lse - x[j])."""
    c = x.shape[1]
    a = cst(out, 1.0 - eps)
    b = cst(out, eps / c) if c > 0 else cst(out, 0.0)
    for i in prange(x.shape[0]):
        m, S, Csum, A = _row_lse_linear(x[i], t[i], w, a, b, out)
        out[i] = Csum * np.log(S) + A if Csum != 0 else A


# --------------------------------------------------------------------------------------------------
# KL divergence between two softmax rows at a temperature


@njit(fastmath=FASTMATH)
def row_kl(rp, rq, inv_t, like):
    """D(softmax(p/T) || softmax(q/T)) for one pair of rows, in one pass over both.
    With a = p/T, b = q/T:  KL = sum_j pa_j (a_j - b_j) - lse(a) + lse(b), pa = softmax(a);
    U = sum_j exp(a_j - m_a) (a_j - b_j) is rescaled with S_a when m_a moves."""
    c = rp.shape[0]
    ma = cst(like, NINF)
    mb = cst(like, NINF)
    Sa = 0.0
    Sb = 0.0
    U = 0.0
    for lo in range(0, c, BLOCK):
        hi = min(lo + BLOCK, c)
        bma = update_max(ma, block_max_scaled(rp, lo, hi, like, inv_t))
        if bma != ma:
            f = rescale(ma, bma)
            Sa *= f
            U *= f
            ma = bma
        bmb = update_max(mb, block_max_scaled(rq, lo, hi, like, inv_t))
        if bmb != mb:
            Sb *= rescale(mb, bmb)
            mb = bmb
        ra = ref_of(ma)
        rb = ref_of(mb)
        sa = ra * 0
        sb = ra * 0
        u = ra * 0
        for j in range(lo, hi):
            av = cst(like, ld(rp[j])) * inv_t
            bv = cst(like, ld(rq[j])) * inv_t
            ea = vexpm(av - ra)
            sa += ea
            sb += vexpm(bv - rb)
            u += ra * 0 if ea == 0 else ea * (av - bv)
        Sa += float(sa)
        Sb += float(sb)
        U += float(u)
    return U / Sa - (float(ma) + np.log(Sa)) + (float(mb) + np.log(Sb))


@njit(parallel=True, fastmath=FASTMATH)
def softmax_kl(xp, xq, inv_t, out):
    it = cst(out, inv_t)
    for i in prange(xp.shape[0]):
        out[i] = row_kl(xp[i], xq[i], it, out)
