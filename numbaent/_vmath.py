"""Vectorisable scalar maths for Numba kernels: exp, log, float keys and half-precision loads.

PyPI's llvmlite has no SVML, so ``math.exp``/``math.log`` inside a Numba loop become scalar libm calls
and the loop never vectorises. The functions here are straight-line float code (a polynomial plus an
integer bit-cast for the power of two) that LLVM turns into packed AVX2/AVX-512 instructions once it
inlines them into a kernel loop.

Rules this module follows (learnt the hard way):

* Every constant is typed (``_F32(...)``): a bare Python float is float64 and silently promotes a
  float32 polynomial to float64 (half speed). ``math.floor`` returns int64 for the same reason; the
  round-to-nearest below uses the 1.5*2**23 "magic number" trick instead.
* These functions must NOT be compiled with ``reassoc`` fastmath (the magic-number rounding and
  Cody-Waite reduction would be folded away: exp then returns powers of two). Numba compiles a
  callee with its *caller's* fastmath flags unless the callee states its own, so every function
  here states its flags explicitly (``_FM``: contraction to FMA only), and none is ``inline='always'`` (Numba-IR inlining would
  also give it the kernel's flags; LLVM inlining keeps each instruction's own flags).
* No ``nnan``/``ninf`` anywhere: NaN and +-inf propagation are part of the contract.

Accuracy (tests/test_vmath.py checks it against NumPy over the whole float range): ``exp32`` and
``log32`` within 2 ulp, including subnormal results/arguments; ``exp64``/``log64`` within 2 ulp.
``expm32``/``expm64`` are a fast variant for arguments <= 0 whose results are summed with
something >= 1: results below the smallest normal number are flushed to 0 (they cannot change such
a sum), which saves the second scaling multiply. The kernels' sums use cheaper ones still
(``expz32``, ``exps32``, ``expk32``: one Cody-Waite step, degree 5, 3 ulp where the terms of a sum
are large), because on this hardware the exp is what bounds every kernel that is not memory-bound.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import _jitcache  # noqa: F401  (before any cached @njit: see _jitcache)

# 'contract' (FMA) only: it keeps the magic-number rounding and Cody-Waite reduction exact (an FMA
# rounds once); 'reassoc' would fold them away. Stated explicitly so callers' flags are not inherited.
_FM = {"contract"}

_F32 = np.float32
_F64 = np.float64
_I32 = np.int32
_I64 = np.int64


# --------------------------------------------------------------------------------------------------
# bit casts


@intrinsic
def f32_from_bits(typingctx, x):
    """Reinterpret the low 32 bits of an integer as a float32."""
    if isinstance(x, types.Integer):

        def codegen(context, builder, sig, args):
            v = args[0]
            if x.bitwidth > 32:
                v = builder.trunc(v, ir.IntType(32))
            elif x.bitwidth < 32:
                v = (
                    builder.zext(v, ir.IntType(32))
                    if not x.signed
                    else builder.sext(v, ir.IntType(32))
                )
            return builder.bitcast(v, ir.FloatType())

        return types.float32(x), codegen
    return None


@intrinsic
def f64_from_bits(typingctx, x):
    """Reinterpret a 64-bit integer as a float64."""
    if isinstance(x, types.Integer):

        def codegen(context, builder, sig, args):
            v = args[0]
            if x.bitwidth < 64:
                v = builder.sext(v, ir.IntType(64)) if x.signed else builder.zext(v, ir.IntType(64))
            return builder.bitcast(v, ir.DoubleType())

        return types.float64(x), codegen
    return None


@intrinsic
def bits_of(typingctx, x):
    """Bits of a float as a signed integer of the same width (int32 for float32, int64 for float64)."""
    if x == types.float32:
        return types.int32(x), lambda c, b, s, a: b.bitcast(a[0], ir.IntType(32))
    if x == types.float64:
        return types.int64(x), lambda c, b, s, a: b.bitcast(a[0], ir.IntType(64))
    return None


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch the cache line of ``arr[idx]`` (1-D array, no bounds check: a prefetch
    never faults, so an index past the end is harmless). llvm.prefetch, read, keep in all levels.
    Declared unmangled: LLVM's auto-upgrade names it for the pointer type (``.p0`` with opaque
    pointers, ``.p0i8`` before), so one declaration serves every llvmlite numba>=0.59 brings."""
    if isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(idx, types.Integer):

        def codegen(context, builder, sig, args):
            aryty = sig.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch")
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.none(arr, idx), codegen
    return None


