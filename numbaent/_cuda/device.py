"""The public functions on arrays that live on a GPU: CuPy arrays, torch CUDA tensors, numba device
arrays, anything with ``__cuda_array_interface__``. ``numbaent._backend.device_call`` lands here.

Same validation and messages as the host path (``numbaent._validate`` on the arrays' metadata), the
output of the input's kind (CuPy -> CuPy, torch -> torch, others -> numba device arrays) on its
device, everything queued on the caller's current stream (CuPy: ``cupy.cuda.get_current_stream()``,
torch: ``torch.cuda.current_stream()``, others: the stream their interface names, else the default
stream). Layout work (moving the class axis, contiguous copies, dtype conversion), units and the
sum / mean reductions run as small kernels (``kernels_util``); the array library only provides
views and allocations. The host reads back one small integer array per call (row faults: negative
probabilities, bad labels; with ``nan_policy="raise"`` the first NaN rows; the first row for the
exact path), after every kernel of the call has been queued: that read is the call's only
synchronisation, unless a row was flagged.

The exact path (``numbaent._kernels.exact``, as on the host): rows a kernel cannot get right in its
working precision (a non-finite KL / cross-entropy-with-smoothing / soft-target result from inputs
without NaN; the probability kernels' ``REDO`` rows) are found on the device
(``kernels_util.redo_rows``, or the kernels' flags), read back as per-row marks (O(rows)), and
only those input rows are gathered and copied to the host, a bounded number at a time; the float64
oracle's results are scattered back into the output before units and reductions apply.

Differences from the host path, all deliberate: reductions return a 0-d device array of the output
kind in the math dtype (host: a Python float); a 1-D input gives a 0-d array (host: a NumPy
scalar); a teacher whose dtype differs from bfloat16 logits is read at its own precision (host:
rounded to bfloat16 first).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .. import _arrays
from .. import _validate as v
from .._kernels import exact
from .._types import Scores
from . import _config, ops
from . import kernels_util as ku

BF16 = v._BF16
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


# the one detector of array kinds (numbaent._arrays), as this module names it
_is_sim_array = _arrays.is_sim_array
_on_device = _arrays.is_device


def _library(a) -> str:
    """Which library allocates this call's outputs: "torch", "cupy", or numba otherwise."""
    kind = _arrays.kind_of(a)[0]
    return kind if kind in ("torch", "cupy") else "numba"


