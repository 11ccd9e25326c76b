"""bench: a --quick run's report says it is a smoke test, and shows no target as missed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench(name):
    """bench.<name>, imported from the repository root (bench is not an installed package)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"bench.{name}")
    finally:
        sys.path.remove(str(ROOT))


def test_quick_report_is_marked_a_smoke_test(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # one workload and one paired ratio (the pair carries a target: "<= 1.2")
    argv = ["--quick", "--no-peers", "--no-gpu", "--only", "entropy f32", "--only", "pair score"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    smoke = _bench("report").SMOKE_TEST
    assert "not timings" in smoke
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["# numbaent benchmark", "", f"**{smoke}**"]  # at the top
    pair_rows = [ln for ln in lines if ln.startswith("| pair score/softmax_kl")]
    assert len(pair_rows) == 1
    assert "| not evaluated (--quick; <= 1.2 at 4096x32000) |" in pair_rows[0]
    assert "FAIL" not in proc.stderr
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert list(doc)[:3] == ["schema", "smoke_test", "note"]
    assert doc["smoke_test"] is True and doc["note"] == smoke
    assert (tmp_path / "latest.md").read_text().startswith("\n".join(lines[:3]))


def test_full_size_report_shows_the_targets():
    pairs, report = _bench("pairs"), _bench("report")
    pr = pairs.PairResult(pairs.PAIRS[1], 4096, 32000, times_a=[1.0], times_b=[1.5])
    full = "\n".join(pairs.markdown([pr]))
    assert "| <= 1.2 |" in full and "not evaluated" not in full
    assert "not evaluated" in "\n".join(pairs.markdown([pr], quick=True))
    doc = json.loads(report.to_json([], [], {}, {"quick": False}, [pr]))
    assert doc["smoke_test"] is False and doc["note"] is None


def test_roofline_yardsticks_compute_what_they_time():
    roofline = _bench("roofline")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 70001)).astype(np.float32)
    p = rng.random((5, 3000)).astype(np.float32) + np.float32(0.5)
    y = rng.integers(0, 70001, 7)
    xor = [np.bitwise_xor.reduce(w) for w in (x.reshape(-1).view(np.int32), y.view(np.int32))]
    assert roofline.prepare("read", {"x": x, "y": y})() == float(xor[0]) + float(xor[1])
    ref = np.exp(x.astype(np.float64) - 10).sum() + float(xor[1])
    assert abs(roofline.prepare("expsum", {"x": x, "y": y})() - ref) <= 1e-5 * abs(ref)
    ref = np.log(p.astype(np.float64)).sum()
    assert abs(roofline.prepare("logsum", {"p": p})() - ref) <= 1e-4 * abs(ref)
    bf = x.astype(ml_dtypes.bfloat16)
    ref = np.exp(bf.astype(np.float64) - 10).sum()
    assert abs(roofline.prepare("expsum", {"x": bf})() - ref) <= 1e-5 * abs(ref)
    assert roofline.limit_keys("ce") == ("read_limit", "expsum_limit")
    assert roofline.limit_keys("entropy") == ("read_limit", "logsum_limit")


def test_report_gives_the_fraction_of_the_limit():
    report, runner, workloads = _bench("report"), _bench("runner"), _bench("workloads")
    wl = workloads.Workload("entropy", "entropy", "float32", 10, 10, 10, 10)

    def res(t):
        return runner.Result("x", "ok", times=[t])

    got = report.limit_fraction(
        wl,
        {
            "numbaent_cpu": res(2.0),
            "read_limit": res(1.0),
            "logsum_limit": res(1.5),
            "expsum_limit": res(9.0),
        },
    )
    assert got == (0.75, wl.input_bytes / 1.5 / 1e9)
    assert report.limit_fraction(wl, {"numbaent_cpu": res(2.0), "read_limit": res(1.0)}) is None