# --------------------------------------------------------------------------------------------------
# order-preserving integer keys: the max of keys vectorises (vpmaxsd) where a float max does not
# without nnan. NaN with the sign bit clear sorts above +inf, NaN with it set below -inf.


@njit(fastmath=_FM, error_model="numpy", cache=True)
def key32(v):
    # Numba computes int32 arithmetic in int64; the casts keep the key (and the vector lanes) 32-bit
    b = bits_of(v)
    return _I32(b ^ _I32(_I32(b >> _I32(31)) & _I32(0x7FFFFFFF)))


@njit(fastmath=_FM, error_model="numpy", cache=True)
def unkey32(k):
    k = _I32(k)
    return f32_from_bits(_I32(k ^ _I32(_I32(k >> _I32(31)) & _I32(0x7FFFFFFF))))


@njit(fastmath=_FM, error_model="numpy", cache=True)
def key64(v):
    b = bits_of(v)
    return b ^ ((b >> _I64(63)) & _I64(0x7FFFFFFFFFFFFFFF))


@njit(fastmath=_FM, error_model="numpy", cache=True)
def unkey64(k):
    return f64_from_bits(k ^ ((k >> _I64(63)) & _I64(0x7FFFFFFFFFFFFFFF)))


# --------------------------------------------------------------------------------------------------
# float32 exp


@njit(fastmath=_FM, error_model="numpy", cache=True)
def _reduce32(x, magic):
    """(t, fk, r) with t = x / ln 2 + magic rounded to an integer (magic = 1.5 * 2**23, plus the
    exponent bias when the caller takes the bits of 2**k from t), fk = round(x / ln 2) and
    r = x - fk ln 2 in two Cody-Waite steps (exact for |k| < 2**11)."""
    t = x * _F32(1.44269504088896341) + magic
    fk = t - magic
    r = x - fk * _F32(0.693359375)
    r = r - fk * _F32(-2.12194440e-4)
    return t, fk, r


@njit(fastmath=_FM, error_model="numpy", cache=True)
def _exp32_core(x):
    # x already in [-104, 89]; returns (polynomial, k) with exp(x) = p * 2**k
    _, fk, r = _reduce32(x, _F32(12582912.0))
    # degree-6 polynomial, near-minimax for relative error on |r| <= ln2/2 (truncation < 2.1e-9,
    # fitted by Lawson iterations): 6 FMAs in Horner form (the Cephes form cost 9 ops). Degree 5
    # was tried: 2.5 ulp after float32 rounding, over the 2 ulp budget.
    y = _F32(0.0013840249475603975)
    y = y * r + _F32(0.00837574359877822)
    y = y * r + _F32(0.04166821702863597)
    y = y * r + _F32(0.16666407657148818)
    y = y * r + _F32(0.49999991802208194)
    y = y * r + _F32(1.0000000395396782)
    y = y * r + _F32(1.000000000602676)
    return y, fk


@njit(fastmath=_FM, error_model="numpy", cache=True)
def exp32(x):
    """exp for float32, <= 2 ulp, correct for subnormal results, overflow, +-inf and NaN."""
    xc = x if x > _F32(-105.0) else _F32(-105.0)
    xc = xc if xc < _F32(89.0) else _F32(89.0)
    y, fk = _exp32_core(xc)
    k = _I32(fk)
    k1 = k >> _I32(1)
    k2 = k - k1
    y = y * f32_from_bits((k1 + _I32(127)) << _I32(23))
    y = y * f32_from_bits((k2 + _I32(127)) << _I32(23))
    return y if x == x else x


@njit(fastmath=_FM, error_model="numpy", cache=True)
def expm32(x):
    """exp for float32 arguments <= 0 (or NaN); results below 2**-126 are flushed to 0."""
    y, fk = _exp32_core(x)
    y = y * f32_from_bits((_I32(fk) + _I32(127)) << _I32(23))
    return _F32(0.0) if x < _F32(-87.33) else y


@njit(fastmath=_FM, error_model="numpy", cache=True)
def _poly5(r):
    """exp(r) on |r| <= ln2/2: degree 5, fitted minimax for relative error (9.2e-8) with p(0) = 1
    exactly, so that a sum's own max term is exactly 1."""
    y = _F32(0.008290222845971584)
    y = y * r + _F32(0.04189842566847801)
    y = y * r + _F32(0.16667640209197998)
    y = y * r + _F32(0.49999144673347473)
    y = y * r + _F32(0.9999997019767761)
    y = y * r + _F32(1.0)
    return y