class _Meta:
    """Shape-only stand-in for the validation helpers that look at ``.shape`` / ``.ndim``."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)


# --------------------------------------------------------------------------------------------------
# one call: device, stream, views, allocations, layout


class _Call:
    def __init__(self, *arrays):
        anchor = next((a for a in arrays if _on_device(a)), None)
        # no device array: host arrays with backend="cuda", copied in (``view``), results in
        # numba device arrays on the current device, read back by the caller (numbaent._op)
        self.lib = "numba" if anchor is None or _is_sim_array(anchor) else _library(anchor)
        self.dev, ptr = self._device_and_stream(anchor)
        for a in arrays:
            if a is not None and _on_device(a) and not _is_sim_array(a):
                d = self._device_of(a)
                if d is not None and d != self.dev:
                    raise ValueError(
                        f"arrays are on different CUDA devices ({self.dev} and {d}); "
                        "move them to one device first"
                    )
        self._gpu = None if _config.SIM else cuda.gpus[self.dev]
        if _config.SIM:
            self.stream = 0
        else:
            with self._gpu:
                self.stream = cuda.default_stream() if ptr in (0, 1) else cuda.external_stream(ptr)

    # device and stream -------------------------------------------------------------------------

    def _device_of(self, a):
        lib = _library(a)
        if lib == "torch":
            return a.device.index
        if lib == "cupy":
            return a.device.id
        return None  # a bare __cuda_array_interface__ does not say; use the current device

    def _device_and_stream(self, a):
        if _config.SIM:
            return 0, 0
        if a is None:
            return cuda.get_current_device().id, 0
        lib = _library(a)
        if lib == "torch":
            import torch

            dev = a.device.index if a.device.index is not None else torch.cuda.current_device()
            return dev, int(torch.cuda.current_stream(dev).cuda_stream)
        if lib == "cupy":
            import cupy

            dev = a.device.id
            with cupy.cuda.Device(dev):
                return dev, int(cupy.cuda.get_current_stream().ptr)
        dev = cuda.get_current_device().id
        stream = getattr(a, "__cuda_array_interface__", {}).get("stream")
        return dev, int(stream) if isinstance(stream, int) else 0

    def __enter__(self):
        if self._gpu is not None:
            self._gpu.__enter__()
        return self

    def __exit__(self, *exc):
        if self._gpu is not None:
            self._gpu.__exit__(*exc)
        return False

    # views --------------------------------------------------------------------------------------

    def view(self, a, name):
        """(numba view, logical dtype) of an input; bfloat16 is viewed as uint16 bits. Host data
        (lists, NumPy: small side inputs such as labels or weights) is copied to the device."""
        if _is_sim_array(a):
            dt = a.dtype
        elif _library(a) == "torch" and _on_device(a):
            import torch

            t = a.detach()
            if t.dtype == torch.bfloat16:
                return cuda.as_cuda_array(t.view(torch.int16), sync=False).view(np.uint16), BF16
            if t.dtype.is_complex or t.dtype not in _TORCH_NP:
                raise TypeError(f"{name} must hold real numbers; got dtype {t.dtype}")
            return cuda.as_cuda_array(t, sync=False), np.dtype(_TORCH_NP[t.dtype])
        elif _on_device(a):
            arr = a if isinstance(a, _device_array_types()) else cuda.as_cuda_array(a, sync=False)
            return arr, np.dtype(arr.dtype)
        else:
            if _library(a) == "torch":
                a = a.detach().cpu().numpy()
            host = v.native(v.as_array(a, name))  # any byte order, as on the host path
            dt = host.dtype
            if dt == BF16:
                host = host.view(np.uint16)
            host = np.require(host, requirements="C")  # keeps a 0-d input 0-d (for its error)
            return self._to_device(host), dt
        if dt == BF16:
            return a.view(np.uint16), BF16
        return a, np.dtype(dt)

    def _to_device(self, host):
        if _config.SIM:
            return cuda.to_device(host)
        return cuda.to_device(host, stream=self.stream)

    # allocations --------------------------------------------------------------------------------

    def empty(self, shape, dtype):
        """(array of the caller's kind, numba view of it), C-contiguous."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if self.lib == "torch":
            import torch

            if dtype == np.uint16:  # bfloat16 bits (scratch only): torch's int16, viewed unsigned
                obj = torch.empty(shape, dtype=torch.int16, device=f"cuda:{self.dev}")
                vw = cuda.as_cuda_array(obj, sync=False) if obj.numel() else _empty_view(obj)
                return obj, vw.view(np.uint16)
            obj = torch.empty(shape, dtype=_NP_TORCH[dtype], device=f"cuda:{self.dev}")
            return obj, cuda.as_cuda_array(obj, sync=False) if obj.numel() else _empty_view(obj)
        if self.lib == "cupy":
            import cupy

            with cupy.cuda.Device(self.dev):
                obj = cupy.empty(shape, dtype)
            return obj, cuda.as_cuda_array(obj, sync=False) if obj.size else _empty_view(obj)
        if _config.SIM:
            obj = cuda.device_array(shape, dtype)
        else:
            obj = cuda.device_array(shape, dtype, stream=self.stream)
        return obj, obj

    def scratch(self, shape, dtype):
        return self.empty(shape, dtype)[1]

    # launches -----------------------------------------------------------------------------------

    def launch1d(self, kernel, total, args):
        threads = ku.COPY_THREADS if not _config.SIM else 4
        blocks = max(1, min((int(total) + threads - 1) // threads, 4096 if not _config.SIM else 2))
        if _config.SIM:
            ops.launch_sim(kernel, blocks, threads, 0, args)
        else:
            kernel[blocks, threads, self.stream](*args)

    def firsts(self, n, count):
        """int64 (count,) scratch filled with n (the kernels lower it to a first faulty row)."""
        f = self.scratch((count,), np.int64)
        self.launch1d(ku.fill_i64, count, (f, np.int64(n)))
        return f

    def read(self, d):
        """Copy a small device array to the host: the call's synchronisation point."""
        if _config.SIM:
            return d.copy_to_host()
        h = d.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return h

    # layout -------------------------------------------------------------------------------------

    def copy(self, src, src_axes, dst, dst_axes):
        """dst[k permuted by dst_axes] = src[k permuted by src_axes] over the index space of
        ``src`` taken in the order ``src_axes`` (dst_axes: dst's axes in the same order)."""
        shape = tuple(int(src.shape[ax]) for ax in src_axes)
        total = math.prod(shape)
        if total == 0:
            return
        sflat, sbase, sstr = _flat(src)
        dflat, dbase, dstr = _flat(dst)
        s_it = tuple(int(sstr[ax]) for ax in src_axes)
        d_it = tuple(int(dstr[ax]) for ax in dst_axes)
        nd = len(shape)
        if nd == 0:
            shape, s_it, d_it, nd = (1,), (0,), (0,), 1
        kernel = ku.copy_strided(nd)
        i64 = np.int64
        self.launch1d(
            kernel,
            total,
            (sflat, i64(sbase), tuple(map(i64, s_it)), dflat, i64(dbase), tuple(map(i64, d_it)),
             tuple(map(i64, shape))),
        )  # fmt: skip

    def rows(self, view, axis, dtype=None):
        """(C-contiguous (N, C) rows, batch shape, moved shape) with the class axis last, converted
        to ``dtype`` if given. A C-contiguous array with the class axis last is only reshaped."""
        shape = tuple(int(s) for s in view.shape)
        nd = len(shape)
        order = [d for d in range(nd) if d != axis] + [axis]
        moved = tuple(shape[d] for d in order)
        batch = moved[:-1]
        c = moved[-1]
        n = math.prod(batch)
        same = dtype is None or np.dtype(dtype) == np.dtype(view.dtype)
        if same and axis == nd - 1 and _c_contiguous(view):
            return view.reshape(n, c), batch, moved
        out = self.scratch((n, c), view.dtype if dtype is None else dtype)
        out_nd = out.reshape(moved) if nd > 1 else out.reshape(c)
        self.copy(view, order, out_nd, list(range(nd)))
        return out, batch, moved

    def vector(self, view, dtype):
        """A 1-D array as a C-contiguous vector of ``dtype``."""
        if np.dtype(view.dtype) == np.dtype(dtype) and _c_contiguous(view):
            return view
        out = self.scratch(view.shape, dtype)
        self.copy(view, [0], out, [0])
        return out

    # outputs ------------------------------------------------------------------------------------

    def check_out(self, out, shape, dtype, name="out"):
        """(numba view of a user ``out``, whether kernels may write it directly)."""
        if not _on_device(out):
            raise TypeError(
                f"{name} must be a device array like the inputs; got {type(out).__name__}"
            )
        vw, dt = self.view(out, name)
        if tuple(vw.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(vw.shape)}; expected {tuple(shape)}")
        if dt != np.dtype(dtype):
            raise TypeError(f"{name} has dtype {dt}; expected {np.dtype(dtype)}")
        return vw, _c_contiguous(vw)

    def per_row(self, out, batch, dtype, reduction):
        """(kernel target (N,), final object or None, final view or None) for a per-row result."""
        n = math.prod(batch)
        if reduction == "none":
            if out is None:
                obj, vw = self.empty(batch, dtype)
                return vw.reshape(n), obj, None
            vw, direct = self.check_out(out, batch, dtype)
            if direct:
                return vw.reshape(n), out, None
            return self.scratch((n,), dtype), out, vw
        if out is not None:
            self.check_out(out, (), dtype)
        return self.scratch((n,), dtype), out, None

    def finish(self, target, batch, final, final_view, *, divisor, reduction, dtype, weights=None):
        """Units, reduction and ``out`` for a per-row result (see ``_validate.finish``)."""
        n = math.prod(batch)
        if reduction == "none":
            if divisor != 1.0 and n:
                self.launch1d(ku.divide, n, (target, np.float64(divisor)))
            if final_view is not None:
                nd = len(batch)
                src = target.reshape(batch) if nd else target.reshape(1)
                dst = final_view if nd else final_view.reshape(1)
                axes = list(range(max(nd, 1)))
                self.copy(src, axes, dst, axes)
            return final
        if final is None:
            final, fview = self.empty((), dtype)
        else:
            fview, _ = self.view(final, "out")
        has_w = weights is not None
        w = weights if has_w else target
        kernel = ku.reduce_rows(*ops.consts()[:2])
        mode = 0 if reduction == "sum" else 1
        args = (target, w, has_w, mode, np.float64(divisor), fview.reshape(1))
        if _config.SIM:
            t, wp, _ = ops.consts()
            ops.launch_sim(kernel, 1, t, ops.shared_bytes(t, wp), args)
        else:
            t, wp, _ = ops.consts()
            kernel[1, t, self.stream, ops.shared_bytes(t, wp)](*args)
        return final

    def nan_check(self, res, inputs, firsts, slot):
        """Launch the NaN-row search of each input (name -> (rows, step)) into firsts[slot + k]."""
        for k, (_, (rows, step)) in enumerate(inputs.items()):
            if rows is None or rows.shape[1] == 0 or res.shape[0] == 0:
                continue
            kernel = ku.nan_rows(ops.kind(rows))
            self.launch1d(kernel, res.shape[0], (res, rows, np.int64(step), firsts[slot + k :]))

    # the exact path ---------------------------------------------------------------------------

    def redo_search(self, res, firsts, slot, a, b=None):
        """Launch the exact path's row search (``exact.nonfinite_rows`` on the device): per-row
        marks for the rows whose result is not finite and whose inputs (a, b: (rows, step)) hold
        no NaN, and the first such row into firsts[slot]. Returns the marks (device int8), which
        :meth:`marked_rows` reads only when firsts[slot] says there is such a row."""
        n = res.shape[0]
        if n == 0:
            return None
        mark = self.scratch((n,), np.int8)
        (ra, sa), (rb, sb) = a, (b if b is not None else a)
        kernel = ku.redo_rows(ops.kind(ra), ops.kind(rb) if b is not None else None)
        self.launch1d(kernel, n, (res, ra, np.int64(sa), rb, np.int64(sb), mark, firsts[slot:]))
        return mark

    def marked_rows(self, first, mark, n):
        """Host indices of the rows :meth:`redo_search` marked (``first``: its slot, read)."""
        if mark is None or int(first) >= n:
            return np.empty(0, np.int64)
        return np.flatnonzero(self.read(mark))

    def redo(self, res, idx, sources, compute):
        """res[idx] <- compute(*rows) for the host row indices ``idx``: the exact path's float64
        oracle (``numbaent._kernels.exact``) on the rows of ``sources`` ((device rows (N, K), row
        step) each, K = C or 1), which are gathered and copied to the host a bounded number of
        rows at a time (at most ``exact.CHUNK_ELEMS`` elements per source): never N x C."""
        if idx.size == 0:
            return
        c = max(int(rows.shape[1]) for rows, _ in sources)
        step = max(1, exact.CHUNK_ELEMS // max(c, 1))
        for k in range(0, idx.size, step):
            ch = np.ascontiguousarray(idx[k : k + step], dtype=np.int64)
            d_idx = self._to_device(ch)
            hosts = []
            for rows, st in sources:
                dst = self.scratch((ch.size, int(rows.shape[1])), rows.dtype)
                if dst.size:
                    self.launch1d(ku.gather_rows, dst.size, (rows, np.int64(st), d_idx, dst))
                    hosts.append(_decoded(self.read(dst)))
                else:
                    hosts.append(_decoded(np.zeros(dst.shape, rows.dtype)))
            vals = np.ascontiguousarray(compute(*hosts), dtype=np.float64)
            self.launch1d(ku.scatter, ch.size, (res, d_idx, self._to_device(vals)))

    @staticmethod
    def nan_error(h, inputs, slot, n, batch):
        hits = [int(h[slot + k]) for k in range(len(inputs))]
        row = min(hits, default=n)
        if row < n:
            name = list(inputs)[hits.index(row)]
            raise ValueError(
                f"nan_policy='raise': {name} has a NaN in row {v.row_name(row, batch)}"
            )


# --------------------------------------------------------------------------------------------------
# helpers


def _device_array_types():
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return (DeviceNDArray,)


def _c_contiguous(view) -> bool:
    shape = tuple(view.shape)
    if math.prod(shape) <= 1:
        return True
    expect = np.dtype(view.dtype).itemsize
    for s, st in zip(reversed(shape), reversed(tuple(view.strides)), strict=True):
        if s != 1 and st != expect:
            return False
        expect *= s
    return True


def _decoded(h):
    """Host rows from the device: bfloat16 bits decoded, floats as float64, labels as they are."""
    dt = np.dtype(h.dtype)
    if dt in (np.dtype(np.uint16), np.dtype(np.int16)):  # bfloat16 bits (see ops.kind)
        bits = h.view(np.uint16).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32).astype(np.float64)
    if dt.kind == "f":
        return h.astype(np.float64)
    return h


def _on_rows(fn):
    """compute(*rows) for _Call.redo from an ``exact`` function writing out[idx]."""

    def compute(*rows):
        k = rows[0].shape[0]
        res = np.empty(k, np.float64)
        fn(*rows, res, np.arange(k))
        return res

    return compute


def _empty_view(obj):
    """numba view of an empty CuPy / torch array (their interface may carry a null pointer)."""
    shape = tuple(obj.shape)
    dtype = np.dtype(str(obj.dtype).replace("torch.", "")) if hasattr(obj, "numel") else obj.dtype
    return cuda.device_array(shape, dtype)


def _flat(view):
    """(1-D view over the memory an array spans, offset of its first element, element strides)."""
    dt = np.dtype(view.dtype)
    size = dt.itemsize
    shape = tuple(int(s) for s in view.shape)
    strides = tuple(int(s) for s in view.strides)
    if any(st % size for st in strides):
        raise ValueError(
            "arrays whose strides are not multiples of the item size are not supported"
        )
    lo = sum((s - 1) * st for s, st in zip(shape, strides, strict=True) if st < 0)
    hi = sum((s - 1) * st for s, st in zip(shape, strides, strict=True) if st > 0) + size
    n_el = (hi - lo) // size
    el_strides = tuple(st // size for st in strides)
    base = -lo // size
    if _config.SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        arr = view._ary
        corner = arr[
            tuple(
                slice(s - 1, s) if st < 0 else slice(0, 1)
                for s, st in zip(shape, strides, strict=True)
            )
        ]
        flat = np.lib.stride_tricks.as_strided(corner, shape=(n_el,), strides=(size,))
        return FakeCUDAArray(flat), base, el_strides
    ptr = int(view.__cuda_array_interface__["data"][0]) + lo
    desc = {
        "shape": (n_el,),
        "strides": None,
        "typestr": dt.str,
        "data": (ptr, False),
        "version": 3,
    }
    return cuda.from_cuda_array_interface(desc, owner=view, sync=False), base, el_strides


def _torch_maps():
    try:
        import torch
    except ImportError:  # pragma: no cover - only torch arrays need them
        return {}, {}
    to_np = {
        torch.float16: np.float16,
        torch.float32: np.float32,
        torch.float64: np.float64,
        torch.int8: np.int8,
        torch.int16: np.int16,
        torch.int32: np.int32,
        torch.int64: np.int64,
        torch.uint8: np.uint8,
        torch.bool: np.bool_,
    }
    to_torch = {np.dtype(k): t for t, k in to_np.items()}
    return to_np, to_torch


class _LazyMap(dict):
    def __init__(self, index):
        super().__init__()
        self._index = index
        self._loaded = False

    def _load(self):
        if not self._loaded:
            self._loaded = True
            self.update(_torch_maps()[self._index])

    def __contains__(self, k):
        self._load()
        return super().__contains__(k)

    def __getitem__(self, k):
        self._load()
        return super().__getitem__(k)


_TORCH_NP = _LazyMap(0)
_NP_TORCH = _LazyMap(1)


def _prob_dtype(dt, name):
    """Probabilities: floats as they are, integers and bools converted to float64."""
    if v.is_float_dtype(dt):
        return None, np.dtype(dt)
    if np.dtype(dt).kind not in "biu":
        raise TypeError(f"{name} must hold real numbers; got dtype {dt}")
    return _F64, _F64


def _logit_dtype(dt, name):
    if not v.is_float_dtype(dt):
        raise TypeError(
            f"{name} must be a floating array (float16, bfloat16, float32 or float64); got dtype {dt}"
        )


def _math(*dts):
    return _F64 if any(d is not None and np.dtype(d) == _F64 for d in dts) else _F32


def _options(base, reduction, nan_policy):
    divisor = v.base_divisor(base)
    v.check_choice(reduction, "reduction", v.REDUCTIONS)
    v.check_choice(nan_policy, "nan_policy", v.NAN_POLICIES)
    return divisor


# --------------------------------------------------------------------------------------------------
# probability space


def _prob(op, p, q, *, base=None, axis=-1, normalize=False, reduction="none",
          nan_policy="propagate", out=None):  # fmt: skip
    divisor = _options(base, reduction, nan_policy)
    with _Call(p, q) as call:
        pv, pdt = call.view(p, "p")
        pconv, pdt = _prob_dtype(pdt, "p")
        ax = v.check_axis(axis, len(pv.shape), "p")
        prow, batch, moved = call.rows(pv, ax, pconv)
        n, c = prow.shape
        q2, qdt, q_step = None, None, 1
        if q is not None:
            qv, qdt = call.view(q, "q")
            qconv, qdt = _prob_dtype(qdt, "q")
            v.check_same_shape(_Meta(pv.shape), _Meta(qv.shape), "p", "q", ax)
            if tuple(qv.shape) != tuple(pv.shape):  # 1-D q of length C shared by every row
                q2 = call.vector(qv, qconv or qv.dtype).reshape(1, c)
                q_step = 0 if n != 1 else 1
            else:
                q2 = call.rows(qv, ax, qconv)[0]
        dtype = _math(pdt, qdt)
        target, final, fview = call.per_row(out, batch, dtype, reduction)
        nan_in = {"p": (prow, 1)}
        if q is not None:
            nan_in["q"] = (q2, q_step)
        # firsts: [first row with a negative entry, first REDO row, first NaN row per input]
        firsts = call.firsts(n, 2 + len(nan_in))
        flags = call.scratch((n,), np.int8)
        if q is None:
            ops.run("entropy", n, call.stream, prow, bool(normalize), target, flags, firsts[0:2])
        else:
            ops.run(op, n, call.stream, prow, q2, q_step, bool(normalize), target, flags,
                    firsts[0:2])  # fmt: skip
        if nan_policy == "raise":
            call.nan_check(target, nan_in, firsts, 2)
        h = call.read(firsts)
        if h[0] < n:
            i = int(h[0])
            f = int(call.read(flags[i : i + 1])[0])
            which = "p" if f & 1 else "q"
            raise ValueError(
                f"{which} has a negative entry in row {v.row_name(i, batch)}; "
                "probabilities and counts must be >= 0"
            )
        if nan_policy == "raise":
            call.nan_error(h, nan_in, 2, n, batch)
        if h[1] < n:  # rows the kernel asks the exact path for (flag bit REDO)
            idx = exact.take_redo(call.read(flags))
            if q is None:
                fn = _on_rows(lambda pr, o, r: exact.prob("entropy", pr, None, normalize, o, r))
            else:
                fn = _on_rows(lambda pr, qr, o, r: exact.prob(op, pr, qr, normalize, o, r))
            call.redo(target, idx, list(nan_in.values()), fn)
        return call.finish(target, batch, final, fview, divisor=divisor, reduction=reduction,
                           dtype=dtype)  # fmt: skip


def entropy(p, **kw):
    return _prob("entropy", p, None, **kw)


def cross_entropy(p, q, **kw):
    return _prob("cross_entropy", p, q, **kw)


def kl_divergence(p, q, **kw):
    return _prob("kl_divergence", p, q, **kw)


def js_divergence(p, q, **kw):
    return _prob("js_divergence", p, q, **kw)


# --------------------------------------------------------------------------------------------------
# logit space


def _logit_rows(call, x, name, axis):
    xv, xdt = call.view(x, name)
    _logit_dtype(xdt, name)
    ax = v.check_axis(axis, len(xv.shape), name)
    rows, batch, moved = call.rows(xv, ax)
    return xv, rows, batch, moved, ax


def logsumexp(logits, *, axis=-1, out=None):
    with _Call(logits) as call:
        _, rows, batch, _, _ = _logit_rows(call, logits, "logits", axis)
        dtype = _math(rows.dtype)
        target, final, fview = call.per_row(out, batch, dtype, "none")
        ops.run("logsumexp", rows.shape[0], call.stream, rows, target)
        return call.finish(target, batch, final, fview, divisor=1.0, reduction="none", dtype=dtype)


def _softmax_like(op, logits, axis, out):
    with _Call(logits) as call:
        xv, rows, batch, moved, ax = _logit_rows(call, logits, "logits", axis)
        n, c = rows.shape
        dtype = _math(rows.dtype)
        shape = tuple(xv.shape)
        nd = len(shape)
        order = [d for d in range(nd) if d != ax] + [ax]
        if out is not None:
            ov, direct = call.check_out(out, shape, dtype)
            if direct and ax == nd - 1:
                ops.run(op, n, call.stream, rows, ov.reshape(n, c))
                return out
            flat = call.scratch((n, c), dtype)
            ops.run(op, n, call.stream, rows, flat)
            call.copy(flat.reshape(moved), list(range(nd)), ov, order)
            return out
        obj, ov = call.empty(moved, dtype)
        ops.run(op, n, call.stream, rows, ov.reshape(n, c))
        if ax == nd - 1:
            return obj
        if call.lib == "torch":
            return obj.movedim(-1, ax)
        if call.lib == "cupy":
            import cupy

            return cupy.moveaxis(obj, -1, ax)
        res, rv = call.empty(shape, dtype)  # numba arrays cannot move axes: copy
        call.copy(ov, list(range(nd)), rv, order)
        return res


def log_softmax(logits, *, axis=-1, out=None):
    return _softmax_like("log_softmax", logits, axis, out)


def softmax(logits, *, axis=-1, out=None):
    return _softmax_like("softmax", logits, axis, out)


def softmax_entropy(
    logits, *, base=None, axis=-1, reduction="none", nan_policy="propagate", out=None
):
    divisor = _options(base, reduction, nan_policy)
    with _Call(logits) as call:
        _, rows, batch, _, _ = _logit_rows(call, logits, "logits", axis)
        n = rows.shape[0]
        dtype = _math(rows.dtype)
        target, final, fview = call.per_row(out, batch, dtype, reduction)
        ops.run("softmax_entropy", n, call.stream, rows, target)
        _checked(call, nan_policy, target, {"logits": (rows, 1)}, n, batch)
        return call.finish(target, batch, final, fview, divisor=divisor, reduction=reduction,
                           dtype=dtype)  # fmt: skip


def _checked(call, nan_policy, target, inputs, n, batch, search=None):
    """The checks after a logit kernel, with one read: nan_policy="raise" (the NaN-row search of
    each input) and, with ``search`` (the inputs' (rows, step)), the exact path's row search.
    Raises for a NaN row; returns the host indices of the rows for the exact path."""
    raising = nan_policy == "raise"
    if not raising and search is None:
        return np.empty(0, np.int64)
    firsts = call.firsts(n, 1 + len(inputs))
    mark = call.redo_search(target, firsts, 0, *search) if search is not None else None
    if raising:
        call.nan_check(target, inputs, firsts, 1)
    h = call.read(firsts)
    if raising:
        call.nan_error(h, inputs, 1, n, batch)
    return call.marked_rows(h[0], mark, n)


def softmax_kl_divergence(logits_p, logits_q, *, temperature=1.0, base=None, axis=-1,
                          reduction="none", nan_policy="propagate", out=None):  # fmt: skip
    divisor = _options(base, reduction, nan_policy)
    t = v.check_temperature(temperature)
    with _Call(logits_p, logits_q) as call:
        pv, rp, batch, moved, ax = _logit_rows(call, logits_p, "logits_p", axis)
        qv, qdt = call.view(logits_q, "logits_q")
        _logit_dtype(qdt, "logits_q")
        if tuple(qv.shape) != tuple(pv.shape):  # exactly the same shape, as the host path
            raise ValueError(
                "logits_p and logits_q must have the same shape; "
                f"got {tuple(pv.shape)} and {tuple(qv.shape)}"
            )
        rq = call.rows(qv, ax)[0]
        n = rp.shape[0]
        dtype = _math(rp.dtype, rq.dtype)
        target, final, fview = call.per_row(out, batch, dtype, reduction)
        ops.run("softmax_kl", n, call.stream, rp, rq, 1.0 / t, target)
        src = [(rp, 1), (rq, 1)]
        nan_in = {"logits_p": src[0], "logits_q": src[1]}
        idx = _checked(call, nan_policy, target, nan_in, n, batch, search=src)
        fn = _on_rows(lambda a, b, o, r: exact.softmax_kl(a, b, 1.0 / t, o, r))
        call.redo(target, idx, src, fn)
        return call.finish(target, batch, final, fview, divisor=divisor, reduction=reduction,
                           dtype=dtype)  # fmt: skip


def _labels(call, y, name, batch):
    if not _on_device(y):  # host labels: the host path's checks (one place), then copied in
        flat = v.labels_rows(y, name, tuple(batch))
        return call.view(flat, name)[0], np.dtype(np.asarray(y).dtype)
    yv, ydt = call.view(y, name)
    if np.dtype(ydt).kind not in "iu":
        raise TypeError(f"{name} must be integer class labels; got dtype {ydt}")
    if tuple(yv.shape) != tuple(batch):
        raise ValueError(
            f"{name} must have shape {tuple(batch)} (the logits' shape without the class axis); "
            f"got {tuple(yv.shape)}"
        )
    n = math.prod(batch)
    flat = yv.reshape(n) if _c_contiguous(yv) else None
    if flat is None or np.dtype(yv.dtype) != np.int64:
        out = call.scratch(tuple(batch), np.int64)
        axes = list(range(len(batch)))
        if axes:
            call.copy(yv, axes, out, axes)
        else:
            call.copy(yv.reshape(1), [0], out.reshape(1), [0])
        flat = out.reshape(n)
    return flat, np.dtype(ydt)


def _label_value(call, y, i, ydt):
    val = int(call.read(y[i : i + 1])[0])
    if ydt == np.uint64 and val < 0:
        val += 2**64
    return val


def softmax_cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                          reduction="none", base=None, axis=-1, nan_policy="propagate",
                          out=None):  # fmt: skip
    divisor = _options(base, reduction, nan_policy)
    eps = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    with _Call(logits, target, weight) as call:
        xv, rows, batch, moved, ax = _logit_rows(call, logits, "logits", axis)
        n, c = rows.shape
        tv, tdt = call.view(target, "target")
        w = None
        if weight is not None:
            wv, wdt = call.view(weight, "weight")
            if len(wv.shape) != 1 or wv.shape[0] != c:
                raise ValueError(
                    f"weight must be a 1-D array of length C = {c}; got shape {tuple(wv.shape)}"
                )
            if wdt == BF16:  # bits: decode through the host (weights are small)
                wv = call.view(np.asarray(call.read(wv)).view(BF16).astype(np.float64), "weight")[0]
        if np.dtype(tdt).kind in "iu":
            y, ydt = _labels(call, target, "target", batch)
            dtype = _math(rows.dtype)
            if weight is not None:
                w = call.vector(wv, dtype)
            tgt, final, fview = call.per_row(out, batch, dtype, reduction)
            rw = call.scratch((n,), np.float64)
            bad = call.scratch((n,), np.int8)
            nan_in = {"logits": (rows, 1)}
            # firsts: [first bad label, first exact-path row, first NaN row]
            firsts = call.firsts(n, 3)
            wd = w if w is not None else call.scratch((1,), dtype)
            ops.run("ce_labels", n, call.stream, rows, y, wd, w is not None, ignore_index, eps,
                    tgt, rw, bad, firsts[0:1])  # fmt: skip
            mark = None
            if eps != 0:  # the smoothing term is a float32 sum of products (see exact.py)
                mark = call.redo_search(tgt, firsts, 1, (rows, 1))
            if nan_policy == "raise":
                call.nan_check(tgt, nan_in, firsts, 2)
            h = call.read(firsts)
            if h[0] < n:
                i = int(h[0])
                raise v.label_out_of_range(
                    "target", _label_value(call, y, i, ydt), v.row_name(i, batch), c, ignore_index
                )
            if nan_policy == "raise":
                call.nan_error(h, nan_in, 2, n, batch)
            idx = call.marked_rows(h[1], mark, n)
            if idx.size:
                wh = None if w is None else _decoded(call.read(w))
                fn = _on_rows(
                    lambda xr, yr, o, r: exact.ce_labels(xr, yr[:, 0], wh, ignore_index, eps, o, r)
                )
                call.redo(tgt, idx, [(rows, 1), (y.reshape(n, 1), 1)], fn)
            return call.finish(tgt, batch, final, fview, divisor=divisor, reduction=reduction,
                               dtype=dtype, weights=rw)  # fmt: skip
        if np.dtype(tdt).kind == "b":
            raise TypeError(
                "target must be integer class labels or floating probabilities; got bool"
            )
        if tuple(tv.shape) != tuple(xv.shape):
            raise ValueError(
                f"target must be integer labels of shape {tuple(batch)} or probabilities of the "
                f"logits' shape {tuple(xv.shape)}; got shape {tuple(tv.shape)} with dtype {tdt}"
            )
        if ignore_index != -100:
            raise ValueError(
                "ignore_index is only supported for integer class labels; soft (probability) "
                f"targets take no ignore_index (got {ignore_index})"
            )
        tconv, tdt = _prob_dtype(tdt, "target")
        trows = call.rows(tv, ax, tconv)[0]
        dtype = _math(rows.dtype, tdt)
        if weight is not None:
            w = call.vector(wv, dtype)
        tgt, final, fview = call.per_row(out, batch, dtype, reduction)
        wd = w if w is not None else call.scratch((1,), dtype)
        ops.run("ce_soft", n, call.stream, rows, trows, wd, w is not None, eps, tgt)
        src = [(rows, 1), (trows, 1)]
        nan_in = {"logits": src[0], "target": src[1]}
        idx = _checked(call, nan_policy, tgt, nan_in, n, batch, search=src)
        if idx.size:
            wh = None if w is None else _decoded(call.read(w))
            fn = _on_rows(lambda a, b, o, r: exact.ce_soft(a, b, wh, eps, o, r))
            call.redo(tgt, idx, src, fn)
        return call.finish(tgt, batch, final, fview, divisor=divisor, reduction=reduction,
                           dtype=dtype)  # fmt: skip


def score(logits, labels=None, *, teacher_logits=None, temperature=1.0, ignore_index=-100,
          base=None, axis=-1):  # fmt: skip

    divisor = v.base_divisor(base)
    t = v.check_temperature(temperature)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    with _Call(logits, labels, teacher_logits) as call:
        xv, rows, batch, moved, ax = _logit_rows(call, logits, "logits", axis)
        n, c = rows.shape
        y = ydt = None
        if labels is not None:
            y, ydt = _labels(call, labels, "labels", batch)
        tq = None
        if teacher_logits is not None:
            tv, tdt = call.view(teacher_logits, "teacher_logits")
            _logit_dtype(tdt, "teacher_logits")
            if tuple(tv.shape) != tuple(xv.shape):
                raise ValueError(
                    f"teacher_logits must have the logits' shape {tuple(xv.shape)}; "
                    f"got {tuple(tv.shape)}"
                )
            tq = call.rows(tv, ax)[0]  # read at its own precision, as softmax_kl_divergence
        dtype = _math(rows.dtype, None if tq is None else tq.dtype)
        names = ["logsumexp", "entropy", "argmax"]
        if y is not None:
            names += ["cross_entropy", "correct"]
        if tq is not None:
            names.append("kl_divergence")
        kinds = {"argmax": np.int64, "correct": np.bool_}
        objs, views = {}, {}
        for k in names:
            objs[k], vw = call.empty(batch, kinds.get(k, dtype))
            views[k] = vw.reshape(n)
        dummy_f = call.scratch((1,), dtype)
        firsts = call.firsts(n, 2)  # [first bad label, first exact-path row]
        bad = call.scratch((n,), np.int8)
        ops.run(
            "score", n, call.stream,
            rows, y if y is not None else call.scratch((1,), np.int64), y is not None,
            ignore_index, tq if tq is not None else rows, tq is not None, 1.0 / t,
            views["logsumexp"], views["entropy"], views["argmax"],
            views.get("cross_entropy", dummy_f), views.get("correct", call.scratch((1,), np.bool_)),
            views.get("kl_divergence", dummy_f), bad, firsts[0:1],
        )  # fmt: skip
        ignored = None
        if y is not None:
            ignored, iv = call.empty(batch, np.bool_)
            if n:
                call.launch1d(ku.equals, n, (y, np.int64(ignore_index), iv.reshape(n)))
        mark = None
        src = [(tq, 1), (rows, 1)]
        if tq is not None:  # KL(teacher || model): non-finite rows take the exact path
            mark = call.redo_search(views["kl_divergence"], firsts, 1, *src)
        if y is not None or mark is not None:
            h = call.read(firsts)
            if h[0] < n:
                i = int(h[0])
                raise v.label_out_of_range(
                    "labels", _label_value(call, y, i, ydt), v.row_name(i, batch), c, ignore_index
                )
            idx = call.marked_rows(h[1], mark, n)
            fn = _on_rows(lambda a, b, o, r: exact.softmax_kl(a, b, 1.0 / t, o, r))
            if idx.size:
                call.redo(views["kl_divergence"], idx, src, fn)
        if divisor != 1.0 and n:
            for k in ("logsumexp", "entropy", "cross_entropy", "kl_divergence"):
                if k in views:
                    call.launch1d(ku.divide, n, (views[k], np.float64(divisor)))
        return Scores(ignored=ignored, base=base, **objs)


_FUNCS = {
    "entropy": entropy,
    "cross_entropy": cross_entropy,
    "kl_divergence": kl_divergence,
    "js_divergence": js_divergence,
    "logsumexp": logsumexp,
    "log_softmax": log_softmax,
    "softmax": softmax,
    "softmax_entropy": softmax_entropy,
    "softmax_kl_divergence": softmax_kl_divergence,
    "softmax_cross_entropy": softmax_cross_entropy,
    "score": score,
}


def call(func: str, *args, **kwargs):
    """Run public function ``func`` (its public arguments, without ``backend``) on device arrays."""
    try:
        f = _FUNCS[func]
    except KeyError:
        raise ValueError(f"unknown function {func!r}; expected one of {sorted(_FUNCS)}") from None
    return f(*args, **kwargs)
