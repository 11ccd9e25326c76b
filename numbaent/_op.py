"""The wrapper of every public op: the one place that picks the memory space of a call.

* NumPy inputs (and lists, memmaps, ...) on the cpu / numpy backends go straight to the op body.
* Host arrays of other kinds (torch CPU, JAX CPU, ``__dlpack__`` objects) are read as NumPy views
  (``numbaent._arrays``) and the results come back in the first array argument's kind.
* Arrays on a CUDA device go to the op body, which hands them to the device path.
* Host arrays with ``backend="cuda"`` go through the same device path as device arrays: copied in,
  computed, read back (there is no second implementation of the ops for host memory on a GPU).
  Results are NumPy, reductions Python floats, as on the other host backends.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import numpy as np

from . import _arrays, _backend
from . import _validate as v
from ._types import to_numpy


def _route_cuda_host(name, args, kwargs):
    """Public op ``name`` on host (NumPy) arguments through the device path; host results."""
    kwargs = dict(kwargs)
    kwargs.pop("backend", None)
    out = kwargs.pop("out", None)
    res = _backend.device_call(name, *args, **kwargs)
    reduction = kwargs.get("reduction", "none")
    if hasattr(res, "as_dict"):  # Scores: every field read back
        return dataclasses.replace(res, **{k: to_numpy(a) for k, a in res.as_dict().items()})
    h = to_numpy(res)
    if out is not None:
        v.prepare_out(out, h.shape, h.dtype)  # the host path's checks and messages
        out[...] = h
        return out
    if h.ndim == 0:
        return float(h) if reduction != "none" else h[()]
    return h


def op(*array_params: str, device: bool = True):
    """Wrap a public op whose array arguments are ``array_params`` (and ``out``, if it has one).
    ``device``: the op has a device-path twin (``numbaent._cuda.device``) that host arrays with
    ``backend="cuda"`` are routed to; ops without one (partial_state) call such ops themselves."""

    def deco(f):
        sig = inspect.signature(f)
        names = list(sig.parameters)
        where = {p: (names.index(p) if sig.parameters[p].kind == sig.parameters[p].POSITIONAL_OR_KEYWORD
                     else None) for p in array_params}  # fmt: skip
        has_out = "out" in sig.parameters
        fname = f.__name__

        def get(p, args, kwargs):
            i = where[p]
            if i is not None and i < len(args):
                return args[i]
            return kwargs.get(p)

        def on_host(args, kwargs):
            """Host arguments: the cuda route, or the op body."""
            b = kwargs.get("backend")
            if device and (b if b is not None else _backend.get_backend()) == "cuda":
                _backend.resolve(b, *args)  # BackendUnavailableError saying why
                return _route_cuda_host(fname, args, kwargs)
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
