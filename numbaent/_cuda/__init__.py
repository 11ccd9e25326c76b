"""The ``cuda`` backend: numba-cuda kernels (``kernels_*``), launched through ``ops`` by the device
adapter (``device.Device``, which ``numbaent._op.space`` picks) for arrays that live on a GPU
(CuPy, torch, __cuda_array_interface__) and for host arrays with backend="cuda" (copied in and
read back).

Importing this package imports ``numba.cuda`` but initialises no driver; ``numbaent._backend``
imports it only when the cuda backend is asked about or used. Under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) the same kernels run as Python threads on the host (tests only).
"""

from __future__ import annotations

import functools

from .._types import BackendInfo


def availability():
    """``BackendInfo`` for the cuda backend, saying precisely why it is unavailable. Never raises.
    Initialises the CUDA driver (not a context) the first time; the answer is cached."""
    try:
        return _availability()
    except Exception as exc:  # an informational call never raises
        return BackendInfo(False, "CUDA availability check failed", repr(exc))


@functools.lru_cache(maxsize=1)
def _availability():
    try:
        from numba import cuda
    except Exception as exc:
        return BackendInfo(False, "numba-cuda failed to import", repr(exc))
    try:
        import numba_cuda

        version = f"numba-cuda {getattr(numba_cuda, '__version__', '?')}"
    except ImportError:  # pragma: no cover - _backend checks for numba_cuda first
        version = "numba-cuda ?"
    from . import _config

    if _config.SIM:
        return BackendInfo(
            True,
            "CUDA simulator",
            f"NUMBA_ENABLE_CUDASIM=1: kernels run as Python threads on the host ({version}; "
            f"{_config.THREADS} threads per block); for tests, not for speed",
        )
    if not cuda.is_available():
        err = str(cuda.cuda_error() or "").strip()
        low = err.lower()
        if "cannot be found" in low or "libcuda" in low or "not found" in low:
            reason = "CUDA driver library (libcuda) not found"
        elif "no cuda-capable device" in low or "no_device" in low or "no device" in low:
            reason = "no CUDA device"
        elif "insufficient" in low or "version" in low:
            reason = "CUDA driver too old for numba-cuda"
        else:
            reason = "CUDA driver failed to initialise"
        return BackendInfo(False, reason, f"{err} ({version})")
    try:
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            return BackendInfo(
                False,
                "NVVM (the CUDA compiler library) not found",
                "install the nvidia-nvvm wheel (pip install nvidia-nvvm) or a CUDA toolkit",
            )
    except Exception as exc:
        return BackendInfo(False, "NVVM (the CUDA compiler library) failed to load", repr(exc))
    try:
        from numba.cuda.cudadrv.driver import driver

        count = driver.get_device_count()
        dev = driver.get_device(0)
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        cc = dev.compute_capability
    except Exception as exc:
        return BackendInfo(False, "CUDA device query failed", repr(exc))
    if count == 0:
        return BackendInfo(False, "no CUDA device", f"the driver reports 0 devices ({version})")
    return BackendInfo(
        True,
        f"CUDA device 0: {name} (sm_{cc[0]}{cc[1]})",
        f"{count} device(s); {version}; {_config.THREADS} threads per block",
    )
