"""Device building blocks of the CUDA kernels: loads, exp/log, row-state combines and the block
reduction. The same Python source runs on a GPU and in the CUDA simulator (NUMBA_ENABLE_CUDASIM=1);
the few primitives the simulator lacks or gets wrong are defined twice, below, and only there.

Row states. A block reduces one row; every thread first folds its own (strided, coalesced) elements
into a state, then the block combines the states of its threads in a fixed tree (warp shuffles,
then one shared-memory stage), so the same input gives bit-identical output. States are float64
vectors (the maxima are exact math-type values stored in float64):

====== ======================================  ==================================================
name   components                              combine (the lower lane's state is the left side)
====== ======================================  ==================================================
SUMS   plain float64 sums (counts too)         component-wise +
LSE    (m, S)                                  S = S1 f1 + S2 f2, f = exp(m - M), M = max(m1, m2)
LSET   (m, S, T), T = sum e (x - m)            T' = f (T + (m - M) S)  (T unchanged while m = -inf)
LIN    (m, S, Csum, A), A = sum c (ref - x)    A' = A + (ref(M) - ref(m)) Csum
KL     (ma, Sa, mb, Sb, U)                     U' = f U + (db - da) f Sa (``kl_move``, as the CPU)
SCORE  (m, S, T, S2, m2, argmax, nan           LSET at it = 1 / T_ (S2 = sum e^2: f^2 S2); 2nd max
       [, mt, St, U] [, rank])                 m2' = max(min(m, m_o), m2, m2_o) (a tie: m); first
                                               index of the max / NaN; KL (teacher); ranks add
====== ======================================  ==================================================

``ref(m)`` is the running maximum, or 0 while it is -inf (then every term is exp(-inf) = 0, or NaN
for a NaN, which then propagates), exactly as in ``numbaent._kernels._blocks``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, types

from . import _config

SIM = _config.SIM
NINF = -math.inf
INF = math.inf
F64 = np.float64
FULL_MASK = 0xFFFFFFFF
BIG = 2**62  # "no index yet" for the argmax / first-NaN trackers (exact in float64)
NC_MAX = 11  # the largest state (SCORE with a teacher and labels)
SHARED_T = types.float64  # element type of the dynamic shared memory (a numba type: the simulator
# converts numba types, not NumPy scalar types, to dtypes)


def dev_cuda(fn):
    """A device function that uses ``cuda.*`` (threads, shared memory, shuffles), always inlined."""
    if SIM:  # the simulator's jit takes no inlining options
        return cuda.jit(device=True)(fn)
    return cuda.jit(device=True, forceinline=True)(fn)


def row_kernel(threads: int):
    """Decorator for a kernel launched with ``threads`` threads per block: the launch bound caps
    its registers so that the block always fits an SM (1024 threads: 64 registers each)."""
    if SIM:  # the simulator's jit takes no launch bounds
        return cuda.jit
    return cuda.jit(launch_bounds=threads)


def dev(fn):
    """A pure-arithmetic device function, always inlined (keeps the row states in registers). In the
    simulator it stays a plain Python function: a simulated device call costs a lock and a context
    switch of the ``cuda`` module, per element."""
    return fn if SIM else dev_cuda(fn)


# --------------------------------------------------------------------------------------------------
# primitives that differ between the GPU and the simulator

if SIM:
    # The simulator runs kernels as Python threads on NumPy scalars: math.log(0) would raise and
    # 0.0 / 0.0 would raise ZeroDivisionError, so the kernels use NumPy scalars throughout
    # (float32 stays float32) and silence NumPy's floating-point warnings in each thread.

    @dev
    def quiet():
        np.seterr(all="ignore")

    @dev
    def exp_(x):
        return np.exp(x)

    @dev
    def log_(x):
        return np.log(x)

    @dev
    def expm1_(x):
        return np.expm1(x)

    @dev
    def bf16_to_f32(u):
        return (np.uint32(u) << np.uint32(16)).view(np.float32)

    @dev
    def f16_to_f32(h):
        return np.float32(h)

else:

    @dev
    def quiet():
        pass

    @dev
    def exp_(x):
        return math.exp(x)

    @dev
    def log_(x):
        return math.log(x)

    @dev
    def expm1_(x):
        return math.expm1(x)

    @dev
    def bf16_to_f32(u):
        # bfloat16 is the high half of a float32: widen the bits and reinterpret them
        return cuda.libdevice.int_as_float(np.int32(np.uint32(u) << np.uint32(16)))

    @dev
    def f16_to_f32(h):
        return np.float32(h)  # cvt.f32.f16


@functools.cache
def _shuffles(nc: int, threads: int, warp: int):
    """(shfl_down(st, ot, delta), shfl_first(st)) for ``nc``-component state vectors over warps of
    ``warp`` lanes: ot <- st of lane + delta (own st past the warp's end); st <- st of lane 0."""
    if not SIM:

        @dev
        def shfl_down(st, ot, delta, shared):
            for c in range(nc):
                ot[c] = cuda.shfl_down_sync(FULL_MASK, st[c], delta)

        @dev
        def shfl_first(st, shared):
            for c in range(nc):
                st[c] = cuda.shfl_sync(FULL_MASK, st[c], 0)

        return shfl_down, shfl_first

    # The simulator has no shuffles: exchange whole states through shared memory (every thread of
    # the block calls these, as every thread calls the block reduction). The simulator allocates
    # static shared arrays lazily and without a lock (threads racing to the first allocation can
    # get private copies), so everything shared lives in the launch's dynamic shared memory.
    base = (threads // warp) * NC_MAX  # after the block reduction's own slots

    @dev_cuda
    def shfl_down(st, ot, delta, shared):
        tid = cuda.threadIdx.x
        for c in range(nc):
            shared[base + tid * nc + c] = st[c]
        cuda.syncthreads()
        src = tid + delta if tid % warp + delta < warp else tid
        for c in range(nc):
            ot[c] = shared[base + src * nc + c]
        cuda.syncthreads()

    @dev_cuda
    def shfl_first(st, shared):
        tid = cuda.threadIdx.x
        for c in range(nc):
            shared[base + tid * nc + c] = st[c]
        cuda.syncthreads()
        for c in range(nc):
            st[c] = shared[base + (tid - tid % warp) * nc + c]
        cuda.syncthreads()

    return shfl_down, shfl_first


# --------------------------------------------------------------------------------------------------
# loads: element -> math type (half types decoded in registers, never copied to float32 first)


@functools.cache
def loader(kind: str, mt):
    """Device function ``ld(a, i, j)`` -> a[i, j] as math type ``mt`` (np.float32 / np.float64);
    ``kind`` is the input's element kind: "f16", "bf16" (uint16 bits), "f32" or "f64"."""
    if kind == "bf16":

        @dev
        def ld(a, i, j):
            return mt(bf16_to_f32(a[i, j]))

    elif kind == "f16":

        @dev
        def ld(a, i, j):
            return mt(f16_to_f32(a[i, j]))

    else:

        @dev
        def ld(a, i, j):
            return mt(a[i, j])

    return ld


@functools.cache
def loader1(kind: str, mt):
    """As :func:`loader` for a 1-D array: ``ld(a, j)``."""
    if kind == "bf16":

        @dev
        def ld(a, j):
            return mt(bf16_to_f32(a[j]))

    elif kind == "f16":

        @dev
        def ld(a, j):
            return mt(f16_to_f32(a[j]))

    else:

        @dev
        def ld(a, j):
            return mt(a[j])

    return ld


# --------------------------------------------------------------------------------------------------
# float64 state arithmetic (same formulas as numbaent._kernels._blocks)


@dev
def rescale(m_old, m_new):
    """exp(m_old - m_new) in float64, 0 when m_old is -inf (an empty state)."""
    if m_old == NINF:
        return F64(0.0)
    return exp_(F64(m_old) - F64(m_new))


@dev
def ref64(m):
    """Reference point of a float64 maximum: m, or 0 while it is -inf."""
    if m == NINF:
        return F64(0.0)
    return F64(m)


@dev
def rescale_t(m_old, m_new, it):
    """exp((m_old - m_new) it) in float64 (it = 1 / T, float64), 0 when m_old is -inf."""
    if m_old == NINF:
        return F64(0.0)
    return exp_((F64(m_old) - F64(m_new)) * it)


@dev
def kl_move(U, Sa, ma_old, ma_new, rb_old, rb_new, it):
    """Move both RAW references of a KL state at once (returns U, Sa): each ea = exp((a - ra) it)
    scales by exp((ra - ra') it), U (raw logit units) as _blocks.kl_move."""
    f = rescale_t(ma_old, ma_new, it)
    # The old state vanishes (da or db may be infinite: 0 * inf is never formed). A NaN state stays
    # NaN, and so does an infinite U (a finite teacher logit over a -inf student one): 0 * inf
    # sends the row to the exact path, which gives the contract's +inf.
    if f == 0.0 and abs(U) < INF and Sa == Sa:
        return F64(0.0), F64(0.0)
    da = ref64(ma_new) - ref64(ma_old)
    db = F64(rb_new) - F64(rb_old)
    return f * U + (db - da) * (f * Sa), f * Sa


@dev
def lset_move(S, T, m_old, m_new):
    """Move an (S, T) entropy state from maximum m_old to m_new >= m_old (returns S, T)."""
    if m_old == m_new:
        return S, T
    f = rescale(m_old, m_new)
    if f == 0.0 and T == T:  # empty, or vanishing against m_new (m_old - m_new may be -inf:
        return f * S, F64(0.0)  # no 0 * inf; a NaN state stays NaN)
    return f * S, f * (T + (F64(m_old) - F64(m_new)) * S)


@dev
def score_move(S, T, S2, m_old, m_new, it):
    """lset_move at temperature 1 / it for e = exp((x - m) it), T = sum e (x - m) in raw logit
    units, S2 = sum e^2 (scales by f^2); returns S, T, S2."""
    if m_old == m_new:
        return S, T, S2
    f = rescale_t(m_old, m_new, it)
    if f == 0.0 and T == T:  # as lset_move: no 0 * inf, a NaN state stays NaN
        return f * S, F64(0.0), f * S2
    return f * S, f * (T + (F64(m_old) - F64(m_new)) * S), (f * f) * S2


# --------------------------------------------------------------------------------------------------
# combines (st <- st (+) ot; st is the lower lane's state); ``aux`` is a per-launch float64


@functools.cache
def combine_sums(nc):
    @dev
    def combine(st, ot, aux):
        for c in range(nc):
            st[c] = st[c] + ot[c]

    return combine


@dev
def combine_lse(st, ot, aux):
    m1 = st[0]
    m2 = ot[0]
    M = max(m1, m2)
    st[1] = st[1] * rescale(m1, M) + ot[1] * rescale(m2, M) if m1 != m2 else st[1] + ot[1]
    st[0] = M


@dev
def combine_lset(st, ot, aux):
    m1 = st[0]
    m2 = ot[0]
    M = max(m1, m2)
    S1, T1 = lset_move(st[1], st[2], m1, M)
    S2, T2 = lset_move(ot[1], ot[2], m2, M)
    st[0] = M
    st[1] = S1 + S2
    st[2] = T1 + T2


@dev
def combine_lin(st, ot, aux):
    """(m, S, Csum, A) states at it = aux = 1 / T (1.0 at T = 1: exp((m - M) * 1.0) is
    exp(m - M), bit for bit)."""
    m1 = st[0]
    m2 = ot[0]
    M = max(m1, m2)
    rM = ref64(M)
    S1 = st[1]
    A1 = st[3]
    S2 = ot[1]
    A2 = ot[3]
    if m1 != M:
        S1 = S1 * rescale_t(m1, M, aux)
        A1 = A1 + (rM - ref64(m1)) * st[2]
    if m2 != M:
        S2 = S2 * rescale_t(m2, M, aux)
        A2 = A2 + (rM - ref64(m2)) * ot[2]
    st[0] = M
    st[1] = S1 + S2
    st[2] = st[2] + ot[2]
    st[3] = A1 + A2


@dev
def combine_kl(st, ot, aux):
    """aux = 1 / temperature (float64); the maxima are raw (unscaled) logits."""
    ma = max(st[0], ot[0])
    mb = max(st[2], ot[2])
    U1 = st[4]
    Sa1 = st[1]
    Sb1 = st[3]
    U2 = ot[4]
    Sa2 = ot[1]
    Sb2 = ot[3]
    if st[0] != ma or st[2] != mb:
        U1, Sa1 = kl_move(U1, Sa1, st[0], ma, ref64(st[2]), ref64(mb), aux)
        Sb1 = Sb1 * rescale_t(st[2], mb, aux)
    if ot[0] != ma or ot[2] != mb:
        U2, Sa2 = kl_move(U2, Sa2, ot[0], ma, ref64(ot[2]), ref64(mb), aux)
        Sb2 = Sb2 * rescale_t(ot[2], mb, aux)
    st[0] = ma
    st[1] = Sa1 + Sa2
    st[2] = mb
    st[3] = Sb1 + Sb2
    st[4] = U1 + U2


def score_slots(has_teacher: bool, has_labels: bool):
    """(components, index of the rank count) of a SCORE state: m, S, T, S2, m2, argmax, first NaN
    at 0..6, then mt, St, U (teacher) at 7..9, then the rank count (labels)."""
    kr = 10 if has_teacher else 7
    return kr + (1 if has_labels else 0), kr


@functools.cache
def combine_score(has_teacher: bool, has_labels: bool):
    """SCORE states (``score_slots``); aux = 1 / temperature (float64). S, T and S2 are sums at the
    temperature against the raw maximum m (st[0]); the KL references are the raw maxima of the
    teacher (st[7]) and of the logits (st[0]), as the per-thread loop keeps them."""
    _, kr = score_slots(has_teacher, has_labels)

    @dev
    def move(st, m_new, mt_new, it):
        m = st[0]
        if has_teacher and (st[7] != mt_new or m != m_new):
            U, St = kl_move(st[9], st[8], st[7], mt_new, ref64(m), ref64(m_new), it)
            st[9] = U
            st[8] = St
        S, T, S2 = score_move(st[1], st[2], st[3], m, m_new, it)
        st[1] = S
        st[2] = T
        st[3] = S2

    @dev
    def combine(st, ot, aux):
        ma = st[0]
        mb = ot[0]
        M = max(ma, mb)
        Mt = max(st[7], ot[7]) if has_teacher else ma
        if mb > ma:
            bi = ot[5]
        elif mb == ma:
            bi = min(st[5], ot[5])
        else:
            bi = st[5]
        move(st, M, Mt, aux)
        move(ot, M, Mt, aux)
        st[0] = M
        st[1] = st[1] + ot[1]
        st[2] = st[2] + ot[2]
        st[3] = st[3] + ot[3]
        st[4] = max(min(ma, mb), max(st[4], ot[4]))  # a tie at the top makes m2 = M
        st[5] = bi
        st[6] = min(st[6], ot[6])
        if has_teacher:
            st[7] = Mt
            st[8] = st[8] + ot[8]
            st[9] = st[9] + ot[9]
        if has_labels:
            st[kr] = st[kr] + ot[kr]

    return combine


# --------------------------------------------------------------------------------------------------
# the block reduction


def shared_bytes(threads: int, warp: int) -> int:
    """Dynamic shared memory a launch needs: the block reduction's partials (and, in the
    simulator, its emulated shuffles' exchange buffer)."""
    n = (threads // warp) * NC_MAX + (threads * NC_MAX if SIM else 0)
    return 8 * n


@functools.cache
def block_reduce(combine, nc: int, threads: int, warp: int):
    """Device function ``reduce(st, ot, shared, aux)``: combine the ``nc``-component float64 states
    ``st`` of all threads of the block; on return every thread holds the block's state in ``st``.
    ``shared`` is the launch's dynamic shared memory (float64, :func:`shared_bytes`).

    Fixed order: within each warp a shuffle-down tree (lane l takes lane l + d for d = W/2 .. 1);
    lane 0 of each warp then writes its warp's state to shared memory and every warp reduces those
    partials with the same tree (redundantly: no extra barrier, and all warps end with the same
    bits), then broadcasts lane 0's result. ``ot`` is scratch (local, nc). Two barriers; the
    shared memory may be reused as soon as this returns. Every thread of the block must call it
    (the shuffles use the full mask)."""
    nw = threads // warp
    shfl_down, shfl_first = _shuffles(nc, threads, warp)

    @dev_cuda
    def reduce(st, ot, shared, aux):
        tid = cuda.threadIdx.x
        lane = tid % warp
        d = warp // 2
        while d > 0:
            shfl_down(st, ot, d, shared)
            if lane + d < warp:
                combine(st, ot, aux)
            d //= 2
        if lane == 0:
            for c in range(nc):
                shared[(tid // warp) * nc + c] = st[c]
        cuda.syncthreads()
        if lane < nw:
            for c in range(nc):
                st[c] = shared[lane * nc + c]
        cuda.syncthreads()
        d = nw // 2
        while d > 0:
            shfl_down(st, ot, d, shared)
            if lane + d < nw:
                combine(st, ot, aux)
            d //= 2
        shfl_first(st, shared)

    return reduce
