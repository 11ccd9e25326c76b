"""Small CUDA kernels for the device path (``device.py``): strided copies (move the class axis,
make contiguous, convert dtypes), fills, the sum / mean reduction of per-row results, the units
divisor, and the NaN-row search of ``nan_policy="raise"``. They keep every step of a device call on
the device, on the caller's stream, and work for any array that numba can view (CuPy, torch,
__cuda_array_interface__), so the device path needs nothing from the array library but views and
allocations.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ._devmath import (
    F64,
    SHARED_T,
    block_reduce,
    combine_sums,
    loader,
    loader1,
    quiet,
    row_kernel,
)

COPY_THREADS = 256


@functools.cache
def copy_strided(ndim: int):
    """``copy(src, src_base, src_strides, dst, dst_base, dst_strides, shape)``: for every index
    tuple k of ``shape`` (C order), dst[dst_base + k . dst_strides] = src[src_base + k . src_strides]
    (element offsets into flat views; the element type converts as numba assigns)."""

    @cuda.jit
    def copy(src, src_base, src_strides, dst, dst_base, dst_strides, shape):
        total = 1
        for d in range(ndim):
            total *= shape[d]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for idx in range(start, total, cuda.gridDim.x * cuda.blockDim.x):
            rem = idx
            so = src_base
            do = dst_base
            for e in range(ndim):
                d = ndim - 1 - e
                k = rem % shape[d]
                rem //= shape[d]
                so += k * src_strides[d]
                do += k * dst_strides[d]
            dst[do] = src[so]

    return copy


@cuda.jit
def fill_i64(a, value):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if i < a.shape[0]:
        a[i] = value


@cuda.jit
def divide(a, divisor):
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, a.shape[0], cuda.gridDim.x * cuda.blockDim.x):
        a[i] = a[i] / divisor


@cuda.jit
def equals(y, value, equal, out):
    """out[i] = (y[i] == value) if ``equal`` else (y[i] != value)."""
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, y.shape[0], cuda.gridDim.x * cuda.blockDim.x):
        out[i] = (y[i] == value) == equal


@functools.cache
def reduce_rows(threads: int, warp: int):
    """One block: out[0] = sum(res) / denom / divisor in float64 (then the output type), with
    denom = sum(w) if has_w else the number of rows, for mean (mode 1); sum(res) / divisor for
    sum (mode 0). A mean over a zero denominator is NaN. Fixed order: bit-identical results."""
    red = block_reduce(combine_sums(2), 2, threads, warp)

    @row_kernel(threads)
    def kernel(res, w, has_w, mode, divisor, out):
        quiet()
        tid = cuda.threadIdx.x
        n = res.shape[0]
        sh = cuda.shared.array(0, SHARED_T)
        st = cuda.local.array(2, np.float64)
        ot = cuda.local.array(2, np.float64)
        s = F64(0.0)
        d = F64(0.0)
        for i in range(tid, n, threads):
            s += F64(res[i])
            if has_w:
                d += F64(w[i])
        st[0] = s
        st[1] = d
        red(st, ot, sh, 0.0)
        if tid == 0:
            total = st[0]
            if mode == 0:
                out[0] = total / divisor
            else:
                denom = st[1] if has_w else F64(n)
                out[0] = (total / denom) / divisor if denom != 0 else np.nan

    return kernel


@functools.cache
def nan_rows(kind: str):
    """first[0] <- min row i with res[i] NaN and a NaN in row i (or row 0 when a_step == 0)."""
    ld = loader(kind, np.float32 if kind != "f64" else np.float64)

    @cuda.jit
    def kernel(res, a, a_step, first):
        quiet()
        n = res.shape[0]
        c = a.shape[1]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for i in range(start, n, cuda.gridDim.x * cuda.blockDim.x):
            r = res[i]
            if r != r:
                ia = i * a_step
                for j in range(c):
                    v = ld(a, ia, j)
                    if v != v:
                        cuda.atomic.min(first, 0, i)
                        break

    return kernel


@functools.cache
def redo_rows(ka: str, kb: str | None):
    """The exact path's row search (``numbaent._kernels.exact.nonfinite_rows`` on the device):
    mark[i] <- 1 for a row whose result res[i] is not finite and whose input rows a[i * a_step]
    (and b[i * b_step] when ``kb`` is given) hold no NaN, else 0; first[0] <- min such row."""
    lda = loader(ka, np.float64 if ka == "f64" else np.float32)
    ldb = loader(kb or ka, np.float64 if kb == "f64" else np.float32)
    has_b = kb is not None

    @cuda.jit
    def kernel(res, a, a_step, b, b_step, mark, first):
        quiet()
        n = res.shape[0]
        c = a.shape[1]
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for i in range(start, n, cuda.gridDim.x * cuda.blockDim.x):
            r = res[i]
            m = 0
            if not (abs(r) < np.inf):  # NaN or +-inf
                m = 1
                ia = i * a_step
                for j in range(c):
                    v = lda(a, ia, j)
                    if v != v:
                        m = 0
                        break
                if has_b and m == 1:
                    ib = i * b_step
                    for j in range(c):
                        v = ldb(b, ib, j)
                        if v != v:
                            m = 0
                            break
            mark[i] = m
            if m == 1:
                cuda.atomic.min(first, 0, i)

    return kernel


@cuda.jit
def gather_rows(src, step, idx, dst):
    """dst[k, :] = src[idx[k] * step, :] (the exact path's rows, element type unchanged)."""
    rows = dst.shape[0]
    c = dst.shape[1]
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for e in range(start, rows * c, cuda.gridDim.x * cuda.blockDim.x):
        k = e // c
        j = e - k * c
        dst[k, j] = src[idx[k] * step, j]


@cuda.jit
def scatter(dst, idx, vals):
    """dst[idx[k]] = vals[k] (the exact path's results, converted to dst's element type)."""
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for k in range(start, idx.shape[0], cuda.gridDim.x * cuda.blockDim.x):
        dst[idx[k]] = vals[k]


@functools.cache
def take_cols(kind: str):
    """out[i] = x[i, cols[i]] in float64 (numbaent.linear's reads of one logit per row)."""
    ld = loader(kind, np.float64)

    @cuda.jit
    def kernel(x, cols, out):
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for i in range(start, out.shape[0], cuda.gridDim.x * cuda.blockDim.x):
            out[i] = ld(x, i, cols[i])

    return kernel


@functools.cache
def widen(kind: str, mt):
    """dst[i, j] = src[i, j] decoded (bfloat16 bits, float16) or converted to ``mt`` (a chunk of
    hidden states or weights for the matrix product; ``src`` may be strided, ``dst`` is not)."""
    ld = loader(kind, mt)

    @cuda.jit
    def kernel(src, dst):
        rows, c = dst.shape
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for e in range(start, rows * c, cuda.gridDim.x * cuda.blockDim.x):
            i = e // c
            j = e - i * c
            dst[i, j] = ld(src, i, j)

    return kernel


@functools.cache
def widen1(kind: str, mt):
    """As :func:`widen` for a 1-D ``src`` (a chunk of the bias)."""
    ld = loader1(kind, mt)

    @cuda.jit
    def kernel(src, dst):
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for j in range(start, dst.shape[0], cuda.gridDim.x * cuda.blockDim.x):
            dst[j] = ld(src, j)

    return kernel
