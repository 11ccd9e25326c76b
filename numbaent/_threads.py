"""The threading layer the parallel CPU kernels run on: fork- and thread-safe by default.

Numba picks its threading layer once per process, at the first parallel launch, from
``numba.config.THREADING_LAYER`` (``$NUMBA_THREADING_LAYER``) and, for ``"default"``, the first
layer of ``numba.config.THREADING_LAYER_PRIORITY`` that loads. The layers differ in what survives:

=============  =====================================  =========================================
layer          ``os.fork()`` after a kernel ran        kernels called from several Python threads
=============  =====================================  =========================================
``tbb``        safe                                    safe (concurrently)
``omp`` (GNU)  the child is killed at its first        safe (concurrently)
               kernel ("fork() called from a process
               already using GNU OpenMP"): fork Pools
               and DataLoader workers hang or die
``workqueue``  safe                                    the process aborts (numba's workqueue is
                                                       not thread-safe), unless calls are
                                                       serialised: numbaent does that
=============  =====================================  =========================================

What numbaent does, in this module only (:func:`configure` runs at ``import numbaent`` and again
right before numbaent's first kernel; ``import numbaent`` does not import numba itself):

* TBB comes from PyPI's ``tbb`` wheel (a dependency on Linux x86-64), which puts ``libtbb.so.12`` in
  ``<prefix>/lib``, a directory the dynamic loader does not search: numba would not find it and
  fall back to OpenMP. numbaent loads that file with ``RTLD_GLOBAL`` before any kernel runs, so
  numba's ``tbbpool`` extension (which needs ``libtbb.so.12``) and its version check find it.
* Unless the user chose (``$NUMBA_THREADING_LAYER`` / ``numba.config.THREADING_LAYER`` other than
  ``"default"``, or ``$NUMBA_THREADING_LAYER_PRIORITY`` / a changed
  ``numba.config.THREADING_LAYER_PRIORITY``), the priority becomes ``tbb, workqueue, omp`` on
  Linux: TBB first, as numba's own default, but without TBB the fork-safe workqueue before GNU
  OpenMP (set when numba is imported by then, else before numbaent's first kernel: numba parallel
  code of the user's own that runs before it keeps numba's order, with TBB loadable). A user's
  choice is never overridden; ``omp`` chosen explicitly works, but a fork after a
  kernel ran is then unsafe (use the ``spawn`` or ``forkserver`` start method, or ``tbb``).
* When the layer in use is ``workqueue``, every call into the CPU backend holds one process-wide
  lock (:func:`cpu_backend`, applied by ``numbaent._backend.implementation``): concurrent calls
  from Python threads run one after the other, each still on all the cores. The lock is renewed
  in a forked child, so a fork while another thread held it cannot deadlock the child. (Numba
  parallel code of the user's own, run concurrently with numbaent on workqueue, still aborts.)

:func:`threading_layer` launches the layer if nothing has yet (``numba.get_num_threads()`` does,
public API) and returns its name; :func:`describe` adds what it is safe for (``numbaent info``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import operator
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

NUMBA_PRIORITY = ["tbb", "omp", "workqueue"]  # numba's own default priority
SAFE_PRIORITY = ["tbb", "workqueue", "omp"]  # numbaent's, on Linux (GNU OpenMP is not fork-safe)
TBB_SONAME = "libtbb.so.12"  # what numba's tbbpool links against and its version check opens
TBB_MIN_INTERFACE = 12060  # numba's minimum TBB_runtime_interface_version (oneTBB 2021.6)
_NOT_TBB = ("omp", "workqueue")  # explicit choices that never load TBB

_set_priority = False  # True once configure() has put SAFE_PRIORITY in numba.config
tbb_path: str | None = None  # the libtbb numbaent loaded (None: not loaded by numbaent)
tbb_problem: str | None = None  # why numbaent did not load one, when it tried


def _numba() -> Any:
    """numba if it is imported already, else None (``import numbaent`` does not import it)."""
    return sys.modules.get("numba")


def _user_layer() -> str | None:
    """The layer (or layer kind: safe, threadsafe, forksafe) the user asked for, else None."""
    numba = _numba()
    cfg = str(numba.config.THREADING_LAYER).strip().lower() if numba else ""
    env = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower()
    for name in (cfg, env):
        if name and name != "default":
            return name
    return None


def _user_priority(numba: Any) -> bool:
    if os.environ.get("NUMBA_THREADING_LAYER_PRIORITY", "").strip():
        return True
    prio = list(numba.config.THREADING_LAYER_PRIORITY)
    return prio != NUMBA_PRIORITY and not (_set_priority and prio == SAFE_PRIORITY)


def launched() -> bool:
    """Whether numba has chosen its threading layer in this process (no kernel is run to tell)."""
    numba = _numba()
    if numba is None:
        return False
    try:
        numba.threading_layer()
    except ValueError:
        return False
    return True


def _mapped_tbb() -> str | None:
    """Path of a libtbb.so.12 already mapped into this process (another package's, or ours)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if os.path.basename(path).startswith(TBB_SONAME):
                    return path
    except OSError:
        pass
    return None


def _wheel_tbb() -> str | None:
    """libtbb.so.12 of the installed ``tbb`` distribution (a venv, --user or --prefix install)."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):  # the usual place: fast
        path = os.path.join(prefix, "lib", TBB_SONAME)
        if os.path.isfile(path):
            return path
    try:  # elsewhere (--user, --prefix, --target): the distribution's file list
        from importlib import metadata

        for f in metadata.distribution("tbb").files or ():
            if f.name == TBB_SONAME and os.path.isfile(f.locate()):
                return str(f.locate())
    except Exception:  # not installed, or no RECORD
        pass
    return None


def _interface_version(lib: ctypes.CDLL) -> int:
    fn = lib.TBB_runtime_interface_version
    fn.argtypes = []
    fn.restype = ctypes.c_int
    return int(fn())


def _load_tbb() -> None:
    """Make ``libtbb.so.12`` loadable by name for numba: if the loader cannot find one, load the
    ``tbb`` wheel's with RTLD_GLOBAL (only ever one TBB runtime in the process)."""
    global tbb_path, tbb_problem
    if not sys.platform.startswith("linux") or tbb_path is not None or _mapped_tbb():
        return
    try:
        ctypes.CDLL(TBB_SONAME)  # on the loader's path already (system TBB, LD_LIBRARY_PATH)
        return
    except OSError:
        pass
    path = _wheel_tbb()
    if path is None:
        tbb_problem = f"no {TBB_SONAME} found (is the 'tbb' package installed?)"
        return
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        tbb_problem = f"{path}: {exc}"
        return
    tbb_path = path
    try:
        ver = _interface_version(lib)
    except AttributeError:
        ver = 0
    if ver < TBB_MIN_INTERFACE:  # numba warns and disables the layer itself; say why here too
        tbb_problem = f"{path}: TBB interface version {ver} < {TBB_MIN_INTERFACE}"


def configure() -> None:
    """Prepare the layer choice; called at ``import numbaent`` and again right before numbaent's
    first kernel (numba re-reads its config from the environment when a NUMBA_ variable changes,
    and may not have been imported at the first call). Does nothing once the layer is launched."""
    global _set_priority
    if launched():
        return
    user = _user_layer()
    if user not in _NOT_TBB:
        _load_tbb()
    numba = _numba()
    if numba is None or user is not None or not sys.platform.startswith("linux"):
        return
    if not _user_priority(numba):
        numba.config.THREADING_LAYER_PRIORITY = list(SAFE_PRIORITY)
        _set_priority = True


def __getattr__(name: str) -> Any:
    """``from numbaent._threads import numba``: numba, imported and then configured (before code
    such as ``numba.get_num_threads()`` can launch a layer without numbaent's priority)."""
    if name == "numba":
        import numba

        configure()
        return numba
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_launch_lock = threading.Lock()


def threading_layer() -> str:
    """Name of the threading layer in use ("tbb", "omp" or "workqueue"), launching it first if no
    parallel kernel has run yet (as the first kernel would)."""
    import numba

    if not launched():
        with _launch_lock:
            configure()
            numba.get_num_threads()  # launches the layer (numba's public API)
    return numba.threading_layer()


def _omp_vendor() -> str:
    try:
        from numba.np.ufunc import omppool

        return str(getattr(omppool, "openmp_vendor", "") or "")
    except ImportError:
        return ""


def describe() -> str:
    """The layer in use and what it is safe for, e.g. ``"tbb (fork-safe, thread-safe)"``."""
    layer = threading_layer()
    if layer == "tbb":
        note = "fork-safe, thread-safe"
    elif layer == "workqueue":
        note = "fork-safe; numbaent serialises concurrent calls"
    elif layer == "omp":
        vendor = _omp_vendor()
        if vendor == "GNU":
            note = "GNU OpenMP: thread-safe, NOT fork-safe after a kernel ran"
        else:
            note = f"{vendor or 'OpenMP'}: thread-safe"
    else:
        note = ""
    if layer != "tbb" and tbb_problem:
        note += f"; tbb not loaded: {tbb_problem}"
    return f"{layer} ({note})" if note else layer


# --------------------------------------------------------------------------------------------------
# the workqueue lock


_kernel_lock = threading.RLock()


def _renew_lock() -> None:  # in a forked child: another parent thread may have held the lock
    global _kernel_lock
    _kernel_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_lock)


