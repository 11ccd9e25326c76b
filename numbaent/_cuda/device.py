"""The device adapter (``numbaent._op``): the op bodies of ``numbaent.logits`` /
``probability`` / ``scoring`` / ``linear`` on arrays that live on a GPU (CuPy arrays, torch CUDA
tensors, numba device arrays, anything with ``__cuda_array_interface__``), and on host arrays with
``backend="cuda"`` (copied in; the wrapper reads the results back).

Scoring from hidden states (``numbaent.linear``) adds reused chunk scratch, reads of O(rows) chunk
results to the host, per-row kernels (``kernels_linear``) and the one computation the array
library does here: each chunk's matrix product (cuBLAS through torch or CuPy, on the call's
stream; NumPy on host copies where neither is installed, as in the simulator).

:class:`Device` has the host adapter's methods over device memory: the same validation and
messages (``numbaent._validate`` on the arrays' metadata), outputs of the input's kind (CuPy ->
CuPy, torch -> torch, others -> numba device arrays) on its device, everything queued on the
caller's current stream (CuPy: ``cupy.cuda.get_current_stream()``, torch:
``torch.cuda.current_stream()``, others: the stream their interface names, else the default
stream). Layout work (moving the class axis, contiguous copies, dtype conversion), units and the
sum / mean reductions run as small kernels (``kernels_util``); the array library only provides
views and allocations. Its kernels (``k``, the adapter itself) read back one small integer array
per call where a row can fault (negative probabilities, bad labels, rows for the exact path),
after the call's kernels have been queued; ``nan_policy="raise"`` reads one more.

The exact path (``numbaent._kernels.exact``, as on the host): rows a kernel cannot get right in its
working precision (a non-finite KL / cross-entropy-with-smoothing / soft-target result from inputs
without NaN; the probability kernels' ``REDO`` rows) are found on the device
(``kernels_util.redo_rows``, or the kernels' flags), read back as per-row marks (O(rows)), and
only those input rows are gathered and copied to the host, a bounded number at a time; the float64
oracle's results are scattered back into the output before units and reductions apply.

Differences from the host adapter, all deliberate: reductions return a 0-d device array of the
output kind in the math dtype (host: a Python float); a 1-D input gives a 0-d array (host: a
NumPy scalar).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from .. import _arrays
from .. import _validate as v
from .._kernels import exact
from . import _config, ops
from . import kernels_util as ku

BF16 = v.bf16(load=True)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


_is_sim_array = _arrays.is_sim_array  # the one detector of array kinds
_on_device = _arrays.is_device


def _library(a) -> str:
    """Which library allocates this call's outputs: "torch", "cupy", or numba otherwise."""
    kind = _arrays.kind_of(a)[0]
    return kind if kind in ("torch", "cupy") else "numba"


# --------------------------------------------------------------------------------------------------
# one call: device, stream, views, allocations, layout


