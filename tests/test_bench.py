"""bench: a --quick run's report says it is a smoke test, and shows no target as missed; the
peers' score formulas give every field numbaent.score gives, and the check sees them; the
linear_score group (bench/linear.py): its workloads and selection, the chunked matmul doing
linear_score's products, its check, its memory subprocess and its report."""

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


# ---------------------------------------------------------------------------------------------
# the linear_score group (bench/linear.py)


def test_linear_workloads_and_their_selection():
    linear = _bench("linear")
    full = linear.all_workloads()
    assert [(w.rows, w.dim, w.classes) for w in full] == [(4096, 2048, 32000), (4096, 2048, 128000)]
    assert [w.name for w in full] == [
        "linear_score f32 4096x2048 V=32000",
        "linear_score f32 4096x2048 V=128000",
    ]
    assert full[1].flops == 2 * 4096 * 128000 * 2048
    assert full[1].logits_bytes == 4096 * 128000 * 4
    assert full[1].target_bytes == 64 * 2**20 + 256 * 4096
    quick = linear.all_workloads(quick=True)
    assert all(w.rows * w.classes * w.dim < 10**8 for w in quick)  # a smoke test's sizes
    assert [w.nominal_name for w in quick] == [w.name for w in full]
    # a full run leaves the group out, --quick and --linear take it, --only picks by name
    assert linear.select(False, None, False, False) == []
    assert linear.select(True, None, False, False) == quick
    assert linear.select(False, None, True, False) == full
    assert linear.select(False, ["linear"], False, False) == full
    assert linear.select(True, ["V=128000"], False, False) == quick[1:]
    assert linear.select(False, ["entropy"], True, False) == []
    assert linear.select(True, None, True, True) == []
    cli = _bench("cli")
    assert cli.parse_args([]).linear_reps == linear.DEFAULT_REPS
    assert cli.parse_args(["--quick"]).linear_reps == 1
    wl = linear.LinearWorkload(5, 3, 11, (5, 3, 11))
    got = wl.make_inputs()  # asserts its bytes equal input_bytes
    assert [(k, a.shape, a.dtype) for k, a in got.items()] == [
        ("hidden", (5, 3), np.float32),
        ("weight", (11, 3), np.float32),
        ("labels", (5,), np.int64),
    ]
    assert wl.input_bytes == 5 * 3 * 4 + 11 * 3 * 4 + 5 * 8


def test_chunked_matmul_does_linear_scores_products(monkeypatch):
    import numbaent.linear as nl

    linear = _bench("linear")
    rng = np.random.default_rng(1)
    h = rng.standard_normal((37, 8), dtype=np.float32)
    w = rng.standard_normal((50, 8), dtype=np.float32)
    assert linear.plan(h, w) == nl._plan(37, 50, h, w, None, np.float32, None)
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append((a.shape, b.shape, out.shape))
        return real(a, b, out=out)

    monkeypatch.setattr(nl, "_plan", lambda *a: (16, 20))  # 3 row chunks x 3 class chunks
    run = linear.chunked_matmul(h, w)
    monkeypatch.setattr(np, "matmul", spy)
    run()
    assert seen == [((r, 8), (8, c), (r, c)) for r in (16, 16, 5) for c in (20, 20, 10)]
    monkeypatch.setattr(np, "matmul", real)
    wl = linear.LinearWorkload(37, 8, 50, (37, 8, 50))
    assert linear.plan_of(wl) == (16, 20)


def test_linear_contenders_agree_with_the_reference_and_a_wrong_one_does_not():
    impls, linear = _bench("impls"), _bench("linear")
    wl = linear.LinearWorkload(40, 24, 700, (40, 24, 700))
    inputs = wl.make_inputs(2)
    idx, ref, window = linear.reference(wl, inputs, k=16)
    assert idx.size == 16 and set(ref) >= {"cross_entropy", "argmax", "correct", "rank"}
    assert (window[0] <= ref["rank"]).all() and (ref["rank"] <= window[1]).all()
    ran = set()
    for impl in linear.IMPLS:
        try:
            out = impl.prepare(wl, inputs)()
        except impls.NotInstalled:
            continue
        ran.add(impl.key)
        if not impl.checked:
            assert out is None
            continue
        ok, err, note = linear.check(out, idx, ref, window)
        assert ok, (impl.key, note)
    assert {"numbaent_cpu", "matmul_limit"} <= ran
    sc = _bench("runner").to_host_fields(linear.BY_KEY["numbaent_cpu"].prepare(wl, inputs)())[0]
    for name, bump in (("cross_entropy", 0.5), ("rank", 3), ("argmax", 1)):
        bad = {k: v.copy() for k, v in sc.items()}
        bad[name][idx[3]] += bump
        ok, _, note = linear.check(bad, idx, ref, window)
        assert not ok and name in note, (name, note)
    bad = {k: v.copy() for k, v in sc.items()}
    bad["correct"][idx] = ~bad["correct"][idx]
    assert "correct" in linear.check(bad, idx, ref, window)[2]


def test_linear_memory_is_measured_in_a_fresh_subprocess():
    linear = _bench("linear")
    wl = linear.LinearWorkload(64, 64, 9000, (64, 64, 9000))
    m = linear.measure_memory(wl, "matmul_limit", 0, timeout_s=300)
    assert m["method"] in ("VmHWM after clear_refs", "ru_maxrss")
    rows, vc = linear.plan_of(wl)
    if m["method"].startswith("VmHWM"):
        # the scratch it fills is in the peak, and nothing near the materialised logits' twice
        assert rows * vc * 4 <= m["peak_above_inputs"] < rows * vc * 4 + 16 * 2**20


def test_linear_report_gives_the_ratio_and_the_targets():
    linear = _bench("linear")
    wl = linear.all_workloads()[1]

    def res(key, times, peak):
        r = linear.LinearResult(key, "ok", times=times, check="ok")
        r.memory = {"peak_above_inputs": peak, "upper_bound": False, "method": "VmHWM"}
        return r

    run = [
        (
            wl,
            {
                "numbaent_cpu": res("numbaent_cpu", [11.0, 12.0], 40 * 2**20),
                "matmul_limit": res("matmul_limit", [10.0, 11.5], 36 * 2**20),
                "torch": res("torch", [13.0, 13.0], wl.logits_bytes * 2),
            },
        )
    ]
    assert linear.ratios(run[0][1]) == (1.1, (1.1 + 12 / 11.5) / 2)
    md = "\n".join(linear.markdown(run, linear.IMPLS))
    assert "| **1.100**; 1.072 | <= 1.15: met | 40.0 MiB | <= 65 MiB: met |" in md
    assert f"{wl.flops / 11e9:.1f}" in md and "| 1.300 |" in md  # GFLOP/s; torch over matmul
    run[0][1]["numbaent_cpu"].times = [12.0]
    run[0][1]["numbaent_cpu"].memory["peak_above_inputs"] = 70 * 2**20
    md = "\n".join(linear.markdown(run, linear.IMPLS))
    assert "<= 1.15: MISSED" in md and "<= 65 MiB: MISSED" in md
    quick = "\n".join(linear.markdown(run, linear.IMPLS, quick=True))
    assert "MISSED" not in quick and "not evaluated (--quick)" in quick
    report = _bench("report")
    doc = json.loads(report.to_json([], [], {}, {"quick": False}, [], run))
    assert doc["linear"][0]["numbaent_over_matmul"]["of_mins"] == 1.2
    assert linear.failures(run) == []
    run[0][1]["numbaent_cpu"].check = "MISMATCH"
    assert len(linear.failures(run)) == 1
