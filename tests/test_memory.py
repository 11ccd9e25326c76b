"""Peak memory: a call on a 0.5 GB input adds less than 5% of the input size (25 MB) to the peak RSS.

Nothing of size rows x classes may be allocated (no softmax, no float32 copy of a half input, no
contiguous copy of a contiguous input). Each measurement runs in a fresh interpreter, so allocator
caches and earlier tests cannot hide an allocation: the child builds the input in place (no float64
temporaries), warms the kernels up on a small array of the same types (JIT / cache load, thread
pool start), resets the peak (``/proc/self/clear_refs`` = 5; else the peak so far is the baseline)
and reports ``VmHWM`` after the call minus the RSS before it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)"
)

INPUT_BYTES = 512 * 2**20  # 0.5 GB of input in total (all arrays of one call together)
LIMIT = 0.05  # of the input size

CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys
    import numpy as np
    import ml_dtypes
    import numbaent as ne

    case, total = sys.argv[1], int(sys.argv[2])
    DT = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": ml_dtypes.bfloat16}

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def fill(a, kind, seed):
        # chunk by chunk from one random block of 1M + 7 values: no N x C temporary
        v = np.random.default_rng(seed).random((1 << 20) + 7)
        v = ((v * 8 - 4) if kind == "logits" else (v + 1e-3)).astype(a.dtype)
        flat = a.reshape(-1)
        for k, lo in enumerate(range(0, flat.size, 1 << 20)):
            hi = min(lo + (1 << 20), flat.size)
            flat[lo:hi] = v[k % 7 : k % 7 + hi - lo]

    def arrays(name, dtype, rows, c, seed=0):
        a = np.empty((rows, c), DT[dtype])
        fill(a, "probs" if name in ("p", "q") else "logits", seed)
        return a

    def call(case, rows, c):
        # returns a thunk running the call on inputs of `rows` rows (built now)
        if case.startswith("softmax_cross_entropy"):
            dt = case.split(":")[1]
            x = arrays("x", dt, rows, c)
            y = (np.arange(rows, dtype=np.int64) * 7919) % c
            return lambda: ne.softmax_cross_entropy(x, y, reduction="mean", backend="cpu")
        if case.startswith("score"):
            dt = case.split(":")[1]
            x = arrays("x", dt, rows, c)
            t = arrays("t", dt, rows, c, seed=1)
            y = (np.arange(rows, dtype=np.int64) * 7919) % c
            return lambda: ne.score(x, y, teacher_logits=t, temperature=2.0, backend="cpu")
        if case.startswith("entropy"):
            p = arrays("p", case.split(":")[1], rows, c)
            return lambda: ne.entropy(p, normalize=True, backend="cpu")
        if case.startswith("kl_divergence") or case.startswith("cross_entropy"):
            name, dt = case.split(":")
            p = arrays("p", dt, rows, c)
            q = arrays("q", dt, rows, c, seed=1)
            return lambda: getattr(ne, name)(p, q, normalize=True, backend="cpu")
        if case.startswith("softmax_entropy"):
            x = arrays("x", case.split(":")[1], rows, c)
            return lambda: ne.softmax_entropy(x, backend="cpu")
        if case.startswith("softmax:"):  # the control: the result is as big as the input
            x = arrays("x", case.split(":")[1], rows, c)
            return lambda: ne.softmax(x, backend="cpu")
        if case.startswith("softmax_kl_divergence"):
            dt = case.split(":")[1]
            a = arrays("x", dt, rows, c)
            b = arrays("t", dt, rows, c, seed=1)
            return lambda: ne.softmax_kl_divergence(a, b, temperature=2.0, backend="cpu")
        raise ValueError(case)

    C = 1000
    n_inputs = 2 if case.split(":")[0] in (
        "score", "kl_divergence", "cross_entropy", "softmax_kl_divergence") else 1
    itemsize = np.dtype(DT[case.split(":")[1]]).itemsize
    rows = total // (n_inputs * C * itemsize)

    warm = call(case, 64, C)
    warm()
    warm()
    del warm
    big = call(case, rows, C)
    input_bytes = n_inputs * rows * C * itemsize
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    before_rss = status("VmRSS")
    before_hwm = status("VmHWM")
    res = big()
    after_hwm = status("VmHWM")
    base = before_rss if reset else before_hwm
    print(json.dumps({
        "case": case,
        "input_bytes": input_bytes,
        "added_bytes": max(after_hwm - base, 0),
        "reset": reset,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))
    """
)

CASES = [
    "softmax_cross_entropy:f32",
    "score:f32",
    "entropy:f32",
    "kl_divergence:f32",
    "cross_entropy:f32",
    # half inputs are read in place (a float32 copy would add 2x the input)
    "softmax_cross_entropy:bf16",
    "softmax_entropy:f16",
    "softmax_kl_divergence:f64",
]


def measure(case: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(INPUT_BYTES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_peak_rss_added_by_a_call_is_small(case):
    r = measure(case)
    mb = r["added_bytes"] / 2**20
    limit = LIMIT * r["input_bytes"]
    print(f"{case}: +{mb:.1f} MB peak RSS on {r['input_bytes'] / 2**20:.0f} MB of input")
    assert r["input_bytes"] >= 0.95 * INPUT_BYTES
    assert r["added_bytes"] < limit, (
        f"{case}: the call added {mb:.1f} MB to the peak RSS "
        f"(limit {limit / 2**20:.1f} MB = {LIMIT:.0%} of the input)"
    )


def test_the_probe_sees_a_large_allocation():
    """Control: softmax returns an array as large as its input, which the probe must see."""
    r = measure("softmax:f32")
    assert r["added_bytes"] > 0.9 * r["input_bytes"], r
