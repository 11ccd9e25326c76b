"""bench: a --quick run's report says it is a smoke test, and shows no target as missed; the
peers' score formulas give every field numbaent.score gives, and the check sees them."""

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
    argv = ["--quick", "--no-peers", "--no-gpu", "--only", "entropy f32"]
    argv += ["--only", "pair score/softmax_kl"]
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


def test_score_pairs_and_their_note():
    pairs = _bench("pairs")
    sel = pairs.select(False, ["pair score/softmax_ce"])
    assert [(p.name, r, c) for p, r, c in sel] == [
        ("pair score/softmax_ce", 4096, 32000),
        ("pair score/softmax_ce", 65536, 1000),
    ]
    ce = sel[0][0]
    assert ce.target == "<= 1.15 x today's score (see the note)"
    assert ce.statement == "score time over softmax_cross_entropy's"
    (teacher,) = [p for p in pairs.PAIRS if p.name == "pair score+teacher/score"]
    assert teacher.full == (4096, 32000) and not teacher.target
    results = [
        pairs.PairResult(ce, 4096, 32000, times_a=[1.0], times_b=[1.1]),
        pairs.PairResult(sel[1][0], 65536, 1000, times_a=[1.0], times_b=[1.1]),
        pairs.PairResult(teacher, 4096, 32000, times_a=[1.0], times_b=[1.5]),
    ]
    md = pairs.markdown(results)
    assert sum(ln.startswith("- Note (pair score/softmax_ce)") for ln in md) == 1  # once
    assert pairs.SCORE_BEFORE_FIELDS in "\n".join(md)
    (row,) = [ln for ln in md if ln.startswith("| pair score+teacher/score")]
    assert "| **1.50** |" in row and "— (none)" in row
    # the pairs' callables run, on a small shape
    import numbaent

    for p in (ce, teacher):
        for f in p.make(numbaent, np.random.default_rng(0), 8, 50):
            f()


def test_score_workloads_read_what_their_formula_says():
    workloads = _bench("workloads")
    wls = {(w.kind, w.nominal_rows, w.nominal_cols): w for w in workloads.all_workloads()}
    for shape in ((4096, 32000), (65536, 1000)):
        assert wls[("score", *shape)].name == f"score f32 {shape[0]}x{shape[1]}"
    assert wls[("score_teacher", 4096, 32000)].op == "score+teacher"
    for kind, names in (("score", ["logits", "labels"]), ("score_teacher", None)):
        wl = workloads.Workload("score", kind, "float32", 6, 9, 6, 9)
        got = wl.make_inputs()  # asserts its bytes equal input_bytes
        assert list(got) == (names or ["logits", "labels", "teacher"])
        assert wl.input_bytes == (1 if names else 2) * 6 * 9 * 4 + 6 * 8
    assert _bench("roofline").limit_keys("score") == ("read_limit", "expsum_limit")
    assert _bench("roofline").limit_keys("score_teacher") == ("read_limit", "expsum_limit")


def _tied_logits(rng, r, c):
    """Logits on a coarse grid (many exact ties, at the top too), labels anywhere."""
    x = rng.integers(-4, 5, size=(r, c)).astype(np.float32)
    x[0, :] = 2.0  # one row all tied
    return x, rng.integers(0, c, size=r, dtype=np.int64)


def test_every_peer_gives_every_score_field_and_the_check_sees_them():
    import numbaent

    impls, runner, workloads = _bench("impls"), _bench("runner"), _bench("workloads")
    rng = np.random.default_rng(5)
    x, y = _tied_logits(rng, 40, 23)
    t = rng.standard_normal((40, 23), dtype=np.float32)
    fields = {"logsumexp", "entropy", "argmax", "confidence", "margin", "cross_entropy"}
    fields |= {"correct", "rank", "brier"}
    for kind, inputs in (
        ("score", {"logits": x, "labels": y}),
        ("score_teacher", {"logits": x, "labels": y, "teacher": t}),
    ):
        wl = workloads.Workload("score", kind, "float32", 40, 23, 40, 23)
        ref = runner._reference64(wl, inputs)
        window = runner.rank_window(wl, inputs)
        want = fields | ({"kl_divergence"} if kind == "score_teacher" else set())
        assert set(ref) == want
        sc = numbaent.score(x, y, teacher_logits=inputs.get("teacher"), backend="numpy")
        assert np.array_equal(sc.rank, ref["rank"])  # the reference counts ties as numbaent does
        assert np.array_equal(window[0] <= ref["rank"], np.ones(40, bool))
        strict = window[0]
        assert (strict != ref["rank"]).any()  # this input has ties at a lower index
        for impl in impls.CPU_IMPLS:
            if impl.role not in ("numbaent", "oracle", "peer"):
                continue
            try:
                fn = impl.prepare(wl, inputs)
            except impls.NotInstalled:
                continue
            got, half = runner.to_host_fields(fn())
            assert set(got) == want, (impl.key, set(got) ^ want)
            ok, err, note = runner.compare(got, ref, runner.RTOL, window)
            assert ok, (impl.key, note)
            if impl.role == "peer":  # peers count strictly: only the tie window lets them pass
                assert np.array_equal(got["rank"], strict), impl.key
                assert "rank" in runner.compare(got, ref, runner.RTOL)[2]
        # a wrong value in any new field is a mismatch
        for name, bump in (("confidence", 0.1), ("margin", 0.1), ("brier", 0.1), ("rank", 1)):
            bad = dict(ref)
            bad[name] = ref[name].copy()
            row = int(np.argmax(window[0] == window[1]))  # a row without ties
            bad[name][row] += bump
            ok, _, note = runner.compare(bad, ref, runner.RTOL, window)
            assert not ok and name in note, (name, note)


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
