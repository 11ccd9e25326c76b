"""Numba's on-disk cache, keyed on every kernel source of the package, not one file.

Numba stamps a cached function with its own source file only. A kernel in ``cpu_logits.py`` inlines
helpers from ``_blocks.py`` and ``_vmath.py``: after a change to a helper alone (an edit, or an
upgrade that touches only that file), the cached kernel would still run the old helper, silently.
Imported by every module that defines cached ``@njit`` functions, before the first decorator: for
the package's own files, numba's locators are wrapped so the stamp also holds a hash of all kernel
sources. Other packages' cached functions are untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core import caching

_ROOT = Path(__file__).resolve().parent
# every module with cached @njit code, i.e. all a cached CPU kernel can inline (a test checks the
# list against the package); pure-Python modules (oracle.py, cpu.py) stay out, so editing them
# recompiles nothing
_SOURCES = [
    "_vmath.py",
    "_kernels/_blocks.py",
    "_kernels/cpu_logits.py",
    "_kernels/cpu_prob.py",
    "_kernels/cpu_score.py",
    "_kernels/exact.py",
]


def _package_stamp():
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode())
        h.update((_ROOT / name).read_bytes())
    return h.hexdigest()


STAMP = _package_stamp()


def _ours(py_file):
    try:
        return Path(py_file).resolve().is_relative_to(_ROOT)
    except (OSError, ValueError):
        return False


def _stamped(base):
    class Locator(base):
        def get_source_stamp(self):
            return (base.get_source_stamp(self), STAMP)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _ours(py_file):
                return None
            return super().from_function(py_func, py_file)

    Locator.__name__ = Locator.__qualname__ = f"Numbaent{base.__name__}"
    return Locator


def install():
    """Put the package-stamped locators first (once per process; numba's order kept)."""
    classes = caching.CacheImpl._locator_classes
    if any(getattr(c, "__name__", "").startswith("Numbaent") for c in classes):
        return
    bases = (
        caching.UserProvidedCacheLocator,  # NUMBA_CACHE_DIR
        caching.InTreeCacheLocator,  # __pycache__ next to the sources
        caching.UserWideCacheLocator,  # read-only installs
    )
    classes[:0] = [_stamped(b) for b in bases]


install()