@njit(fastmath=_FM, error_model="numpy", cache=True)
def expk32(x, mk):
    """exp(x - K ln 2) for the terms of a sum, with mk = 1.5 * 2**23 + 127 - K (a float32 integer)
    set once per row maximum m (K = round(m / ln 2)): no x - m per element, 10 vector ops. Needs
    K ln 2 - 86 <= x <= K ln 2 + 88, so that 2**(k - K) is a normal number: with the bias folded
    into the rounding constant, bits(t) << 23 are its bits. The reduction uses ln 2 rounded to
    float32, which costs |k| * 1.9e-9 relative: below 1.8e-7 (3 ulp) for |x| <= 64; then
    _poly5."""
    t = x * _F32(1.44269504088896341) + mk
    fk = t - mk  # round(x / ln 2)
    r = x - fk * _F32(0.6931471805599453)
    return _poly5(r) * f32_from_bits(bits_of(t) << _I32(23))


@njit(fastmath=_FM, error_model="numpy", cache=True)
def exps32(d):
    """exp for the terms of a sum that is >= 1 (d = x - max <= 0, or NaN): 11 vector ops against
    expm32's 14, for the bfloat16 kernels, which are bound by arithmetic, not memory.

    * d < -86 is clamped to -86: -inf gives 4.5e-38, not 0 (invisible next to the max's exact 1;
      never use this where a term is multiplied by d or the sum may be all such terms).
    * One Cody-Waite step with ln 2 rounded to float32 (error |k| * 1.9e-9, below 2.5e-7 at the
      clamp), a degree-5 polynomial with p(0) = 1 exactly (fitted minimax for relative error, 9e-8),
      and the bias folded into the rounding constant: expk32 with K = 0.
      Within 3 ulp for d >= -10, 7 ulp at the clamp (tests/test_vmath.py); exps32(0) = 1 exactly.
    * NaN propagates through the final multiply (the bits of 2**k are garbage for a NaN d).
    * d in (0, 88] also gives exp(d); larger d gives garbage (callers keep d <= 0).
    """
    d = d if not (d < _F32(-86.0)) else _F32(-86.0)  # NaN stays NaN
    return expk32(d, _F32(12583039.0))  # K = 0: 1.5 * 2**23 + 127


@njit(fastmath=_FM, error_model="numpy", cache=True)
def expz32(d):
    """exp for the terms of a sum, d = x - ref <= 64 (or NaN): 13 vector ops against expm32's 16,
    for the float32 kernels' one-pass blocks (terms up to e**64 before the block's rescale).

    * 0 below -86 (a term that cannot change a sum >= 1; anything multiplied by it stays 0 unless
      it is infinite, which makes 0 * inf = NaN, as with expm32: the exact path then decides).
    * expk32's degree-5 polynomial (p(0) = 1 exactly, so expz32(0) = 1) after expm32's two-step
      Cody-Waite reduction: within 2 ulp on [-86, 64] (tests/test_vmath.py). One step (expk32
      with K = 0, 12 ops) erred 4.7 ulp at the ends, and the first block of a row, summed against
      the row's first element, often has terms far above 1.
    * NaN propagates; -inf and huge negative d give 0 (the select drops expk32's garbage there).
    """
    t, _, r = _reduce32(d, _F32(12583039.0))  # 1.5 * 2**23 + 127: bias folded in
    y = _poly5(r) * f32_from_bits(bits_of(t) << _I32(23))
    return _F32(0.0) if d < _F32(-86.0) else y


# --------------------------------------------------------------------------------------------------
# float64 exp (Taylor polynomial of degree 13 on |r| <= ln2/2: truncation < 1e-17)


@njit(fastmath=_FM, error_model="numpy", cache=True)
def _exp64_core(x):
    fk = (x * _F64(1.4426950408889634) + _F64(6755399441055744.0)) - _F64(6755399441055744.0)
    r = x - fk * _F64(6.93147180369123816490e-01)
    r = r - fk * _F64(1.90821492927058770002e-10)
    y = _F64(1.0 / 6227020800.0)
    y = y * r + _F64(1.0 / 479001600.0)
    y = y * r + _F64(1.0 / 39916800.0)
    y = y * r + _F64(1.0 / 3628800.0)
    y = y * r + _F64(1.0 / 362880.0)
    y = y * r + _F64(1.0 / 40320.0)
    y = y * r + _F64(1.0 / 5040.0)
    y = y * r + _F64(1.0 / 720.0)
    y = y * r + _F64(1.0 / 120.0)
    y = y * r + _F64(1.0 / 24.0)
    y = y * r + _F64(1.0 / 6.0)
    y = y * r + _F64(0.5)
    y = y * r * r + r + _F64(1.0)
    return y, fk


