"""The backend registry: ``backends()``, ``set_backend`` / ``get_backend`` / ``use_backend`` (thread-local),
``NUMBAENT_BACKEND``, ``"auto"`` resolution, and a cheap, side-effect-free ``import numbaent``.

Process-level facts (environment variable, import time, modules imported) are measured in fresh
subprocesses, so that this test session's own imports (torch, numba) cannot hide anything.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import numbaent as ne
from numbaent import _backend

NAMES = {"cpu", "cuda", "numpy"}
# modules that `import numbaent` must not pull in (GPU stacks, and torch)
FORBIDDEN = ("cupy", "numba.cuda", "numba_cuda", "torch")


@pytest.fixture(autouse=True)
def _restore_default_backend():
    saved = ne.get_backend()
    yield
    ne.set_backend(saved)


def _no_gpu_here() -> bool:
    return not any(Path("/dev").glob("nvidia[0-9]*"))


# --------------------------------------------------------------------------------------------------
# backends()


def test_backends_reports_every_backend():
    info = ne.backends()
    assert set(info) == NAMES
    for name, bi in info.items():
        assert isinstance(bi, ne.BackendInfo), name
        assert isinstance(bi.available, bool), name
        assert isinstance(bi.reason, str) and bi.reason, name
        assert isinstance(bi.detail, str), name
    assert info["cpu"].available and info["numpy"].available
    if not info["cuda"].available:
        assert info["cuda"].reason  # says why


def test_backend_info_is_frozen():
    bi = ne.backends()["numpy"]
    with pytest.raises(AttributeError):
        bi.available = False  # type: ignore[misc]


def test_backends_never_raises(monkeypatch):
    def broken():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(_backend, "_cuda_info", broken)
    info = ne.backends()
    assert set(info) == NAMES
    assert info["cuda"].available is False
    assert info["cuda"].reason
    assert "driver exploded" in info["cuda"].detail
    assert info["cpu"].available and info["numpy"].available


def test_backends_in_a_fresh_process_without_cudasim():
    """On a GPU-less machine (NUMBA_ENABLE_CUDASIM unset) backends() reports, never crashes."""
    code = (
        "import json, numbaent\n"
        "info = numbaent.backends()\n"
        "print(json.dumps({k: [v.available, v.reason, v.detail] for k, v in info.items()}))\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(info) == NAMES
    assert info["cpu"][0] is True and info["numpy"][0] is True
    if _no_gpu_here():
        assert info["cuda"][0] is False
        assert info["cuda"][1]  # a reason


# --------------------------------------------------------------------------------------------------
# set_backend / get_backend / use_backend


def test_default_is_auto_without_the_environment_variable():
    r = run_python("import numbaent; print(numbaent.get_backend())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "auto"


@pytest.mark.parametrize("name", ["auto", "cpu", "numpy", "cuda"])
def test_set_and_get_backend(name):
    ne.set_backend(name)  # choosing cuda is allowed; using it when unavailable raises
    assert ne.get_backend() == name


@pytest.mark.parametrize("bad", ["gpu", "CPU", "", None, 1, "auto "])
def test_set_backend_validates(bad):
    ne.set_backend("numpy")
    with pytest.raises(ValueError, match="backend"):
        ne.set_backend(bad)
    assert ne.get_backend() == "numpy"  # unchanged


@pytest.mark.parametrize("bad", ["gpu", None])
def test_use_backend_validates_before_entering(bad):
    ne.set_backend("cpu")
    with pytest.raises(ValueError, match="backend"), ne.use_backend(bad):
        pytest.fail("entered a context with an invalid backend")
    assert ne.get_backend() == "cpu"


def test_use_backend_nests_and_restores():
    ne.set_backend("cpu")
    with ne.use_backend("numpy") as name:
        assert name == "numpy"
        assert ne.get_backend() == "numpy"
        with ne.use_backend("auto"):
            assert ne.get_backend() == "auto"
            with ne.use_backend("cpu"):
                assert ne.get_backend() == "cpu"
            assert ne.get_backend() == "auto"
        assert ne.get_backend() == "numpy"
    assert ne.get_backend() == "cpu"


def test_use_backend_restores_after_an_exception():
    ne.set_backend("auto")
    with pytest.raises(KeyError), ne.use_backend("numpy"):
        with ne.use_backend("cpu"):
            raise KeyError("boom")
    assert ne.get_backend() == "auto"


def test_use_backend_overrides_set_backend_in_its_thread():
    ne.set_backend("cpu")
    with ne.use_backend("numpy"):
        ne.set_backend("auto")  # the process default changes underneath ...
        assert ne.get_backend() == "numpy"  # ... but the thread's override wins
    assert ne.get_backend() == "auto"


def test_use_backend_does_not_leak_into_other_threads():
    ne.set_backend("cpu")
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with ne.use_backend("numpy"):
            seen["worker inside"] = ne.get_backend()
            entered.set()
            release.wait(10)
        seen["worker after"] = ne.get_backend()

    th = threading.Thread(target=worker)
    th.start()
    assert entered.wait(10)
    seen["main while worker inside"] = ne.get_backend()
    release.set()
    th.join(10)
    assert seen == {
        "worker inside": "numpy",
        "main while worker inside": "cpu",
        "worker after": "cpu",
    }
    # and the other way round: the main thread's override is invisible to a new thread
    with ne.use_backend("numpy"):
        other = {}
        t2 = threading.Thread(target=lambda: other.setdefault("b", ne.get_backend()))
        t2.start()
        t2.join(10)
        assert other == {"b": "cpu"}
        assert ne.get_backend() == "numpy"


def test_set_backend_is_process_wide():
    ne.set_backend("numpy")
    got = {}
    th = threading.Thread(target=lambda: got.setdefault("b", ne.get_backend()))
    th.start()
    th.join(10)
    assert got == {"b": "numpy"}


def _spy(monkeypatch, module, func, log, tag):
    orig = getattr(module, func)

    def wrapped(*args, **kwargs):
        log.append((tag, threading.get_ident()))
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, func, wrapped)


def test_concurrent_threads_dispatch_to_their_own_backend(monkeypatch):
    from numbaent._kernels import cpu, numpy_impl

    log = []
    _spy(monkeypatch, cpu, "entropy", log, "cpu")
    _spy(monkeypatch, numpy_impl, "entropy", log, "numpy")
    p = np.full((3, 4), 0.25)
    ne.entropy(p, backend="cpu")  # compile outside the race
    log.clear()
    # one thread on the parallel cpu kernels: numba's fallback 'workqueue' threading layer does not
    # allow concurrent parallel launches from several threads (this tests dispatch, not that)
    names = ["numpy", "cpu", "numpy"]
    barrier = threading.Barrier(len(names))
    results = []

    def worker(name):
        with ne.use_backend(name):
            barrier.wait(10)  # all threads alive (distinct idents) and inside their contexts
            for _ in range(20):
                results.append(ne.entropy(p))

    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    by_thread = {th.ident: n for th, n in zip(threads, names, strict=True)}
    assert len(log) == len(results) == 20 * len(names)
    for tag, ident in log:
        assert by_thread[ident] == tag
    for v in results:
        np.testing.assert_allclose(v, np.log(4.0), rtol=1e-12)


def test_explicit_backend_argument_beats_the_context(monkeypatch):
    from numbaent._kernels import numpy_impl

    log = []
    _spy(monkeypatch, numpy_impl, "entropy", log, "numpy")
    with ne.use_backend("cpu"):
        ne.entropy(np.full((2, 2), 0.5), backend="numpy")
    assert [t for t, _ in log] == ["numpy"]


# --------------------------------------------------------------------------------------------------
# "auto"


class FakeDeviceArray:
    """Anything exposing __cuda_array_interface__ counts as a CUDA device array."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f8", "data": (0, False), "version": 3}