class Device:
    """The adapter for device memory (see the module docstring); one per call."""

    name = "cuda"  # the backend

    def __init__(self, *arrays):
        self.k = self  # the kernels are this adapter's methods
        anchor = next((a for a in arrays if _on_device(a)), None)
        # no device array: host arrays with backend="cuda", copied in (``view``), results in
        # numba device arrays on the current device, read back by the caller (numbaent._op)
        self.lib = "numba" if anchor is None or _is_sim_array(anchor) else _library(anchor)
        self.dev, ptr = self._device_and_stream(anchor)
        self._ptr = ptr  # the stream's handle, for the array library's matrix product
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
            try:  # the interface's typestr is the NumPy dtype
                arr = None if t.dtype.is_complex else cuda.as_cuda_array(t, sync=False)
            except (TypeError, ValueError, KeyError):  # a dtype NumPy has no counterpart for
                arr = None
            if arr is None or np.dtype(arr.dtype).kind not in "biuf":
                raise v.not_real(name, t.dtype)
            return arr, np.dtype(arr.dtype)
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

    def _alloc(self, shape, dtype):
        """(array of the caller's kind, numba view of it), C-contiguous."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if self.lib == "torch":
            import torch

            if dtype == np.uint16:  # bfloat16 bits (scratch only): torch's int16, viewed unsigned
                obj = torch.empty(shape, dtype=torch.int16, device=f"cuda:{self.dev}")
                vw = cuda.as_cuda_array(obj, sync=False) if obj.numel() else _empty_view(obj)
                return obj, vw.view(np.uint16)
            tdt = torch.from_numpy(np.empty(0, dtype)).dtype
            obj = torch.empty(shape, dtype=tdt, device=f"cuda:{self.dev}")
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
        return self._alloc(shape, dtype)[1]

    # scoring from hidden states (numbaent.linear): host <-> device, the matrix product, small
    # per-row reads (the host adapter's methods of the same names)

    def host(self, a):
        """A NumPy array of a (small) device array: read back (the call's synchronisation)."""
        if isinstance(a, np.ndarray):
            return a
        return self.read(a)

    def put(self, a):
        """A NumPy array into device memory (a numba device array, C-contiguous)."""
        return self._to_device(np.require(a, requirements="C"))

    def result(self, a):
        """A NumPy result array as a device array of the call's kind (CuPy, torch, numba), on the
        call's device and stream, as the other ops' results."""
        a = np.require(a, requirements="C")
        obj, vw = self._alloc(a.shape, a.dtype)
        if a.size:
            if _config.SIM:
                vw.copy_to_device(a)
            else:
                vw.copy_to_device(a, stream=self.stream)
        return obj

    def take(self, x, cols):
        """x[i, cols[i]] per row of a device chunk, float64 on the host (``cols``: host ints)."""
        n = x.shape[0]
        if n == 0:
            return np.empty(0, np.float64)
        out = self.scratch((n,), np.float64)
        d_cols = self.put(np.asarray(cols, np.int64))
        self.launch1d(ku.take_cols(ops.kind(x)), n, (x, d_cols, out))
        return self.read(out)

    def label_logits(self, h, w, b, y, ignore_index, dtype):
        """Each row's logit of its label, h[i] . w[y[i]] (+ b[y[i]]), in float64 on the host (NaN
        for ignored rows), by a kernel over the rows (one dot product of length d each)."""
        n = h.shape[0]
        if n == 0:
            return np.empty(0, np.float64)
        out = self.scratch((n,), np.float64)
        d_y = self.put(np.asarray(y, np.int64))
        ops.run("label_logits", n, self.stream, h, w, b, d_y, int(ignore_index), out)
        return self.read(out)

    def weighted_sum(self, x, w):
        """sum_j w_j x[i, j] per row in float64 on the host (``w`` a scalar or a (C,) float64
        NumPy array)."""
        n = x.shape[0]
        if n == 0:
            return np.empty(0, np.float64)
        per_class = np.ndim(w) != 0
        wd = self.put(np.asarray(w, np.float64).reshape(-1))
        out = self.scratch((n,), np.float64)
        ops.run("weighted_sum", n, self.stream, x, wd, per_class, out)
        return self.read(out)

    def product(self, a, w, b, out, wide, key):
        """out = a @ w.T (+ b) in out's dtype. Inputs of another dtype (float16, bfloat16 bits, a
        float32 chunk for a float64 product) are widened chunk by chunk on the device into buffers
        kept in ``wide`` (reused; never the whole weight). The product is cuBLAS's, through the
        call's array library (torch for torch arrays, else CuPy, else torch), on the call's stream;
        without either (the simulator, whose device arrays are host memory), NumPy's on host
        copies, written back."""
        dt = np.dtype(out.dtype)
        if out.shape[0] == 0 or out.shape[1] == 0:
            return
        a = self._widened(a, dt, wide, key + ":rows")
        w = self._widened(w, dt, wide, key + ":weight")
        if b is not None:
            b = self._widened_vector(b, dt, wide, key + ":bias")
        if w.shape[1] == 0:  # d = 0: the logits are the bias (or 0)
            self._fill_bias(out, b)
            return
        lib = self._matmul_lib()
        if lib == "cupy":
            import cupy

            with cupy.cuda.Device(self.dev), _cupy_stream(self._ptr):
                ca, cw, co = (cupy.asarray(t) for t in (a, w, out))
                cupy.matmul(ca, cw.T, out=co)
                if b is not None:
                    cupy.add(co, cupy.asarray(b), out=co)
            return
        if lib == "torch":
            import torch

            dev = f"cuda:{self.dev}"
            with torch.cuda.device(self.dev), _torch_stream(self._ptr, self.lib, self.dev):
                ta, tw, to = (torch.as_tensor(t, device=dev) for t in (a, w, out))
                if b is None:
                    torch.matmul(ta, tw.T, out=to)
                else:
                    torch.addmm(torch.as_tensor(b, device=dev), ta, tw.T, out=to)
            return
        ha, hw = self._read_any(a), self._read_any(w)
        res = np.matmul(ha, hw.T)
        if b is not None:
            res += self._read_any(b)
        self._write(out, res.astype(dt, copy=False))

    def _matmul_lib(self):
        """The library of the matrix product: "cupy" / "torch" (cuBLAS), None (NumPy, host)."""
        if _config.SIM:
            return None
        if self.lib in ("torch", "cupy"):
            return self.lib
        for name in ("cupy", "torch"):
            if _importable(name):
                return name
        return None

    def _widened(self, a, dtype, wide, key):
        """``a`` (2-D) in ``dtype``: itself, or decoded / converted into ``wide[key]`` on the
        device (a C-contiguous buffer grown as needed and reused)."""
        if np.dtype(a.dtype) == dtype:
            return a
        size = int(a.shape[0]) * int(a.shape[1])
        buf = wide.get(key)
        if buf is None or buf.size < size:
            buf = wide[key] = self.scratch((max(size, 1),), dtype)
        dst = buf[:size].reshape(int(a.shape[0]), int(a.shape[1]))
        if size:
            self.launch1d(ku.widen(ops.kind(a), dtype.type), size, (a, dst))
        return dst

    def _widened_vector(self, b, dtype, wide, key):
        """A 1-D ``b`` as a C-contiguous vector of ``dtype`` (decoded, converted or made contiguous
        into ``wide[key]``)."""
        if np.dtype(b.dtype) == dtype and _c_contiguous(b):
            return b
        size = int(b.shape[0])
        buf = wide.get(key)
        if buf is None or buf.size < size:
            buf = wide[key] = self.scratch((max(size, 1),), dtype)
        dst = buf[:size]
        if size:
            self.launch1d(ku.widen1(ops.kind(b), dtype.type), size, (b, dst))
        return dst

    def _read_any(self, a):
        """A device array (any strides) on the host."""
        if not _c_contiguous(a):
            c = self.scratch(a.shape, a.dtype)
            axes = list(range(len(a.shape)))
            self.copy(a, axes, c, axes)
            a = c
        return self.read(a)

    def _write(self, out, h):
        """Host ``h`` into the C-contiguous device array ``out``."""
        h = np.require(h, requirements="C")
        if _config.SIM:
            out.copy_to_device(h)
        else:
            out.copy_to_device(h, stream=self.stream)
            self.stream.synchronize()  # h is a temporary

    def _fill_bias(self, out, b):
        n, c = (int(s) for s in out.shape)
        row = np.zeros(c, out.dtype) if b is None else self.read(b).reshape(c)
        self._write(out, np.broadcast_to(row, (n, c)))

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

    def _rows(self, view, axis, dtype=None):
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
        v.check_out(name, vw.shape, dt, shape, dtype)
        return vw, _c_contiguous(vw)

    def per_row(self, out, batch, dtype, reduction, inputs=()):
        """(kernel target (N,), (final object or None, final view or None)) for a per-row result
        (``inputs``: the host adapter's overlap check; kernels never write into an input here)."""
        n = math.prod(batch)
        if reduction == "none":
            if out is None:
                obj, vw = self._alloc(batch, dtype)
                return vw.reshape(n), (obj, None)
            vw, direct = self.check_out(out, batch, dtype)
            if direct:
                return vw.reshape(n), (out, None)
            return self.scratch((n,), dtype), (out, vw)
        if out is not None:
            self.check_out(out, (), dtype)
        return self.scratch((n,), dtype), (out, None)

    def finish(self, target, batch, final, out, *, divisor, reduction, nan_policy, nan_inputs,
               weights=None):  # fmt: skip
        """nan_policy, units, reduction and ``out`` for a per-row result (``_validate.finish``).
        ``final`` is :meth:`per_row`'s, or None for a ``target`` of :meth:`result` (an array of
        the call's kind, no ``out``: numbaent.linear); ``weights`` may be host row weights."""
        if final is None:
            obj = target
            target = self.view(obj, "result")[0]
            target = target.reshape(math.prod(batch))
            final = (self._shaped(obj, batch) if reduction == "none" else None), None
        if weights is not None and isinstance(weights, np.ndarray):
            weights = self.put(weights.astype(np.float64, copy=False).reshape(-1))
        final, final_view = final
        if nan_policy == "raise":
            self._nan_raise(target, nan_inputs, batch)
        dtype = np.dtype(target.dtype)
        if reduction == "none":
            self.units(target, divisor)
            if final_view is not None:
                nd = len(batch)
                src = target.reshape(batch) if nd else target.reshape(1)
                dst = final_view if nd else final_view.reshape(1)
                axes = list(range(max(nd, 1)))
                self.copy(src, axes, dst, axes)
            return final
        if final is None:
            final, fview = self._alloc((), dtype)
        else:
            fview, _ = self.view(final, "out")
        has_w = weights is not None
        w = weights if has_w else target
        kernel = ku.reduce_rows(*ops.consts()[:2])
        mode = 0 if reduction == "sum" else 1
        args = (target, w, has_w, mode, np.float64(divisor), fview.reshape(1))
        t, wp, _ = ops.consts()
        if _config.SIM:
            ops.launch_sim(kernel, 1, t, ops.shared_bytes(t, wp), args)
        else:
            kernel[1, t, self.stream, ops.shared_bytes(t, wp)](*args)
        return final

    def _shaped(self, obj, batch):
        """A result of :meth:`result` in the batch shape (a view)."""
        batch = tuple(batch)
        if tuple(obj.shape) == batch:
            return obj
        return obj.reshape(batch)

    def _nan_raise(self, res, inputs, batch):
        """nan_policy="raise": the first NaN result row with a NaN in one of ``inputs`` (name ->
        device rows, or None; one shared row is read for every row), searched on the device."""
        n = res.shape[0]
        inputs = {k: a for k, a in inputs.items() if a is not None and a.shape[1] and n}
        if not inputs:
            return
        firsts = self.firsts(n, len(inputs))
        for k, rows in enumerate(inputs.values()):
            step = 0 if rows.shape[0] == 1 and n != 1 else 1
            kernel = ku.nan_rows(ops.kind(rows))
            self.launch1d(kernel, n, (res, rows, np.int64(step), firsts[k:]))
        hits = [int(h) for h in self.read(firsts)]
        if min(hits) < n:
            raise v.nan_row(list(inputs)[hits.index(min(hits))], v.row_name(min(hits), batch))

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

    # the adapter's views and outputs (the host adapter's methods) --------------------------------

    def array(self, a, name):
        """(view, logical dtype): bfloat16 is viewed as its uint16 bits."""
        return self.view(a, name)

    def logits(self, a, name):
        vw, dt = self.view(a, name)
        v.check_logit_dtype(dt, name)
        return ops.sim_host_shape(vw)  # the simulator's shapes refuse h.shape[-1]

    def probs(self, a, name):
        """Probabilities: floats as they are, integers and bools converted to float64."""
        vw, dt = self.view(a, name)
        conv = v.prob_conversion(dt, name)
        if conv is None or not vw.shape:
            return vw
        out = self.scratch(vw.shape, conv)
        axes = list(range(len(vw.shape)))
        self.copy(vw, axes, out, axes)
        return out

    def rows(self, a, axis, name):
        ax = v.check_axis(axis, len(a.shape), name)
        rows, batch, moved = self._rows(a, ax)
        return v.Rows(rows, batch, moved, ax, tuple(a.shape))

    def labels(self, y, name, batch):
        """Flat C-contiguous int64 labels (host labels: the host adapter's checks, copied in)."""
        if not _on_device(y):
            return self.view(v.labels_rows(y, name, tuple(batch)), name)[0]
        yv, ydt = self.view(y, name)
        v.check_labels(ydt, yv.shape, name, batch)
        n = math.prod(batch)
        if ydt == np.uint64:  # the one case whose labels int64 cannot hold: checked on the host
            h = self.read(yv)
            if h.size and h.max() > np.iinfo(np.int64).max:
                raise v.big_label(name, h, tuple(batch))
        if _c_contiguous(yv) and np.dtype(yv.dtype) == np.int64:
            return yv.reshape(n)
        out = self.scratch((max(n, 1),), np.int64)[:n]
        nd = len(batch)
        src, dst = (yv, out.reshape(batch)) if nd else (yv.reshape(1), out.reshape(1))
        axes = list(range(max(nd, 1)))
        self.copy(src, axes, dst, axes)
        return out

    def weight(self, w, c, dtype):
        if w is None:
            return None
        wv, wdt = self.view(w, "weight")
        v.check_weight(wv.shape, c)
        if wdt == BF16:  # bits: decoded through the host (weights are small)
            wv = self.view(_decoded(self.read(wv)), "weight")[0]
        return self.vector(wv, dtype)

    def shared(self, q):
        """A 1-D ``q`` shared by every row, as one C-contiguous row."""
        return self.vector(q, q.dtype).reshape(1, q.shape[0])

    def empty(self, batch, dtype):
        obj, vw = self._alloc(batch, dtype)
        return obj, vw.reshape(math.prod(batch))

    def units(self, res, divisor):
        if divisor != 1.0 and res.shape[0]:
            self.launch1d(ku.divide, res.shape[0], (res, np.float64(divisor)))

    def equals(self, y, value, batch):
        obj, iv = self._alloc(batch, np.bool_)
        if y.shape[0]:
            self.launch1d(ku.equals, y.shape[0], (y, np.int64(value), True, iv.reshape(y.shape[0])))
        return obj

    def kept(self, y, value):
        """y != value, flat, on the device (the row weights of a mean that leaves rows out)."""
        out = self.scratch((y.shape[0],), np.bool_)
        if y.shape[0]:
            self.launch1d(ku.equals, y.shape[0], (y, np.int64(value), False, out))
        return out

    def full(self, op, rows, out):
        """softmax / log_softmax: a result of the input's shape."""
        data, ax, shape = rows.data, rows.axis, rows.shape
        n, c = data.shape
        dtype = v.math_dtype(data)
        nd = len(shape)
        order = [d for d in range(nd) if d != ax] + [ax]
        if out is not None:
            ov, direct = self.check_out(out, shape, dtype)
            if direct and ax == nd - 1:
                ops.run(op, n, self.stream, data, ov.reshape(n, c))
                return out
            flat = self.scratch((n, c), dtype)
            ops.run(op, n, self.stream, data, flat)
            self.copy(flat.reshape(rows.moved), list(range(nd)), ov, order)
            return out
        obj, ov = self._alloc(rows.moved, dtype)
        ops.run(op, n, self.stream, data, ov.reshape(n, c))
        if ax == nd - 1:
            return obj
        if self.lib == "torch":
            return obj.movedim(-1, ax)
        if self.lib == "cupy":
            import cupy

            return cupy.moveaxis(obj, -1, ax)
        res, rv = self._alloc(shape, dtype)  # numba arrays cannot move axes: copy
        self.copy(ov, list(range(nd)), rv, order)
        return res

    # the kernels (``k``): launch, the exact path, row faults ---------------------------------------

    def logsumexp(self, x, out):
        ops.run("logsumexp", x.shape[0], self.stream, x, out)

    def softmax_entropy(self, x, out):
        ops.run("softmax_entropy", x.shape[0], self.stream, x, out)

    def _redo_rows(self, res, sources):
        """Host indices of the rows for the exact path after a kernel: the rows whose result is
        not finite and whose inputs (``sources``: (rows, step)) hold no NaN."""
        n = res.shape[0]
        if n == 0:
            return ()
        firsts = self.firsts(n, 1)
        mark = self.redo_search(res, firsts, 0, *sources)
        return self.marked_rows(self.read(firsts)[0], mark, n)

    def softmax_kl(self, xp, xq, inv_t, out):
        ops.run("softmax_kl", xp.shape[0], self.stream, xp, xq, inv_t, out)
        src = [(xp, 1), (xq, 1)]
        idx = self._redo_rows(out, src)
        if len(idx):
            fn = lambda a, b, o, r: exact.softmax_kl(a, b, inv_t, o, r)  # noqa: E731
            self.redo(out, idx, src, _on_rows(fn))

    def _host_weight(self, w):
        return None if w is None else _decoded(self.read(w))

    def ce_soft(self, x, t, w, eps, inv_t, out):
        wd = w if w is not None else self.scratch((1,), out.dtype)
        ops.run("ce_soft", x.shape[0], self.stream, x, t, wd, w is not None, eps, inv_t, out)
        src = [(x, 1), (t, 1)]
        idx = self._redo_rows(out, src)
        if len(idx):  # the weights read back once, not once per chunk of rows
            wh = self._host_weight(w)
            fn = lambda a, b, o, r: exact.ce_soft(a, b, wh, eps, inv_t, o, r)  # noqa: E731
            self.redo(out, idx, src, _on_rows(fn))

    def _fault(self, first, n, values):
        """(row, values[row]) of the first faulty row, read back; None if there is none."""
        i = int(first)
        if i >= n:
            return None
        return i, int(self.read(values[i : i + 1])[0])

    def ce_labels(self, x, y, w, ignore_index, eps, inv_t, out):
        n = x.shape[0]
        rw = self.scratch((n,), np.float64)
        bad = self.scratch((n,), np.int8)
        firsts = self.firsts(n, 2)  # [first bad label, first exact-path row]
        wd = w if w is not None else self.scratch((1,), out.dtype)
        ops.run("ce_labels", n, self.stream, x, y, wd, w is not None, ignore_index, eps, inv_t,
                out, rw, bad, firsts[0:1])  # fmt: skip
        mark = None
        if eps != 0 or inv_t != 1.0:  # the smoothing term is a float32 sum of products (see
            # exact.py); at a temperature, the same linear pass: its non-finite rows are redone too
            mark = self.redo_search(out, firsts, 1, (x, 1))
        h = self.read(firsts)
        fault = self._fault(h[0], n, y)
        idx = self.marked_rows(h[1], mark, n) if fault is None else ()
        if len(idx):
            wh = self._host_weight(w)

            def fn(xr, yr, o, r):
                exact.ce_labels(xr, yr[:, 0], wh, ignore_index, eps, inv_t, o, r)

            self.redo(out, idx, [(x, 1), (y.reshape(n, 1), 1)], _on_rows(fn))
        return rw, fault

    def _prob(self, op, p, q, normalize, out):
        n = p.shape[0]
        firsts = self.firsts(n, 2)  # [first row with a negative entry, first REDO row]
        flags = self.scratch((n,), np.int8)
        src = [(p, 1)]
        if q is None:
            ops.run("entropy", n, self.stream, p, normalize, out, flags, firsts)
        else:
            src.append((q, 0 if q.shape[0] == 1 and n != 1 else 1))
            ops.run(op, n, self.stream, p, q, src[1][1], normalize, out, flags, firsts)
        h = self.read(firsts)
        fault = self._fault(h[0], n, flags)
        if fault is None and h[1] < n:  # rows the kernel asks the exact path for (flag bit REDO)
            idx = exact.take_redo(self.read(flags))

            def fn(*a):  # (p rows[, q rows], out, idx)
                return exact.prob(op, a[0], a[1] if q is not None else None, normalize, *a[-2:])

            self.redo(out, idx, src, _on_rows(fn))
        return fault

    def entropy(self, p, normalize, out):
        return self._prob("entropy", p, None, normalize, out)

    cross_entropy = functools.partialmethod(_prob, "cross_entropy")
    kl_divergence = functools.partialmethod(_prob, "kl_divergence")
    js_divergence = functools.partialmethod(_prob, "js_divergence")

    def count_above(self, x, thr, lab, out):
        """The rank's count over a chunk of logits (``numbaent._kernels.cpu_score.count_above``):
        per row, the classes j != lab with x > thr, or x == thr at j < lab; all device arrays."""
        ops.run("count_above", x.shape[0], self.stream, x, thr, lab, out)

    def score(self, x, y, ignore_index, tq, inv_t, outs):
        n = x.shape[0]
        dummy_f = self.scratch((1,), outs["logsumexp"].dtype)
        dummy_i = self.scratch((1,), np.int64)  # labels / rank without labels: never touched
        firsts = self.firsts(n, 2)  # [first bad label, first exact-path row]
        ops.run(
            "score", n, self.stream,
            x, y if y is not None else dummy_i, y is not None,
            ignore_index, tq if tq is not None else x, tq is not None, inv_t,
            outs["logsumexp"], outs["entropy"], outs["argmax"], outs["confidence"],
            outs["margin"], outs.get("cross_entropy", dummy_f),
            outs.get("correct", self.scratch((1,), np.bool_)), outs.get("rank", dummy_i),
            outs.get("brier", dummy_f), outs.get("kl_divergence", dummy_f), firsts[0:1],
        )  # fmt: skip
        src = [(tq, 1), (x, 1)]
        mark = None
        if tq is not None:  # KL(teacher || model): non-finite rows take the exact path
            mark = self.redo_search(outs["kl_divergence"], firsts, 1, *src)
        if y is None and mark is None:
            return None
        h = self.read(firsts)
        fault = None if y is None else self._fault(h[0], n, y)
        idx = self.marked_rows(h[1], mark, n) if fault is None else ()
        if len(idx):
            fn = lambda a, b, o, r: exact.softmax_kl(a, b, inv_t, o, r)  # noqa: E731
            self.redo(outs["kl_divergence"], idx, src, _on_rows(fn))
        return fault


# --------------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _importable(name):
    try:
        __import__(name)
    except Exception:  # not installed, or broken: the product falls back to the host
        return False
    return True


def _cupy_stream(ptr):
    """CuPy's stream object for a stream handle (0 / 1: the legacy default, 2: per-thread)."""
    import cupy

    if ptr in (0, 1):
        return cupy.cuda.Stream.null
    if ptr == 2:
        return cupy.cuda.Stream.ptds
    return cupy.cuda.ExternalStream(ptr)


def _torch_stream(ptr, lib, dev):
    """A context making the call's stream torch's current one (torch arrays: it already is)."""
    import contextlib

    import torch

    if lib == "torch":
        return contextlib.nullcontext()
    if ptr in (0, 1):
        return torch.cuda.stream(torch.cuda.default_stream(dev))
    return torch.cuda.stream(torch.cuda.ExternalStream(ptr, device=dev))


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
    """compute(*rows) for Device.redo from an ``exact`` function writing out[idx]."""

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
