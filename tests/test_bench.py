"""bench: a --quick run's report says it is a smoke test, and shows no target as missed."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

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
