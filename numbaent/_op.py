"""The one op layer: the wrapper of every public op, and the adapter an op body runs on.

Each public op is written once, as a body over an adapter (``space``), which the body gets from
:func:`space` and never looks into:

* :class:`Host` for host memory (NumPy arrays; its ``k`` is the backend's kernel module,
  ``numbaent._kernels.cpu`` or ``numpy_impl``);
* ``numbaent._cuda.device.Device`` for device memory (its ``k`` is itself: launches on the
  caller's stream), also for host arrays with ``backend="cuda"`` (copied in, computed, read back).

Both have the same methods: validated views of the inputs (``logits``, ``probs``, ``array``,
``labels``, ``weight``), ``rows`` (class axis last, contiguous), per-row outputs (``per_row``,
``empty``), kernels (``k.<op>``: launch, the exact path, row faults as ``(row, value)``), and the
tail (``finish``: nan_policy, units, reduction, ``out``).

The wrapper (:func:`op`) adapts array kinds around the body: NumPy inputs go straight in; host arrays
of other kinds (torch CPU, JAX CPU, ``__dlpack__`` objects) are read as NumPy views
(``numbaent._arrays``) and the results come back in the first array argument's kind; arrays on a
CUDA device go in as they are (the device adapter returns their kind itself); host arrays with
``backend="cuda"`` are computed on the device and read back (NumPy results, Python-float
reductions, as on the other host backends).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import numpy as np

from . import _arrays, _backend
from . import _validate as v
from ._types import to_numpy


class Host:
    """The adapter for host memory (see the module docstring)."""

    def __init__(self, name, kernels):
        self.name = name  # the backend
        self.k = kernels

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    logits = staticmethod(v.as_logits)
    probs = staticmethod(v.as_probabilities)
    labels = staticmethod(v.labels_rows)
    per_row = staticmethod(v.outputs)
    units = staticmethod(v.to_units)

    @staticmethod
    def array(a, name):
        arr = v.as_array(a, name)
        return arr, arr.dtype

    @staticmethod
    def rows(a, axis, name):
        return v.to_rows(a, v.check_axis(axis, a.ndim, name))

    @staticmethod
    def weight(w, c, dtype):
        return v.weight_array(w, c, np.float64)  # the kernels read it in ``dtype``

    @staticmethod
    def shared(q):
        """A 1-D ``q`` shared by every row, as one row."""
        return q.reshape(1, -1)

    @staticmethod
    def empty(batch, dtype):
        """(result of shape ``batch``, its flat (N,) view for the kernels)."""
        a = np.empty(batch, dtype)
        return a, a.reshape(-1)

    @staticmethod
    def equals(y, value, batch):
        return (y == value).reshape(batch)

    @staticmethod
    def kept(y, value):
        """y != value, flat (the row weights of a mean that leaves rows out)."""
        return y != value

    def finish(self, target, batch, final, out, *, divisor, reduction, nan_policy, nan_inputs,
               weights=None):  # fmt: skip
        denom = None
        if weights is not None and reduction == "mean":  # the sum of the rows' label weights
            denom = self.k.total(weights)
        res = v.finish(target, batch, final, divisor=divisor, reduction=reduction,
                       nan_policy=nan_policy, nan_inputs=nan_inputs, denom=denom,
                       sum_of=self.k.total)  # fmt: skip
        return v.scalar_if_0d(res, out)

    # scoring from hidden states (numbaent.linear): scratch, the matrix product, small reads

    @staticmethod
    def scratch(shape, dtype):
        return np.empty(shape, dtype)

    @staticmethod
    def host(a):
        """A NumPy array of an array of this memory (here: itself)."""
        return a

    put = host  # a NumPy array into this memory
    result = host  # a result array of this memory, as the op returns it

    @staticmethod
    def take(x, cols):
        """x[i, cols[i]] per row, float64 on the host."""
        return x[np.arange(x.shape[0]), cols].astype(np.float64)

    @staticmethod
    def product(a, w, b, out, wide, key):
        """out = a @ w.T (+ b) in out's dtype, by NumPy's matrix product (BLAS); narrower inputs
        are widened first into buffers kept in ``wide`` (one chunk at a time, reused)."""
        dt = out.dtype
        a = _widened(a, dt, wide, key + ":rows")
        w = _widened(w, dt, wide, key + ":weight")
        np.matmul(a, w.T, out=out)
        if b is not None:
            np.add(out, b.astype(dt, copy=False), out=out)

    @staticmethod
    def label_logits(h, w, b, y, ignore_index, dtype):
        """Each row's logit of its label, h[i] . w[y[i]] (+ b[y[i]]), in float64 (NaN for ignored
        rows), 256 rows at a time (bounded temporaries)."""
        out = np.full(h.shape[0], np.nan)
        ok = np.flatnonzero(y != ignore_index)
        for s in range(0, ok.size, 256):
            idx = ok[s : s + 256]
            hv = h[idx].astype(np.float64)
            out[idx] = np.einsum("ij,ij->i", hv, w[y[idx]].astype(np.float64))
        if b is not None and ok.size:
            out[ok] += b[y[ok]].astype(np.float64)
        return out

    @staticmethod
    def weighted_sum(x, w):
        """sum_j w_j x[i, j] per row in float64 (``w`` a scalar or a (C,) float64 array)."""
        if np.ndim(w) == 0:
            return x.sum(axis=1, dtype=np.float64) * float(w)
        return x @ w

    def full(self, op, rows, out):
        """softmax / log_softmax: a result of the input's shape."""
        data = rows.data
        n, c = data.shape
        dtype = v.math_dtype(data)
        if out is not None:
            v.prepare_out(out, rows.shape, dtype)  # validates shape, dtype, writability
            # in place (out is the input's own memory, same dtype) is fine: a row is read whole
            # before it is written; any other overlap goes through ``flat``
            addr = out.__array_interface__["data"][0]
            same = out.dtype == data.dtype and addr == data.__array_interface__["data"][0]
            usable = same or not v.overlaps(out, (data,))
            if rows.axis == len(rows.shape) - 1 and out.flags.c_contiguous and usable:
                getattr(self.k, op)(data, out.reshape(n, c))
                return out
        flat = np.empty((n, c), dtype)
        getattr(self.k, op)(data, flat)
        if out is not None:
            np.moveaxis(out, rows.axis, -1)[...] = flat.reshape(rows.moved)
            return out
        return np.moveaxis(flat.reshape(rows.moved), -1, rows.axis)


