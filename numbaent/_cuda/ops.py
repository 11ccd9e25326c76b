"""The backend interface on numba device arrays: pick the kernel for the inputs' element types and
the launch constants, and launch it on a stream, for the device adapter (``device.Device``).

Arguments are numba device arrays (or, in the simulator, NumPy arrays), already validated and laid
out as the CPU interface expects (rows x classes, C-contiguous; bfloat16 as uint16 bits). Outputs,
row flags (int8, one per row, every row written; ``score`` has none) and ``first`` (int64 (1,),
initialised by the caller to the number of rows; a kernel lowers it to the first flagged row; the
probability kernels take two slots, the second for the first row flagged for the exact path, see
``kernels_prob``) are preallocated by the caller. Nothing here synchronises: launches are queued on ``stream``.

``kernel_args`` returns, for each interface function, the kernel and its argument tuple without
launching anything: ``tests/test_cuda.py`` compiles every kernel to PTX from it.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from . import _config
from . import kernels_linear as kn
from . import kernels_logits as kl
from . import kernels_prob as kp
from . import kernels_score as ks
from ._devmath import shared_bytes

_KINDS = {
    np.dtype(np.float16): "f16",
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.uint16): "bf16",  # bfloat16 passed as its bits
    np.dtype(np.int16): "bf16",
}


def kind(a) -> str:
    return _KINDS[np.dtype(a.dtype)]


def math_type(*arrays):
    """np.float64 when an input is float64, else np.float32 (the kernels' math type)."""
    for a in arrays:
        if a is not None and np.dtype(a.dtype) == np.float64:
            return np.float64
    return np.float32


def consts() -> tuple[int, int, int]:
    """(threads, warp, tile) as configured now (``_config``; tests patch it)."""
    t = _config.THREADS
    _config.check_threads(t)
    return t, _config.warp_for(t), _config.TILE


def launch(kernel, rows: int, stream, args) -> None:
    """One block per row (grid-strided beyond ``MAX_BLOCKS``), on ``stream``."""
    if rows == 0:
        return
    threads, warp, _ = consts()
    grid = min(rows, _config.MAX_BLOCKS)
    nbytes = shared_bytes(threads, warp)
    if _config.SIM:
        launch_sim(kernel, grid, threads, nbytes, args)
    else:
        kernel[grid, threads, stream, nbytes](*args)


def launch_sim(kernel, grid, threads, nbytes, args) -> None:
    """Simulator launch. The simulator runs a block as Python threads that meet at every barrier;
    with the default 5 ms GIL switch interval each barrier costs milliseconds, so the interval is
    shortened for the launch only. Arrays of :func:`sim_host_shape` go in as plain simulator
    arrays (inside a kernel a shape takes no negative index, in the simulator as on a GPU)."""
    args = tuple(_plain(a) for a in args)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        kernel[grid, threads, 0, nbytes](*args)
    finally:
        sys.setswitchinterval(old)


@functools.cache
def _sim_class():
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    class HostShaped(FakeCUDAArray):
        """A simulator array whose ``shape`` is a plain tuple (negative indices work, as on a real
        device array's host side; the simulator's FakeShape refuses them everywhere). Slices and
        reshapes of it are plain simulator arrays again."""

        @property
        def shape(self):
            return tuple(self._ary.shape)

    return HostShaped


def sim_host_shape(a):
    """Under the simulator, a device array as a real one behaves on the host (see ``_sim_class``);
    elsewhere ``a`` itself."""
    if not _config.SIM or type(a).__name__ != "FakeCUDAArray":
        return a
    return _sim_class()(a._ary, stream=a.stream)


def _plain(a):
    if _config.SIM and type(a) is _sim_class():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(a._ary, stream=a.stream)
    return a


# --------------------------------------------------------------------------------------------------
# kernel + arguments per interface function


def kernel_args(op: str, *a):
    """(kernel, args) for interface function ``op`` on prepared arrays (see the module docstring)."""
    t, w, tile = consts()
    if kind(a[0]) in ("f16", "bf16"):  # two-byte elements: twice the tile keeps the bytes in flight
        tile *= 2
    if op == "entropy":
        p, normalize, out, flags, first = a
        return kp.entropy(kind(p), math_type(p), t, w, tile), (
            p,
            bool(normalize),
            out,
            flags,
            first,
        )
    if op in ("cross_entropy", "kl_divergence"):
        p, q, q_step, normalize, out, flags, first = a
        build = kp.cross_entropy if op == "cross_entropy" else kp.kl_divergence
        k = build(kind(p), kind(q), math_type(p, q), t, w, tile)
        return k, (p, q, q_step, bool(normalize), out, flags, first)
    if op == "js_divergence":
        p, q, q_step, normalize, out, flags, first = a
        k = kp.js_divergence(kind(p), kind(q), math_type(p, q), t, w, tile, bool(normalize))
        return k, (p, q, q_step, out, flags, first)
    if op in ("logsumexp", "log_softmax", "softmax", "softmax_entropy"):
        x, out = a
        return getattr(kl, op)(kind(x), math_type(x), t, w, tile), (x, out)
    if op == "ce_labels":
        x, y, weight, has_weight, ignore_index, eps, inv_t, out, rowweight, bad, first = a
        k = kl.ce_labels(kind(x), math_type(x), t, w, tile, bool(has_weight), eps != 0,
                         inv_t != 1.0)  # fmt: skip
        return k, (x, y, weight, ignore_index, float(eps), float(inv_t), out, rowweight, bad, first)
    if op == "ce_soft":
        x, tg, weight, has_weight, eps, inv_t, out = a
        k = kl.ce_soft(kind(x), kind(tg), math_type(x, tg), t, w, tile, bool(has_weight),
                       inv_t != 1.0)  # fmt: skip
        return k, (x, tg, weight, float(eps), float(inv_t), out)
    if op == "softmax_kl":
        xp, xq, inv_t, out = a
        k = kl.softmax_kl(kind(xp), kind(xq), math_type(xp, xq), t, w, tile)
        return k, (xp, xq, float(inv_t), out)
    if op == "score":
        x, y, has_labels, ignore_index, tq, has_teacher, inv_t, *outs = a
        lse, ent, amax, conf, margin, ce, correct, rank, brier, kld, first = outs
        one_t = float(inv_t) == 1.0
        k = ks.score(kind(x), kind(tq), math_type(x, tq), t, w, tile, bool(has_labels),
                     bool(has_teacher), one_t)  # fmt: skip
        return k, (x, y, ignore_index, tq, float(inv_t), lse, ent, amax, conf, margin, ce, correct,
                   rank, brier, kld, first)  # fmt: skip
    if op == "count_above":  # numbaent.linear: the rank's count over a chunk of logits
        x, thr, lab, out = a
        return kn.count_above(kind(x), t, w), (x, thr, lab, out)
    if op == "label_logits":  # numbaent.linear: each row's logit of its label, in float64
        h, wt, b, y, ignore_index, out = a
        kb = None if b is None else kind(b)
        k = kn.label_logits(kind(h), kind(wt), kb, t, w)
        return k, (h, wt, b if b is not None else out, y, np.int64(ignore_index), out)
    if op == "weighted_sum":  # numbaent.linear: sum_j w_j x_j per row, in float64
        x, wc, per_class, out = a
        return kn.weighted_sum(kind(x), bool(per_class), t, w), (x, wc, out)
    raise KeyError(op)


def run(op: str, rows: int, stream, *a) -> None:
    """Launch interface function ``op`` (arguments as for :func:`kernel_args`) on ``stream``."""
    kernel, args = kernel_args(op, *a)
    launch(kernel, rows, stream, args)
