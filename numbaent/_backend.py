"""Backend registry: which implementation runs a call, and what is available on this machine.

Three backends implement the same internal interface (see ``numbaent._kernels``):

* ``"numpy"`` -- the float64 oracle, plain NumPy;
* ``"cpu"``   -- parallel Numba kernels;
* ``"cuda"``  -- numba-cuda kernels, imported lazily (``numbaent._cuda``): nothing here imports CuPy,
  numba.cuda or initialises a CUDA driver at ``import numbaent``.

Selection: an explicit ``backend=`` argument, else the thread-local ``use_backend`` override, else the
process default (``set_backend``, initially ``$NUMBAENT_BACKEND`` or ``"auto"``). ``"auto"`` picks
``"cuda"`` for arrays that live on a CUDA device and ``"cpu"`` for host arrays.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator

from . import _arrays, _validate
from ._types import BackendInfo, BackendUnavailableError

NAMES = ("cpu", "cuda", "numpy")
_CHOICES = ("auto", *NAMES)


def _check_name(name: object, what: str = "backend") -> str:
    return _validate.check_choice(name, what, _CHOICES)


def _env_default() -> str:
    env = os.environ.get("NUMBAENT_BACKEND", "").strip().lower()
    if not env:
        return "auto"
    if env not in _CHOICES:
        raise ValueError(
            f"environment variable NUMBAENT_BACKEND must be one of {', '.join(_CHOICES)}; got {env!r}"
        )
    return env


# The process default, read from $NUMBAENT_BACKEND on first use (not at import: a bad value must not
# make ``import numbaent`` or ``numbaent.backends()`` fail; the first call that needs it raises).
_default: str | None = None
_local = threading.local()


def set_backend(name: str) -> None:
    """Set the process-wide default backend ("auto", "cpu", "cuda" or "numpy").

    Examples
    --------
    >>> import numbaent
    >>> numbaent.set_backend("numpy"); numbaent.get_backend()
    'numpy'
    >>> numbaent.set_backend("auto")
    """
    global _default
    _default = _check_name(name)


def get_backend() -> str:
    """The backend a call with ``backend=None`` uses in this thread (a name, possibly "auto")."""
    global _default
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    if _default is None:
        _default = _env_default()
    return _default


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Context manager: use backend ``name`` in this thread, restoring the previous choice on exit.

    Examples
    --------
    >>> import numbaent
    >>> with numbaent.use_backend("numpy"):
    ...     numbaent.get_backend()
    'numpy'
    """
    name = _check_name(name)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


# --------------------------------------------------------------------------------------------------
# availability


def _cuda_info() -> BackendInfo:
    if importlib.util.find_spec("numba_cuda") is None:
        return BackendInfo(
            False,
            "numba-cuda is not installed",
            "install the 'cuda' extra: pip install 'numbaent[cuda]'",
        )
    try:
        from ._cuda import availability
    except ImportError as exc:  # the cuda backend module itself cannot load
        return BackendInfo(False, "the numbaent CUDA backend failed to import", repr(exc))
    return availability()


def backends() -> dict[str, BackendInfo]:
    """Availability of each backend, with the reason when one is unavailable. Never raises.

    Examples
    --------
    >>> import numbaent
    >>> info = numbaent.backends()
    >>> sorted(info), info["cpu"].available, info["numpy"].available
    (['cpu', 'cuda', 'numpy'], True, True)
    """
    try:
        cuda = _cuda_info()
    except Exception as exc:  # never raise from an informational call
        cuda = BackendInfo(False, "CUDA availability check failed", repr(exc))
    return {
        "cpu": BackendInfo(True, "numba parallel CPU kernels", _cpu_detail()),
        "cuda": cuda,
        "numpy": BackendInfo(True, "NumPy float64 oracle", ""),
    }


def _cpu_detail() -> str:
    import numba

    return f"numba {numba.__version__}, threading layer chosen at first call"


# --------------------------------------------------------------------------------------------------
# resolution


def is_device_array(a: object) -> bool:
    """True for arrays that live on a CUDA device (the one detector: ``numbaent._arrays``)."""
    return _arrays.is_device(a)


def resolve(backend: str | None, *arrays: object) -> str:
    """Concrete backend name for a call on ``arrays``; raises for an unavailable explicit choice.
    ``numbaent._op.space`` turns the name into the call's adapter."""
    name = get_backend() if backend is None else _check_name(backend)
    on_device = any(is_device_array(a) for a in arrays if a is not None)
    if name == "auto":
        name = "cuda" if on_device else "cpu"
    if name == "cuda":
        info = _cuda_info()
        if not info.available:
            raise BackendUnavailableError(f"backend 'cuda' is unavailable: {info.reason}")
    elif on_device:
        raise BackendUnavailableError(
            f"backend {name!r} takes host arrays; arrays on a CUDA device need backend='cuda' "
            "or 'auto'"
        )
    return name


def implementation(name: str):
    """The module implementing host backend ``name`` ("cpu" or "numpy"; imported on first use).
    (Host arrays with backend="cuda" run on the device adapter, ``numbaent._cuda.device``.)"""
    if name == "cpu":
        from . import _threads
        from ._kernels import cpu

        return _threads.cpu_backend(cpu)  # serialised under numba's workqueue layer
    from ._kernels import numpy_impl

    return numpy_impl