def _widened(a, dtype, wide, key):
    """``a`` in ``dtype``: itself, or a copy into the reused buffer ``wide[key]``."""
    if a.dtype == dtype:
        return a
    buf = wide.get(key)
    if buf is None or buf.size < a.size:
        buf = wide[key] = np.empty(a.size, dtype)
    view = buf[: a.size].reshape(a.shape)
    view[...] = a
    return view


_HOSTS: dict[str, Host] = {}


def space(backend, *arrays):
    """The adapter of a call: the device adapter for arrays on a CUDA device or backend "cuda",
    else the host adapter of the backend (the one place that chooses)."""
    name = _backend.resolve(backend, *arrays)
    if name == "cuda":
        from ._cuda.device import Device

        return Device(*arrays)
    sp = _HOSTS.get(name)
    if sp is None:
        sp = _HOSTS[name] = Host(name, _backend.implementation(name))
    return sp


def _cuda_host(f, args, kwargs):
    """Op ``f`` on host arguments with backend="cuda": computed on the device, read back."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    res = f(*args, **kwargs)
    reduction = kwargs.get("reduction", "none")
    if hasattr(res, "as_dict"):  # Scores: every field read back
        return dataclasses.replace(res, **{k: to_numpy(a) for k, a in res.as_dict().items()})
    h = to_numpy(res)
    if out is not None:
        v.prepare_out(out, h.shape, h.dtype)  # the host adapter's checks and messages
        out[...] = h
        return out
    if h.ndim == 0:
        return float(h) if reduction != "none" else h[()]
    return h


def op(*array_params: str, device: bool = True):
    """Wrap a public op whose array arguments are ``array_params`` (and ``out``, if it has one).
    ``device``: host arrays with ``backend="cuda"`` are read back after the call (ops that call
    other ops, such as partial_state, leave that to them)."""

    def deco(f):
        sig = inspect.signature(f)
        names = list(sig.parameters)
        where = {p: (names.index(p) if sig.parameters[p].kind == sig.parameters[p].POSITIONAL_OR_KEYWORD
                     else None) for p in array_params}  # fmt: skip
        has_out = "out" in sig.parameters

        def get(p, args, kwargs):
            i = where[p]
            if i is not None and i < len(args):
                return args[i]
            return kwargs.get(p)

        def on_host(args, kwargs):
            """Host arguments: the cuda route, or the op body."""
            b = kwargs.get("backend")
            if device and (b if b is not None else _backend.get_backend()) == "cuda":
                return _cuda_host(f, args, kwargs)
            return f(*args, **kwargs)

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            vals = [get(p, args, kwargs) for p in array_params]
            if all(a is None or isinstance(a, (np.ndarray, list, tuple)) for a in vals):
                return on_host(args, kwargs)  # the common case: nothing to adapt
            first = next((a for a in vals if a is not None), None)
            kind, dev = _arrays.kind_of(first)
            if dev or any(_arrays.is_device(a) for a in vals):
                for p, a in zip(array_params, vals, strict=True):
                    _arrays.check_not_traced(a, p)
                return f(*args, **kwargs)  # the device path returns the kind itself
            args = list(args)
            views = {}
            for p, a in zip(array_params, vals, strict=True):
                views[p] = h = _arrays.host_view(a, p)
                i = where[p]
                if i is not None and i < len(args):
                    args[i] = h
                else:
                    kwargs[p] = h
            out_pair = None
            out = kwargs.get("out") if has_out else None
            if out is not None:
                out_pair = (out, _arrays.out_view(out, kind))
                kwargs["out"] = out_pair[1]
            res = on_host(tuple(args), kwargs)
            return _arrays.wrap(res, kind, _arrays.result_dtype(views), out_pair)

        return wrapper

    return deco
