"""fork() and Python threads after numbaent has run a parallel kernel (``numbaent._threads``).

* The default threading layer is fork-safe: after a call in the parent, a ``fork`` Pool, a raw
  ``os.fork()`` child and fork DataLoader workers each call numbaent, finish, and get the parent's
  bits (GNU OpenMP, numba's pick without TBB, kills such children or hangs the Pool).
* Concurrent calls from Python threads are bit-identical to serial calls on every layer numbaent
  may run on (tbb, omp, workqueue), each tested in a fresh process; on workqueue, which aborts on
  concurrent kernel launches, numbaent's lock makes them safe (a control run without it aborts).
* Without TBB, numbaent falls back to workqueue (fork-safe) rather than GNU OpenMP; a user's
  explicit choice of layer or priority is kept.
* ``numbaent info`` reports the layer in use.
* ``test_soak`` (slow): 8 threads x ``$NUMBAENT_SOAK_S`` seconds (60) of calls, every result
  bit-identical to the serial one.
"""

from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pytest
from conftest import run_python

import numbaent as ne
from numbaent import _threads

TIMEOUT = 120  # seconds for any child to finish: a hang fails instead of hanging CI

# The workload, shared (exec'd) by this process and the subprocesses below: fixed inputs that take
# the small-C tile path, the blocked path and the class split, and a fingerprint of each result.
WORK = r"""
import hashlib
import numpy as np
import numbaent as ne

def make_tasks():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 1000)) * 4).astype(np.float32)
    y = rng.integers(0, 1000, 64)
    xs = (rng.standard_normal((2048, 10)) * 4).astype(np.float32)
    ys = rng.integers(0, 10, 2048)
    xw = (rng.standard_normal((2, 70000)) * 4).astype(np.float32)
    yw = rng.integers(0, 70000, 2)
    p = rng.random((64, 1000)).astype(np.float32)
    p /= p.sum(axis=1, keepdims=True)
    return {
        "softmax_cross_entropy": lambda: ne.softmax_cross_entropy(x, y),
        "softmax_cross_entropy small C": lambda: ne.softmax_cross_entropy(xs, ys),
        "softmax_cross_entropy split": lambda: ne.softmax_cross_entropy(xw, yw),
        "softmax_entropy": lambda: ne.softmax_entropy(x),
        "entropy": lambda: ne.entropy(p),
        "score": lambda: ne.score(x, y, teacher_logits=x[::-1].copy(), temperature=2.0),
    }

def fingerprint(res):
    if isinstance(res, ne.Scores):
        return hashlib.sha256(
            b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(res.as_dict().items()))
        ).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(res).tobytes()).hexdigest()

def serial(tasks):
    return {k: fingerprint(f()) for k, f in tasks.items()}

def concurrent(tasks, threads=8, rounds=6):
    from concurrent.futures import ThreadPoolExecutor
    work = [k for k in tasks for _ in range(rounds)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda k: (k, fingerprint(tasks[k]())), work))
"""
_ns: dict = {}
exec(WORK, _ns)
make_tasks, fingerprint, serial = _ns["make_tasks"], _ns["fingerprint"], _ns["serial"]
TASKS = sorted(make_tasks())
# Results are compared within one process only: a kernel freshly compiled and the same kernel
# loaded from numba's on-disk cache can differ in the last bit (softmax_entropy, float32 64x1000,
# one row: a kernel-side issue, not a threading one), so processes that compiled or loaded the
# kernels differently need not agree bit for bit.


def last_json(r: subprocess.CompletedProcess):
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference():
    """Serial fingerprints of the tasks in this process."""
    return serial(make_tasks())


def _tbb_installed() -> bool:
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _require_fork_safe_layer():
    """This process's layer: tbb or workqueue unless the user forced GNU OpenMP."""
    layer = _threads.threading_layer()
    if layer == "omp" and _threads._user_layer() is not None:
        pytest.skip(f"threading layer {layer!r} chosen by the user: fork after a kernel is unsafe")
    assert layer in ("tbb", "workqueue"), _threads.describe()
    return layer


# --------------------------------------------------------------------------------------------------
# fork


def _parent_results():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 1000)) * 3).astype(np.float32)
    labels = rng.integers(0, 1000, 64)
    p = rng.random((64, 1000))
    p /= p.sum(axis=1, keepdims=True)
    return x, labels, p