@pytest.mark.parametrize("how", ["argument", "default", "context"])
def test_auto_picks_cpu_for_host_arrays(monkeypatch, how):
    from numbaent._kernels import cpu

    log = []
    _spy(monkeypatch, cpu, "entropy", log, "cpu")
    p = np.full((2, 2), 0.5)
    if how == "argument":
        ne.entropy(p, backend="auto")
    elif how == "default":
        ne.set_backend("auto")
        ne.entropy(p)
    else:
        ne.set_backend("numpy")
        with ne.use_backend("auto"):
            ne.entropy(p)
    assert [t for t, _ in log] == ["cpu"]
    assert _backend.resolve("auto", p) == "cpu"
    assert _backend.resolve("auto", [[0.5, 0.5]], None) == "cpu"


def test_auto_picks_cpu_for_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    x = torch.zeros(2, 3)
    assert _backend.resolve("auto", x) == "cpu"
    np.testing.assert_allclose(ne.logsumexp(x), np.log(3.0) * np.ones(2), rtol=1e-6)


def test_auto_picks_cuda_for_device_arrays():
    dev = FakeDeviceArray()
    assert _backend.is_device_array(dev)
    if ne.backends()["cuda"].available:
        assert _backend.resolve("auto", dev) == "cuda"
    else:
        with pytest.raises(ne.BackendUnavailableError, match="cuda"):
            _backend.resolve("auto", dev)
        with pytest.raises(ne.BackendUnavailableError, match="cuda"):
            ne.entropy(dev)


