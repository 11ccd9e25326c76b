"""CUDA kernels of scoring from hidden states (``numbaent.linear``) on the device adapter: the small
per-row reductions its op body runs on each chunk of logits besides ``score``.

* ``count_above(x, thr, lab, out)``: the rank's count (``numbaent._kernels.cpu_score.count_above``):
  per row i, the classes j != lab[i] with x[i, j] > thr[i], or x[i, j] == thr[i] at j < lab[i]
  (lab < 0: no class is lower, lab >= C: every class is), compared in float64, exactly.
* ``label_logits(h, w, b, y, ignore_index, out)``: out[i] = h[i] . w[y[i]] (+ b[y[i]]) in float64,
  NaN for a row whose label is ``ignore_index`` (or outside [0, V)).
* ``weighted_sum(x, w, out)``: out[i] = sum_j w_j x[i, j] in float64 (``w`` one weight per class,
  or one for every class: then the row's sum times w[0]).

One block per row (rows grid-strided, as ``ops.launch`` launches), each thread taking the
elements tid, tid + threads, ... of its row (coalesced across the block) into a float64 partial;
the block combines the partials with the fixed-order tree of ``_devmath.block_reduce``, so the
results are bit-identical from run to run (counts are exact: integers in float64).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._devmath import F64, SHARED_T, block_reduce, combine_sums, loader, loader1, quiet, row_kernel


@functools.cache
def count_above(kx, threads, warp):
    ld = loader(kx, F64)
    red = block_reduce(combine_sums(1), 1, threads, warp)

    @row_kernel(threads)
    def kernel(x, thr, lab, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)  # dynamic: _devmath.shared_bytes
        st = cuda.local.array(1, np.float64)
        ot = cuda.local.array(1, np.float64)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            t = thr[i]
            li = lab[i]
            cnt = 0
            for j in range(tid, c, threads):
                v = ld(x, i, j)
                if j < li:  # a lower index: a tie counts
                    if v >= t:
                        cnt += 1
                elif j != li and v > t:
                    cnt += 1
            st[0] = F64(cnt)
            red(st, ot, sh, 0.0)
            if tid == 0:
                out[i] = np.int64(st[0])

    return kernel


@functools.cache
def label_logits(kh, kw, kb, threads, warp):
    """``kb``: the bias's element kind, or None without a bias."""
    ldh = loader(kh, F64)
    ldw = loader(kw, F64)
    ldb = loader1(kb or "f64", F64)  # no bias: never called (the float64 stand-in)
    has_b = kb is not None
    red = block_reduce(combine_sums(1), 1, threads, warp)

    @row_kernel(threads)
    def kernel(h, w, b, y, ignore_index, out):
        quiet()
        tid = cuda.threadIdx.x
        n, d = h.shape
        nv = w.shape[0]
        sh = cuda.shared.array(0, SHARED_T)
        st = cuda.local.array(1, np.float64)
        ot = cuda.local.array(1, np.float64)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            yi = y[i]
            ok = yi != ignore_index and yi >= 0 and yi < nv  # the same for the whole block
            s = F64(0.0)
            if ok:
                for k in range(tid, d, threads):
                    s += ldh(h, i, k) * ldw(w, yi, k)
            st[0] = s
            red(st, ot, sh, 0.0)
            if tid == 0:
                r = F64(np.nan)
                if ok:
                    r = st[0]
                    if has_b:
                        r += ldb(b, yi)
                out[i] = r

    return kernel


@functools.cache
def weighted_sum(kx, per_class, threads, warp):
    """``per_class``: w holds one weight per class (else one, w[0], for every class)."""
    ld = loader(kx, F64)
    red = block_reduce(combine_sums(1), 1, threads, warp)

    @row_kernel(threads)
    def kernel(x, w, out):
        quiet()
        tid = cuda.threadIdx.x
        n, c = x.shape
        sh = cuda.shared.array(0, SHARED_T)
        st = cuda.local.array(1, np.float64)
        ot = cuda.local.array(1, np.float64)
        for i in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            s = F64(0.0)
            for j in range(tid, c, threads):
                if per_class:
                    s += w[j] * ld(x, i, j)
                else:
                    s += ld(x, i, j)
            st[0] = s
            red(st, ot, sh, 0.0)
            if tid == 0:
                out[i] = st[0] if per_class else st[0] * w[0]

    return kernel
