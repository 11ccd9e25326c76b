"""Numba's cache must not serve a kernel compiled against an older helper: the stamp of every
cached function of the package covers all kernel sources (numbaent._jitcache)."""

from __future__ import annotations

import shutil

from numba import njit
from numba.core import caching

from numbaent import _jitcache
from numbaent._kernels import cpu_logits, cpu_score


def test_package_kernels_are_stamped_with_every_kernel_source():
    for kernel in (cpu_logits.softmax_entropy, cpu_score.score):
        loc = kernel._cache._impl.locator
        assert type(loc).__name__.startswith("Numbaent"), type(loc)
        own, package = loc.get_source_stamp()
        assert package == _jitcache.STAMP
        assert own  # numba's own stamp of the defining file is kept as well


def test_a_change_to_a_helper_alone_changes_the_stamp(tmp_path, monkeypatch):
    root = tmp_path / "numbaent"
    shutil.copytree(_jitcache._ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_jitcache, "_ROOT", root)
    before = _jitcache._package_stamp()
    assert before == _jitcache.STAMP  # the same sources, the same stamp
    for helper in ("_kernels/_blocks.py", "_vmath.py", "_kernels/exact.py"):
        path = root / helper
        path.write_text(path.read_text() + "\n# changed\n")
        after = _jitcache._package_stamp()
        assert after != before, helper
        before = after


def test_other_packages_keep_numbas_own_locators(tmp_path):
    src = tmp_path / "userkernels.py"
    src.write_text("def f(x):\n    return x + 1\n")
    ns = {}
    exec(compile(src.read_text(), str(src), "exec"), ns)
    f = njit(cache=True)(ns["f"])
    assert f(1) == 2
    loc = f._cache._impl.locator
    assert not type(loc).__name__.startswith("Numbaent")
    assert isinstance(loc, caching._CacheLocator)


def test_install_is_idempotent():
    n = len(caching.CacheImpl._locator_classes)
    _jitcache.install()
    assert len(caching.CacheImpl._locator_classes) == n


def test_every_module_with_cached_njit_code_is_in_the_stamp():
    root = _jitcache._ROOT
    found = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "njit" in path.read_text() and path.name != "_jitcache.py"
    }
    assert found == set(_jitcache._SOURCES)