@pytest.mark.parametrize("name", ["cpu", "numpy"])
def test_host_backend_refuses_device_arrays(name):
    with pytest.raises(ne.BackendUnavailableError, match="device"):
        ne.logsumexp(FakeDeviceArray(), backend=name)


# --------------------------------------------------------------------------------------------------
# NUMBAENT_BACKEND


@pytest.mark.parametrize("value", ["numpy", "cpu", "auto", "cuda"])
def test_environment_variable_sets_the_default(value):
    r = run_python("import numbaent; print(numbaent.get_backend())", NUMBAENT_BACKEND=value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == value


def test_environment_variable_is_used_by_calls():
    """With NUMBAENT_BACKEND=numpy a call runs the NumPy oracle: numba is never even imported."""
    code = (
        "import sys, numbaent\n"
        "h = numbaent.entropy([[0.5, 0.5]])\n"
        "print(float(h[0]), 'numba' in sys.modules)\n"
    )
    r = run_python(code, NUMBAENT_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    value, numba_loaded = r.stdout.split()
    assert float(value) == pytest.approx(np.log(2.0), rel=1e-15)
    assert numba_loaded == "False"
    # and the cpu default does use numba
    r = run_python(code, NUMBAENT_BACKEND="cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == "True"


def test_environment_variable_cuda_when_unavailable():
    if ne.backends()["cuda"].available:
        r = run_python("import numbaent; print(numbaent.get_backend())", NUMBAENT_BACKEND="cuda")
        assert r.stdout.strip() == "cuda"
        return
    r = run_python("import numbaent; numbaent.entropy([[0.5, 0.5]])", NUMBAENT_BACKEND="cuda")
    assert r.returncode != 0
    assert "BackendUnavailableError" in r.stderr and "cuda" in r.stderr


@pytest.mark.parametrize("bad", ["gpu", "numpy2", "c p u"])
def test_bad_environment_variable_is_a_clear_error(bad):
    r = run_python("import numbaent; numbaent.entropy([[0.5, 0.5]])", NUMBAENT_BACKEND=bad)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError"), last
    assert "NUMBAENT_BACKEND" in last and repr(bad) in last


# --------------------------------------------------------------------------------------------------
# import cost and side effects


IMPORT_PROBE = (
    "import json, sys, time\n"
    "t0 = time.perf_counter()\n"
    "import numbaent\n"
    "dt = time.perf_counter() - t0\n"
    f"print(json.dumps({{'dt': dt, 'loaded': [m for m in {FORBIDDEN!r} if m in sys.modules],"
    " 'numba': 'numba' in sys.modules}))\n"
)


def test_import_is_fast_and_imports_no_gpu_stack_or_torch():
    times = []
    for _ in range(3):
        r = run_python(IMPORT_PROBE)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["loaded"] == [], f"import numbaent imported {res['loaded']}"
        times.append(res["dt"])
    assert min(times) < 1.0, times


def test_backends_does_not_import_cupy_or_torch():
    code = (
        "import json, sys, numbaent\n"
        "numbaent.backends()\n"
        "print(json.dumps([m for m in ('cupy', 'torch') if m in sys.modules]))\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_bad_environment_variable_does_not_break_import_or_backends():
    """The bad value is reported by the first call that needs the default, not by the import:
    ``backends()`` never raises, and an explicit backend or set_backend still works."""
    code = (
        "import json, numbaent\n"
        "info = numbaent.backends()\n"
        "h = numbaent.entropy([[0.5, 0.5]], backend='numpy')\n"
        "numbaent.set_backend('numpy')\n"
        "print(json.dumps([sorted(info), float(h[0]), numbaent.get_backend()]))\n"
    )
    r = run_python(code, NUMBAENT_BACKEND="gpu")
    assert r.returncode == 0, r.stderr
    names, h, default = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(names) == NAMES
    assert h == pytest.approx(np.log(2.0), rel=1e-15)
    assert default == "numpy"