class _Serialised:
    """A backend module whose functions hold ``_kernel_lock`` while they run."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.__name__ = module.__name__
        self.__doc__ = module.__doc__

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if name.startswith("__") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with _kernel_lock:
                return attr(*args, **kwargs)

        setattr(self, name, locked)  # found by normal lookup from now on
        return locked


_cpu: Any = None


def cpu_backend(module: Any) -> Any:
    """The CPU backend module to call (``numbaent._kernels.cpu``): ``module`` itself, or under
    the workqueue layer (not thread-safe) a wrapper that serialises its calls. Launches the layer
    on first use."""
    global _cpu
    if _cpu is None:
        _cpu = _Serialised(module) if threading_layer() == "workqueue" else module
    return _cpu


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run the CPU kernels of this thread on at most ``n`` threads inside the ``with`` block.

    For workers of Dask, Ray or Spark that share a host: each caps its own kernels. The cap is
    per calling thread (``numba.set_num_threads`` is thread-local), is at most the size of the
    thread pool (``NUMBA_NUM_THREADS``, the cores by default), and the previous setting comes back
    on exit. Results do not depend on it: they are bit-identical for every thread count.

    Examples
    --------
    >>> import numpy as np, numbaent
    >>> with numbaent.threads(1) as n:
    ...     h = numbaent.softmax_entropy(np.zeros((4, 8)))
    >>> n, h.round(4)
    (1, array([2.0794, 2.0794, 2.0794, 2.0794]))
    """
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"threads: n must be an int; got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"threads: n must be >= 1; got {n}")
    import numba

    if not launched():
        threading_layer()  # numbaent's layer choice first: set_num_threads launches a layer
    before = numba.get_num_threads()
    cap = min(int(n), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(cap)
    try:
        yield cap
    finally:
        numba.set_num_threads(before)
