"""Array kinds: the one place that looks at what kind of array a caller passed.

``kind_of`` is the detector (NumPy, torch, JAX, CuPy, numba device arrays, anything with
``__cuda_array_interface__`` or ``__dlpack__``); ``is_device`` says whether an array lives on a
CUDA device. Every public op is wrapped by ``numbaent._op.op``, which uses this module: it reads host arrays of any kind as NumPy views
(torch through ``.numpy()``, torch bfloat16 through an int16 view, JAX CPU arrays and ``__dlpack__``
objects through the buffer protocol / DLPack: no copy), hands device arrays to the device path
untouched, and returns the results in the kind of the first array argument (torch -> torch on its
device, JAX -> JAX, CuPy -> CuPy, everything else -> NumPy). Reductions are a Python float for
NumPy input and a 0-d array of the input's kind otherwise; ``Scores`` fields follow the same rule.

Nothing here imports torch, JAX or CuPy: a module is only used when one of its arrays is passed.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from . import _validate as v


def _module(a) -> str:
    return type(a).__module__.partition(".")[0]


def is_sim_array(a) -> bool:
    """A numba CUDA-simulator device array (NUMBA_ENABLE_CUDASIM=1)."""
    mod = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return mod is not None and isinstance(a, mod.FakeCUDAArray)


def _jax_platform(a) -> str:
    try:
        return next(iter(a.devices())).platform
    except Exception:  # an abstract value: see check_not_traced
        return "cpu"


def kind_of(a) -> tuple[str, bool]:
    """(kind, on a CUDA device) of an argument: kind is "numpy" (also lists and whatever NumPy
    converts), "torch", "jax", "cupy", "numba" (device arrays, the simulator's included),
    "cuda" (another ``__cuda_array_interface__`` object) or "dlpack" (a host ``__dlpack__`` object)."""
    if isinstance(a, np.ndarray):
        return "numpy", False
    mod = _module(a)
    if mod == "torch":
        return "torch", getattr(a.device, "type", None) == "cuda"
    if mod in ("jax", "jaxlib"):
        return "jax", _jax_platform(a) in ("gpu", "cuda", "rocm")
    if mod == "cupy":
        return "cupy", True
    if is_sim_array(a):
        return "numba", True
    if hasattr(a, "__cuda_array_interface__"):
        return ("numba" if mod == "numba" else "cuda"), True
    if (
        hasattr(a, "__dlpack__")
        and not hasattr(a, "__array__")
        and not hasattr(a, "__array_interface__")
    ):
        return "dlpack", False
    return "numpy", False


def is_device(a) -> bool:
    """True for an array on a CUDA device (CuPy, torch CUDA, JAX GPU, numba, __cuda_array_interface__)."""
    return a is not None and kind_of(a)[1]


def check_not_traced(a, name):
    mod = sys.modules.get("jax.core")
    tracer = getattr(mod, "Tracer", None) if mod is not None else None
    if tracer is not None and isinstance(a, tracer):
        raise TypeError(
            f"{name} is a traced JAX value (inside jax.jit, grad or vmap): numbaent runs outside "
            "JAX's tracing; call it on concrete arrays, or from a traced function through "
            "jax.pure_callback"
        )


# --------------------------------------------------------------------------------------------------
# the host adapter's views (no copy)


def _torch_host(t, name):
    import torch

    t = t.detach()  # numbaent computes no gradients
    if t.dtype == torch.bfloat16:
        bf16 = v.bf16(load=True)
        if bf16 is None:  # pragma: no cover - ml_dtypes is a dependency of the bfloat16 path
            raise TypeError(f"{name} is bfloat16: install ml_dtypes to read it")
        return t.view(torch.int16).numpy().view(bf16)
    if t.is_complex():
        raise v.not_real(name, t.dtype)
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    try:
        return t.numpy()
    except TypeError as exc:  # a dtype NumPy has no counterpart for (torch.uint32 on old NumPy...)
        raise v.not_real(name, t.dtype) from exc


def host_view(a, name):
    """A NumPy view of a host array of any kind (other objects are returned as they are, for
    ``_validate`` to convert or reject)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    kind, _ = kind_of(a)
    if kind == "torch":
        return _torch_host(a, name)
    if kind == "jax":
        check_not_traced(a, name)
        return np.asarray(a)  # a read-only view of the CPU buffer
    if kind == "dlpack":
        try:
            return np.from_dlpack(a)
        except (TypeError, BufferError, RuntimeError) as exc:
            raise TypeError(f"{name} must be an array of numbers; got {type(a).__name__} "
                            f"({exc})") from exc  # fmt: skip
    check_not_traced(a, name)
    return a


# --------------------------------------------------------------------------------------------------
# results in the caller's kind


def _as_kind(res, kind):
    """A NumPy result (array or scalar) as a host array of ``kind``."""
    if kind == "torch":
        import torch

        arr = np.asarray(res)
        if not arr.flags.writeable:
            arr = arr.copy()
        return torch.from_numpy(arr)
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(res)
    return res


def wrap(res, kind, dtype, out_pair=None):
    """The result of an op on NumPy views, in the caller's ``kind``: the user's ``out`` object
    when the op filled its view, a Python float for NumPy reductions, else arrays of the kind."""
    if out_pair is not None and res is out_pair[1]:
        return out_pair[0]
    if kind == "numpy" or kind == "dlpack":
        return res
    if isinstance(res, float):  # a reduction: a 0-d array of the kind, in the result's dtype
        return _as_kind(np.asarray(res, dtype=dtype), kind)
    if isinstance(res, (np.ndarray, np.generic)):
        return _as_kind(res, kind)
    if dataclasses.is_dataclass(res) and hasattr(res, "as_dict"):  # Scores
        return dataclasses.replace(res, **{k: _as_kind(a, kind) for k, a in res.as_dict().items()})
    return res


def result_dtype(views):
    """The dtype of an op's results from its inputs' NumPy views: float64 if an input other than
    the labels and class weights is float64 (or integer probabilities, read as float64)."""
    for name, a in views.items():
        dt = getattr(a, "dtype", None)
        if dt is None or name in ("labels", "weight"):
            continue
        if dt == np.float64 or (dt.kind in "biu" and name != "target"):
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def out_view(out, kind):
    """``out`` of the call's kind as a writable NumPy view of the same memory."""
    okind, odev = kind_of(out)
    if okind != kind or odev:
        raise TypeError(
            f"out must be a {kind} array like the first input; got {type(out).__name__}"
        )
    if kind == "jax":
        raise TypeError("out is not supported for JAX arrays (they are immutable); drop out=")
    if kind == "torch":
        if out.requires_grad:
            raise TypeError("out must not require grad (numbaent computes no gradients)")
        return _torch_host(out, "out")
    return host_view(out, "out")