def _child_call(i):
    """Pool task: numbaent calls in the forked worker (the inputs are regenerated, not inherited
    results); returns the bits with the worker's pid."""
    x, labels, p = _parent_results()
    ce = ne.softmax_cross_entropy(x, labels)
    h = ne.entropy(p)
    return i, os.getpid(), ce.tobytes(), h.tobytes()


def test_fork_pool_after_a_parent_call():
    _require_fork_safe_layer()
    x, labels, p = _parent_results()
    ce = ne.softmax_cross_entropy(x, labels).tobytes()  # the parent has run the kernels
    h = ne.entropy(p).tobytes()
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        out = pool.map_async(_child_call, range(8)).get(timeout=TIMEOUT)
    dt = time.perf_counter() - t0
    print(f"fork Pool(2), 8 tasks: {dt:.2f} s on {_threads.describe()}")
    assert sorted(i for i, *_ in out) == list(range(8))
    assert {pid for _, pid, *_ in out} - {os.getpid()}, "the tasks ran in child processes"
    for i, _, ce_child, h_child in out:
        assert ce_child == ce, f"task {i}: cross-entropy differs from the parent's"
        assert h_child == h, f"task {i}: entropy differs from the parent's"


def test_raw_fork_child_calls_numbaent_and_exits_0():
    _require_fork_safe_layer()
    x, labels, p = _parent_results()
    want = ne.softmax_cross_entropy(x, labels).tobytes() + ne.entropy(p).tobytes()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            got = ne.softmax_cross_entropy(x, labels).tobytes() + ne.entropy(p).tobytes()
            code = 0 if got == want else 2
        finally:
            os._exit(code)
    status = None
    while time.perf_counter() - t0 < TIMEOUT:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child did not finish within {TIMEOUT} s")
    print(f"os.fork() child finished in {time.perf_counter() - t0:.2f} s")
    assert os.waitstatus_to_exitcode(status) == 0, (
        f"child exit {os.waitstatus_to_exitcode(status)} (2: other bits, negative: killed)"
    )


class _RowsDataset:
    """A torch-style map dataset whose items are numbaent results on blocks of rows."""

    def __init__(self, x, labels):
        self.x, self.labels = x, labels

    def __len__(self):
        return 8

    def __getitem__(self, i):
        rows = slice(8 * i, 8 * i + 8)
        return i, ne.softmax_cross_entropy(self.x[rows], self.labels[rows]), os.getpid()


def test_fork_dataloader_workers_after_a_parent_call():
    torch = pytest.importorskip("torch")
    _require_fork_safe_layer()
    x, labels, _ = _parent_results()
    want = ne.softmax_cross_entropy(x, labels)  # the parent has run the kernels
    loader = torch.utils.data.DataLoader(
        _RowsDataset(x, labels),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=TIMEOUT,  # a hung worker raises instead of hanging
    )
    t0 = time.perf_counter()
    items = list(loader)
    print(f"DataLoader, 2 fork workers, 8 items: {time.perf_counter() - t0:.2f} s")
    assert [int(i) for i, _, _ in items] == list(range(8))
    assert {int(pid) for _, _, pid in items} - {os.getpid()}, "the items came from workers"
    got = np.concatenate([np.asarray(ce) for _, ce, _ in items])
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


# --------------------------------------------------------------------------------------------------
# concurrent threads on each layer

LAYER_PROBE = (
    WORK
    + r"""
import json, os, sys
import numba
from numbaent import _threads
try:
    layer = _threads.threading_layer()
except (ValueError, ImportError) as exc:  # numba cannot load the requested layer here
    print(json.dumps({"unavailable": str(exc).splitlines()[0]}))
    sys.exit(0)
tasks = make_tasks()
ref = serial(tasks)
bad = [k for k, fp in concurrent(tasks) if fp != ref[k]]
# fork after the threads ran, and a call in the child
pid = os.fork()
if pid == 0:
    os._exit(0 if serial(tasks) == ref else 2)
_, status = os.waitpid(pid, 0)
print(json.dumps({"layer": layer, "describe": _threads.describe(), "ref": ref, "bad": bad,
                  "fork_child": os.waitstatus_to_exitcode(status),
                  "tbb_loaded": _threads.tbb_path is not None,
                  "serialised": type(_threads._cpu).__name__ == "_Serialised"}))
"""
)