@njit(fastmath=_FM, error_model="numpy", cache=True)
def exp64(x):
    """exp for float64, <= 2 ulp, correct for subnormal results, overflow, +-inf and NaN."""
    xc = x if x > _F64(-746.0) else _F64(-746.0)
    xc = xc if xc < _F64(710.0) else _F64(710.0)
    y, fk = _exp64_core(xc)
    k = _I64(fk)
    k1 = k >> _I64(1)
    k2 = k - k1
    y = y * f64_from_bits((k1 + _I64(1023)) << _I64(52))
    y = y * f64_from_bits((k2 + _I64(1023)) << _I64(52))
    return y if x == x else x


@njit(fastmath=_FM, error_model="numpy", cache=True)
def expm64(x):
    """exp for float64 arguments <= 0 (or NaN); results below 2**-1022 are flushed to 0."""
    y, fk = _exp64_core(x)
    y = y * f64_from_bits((_I64(fk) + _I64(1023)) << _I64(52))
    return _F64(0.0) if x < _F64(-708.39) else y


# --------------------------------------------------------------------------------------------------
# float32 log (Cephes logf polynomial)


@njit(fastmath=_FM, error_model="numpy", cache=True)
def log32(x):
    """Natural log for float32, <= 2 ulp; log(0) = -inf, log(<0) = NaN, log(inf) = inf, subnormals ok."""
    sub = x < _F32(1.1754943508222875e-38)
    xs = x * _F32(8388608.0) if sub else x  # 2**23
    b = bits_of(xs)
    e = ((b >> _I32(23)) & _I32(0xFF)) - _I32(126)
    m = f32_from_bits((b & _I32(0x007FFFFF)) | _I32(0x3F000000))  # mantissa in [0.5, 1)
    small = m < _F32(0.707106781186547524)
    e = e - _I32(1) if small else e
    f = (m + m if small else m) - _F32(1.0)
    fe = _F32(e) - (_F32(23.0) if sub else _F32(0.0))
    z = f * f
    y = _F32(7.0376836292e-2)
    y = y * f - _F32(1.1514610310e-1)
    y = y * f + _F32(1.1676998740e-1)
    y = y * f - _F32(1.2420140846e-1)
    y = y * f + _F32(1.4249322787e-1)
    y = y * f - _F32(1.6668057665e-1)
    y = y * f + _F32(2.0000714765e-1)
    y = y * f - _F32(2.4999993993e-1)
    y = y * f + _F32(3.3333331174e-1)
    y = y * f * z
    y = y + fe * _F32(-2.12194440e-4)
    y = y - _F32(0.5) * z
    r = f + y
    r = r + fe * _F32(0.693359375)
    r = _F32(-np.inf) if x == _F32(0.0) else r
    r = x if x == _F32(np.inf) else r
    r = _F32(np.nan) if x < _F32(0.0) else r
    return x if x != x else r


# --------------------------------------------------------------------------------------------------
# float64 log: log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716


@njit(fastmath=_FM, error_model="numpy", cache=True)
def log64(x):
    """Natural log for float64, <= 2 ulp; same special values as log32."""
    sub = x < _F64(2.2250738585072014e-308)
    xs = x * _F64(18014398509481984.0) if sub else x  # 2**54
    b = bits_of(xs)
    e = ((b >> _I64(52)) & _I64(0x7FF)) - _I64(1022)
    m = f64_from_bits((b & _I64(0x000FFFFFFFFFFFFF)) | _I64(0x3FE0000000000000))
    small = m < _F64(0.70710678118654752440)
    e = e - _I64(1) if small else e
    m = m + m if small else m
    fe = _F64(e) - (_F64(54.0) if sub else _F64(0.0))
    f = m - _F64(1.0)
    s = f / (_F64(2.0) + f)
    z = s * s
    y = _F64(1.0 / 23.0)
    y = y * z + _F64(1.0 / 21.0)
    y = y * z + _F64(1.0 / 19.0)
    y = y * z + _F64(1.0 / 17.0)
    y = y * z + _F64(1.0 / 15.0)
    y = y * z + _F64(1.0 / 13.0)
    y = y * z + _F64(1.0 / 11.0)
    y = y * z + _F64(1.0 / 9.0)
    y = y * z + _F64(1.0 / 7.0)
    y = y * z + _F64(1.0 / 5.0)
    y = y * z + _F64(1.0 / 3.0)
    # log(m) = 2s + 2s*z*y = f - s*(f - 2*z*y*... ) ; use the fdlibm split for accuracy
    hfsq = _F64(0.5) * f * f
    r = s * (hfsq + z * y * _F64(2.0) * _F64(1.0))
    lg = fe * _F64(1.90821492927058770002e-10) + r
    lg = lg - hfsq + f
    lg = lg + fe * _F64(6.93147180369123816490e-01)
    lg = _F64(-np.inf) if x == _F64(0.0) else lg
    lg = x if x == _F64(np.inf) else lg
    lg = _F64(np.nan) if x < _F64(0.0) else lg
    return x if x != x else lg