@pytest.mark.parametrize("layer", ["tbb", "omp", "workqueue"])
def test_concurrent_threads_bit_identical_on_each_layer(layer):
    res = last_json(run_python(LAYER_PROBE, NUMBA_THREADING_LAYER=layer))
    if "unavailable" in res:
        pytest.skip(f"numba cannot load the {layer} layer here: {res['unavailable']}")
    assert res["layer"] == layer, res  # the user's choice is kept
    assert res["bad"] == [], f"{layer}: concurrent results differ from serial: {res['bad']}"
    assert sorted(res["ref"]) == TASKS, res["ref"]  # every task ran
    assert res["serialised"] == (layer == "workqueue"), res
    if layer == "omp":
        assert not res["tbb_loaded"], "tbb loaded although the user chose omp"
        if "GNU" in res["describe"]:  # the hazard numbaent avoids by default, and reports
            assert "NOT fork-safe" in res["describe"], res["describe"]
            assert res["fork_child"] != 0, "a GNU OpenMP fork child was expected to be killed"
    else:
        assert res["fork_child"] == 0, res


WORKQUEUE_NO_LOCK = (
    WORK
    + r"""
import time
from numbaent import _threads
from numbaent._kernels import cpu
assert _threads.threading_layer() == "workqueue"
_threads._cpu = cpu  # the raw backend, without numbaent's lock
tasks = make_tasks()
end = time.perf_counter() + 20
while time.perf_counter() < end:
    concurrent(tasks)
print("no abort")
"""
)


def test_workqueue_without_the_lock_aborts():
    """The control for the workqueue case above: the same concurrent calls on the raw backend
    (numbaent's lock bypassed) abort the process, so that test does exercise the lock."""
    r = run_python(WORKQUEUE_NO_LOCK, NUMBA_THREADING_LAYER="workqueue")
    assert r.returncode != 0 and "no abort" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "workqueue" in r.stderr and (
        "Concurrent access" in r.stderr or "Nested parallel" in r.stderr
    ), r.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# which layer numbaent selects

DEFAULT_PROBE = (
    WORK
    + r"""
import json, numba
from numbaent import _threads
tasks = make_tasks()
ref = serial(tasks)
print(json.dumps({"layer": numba.threading_layer(), "priority": numba.config.THREADING_LAYER_PRIORITY,
                  "config_layer": numba.config.THREADING_LAYER, "ref": ref,
                  "bad": [k for k, fp in concurrent(tasks) if fp != ref[k]],
                  "describe": _threads.describe(),
                  "serialised": type(_threads._cpu).__name__ == "_Serialised"}))
"""
)

# TBB made unloadable before numbaent and numba load: what a machine without the tbb wheel sees
HIDE_TBB = r"""
import ctypes
_CDLL = ctypes.CDLL
class _NoTBB(_CDLL):
    def __init__(self, name, *args, **kwargs):
        if name is not None and "libtbb" in str(name):
            raise OSError(f"{name}: hidden by the test")
        super().__init__(name, *args, **kwargs)
ctypes.CDLL = _NoTBB
"""


def test_default_layer_is_tbb():
    if not sys.platform.startswith("linux"):
        pytest.skip("numbaent loads the tbb wheel's library on Linux only")
    if not _tbb_installed():
        pytest.skip("the tbb package is not installed (a dependency on Linux x86-64)")
    res = last_json(run_python(DEFAULT_PROBE))
    assert res["layer"] == "tbb", res
    assert res["config_layer"] == "default"  # selected through the priority, not forced
    assert res["describe"] == "tbb (fork-safe, thread-safe)"
    assert not res["serialised"] and res["bad"] == [] and sorted(res["ref"]) == TASKS


def test_without_tbb_the_fallback_is_workqueue_with_the_lock():
    if not sys.platform.startswith("linux"):
        pytest.skip("the workqueue-before-omp fallback applies on Linux (GNU OpenMP) only")
    res = last_json(run_python(HIDE_TBB + DEFAULT_PROBE))
    assert res["layer"] == "workqueue", res
    assert res["priority"] == ["tbb", "workqueue", "omp"]
    assert res["serialised"] and res["bad"] == [] and sorted(res["ref"]) == TASKS
    assert "tbb not loaded" in res["describe"], res["describe"]


@pytest.mark.parametrize(
    "how",
    [
        "env priority",
        "config layer",
        "config priority",
    ],
)
def test_a_users_choice_is_kept(how):
    pre, env = "", {}
    if how == "env priority":
        env["NUMBA_THREADING_LAYER_PRIORITY"] = "workqueue tbb omp"
    elif how == "config layer":
        pre = "import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n"
    else:
        pre = "import numba\nnumba.config.THREADING_LAYER_PRIORITY = ['workqueue', 'omp', 'tbb']\n"
    code = pre + (
        "import json, numpy as np, numba, numbaent\n"
        "numbaent.entropy(np.full((4, 8), 0.125))\n"
        "print(json.dumps(numba.threading_layer()))\n"
    )
    assert last_json(run_python(code, **env)) == "workqueue"


def test_numba_thread_count_still_applies(reference):
    """``numba.set_num_threads`` (thread-local) still works on the layer in use: the thread count
    it sets is the one the kernels see, and the bits do not change with it."""
    tasks = make_tasks()
    n = numba.config.NUMBA_NUM_THREADS
    try:
        for k in sorted({1, n}):
            numba.set_num_threads(k)
            assert numba.get_num_threads() == k
            assert serial(tasks) == reference, k
    finally:
        numba.set_num_threads(n)


# --------------------------------------------------------------------------------------------------
# numbaent info


def test_info_reports_the_layer_in_use(capsys):
    from numbaent import cli

    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    layer = numba.threading_layer()
    assert info["numba_threading_layer"].split()[0] == layer, info
    assert info["numba_threading_layer"] == _threads.describe()


def test_info_in_a_fresh_process_matches_the_kernels():
    """``numbaent info`` launches the layer itself (no kernel ran yet): it is the one a kernel
    call gets in a fresh process, tbb where the tbb wheel is installed."""
    r = run_python("from numbaent.cli import main; raise SystemExit(main(['info']))")
    assert r.returncode == 0, r.stderr
    line = next(s for s in r.stdout.splitlines() if s.startswith("numba_threading_layer"))
    shown = line.split(None, 1)[1]
    kernel = last_json(
        run_python(
            "import json, numpy as np, numba, numbaent\n"
            "numbaent.entropy(np.full((4, 8), 0.125))\n"
            "print(json.dumps(numba.threading_layer()))\n"
        )
    )
    assert shown.split()[0] == kernel, (shown, kernel)
    if sys.platform.startswith("linux") and _tbb_installed():
        assert shown == "tbb (fork-safe, thread-safe)", shown


# --------------------------------------------------------------------------------------------------
# soak


@pytest.mark.slow
def test_soak_threads_bit_identical():
    """8 threads, each calling softmax_cross_entropy / softmax_entropy / score on fixed inputs
    for $NUMBAENT_SOAK_S seconds (default 60), every result compared with the serial one."""
    seconds = float(os.environ.get("NUMBAENT_SOAK_S", "60"))
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((256, 4000)) * 4).astype(np.float32)
    y = rng.integers(0, 4000, 256)
    xs = (rng.standard_normal((4096, 10)) * 4).astype(np.float32)
    ys = rng.integers(0, 10, 4096)
    teacher = x[::-1].copy()
    calls = [
        lambda: ne.softmax_cross_entropy(x, y),
        lambda: ne.softmax_cross_entropy(xs, ys),
        lambda: ne.softmax_entropy(x),
        lambda: ne.score(x, y, teacher_logits=teacher, temperature=2.0),
    ]
    ref = [fingerprint(f()) for f in calls]
    assert ref == [fingerprint(f()) for f in calls]
    counts = [0] * 8
    mismatches = []
    errors = []
    end_at = []
    start = threading.Barrier(8, action=lambda: end_at.append(time.perf_counter() + seconds))

    def worker(t):
        try:
            start.wait()
            while time.perf_counter() < end_at[0]:
                i = (counts[t] + t) % len(calls)
                if fingerprint(calls[i]()) != ref[i]:
                    mismatches.append((t, i, counts[t]))
                counts[t] += 1
        except BaseException as exc:
            errors.append((t, repr(exc)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + TIMEOUT)
    print(
        f"soak {seconds:g} s on {_threads.describe()}: calls per thread {counts}, "
        f"total {sum(counts)}, mismatches {len(mismatches)}"
    )
    assert not errors, errors
    assert not any(th.is_alive() for th in threads), "a soak thread did not finish"
    assert mismatches == [], mismatches[:10]
    assert min(counts) > 0, counts