# --------------------------------------------------------------------------------------------------
# half-precision loads, decoded in registers. Kernels receive float16 data viewed as int16 and
# bfloat16 data viewed as uint16 (Numba has no bfloat16 type); both decode to float32.


@njit(fastmath=_FM, error_model="numpy", cache=True)
def mul3(a, b, c):
    """(a * b) * c in that order, also inside a reassociating (FASTMATH) loop: this function's own
    flags apply to its instructions, so LLVM may not regroup it as a * (b * c)."""
    return (a * b) * c


@njit(fastmath=_FM, error_model="numpy", cache=True)
def bf16_to_f32(u):
    return f32_from_bits(_I32(u) << _I32(16))


@njit(fastmath=_FM, error_model="numpy", cache=True)
def f16_to_f32(h):
    hb = _I32(h) & _I32(0xFFFF)
    o = (hb & _I32(0x7FFF)) << _I32(13)
    ex = o & _I32(0x0F800000)
    f = f32_from_bits(o) * _F32(5.192296858534828e33)  # 2**112: rebias exponent, fixes subnormals
    bits = bits_of(f)
    bits = bits | _I32(0x7F800000) if ex == _I32(0x0F800000) else bits
    return f32_from_bits(bits | ((hb & _I32(0x8000)) << _I32(16)))


# --------------------------------------------------------------------------------------------------
# type-generic front ends used by the kernels (resolved at compile time, per dtype)


def ld(v):
    """Load one element as the kernel's math type (float32 or float64)."""


@overload(ld)
def _ov_ld(v):
    if v == types.float32 or v == types.float64:
        return lambda v: v
    if v == types.uint16:
        return lambda v: bf16_to_f32(v)
    if v == types.int16:
        return lambda v: f16_to_f32(v)
    return None


def _per_float(name, doc, f32, f64):
    """A front end ``name(x)`` that Numba resolves to ``f32`` or ``f64`` by the type of x."""

    def front(x):
        pass

    front.__name__ = front.__qualname__ = name
    front.__doc__ = doc

    @overload(front)
    def _ov(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return front


vexp = _per_float("vexp", "Full-range exp (exp32 / exp64).", exp32, exp64)
vexpz = _per_float(
    "vexpz",
    "exp for the terms of a sum, x <= 64; 0 below -86 in float32 (expz32 / expm64).",
    expz32,
    expm64,
)
vexps = _per_float(
    "vexps",
    "exp for the terms of a sum >= 1 (exps32 / expm64): tiny or -inf arguments may give a tiny "
    "positive term instead of 0 in float32 (see exps32); never use it where a term is multiplied.",
    exps32,
    expm64,
)
vlog = _per_float("vlog", "Natural log (log32 / log64).", log32, log64)
key = _per_float("key", "Order-preserving integer key of a float.", key32, key64)


def unkey(k, like):
    """Inverse of key(), back to the float type of ``like``."""


@overload(unkey)
def _ov_unkey(k, like):
    t = like.dtype if isinstance(like, types.Array) else like
    if t == types.float32:
        return lambda k, like: unkey32(k)
    if t == types.float64:
        return lambda k, like: unkey64(k)
    return None


def cst(like, v):
    """``v`` as the float type of ``like`` (a float scalar or a float array)."""


@overload(cst)
def _ov_cst(like, v):
    t = like.dtype if isinstance(like, types.Array) else like
    if t == types.float32:
        return lambda like, v: _F32(v)
    return lambda like, v: _F64(v)
