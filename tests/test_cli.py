"""Tests of the ``numbaent`` command line (numbaent/cli.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

import numbaent
from numbaent import cli
from numbaent.cli import load_array, main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits_logits.npz"
FIELDS = ("logsumexp", "entropy", "argmax", "cross_entropy", "correct", "kl_divergence")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def run(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def digits():
    with np.load(DIGITS) as z:
        return z["logits"], z["labels"], z["teacher_logits"]


def assert_summary_close(got, want, rtol=1e-6, atol=1e-7):
    assert set(got) == set(want), (got, want)
    for k, w in want.items():
        g = got[k]
        if isinstance(w, dict):  # top_k_accuracy: {k: fraction}
            assert isinstance(g, dict), k
            assert_summary_close(g, w, rtol, atol)
        elif w is None:
            assert g is None, k
        elif isinstance(w, (bool, np.bool_)) or k in ("rows", "ignored"):
            assert int(g) == int(w), k
        elif math.isnan(float(w)):
            assert g is None or math.isnan(float(g)), k
        else:
            assert g is not None, k
            assert math.isclose(float(g), float(w), rel_tol=rtol, abs_tol=atol), (k, g, w)


def table_values(out, keys):
    """The summary values the table prints, by key (``top_k_accuracy``: one row per k, its k in
    the third column, ``k=1``)."""
    values = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == "top_k_accuracy" and parts[1] != "-":
            values.setdefault(parts[0], {})[int(parts[2].removeprefix("k="))] = parts[1]
        elif parts and parts[0] in keys:
            values[parts[0]] = parts[1]
    return values


def assert_table_matches(out, want):
    values = table_values(out, want)
    assert set(values) == set(want)
    for k, w in want.items():
        if isinstance(w, dict):
            assert set(values[k]) == set(w), k
            for kk, ww in w.items():
                assert math.isclose(float(values[k][kk]), ww, rel_tol=1e-5, abs_tol=1e-6), k
        elif w is None:
            assert values[k] == "-", k
        else:
            assert math.isclose(float(values[k]), float(w), rel_tol=1e-5, abs_tol=1e-6), k


def score_json(capsys, *argv):
    """The summary keys of ``score --json`` (its ``context``: doc["context"])."""
    rc, out, err = run(capsys, "score", *argv, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    ctx = doc.pop("context")
    # a computed NaN / infinity is a string, null is "not computed"; top_k_accuracy an object
    doc = {k: _number(v) for k, v in doc.items()}
    return _Summary(doc, ctx)


def _number(v):
    """A JSON summary value as the Python one: "NaN" / "Infinity" floats, {"1": ...} {1: ...}."""
    if isinstance(v, dict):
        return {int(k): _number(x) for k, x in v.items()}
    return float(v) if isinstance(v, str) else v


class _Summary(dict):
    """The summary dict of ``score --json``, with its ``context`` beside it."""

    def __init__(self, d, context):
        super().__init__(d)
        self.context = context

    def __getitem__(self, k):
        return self.context if k == "context" else super().__getitem__(k)


def direct(logits, labels=None, teacher=None, **kw):
    return numbaent.score(logits, labels, teacher_logits=teacher, **kw)


def per_row_fields(scores):
    """The public per-row array fields of a Scores object (what ``-o`` writes)."""
    n = np.shape(scores.logsumexp)
    names = {
        f.name
        for f in dataclasses.fields(scores)
        if not f.name.startswith("_")
        and getattr(scores, f.name) is not None
        and np.shape(getattr(scores, f.name)) == n
    }
    assert {f for f in FIELDS if getattr(scores, f) is not None} <= names
    return names


@pytest.fixture
def ignored_files(tmp_path):
    """Digits data as separate .npy files, with ignored rows (some filling whole 7-row chunks)."""
    logits, labels, teacher = digits()
    labels = labels.copy()
    labels[:14] = -100  # the first two chunks of 7 rows are entirely ignored
    labels[100:140:3] = -100
    labels[200:210] = 4  # some rows of class 4 (ignored with --ignore-index 4)
    paths = {}
    for name, arr in (("logits", logits), ("labels", labels), ("teacher", teacher)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths, (logits, labels, teacher)


# --------------------------------------------------------------------------------------------------
# the example file
# --------------------------------------------------------------------------------------------------


def test_example_file_layout():
    with np.load(DIGITS) as z:
        assert set(z.files) == {"logits", "labels", "teacher_logits"}
        logits, labels, teacher = z["logits"], z["labels"], z["teacher_logits"]
    assert logits.dtype == np.float32 and teacher.dtype == np.float32
    assert labels.dtype == np.int64
    assert logits.ndim == 2 and logits.shape[1] == 10
    assert teacher.shape == logits.shape and labels.shape == logits.shape[:1]
    assert labels.min() >= 0 and labels.max() < 10
    assert not np.array_equal(logits.argmax(1), teacher.argmax(1))  # two different models
    assert DIGITS.stat().st_size < 200_000


# --------------------------------------------------------------------------------------------------
# score: values
# --------------------------------------------------------------------------------------------------


def test_score_json_matches_direct(capsys):
    logits, labels, teacher = digits()
    got = score_json(capsys, DIGITS)
    want = direct(logits, labels, teacher).summary()
    assert_summary_close(got, want)
    assert got["rows"] == len(labels)
    assert got["kl_divergence"] is not None and got["kl_divergence"] > 0


def test_score_table_matches_direct(capsys):
    logits, labels, teacher = digits()
    rc, out, err = run(capsys, "score", DIGITS)
    assert rc == 0 and err == ""
    want = direct(logits, labels, teacher).summary()
    assert_table_matches(out, want)
    # aligned: the value column starts at the same offset on every line
    starts = {re.match(r"\s*\S+\s+", line).end() for line in out.splitlines()[1:]}
    assert len(starts) == 1


@pytest.mark.parametrize(
    "opts",
    [
        [],
        ["--base", "2"],
        ["--base", "10", "--temperature", "2.5"],
        ["--ignore-index", "4"],
        ["--temperature", "0.5", "--ignore-index", "4", "--base", "2"],
    ],
)
def test_chunked_equals_unchunked(capsys, ignored_files, tmp_path, opts):
    paths, (logits, labels, teacher) = ignored_files
    kw = {}
    if "--base" in opts:
        kw["base"] = float(opts[opts.index("--base") + 1])
    if "--temperature" in opts:
        kw["temperature"] = float(opts[opts.index("--temperature") + 1])
    if "--ignore-index" in opts:
        kw["ignore_index"] = int(opts[opts.index("--ignore-index") + 1])
        labels = np.where(labels == -100, kw["ignore_index"], labels)
        np.save(paths["labels"], labels)

    files = [paths["logits"], "--labels", paths["labels"], "--teacher", paths["teacher"]]
    whole = score_json(capsys, *files, *opts)
    chunked = score_json(capsys, *files, *opts, "--chunk-rows", "7")
    assert_summary_close(chunked, whole, rtol=1e-6)
    want = direct(logits, labels, teacher, **kw).summary()
    assert_summary_close(whole, want)
    assert whole["ignored"] == int(np.count_nonzero(labels == kw.get("ignore_index", -100)))
    assert whole["ignored"] >= 14


def test_chunked_without_labels(capsys):
    logits, _, teacher = digits()
    a = score_json(capsys, f"{DIGITS}:logits", "--teacher", f"{DIGITS}:teacher_logits")
    b = score_json(
        capsys, f"{DIGITS}:logits", "--teacher", f"{DIGITS}:teacher_logits", "--chunk-rows", "7"
    )
    want = direct(logits, None, teacher).summary()
    assert_summary_close(a, want)
    assert_summary_close(b, want)
    assert a.get("cross_entropy") is None and a.get("accuracy") is None


@pytest.mark.parametrize("chunk", ["1", "7", "539", "540", "100000"])
def test_chunk_sizes(capsys, chunk):
    whole = score_json(capsys, DIGITS)
    assert_summary_close(score_json(capsys, DIGITS, "--chunk-rows", chunk), whole)


def test_all_rows_ignored(capsys, tmp_path):
    logits, labels, _ = digits()
    np.savez(tmp_path / "x.npz", logits=logits[:20], labels=np.full(20, -100))
    a = score_json(capsys, tmp_path / "x.npz")
    b = score_json(capsys, tmp_path / "x.npz", "--chunk-rows", "7")
    want = numbaent.score(logits[:20], np.full(20, -100)).summary()
    assert_summary_close(a, want)
    assert_summary_close(b, want)
    assert b["ignored"] == 20


def test_explicit_inputs_override_npz(capsys, tmp_path):
    logits, labels, teacher = digits()
    other = (labels + 1) % 10
    np.save(tmp_path / "other.npy", other)
    np.savez(tmp_path / "teacher.npz", logits=logits * 0.5)  # a teacher's own file: 'logits'
    got = score_json(
        capsys, DIGITS, "--labels", tmp_path / "other.npy", "--teacher", tmp_path / "teacher.npz"
    )
    assert_summary_close(got, direct(logits, other, logits * 0.5).summary())


def test_batch_axes(capsys, tmp_path):
    logits, labels, teacher = digits()
    np.save(tmp_path / "l.npy", logits.reshape(4, 135, 10))
    np.save(tmp_path / "y.npy", labels.reshape(4, 135))
    np.save(tmp_path / "t.npy", teacher.reshape(4, 135, 10))
    args = [tmp_path / "l.npy", "--labels", tmp_path / "y.npy", "--teacher", tmp_path / "t.npy"]
    got = score_json(capsys, *args, "--chunk-rows", "50", "-o", tmp_path / "out.npz")
    assert_summary_close(got, direct(logits, labels, teacher).summary())
    with np.load(tmp_path / "out.npz") as z:
        assert z["entropy"].shape == (4, 135)
        ref = direct(logits, labels, teacher)
        np.testing.assert_allclose(z["entropy"].ravel(), ref.entropy, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# score: output files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, "7"])
def test_output_npz(capsys, tmp_path, chunk):
    logits, labels, teacher = digits()
    out = tmp_path / "rows.npz"
    extra = ["--chunk-rows", chunk] if chunk else []
    rc, stdout, err = run(capsys, "score", DIGITS, "-o", out, *extra)
    assert rc == 0, err
    ref = direct(logits, labels, teacher)
    with np.load(out) as z:
        assert set(z.files) == per_row_fields(ref)
        for f in z.files:
            want = np.asarray(getattr(ref, f))
            assert z[f].shape == want.shape
            assert z[f].dtype == want.dtype
            if want.dtype.kind in "biu":
                np.testing.assert_array_equal(z[f], want)
            else:
                np.testing.assert_allclose(z[f], want, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npz"]  # no temp file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temp file


def test_output_npz_only_computed_fields(capsys, tmp_path):
    out = tmp_path / "rows.npz"
    rc, _, err = run(capsys, "score", f"{DIGITS}:logits", "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert set(z.files) == per_row_fields(numbaent.score(digits()[0]))
        assert set(z.files) >= {"logsumexp", "entropy", "argmax"}
        assert not set(z.files) & {"cross_entropy", "correct", "kl_divergence"}


@pytest.mark.parametrize("chunk", [None, "7"])
def test_output_parquet(capsys, tmp_path, chunk):
    pq = pytest.importorskip("pyarrow.parquet")
    logits, labels, teacher = digits()
    out = tmp_path / "rows.parquet"
    extra = ["--chunk-rows", chunk] if chunk else []
    rc, _, err = run(capsys, "score", DIGITS, "-o", out, *extra)
    assert rc == 0, err
    table = pq.read_table(out)
    ref = direct(logits, labels, teacher)
    assert set(table.column_names) == per_row_fields(ref)
    for f in table.column_names:
        col = table.column(f).to_numpy()
        want = np.asarray(getattr(ref, f))
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(col, want)
        else:
            np.testing.assert_allclose(col, want, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]


def test_overwrites_existing_output(capsys, tmp_path):
    out = tmp_path / "rows.npz"
    out.write_bytes(b"old")
    rc, _, err = run(capsys, "score", DIGITS, "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert "entropy" in z.files


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def test_load_npy_is_memory_mapped(tmp_path):
    a = np.arange(30, dtype=np.float32).reshape(3, 10)
    np.save(tmp_path / "a.npy", a)
    got = load_array(tmp_path / "a.npy")
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, a)


def test_load_npz_uncompressed_is_memory_mapped(tmp_path):
    a = np.arange(30, dtype=np.float64).reshape(3, 10)
    f = np.asfortranarray(a * 2)
    np.savez(tmp_path / "a.npz", logits=a, labels=np.arange(3), other=f)
    got = load_array(tmp_path / "a.npz")
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npz", "labels"), np.arange(3))
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'a.npz'}:other"), f)


def test_load_npz_compressed(tmp_path):
    a = np.arange(30, dtype=np.float32).reshape(3, 10)
    np.savez_compressed(tmp_path / "a.npz", logits=a)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npz"), a)


def test_load_npz_single_array_and_teacher_fallback(tmp_path):
    a = np.ones((2, 3), np.float32)
    np.savez(tmp_path / "one.npz", whatever=a)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz", "labels"), a)
    np.savez(tmp_path / "t.npz", logits=a, x=a)
    np.testing.assert_array_equal(load_array(tmp_path / "t.npz", "teacher"), a)


def test_load_sniffs_content_not_extension(tmp_path):
    a = np.arange(4.0)
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "a.bin").write_bytes((tmp_path / "a.npy").read_bytes())
    np.testing.assert_array_equal(load_array(tmp_path / "a.bin"), a)


# --------------------------------------------------------------------------------------------------
# errors: one line on stderr, non-zero status, no traceback, no output file
# --------------------------------------------------------------------------------------------------


def _err_files(tmp_path):
    logits, labels, teacher = digits()
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "logits.npy", logits)
    np.save(d / "labels.npy", labels)
    np.save(d / "short_labels.npy", labels[:-1])
    np.save(d / "float_labels.npy", labels.astype(np.float32))
    np.save(d / "teacher9.npy", teacher[:, :9])
    np.save(d / "int_logits.npy", (logits * 10).astype(np.int32))
    bad = labels.copy()
    bad[50] = 10
    np.save(d / "bad_labels.npy", bad)
    neg = labels.copy()
    neg[3] = -1
    np.save(d / "neg_labels.npy", neg)
    (d / "garbage.npy").write_text("this is not an array\n")
    (d / "garbage.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    np.save(d / "full.npy", logits)
    (d / "truncated.npy").write_bytes((d / "full.npy").read_bytes()[:500])
    np.save(d / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.savez(d / "noname.npz", a=logits, b=labels)
    (d / "adir.npy").mkdir()
    return d


ERROR_CASES = {
    "missing logits": ["{d}/nope.npy"],
    "missing labels": ["{d}/logits.npy", "--labels", "{d}/nope.npy"],
    "missing teacher": ["{d}/logits.npy", "--teacher", "{d}/nope.npz"],
    "garbage npy": ["{d}/garbage.npy"],
    "garbage npz": ["{d}/garbage.npz"],
    "truncated npy": ["{d}/truncated.npy"],
    "object array": ["{d}/objects.npy"],
    "directory": ["{d}/adir.npy"],
    "npz without logits": ["{d}/noname.npz"],
    "npz missing explicit name": [f"{DIGITS}:nope"],
    "npz missing labels name": ["{d}/logits.npy", "--labels", "{d}/noname.npz"],
    "labels shape": ["{d}/logits.npy", "--labels", "{d}/short_labels.npy"],
    "float labels": ["{d}/logits.npy", "--labels", "{d}/float_labels.npy"],
    "teacher shape": ["{d}/logits.npy", "--teacher", "{d}/teacher9.npy"],
    "label out of range": ["{d}/logits.npy", "--labels", "{d}/bad_labels.npy"],
    "label out of range, later chunk": [
        "{d}/logits.npy",
        "--labels",
        "{d}/bad_labels.npy",
        "--chunk-rows",
        "7",
    ],
    "negative label": ["{d}/logits.npy", "--labels", "{d}/neg_labels.npy"],
    "integer logits": ["{d}/int_logits.npy"],
    "bad base": ["{d}/logits.npy", "--base", "1"],
    "negative base": ["{d}/logits.npy", "--base", "-2"],
    "unknown backend": ["{d}/logits.npy", "--backend", "no-such-backend"],
}


@pytest.mark.parametrize("out_name", ["out.npz", "out.parquet"])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line(capsys, tmp_path, case, out_name):
    if out_name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    d = _err_files(tmp_path)
    args = [a.format(d=d) for a in ERROR_CASES[case]]
    out = tmp_path / out_name
    rc, stdout, err = run(capsys, "score", *args, "-o", out)
    assert_one_line_error(rc, err)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no temp file left either


def assert_one_line_error(rc, err):
    assert rc != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("numbaent: error: ")
    assert len(lines[0]) > len("numbaent: error: ")


def test_error_unavailable_backend(capsys, tmp_path):
    info = numbaent.backends()
    if info["cuda"].available:
        pytest.skip("cuda is available here")
    out = tmp_path / "o.npz"
    rc, _, err = run(capsys, "score", DIGITS, "--backend", "cuda", "-o", out)
    assert_one_line_error(rc, err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "out", ["o.csv", "missing-dir/o.npz", "o.npz/"], ids=["suffix", "no dir", "dir"]
)
def test_error_bad_output(capsys, tmp_path, out):
    existing = []
    if out.endswith("/"):
        (tmp_path / "o.npz").mkdir()
        existing = ["o.npz"]
    rc, _, err = run(capsys, "score", DIGITS, "-o", str(tmp_path) + "/" + out)
    assert_one_line_error(rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == existing


def test_error_output_is_input(capsys, tmp_path):
    logits, labels, _ = digits()
    np.savez(tmp_path / "x.npz", logits=logits, labels=labels)
    before = (tmp_path / "x.npz").read_bytes()
    rc, _, err = run(capsys, "score", tmp_path / "x.npz", "-o", tmp_path / "x.npz")
    assert_one_line_error(rc, err)
    assert (tmp_path / "x.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_error_parquet_without_pyarrow(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    rc, _, err = run(capsys, "score", DIGITS, "-o", tmp_path / "o.parquet")
    assert_one_line_error(rc, err)
    assert "pyarrow" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [[], ["score"], ["score", str(DIGITS), "--chunk-rows", "0"], ["score", "x", "--base", "q"]],
    ids=["no command", "no logits", "chunk 0", "bad base"],
)
def test_usage_errors(capsys, argv):
    if not argv:
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and "usage" in err
        return
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_one_line_message_formatting():
    assert cli._one_line(KeyError("x")) == "x"
    assert cli._one_line(FileNotFoundError(2, "No such file", "a.npy")) == "a.npy: No such file"
    assert cli._one_line(ValueError("first\nsecond")) == "first ..."
    assert cli._one_line(RuntimeError()) == "RuntimeError"


def test_bad_zip_is_one_line(capsys, tmp_path):
    # a zip archive that is not an npz
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as zf:
        zf.writestr("logits.npy", b"not npy data")
    rc, _, err = run(capsys, "score", tmp_path / "z.npz")
    assert_one_line_error(rc, err)


# --------------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------------


def test_info(capsys):
    rc, out, err = run(capsys, "info")
    assert rc == 0, err
    assert numbaent.__version__ in out
    assert np.__version__ in out
    for name in numbaent.backends():
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert "numba_threads" in out


def test_info_json(capsys):
    import numba

    rc, out, err = run(capsys, "info", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["numbaent"] == numbaent.__version__
    assert info["numba_threads"] == numba.get_num_threads()
    assert set(info["backends"]) == set(numbaent.backends())
    if not numbaent.backends()["cuda"].available:
        assert info["cuda_device"] is None


# --------------------------------------------------------------------------------------------------
# python -m numbaent, in a real process
# --------------------------------------------------------------------------------------------------


def _python_m(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "numbaent", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_python_m_score():
    logits, labels, teacher = digits()
    proc = _python_m("score", "examples/digits_logits.npz")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_table_matches(proc.stdout, direct(logits, labels, teacher).summary())


def test_python_m_error(tmp_path):
    proc = _python_m("score", tmp_path / "missing.npy")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("numbaent: error: ")
    assert "Traceback" not in proc.stderr


def test_error_output_is_input_spec(capsys, tmp_path):
    logits, labels, _ = digits()
    np.savez(tmp_path / "x.npz", logits=logits, labels=labels)
    before = (tmp_path / "x.npz").read_bytes()
    rc, _, err = run(capsys, "score", f"{tmp_path / 'x.npz'}:logits", "-o", tmp_path / "x.npz")
    assert_one_line_error(rc, err)
    assert (tmp_path / "x.npz").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# stop signals: SIGTERM and SIGHUP as SIGINT (one line, 128 + signal, no file left behind)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, out_name",
    [
        ("SIGTERM", "out.npz"),
        ("SIGHUP", "out.npz"),
        ("SIGINT", "out.npz"),
        ("SIGTERM", "out.parquet"),
    ],
)
def test_stop_signal_leaves_no_file(tmp_path, sig, out_name):
    import signal
    import time

    if out_name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    signum = getattr(signal, sig)
    # 800 MB of logits as a sparse file (no disk used): seconds of scoring in 200 chunks
    x = np.lib.format.open_memmap(
        tmp_path / "logits.npy", mode="w+", dtype=np.float32, shape=(200_000, 1000)
    )
    del x
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = ["score", "logits.npy", "-o", out_name, "--chunk-rows", "1000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "numbaent", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f".{out_name}.*.tmp")):  # the writer is open: it runs
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary output file never appeared"
            time.sleep(0.005)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert err == f"numbaent: interrupted ({sig})\n"
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.npy"]


def test_interrupted_in_process(capsys, tmp_path, monkeypatch):
    # the same path in-process: the exception the handler raises, the line, the status, no file
    def interrupt(*a, **k):
        raise cli.Interrupted(15)

    monkeypatch.setattr(numbaent, "score", interrupt)
    out = tmp_path / "o.npz"
    rc, stdout, err = run(capsys, "score", DIGITS, "-o", out)
    assert (rc, stdout, err) == (143, "", "numbaent: interrupted (SIGTERM)\n")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(numbaent, "score", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    rc, stdout, err = run(capsys, "score", DIGITS, "-o", out)
    assert (rc, err) == (130, "numbaent: interrupted (SIGINT)\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["create", "rename"])
def test_signal_while_the_temporary_file_is_created_or_renamed(
    capsys, tmp_path, monkeypatch, where
):
    # the signal lands while the temporary file is created (or renamed into place): it is
    # raised once that is done, and the writer still removes its file
    import signal
    import tempfile

    target, name = (tempfile, "mkstemp") if where == "create" else (os, "replace")
    orig = getattr(target, name)

    def with_signal(*a, **k):
        res = orig(*a, **k)
        cli._SIGNALS._handler(signal.SIGTERM, None)
        return res

    monkeypatch.setattr(target, name, with_signal)
    out = tmp_path / "o.npz"
    rc, stdout, err = run(capsys, "score", DIGITS, "-o", out)
    assert (rc, err) == (143, "numbaent: interrupted (SIGTERM)\n")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([] if where == "create" else ["o.npz"])  # renamed: complete, not partial
    if where == "rename":
        with np.load(out) as z:
            assert z["logsumexp"].shape == (digits()[0].shape[0],)


def test_signal_while_deferred_waits_for_the_block():
    import signal

    s = cli._StopSignals()
    with pytest.raises(cli.Interrupted) as exc:
        with s.deferred():
            s._handler(signal.SIGHUP, None)  # noted, not raised: the block finishes
            done = True
    assert done and exc.value.signum == signal.SIGHUP and exc.value.name == "SIGHUP"
    with pytest.raises(cli.Interrupted):
        s._handler(signal.SIGTERM, None)


def test_handlers_are_restored_after_main(capsys):
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    rc, _, _ = run(capsys, "score", DIGITS)
    assert rc == 0
    assert {s: signal.getsignal(s) for s in before} == before


# --------------------------------------------------------------------------------------------------
# errors name the user's output path, never the temporary file
# --------------------------------------------------------------------------------------------------


def _assert_names_output(rc, err, out):
    assert_one_line_error(rc, err)
    assert str(out) in err
    assert ".tmp" not in err, err


@pytest.mark.parametrize("out_name", ["out.npz", "out.parquet"])
def test_disk_full_names_the_output(capsys, tmp_path, monkeypatch, out_name):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if out_name.endswith(".parquet"):
        pq = pytest.importorskip("pyarrow.parquet")
        monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    else:
        monkeypatch.setattr(np, "savez", full)
    out = tmp_path / out_name
    rc, _, err = run(capsys, "score", DIGITS, "-o", out)
    _assert_names_output(rc, err, out)
    assert "No space left on device" in err
    assert list(tmp_path.iterdir()) == []


def test_disk_full_message_of_a_library(capsys, tmp_path, monkeypatch):
    # an OSError without strerror whose text names the temporary file (as pyarrow's do)
    import errno

    def full(f, **k):
        raise OSError(f"error writing {f.name}: [errno {errno.ENOSPC}] disk full")

    monkeypatch.setattr(np, "savez", full)
    out = tmp_path / "out.npz"
    rc, _, err = run(capsys, "score", DIGITS, "-o", out)
    _assert_names_output(rc, err, out)
    assert list(tmp_path.iterdir()) == []


def test_read_only_directory_names_the_output(capsys, tmp_path, monkeypatch):
    import errno
    import tempfile

    # (tests run as root, for whom a 0o555 directory is writable: simulate what a user gets)
    def denied(dir=None, prefix="", suffix="", **k):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2z3{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "out.npz"
    rc, _, err = run(capsys, "score", DIGITS, "-o", out)
    _assert_names_output(rc, err, out)
    assert "Permission denied" in err
    assert list(tmp_path.iterdir()) == []


def test_rename_failure_names_the_output(capsys, tmp_path, monkeypatch):
    import errno

    def busy(src, dst):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src), str(dst))

    monkeypatch.setattr(os, "replace", busy)
    out = tmp_path / "out.npz"
    rc, _, err = run(capsys, "score", DIGITS, "-o", out)
    _assert_names_output(rc, err, out)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# .npy headers: checked before NumPy sees them (no warnings, one line naming the file)
# --------------------------------------------------------------------------------------------------


def _npy_bytes(shape, descr="<f4", data=b""):
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


BAD_HEADERS = {
    "product overflows int64": ((2**40, 2**40), "truncated or corrupt"),
    "one dimension beyond int64": ((2**63,), "truncated or corrupt"),
    "bytes overflow int64": ((2**62, 4), "truncated or corrupt"),
    "larger than the file": ((1000, 1000), "truncated or corrupt"),
    "negative dimension": ((-1, 10), "negative dimension"),
    "large negative dimension": ((-(2**40), 10), "negative dimension"),
    "most negative dimension": ((-(2**63),), "negative dimension"),
}


@pytest.mark.parametrize("container", ["npy", "npz stored", "npz deflated"])
@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_npy_header_is_one_line_without_warnings(capsys, tmp_path, case, container):
    import warnings

    shape, text = BAD_HEADERS[case]
    data = _npy_bytes(shape, data=b"\0" * 64)
    if container == "npy":
        path = tmp_path / "x.npy"
        path.write_bytes(data)
        where = str(path)
    else:
        path = tmp_path / "x.npz"
        comp = zipfile.ZIP_STORED if container == "npz stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(path, "w", compression=comp) as zf:
            zf.writestr("logits.npy", data)
        where = f"{path}[logits]"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, _, err = run(capsys, "score", path, "-o", tmp_path / "o.npz")
    assert [str(w.message) for w in caught] == []
    assert_one_line_error(rc, err)
    assert where in err and text in err, err
    assert "OverflowError" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _unsupported_float():
    ld = np.dtype(np.longdouble)  # float128 on x86 Linux; float64 elsewhere (then complex)
    return ld if ld.itemsize > 8 else np.dtype(np.clongdouble)


@pytest.mark.parametrize(
    "role, dtype",
    [
        ("logits", _unsupported_float()),
        ("logits", np.dtype(np.complex64)),
        ("logits", np.dtype(np.int32)),
        ("teacher", _unsupported_float()),
        ("labels", _unsupported_float()),
    ],
)
@pytest.mark.parametrize("container", ["npy", "npz"])
def test_unsupported_dtype_is_named(capsys, tmp_path, role, dtype, container):
    logits, labels, _ = digits()
    bad = np.zeros(labels.shape if role == "labels" else logits.shape, dtype)
    if container == "npy":
        path = tmp_path / "bad.npy"
        np.save(path, bad)
        where = str(path)
    else:
        path = tmp_path / "bad.npz"
        np.savez(path, **{"labels" if role == "labels" else "logits": bad})
        where = str(path)
    np.save(tmp_path / "good.npy", logits)
    if role == "logits":
        argv = [path]
    else:
        argv = [tmp_path / "good.npy", "--" + role, path]
    rc, _, err = run(capsys, "score", *argv)
    assert_one_line_error(rc, err)
    assert f"{where}: dtype {dtype} is not supported for {role}" in err, err
    want = "integer dtypes" if role == "labels" else "float16, float32, float64, bfloat16"
    assert f"(supported: {want})" in err
    assert "must hold real numbers" not in err


def test_bfloat16_npy_files_are_read_in_place(capsys, tmp_path):
    import ml_dtypes

    logits, labels, teacher = digits()
    bf, tbf = logits.astype(ml_dtypes.bfloat16), teacher.astype(ml_dtypes.bfloat16)
    np.save(tmp_path / "bf.npy", bf)  # stored as |V2
    np.save(tmp_path / "t.npy", tbf)
    np.save(tmp_path / "y.npy", labels)
    assert np.load(tmp_path / "bf.npy").dtype == np.dtype("V2")
    args = [tmp_path / "bf.npy", "--labels", tmp_path / "y.npy", "--teacher", tmp_path / "t.npy"]
    got = score_json(capsys, *args)
    assert_summary_close(got, direct(bf, labels, tbf).summary(), rtol=0, atol=0)
    assert got["context"]["dtype"] == "bfloat16"
    rc, out, err = run(capsys, "score", *args, "--chunk-rows", "50", "-o", tmp_path / "o.npz")
    assert rc == 0, err
    with np.load(tmp_path / "o.npz") as z:
        np.testing.assert_array_equal(z["cross_entropy"], direct(bf, labels, tbf).cross_entropy)


def test_one_dimensional_logits_are_an_error(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(10, np.float32))
    np.save(tmp_path / "y.npy", np.zeros(10, np.int64))
    rc, _, err = run(capsys, "score", tmp_path / "x.npy", "--labels", tmp_path / "y.npy")
    assert_one_line_error(rc, err)
    assert f"{tmp_path / 'x.npy'}: logits must be rows x classes" in err
    assert "got shape (10,): one row of C classes is shape (1, C)" in err


# --------------------------------------------------------------------------------------------------
# temperature: the library's check, before any file is touched
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", ["1e-310", "5e-324", "0", "-1", "nan", "inf"])
def test_bad_temperature_is_one_line(capsys, tmp_path, t):
    out = tmp_path / "o.npz"
    rc, _, err = run(capsys, "score", DIGITS, "--temperature", t, "-o", out)
    assert_one_line_error(rc, err)
    assert "temperature" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# what the report says it measured
# --------------------------------------------------------------------------------------------------


def test_json_keeps_nan_apart_from_not_computed_and_carries_its_context(capsys, tmp_path):
    x = np.zeros((4, 3), np.float32)
    x[:, 1] = np.nan  # every kept row is NaN: the means are over no rows, NaN
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, -100]))
    args = ["score", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--base", "2", "--json"]
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["cross_entropy"] == "NaN" and doc["kl_divergence"] is None  # NaN vs not computed
    assert doc["nan_rows"] == 3 and doc["rows"] == 4 and doc["ignored"] == 1
    assert out.count(str(tmp_path / "x.npy")) == 1  # the JSON names the files, in "arrays"
    rc, table, _ = run(capsys, *args[:-1])
    assert (
        table.splitlines()[0]
        == f"{tmp_path / 'x.npy'}: 4 x 3 float32 (labels {tmp_path / 'y.npy'})"
    )
    assert doc["context"] == {
        "units": "bits",
        "base": 2.0,
        "temperature": 1.0,
        "kl": None,
        "source": "logits",
        "arrays": {"logits": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")},
        "shape": [4, 3],
        "dtype": "float32",
        "top_k": [1, 5],
        "bins": 15,
    }


def test_the_table_names_the_arrays_units_and_kl_direction(capsys):
    rc, out, err = run(capsys, "score", DIGITS, "--temperature", "2", "--base", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("float32 (logits, labels, teacher_logits)"), lines[0]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}
    assert rows["units"] == ["bits", "base", "2"]
    assert rows["kl"] == ["KL(teacher", "||", "model)", "temperature", "2"]
    assert rows["nan_rows"] == ["0"] and rows["cross_entropy"][-1] == "bits"


# --------------------------------------------------------------------------------------------------
# --top-k and --bins: top-k accuracy and calibration in the summary
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [[], ["--chunk-rows", "7"], ["--chunk-rows", "1"]])
def test_top_k_and_bins_flags_feed_the_summary(capsys, ignored_files, chunk):
    paths, (logits, labels, teacher) = ignored_files
    files = [paths["logits"], "--labels", paths["labels"], "--teacher", paths["teacher"]]
    got = score_json(capsys, *files, "--top-k", "3,1,10", "--bins", "10", *chunk)
    want = direct(logits, labels, teacher).summary(top_k=(1, 3, 10), bins=10)
    assert list(got) == list(want)  # the summary's keys, in its order
    assert got == want  # exact sums merged over the chunks: the same numbers to the last digit
    assert list(got["top_k_accuracy"]) == [1, 3, 10] and got["top_k_accuracy"][10] == 1.0
    assert got["context"]["top_k"] == [1, 3, 10] and got["context"]["bins"] == 10
    default = score_json(capsys, *files, *chunk)
    assert default == direct(logits, labels, teacher).summary()  # --top-k 1,5 --bins 15
    # (the digits model is under-confident in every bin, so its ECE is the same in any bins)
    assert got["mce"] != default["mce"] and got["brier"] == default["brier"]


def test_the_table_shows_top_k_rows_and_the_bins_of_the_calibration_errors(capsys):
    rc, out, err = run(capsys, "score", DIGITS, "--top-k", "2,1", "--bins", "20")
    assert rc == 0, err
    logits, labels, teacher = digits()
    want = direct(logits, labels, teacher).summary(top_k=(1, 2), bins=20)
    assert_table_matches(out, want)
    rows = [ln.split() for ln in out.splitlines()[1:]]
    assert [r[2] for r in rows if r[0] == "top_k_accuracy"] == ["k=1", "k=2"]
    assert {r[0]: r[2:] for r in rows}["ece"] == ["20", "bins"]
    assert {r[0]: r[2:] for r in rows}["mce"] == ["20", "bins"]
    keys = [r[0] for r in rows]
    assert keys[: keys.index("rows") + 1] == [
        "cross_entropy", "perplexity", "accuracy", "top_k_accuracy", "top_k_accuracy", "brier",
        "ece", "mce", "confidence", "entropy", "kl_divergence", "rows",
    ]  # fmt: skip


def test_without_labels_top_k_and_calibration_are_not_computed(capsys):
    got = score_json(capsys, f"{DIGITS}:logits", "--top-k", "1,2")
    for k in ("top_k_accuracy", "brier", "ece", "mce", "accuracy"):
        assert got[k] is None, k
    assert 0 < got["confidence"] <= 1
    rc, out, _ = run(capsys, "score", f"{DIGITS}:logits")
    assert rc == 0
    assert {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[1:]}["top_k_accuracy"] == ["-"]


def test_all_rows_ignored_gives_nan_top_k_and_calibration(capsys, tmp_path):
    logits, _, _ = digits()
    np.savez(tmp_path / "x.npz", logits=logits[:20], labels=np.full(20, -100))
    rc, out, err = run(capsys, "score", tmp_path / "x.npz", "--json", "--chunk-rows", "7")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["top_k_accuracy"] == {"1": "NaN", "5": "NaN"}
    assert doc["ece"] == doc["mce"] == doc["brier"] == "NaN"


@pytest.mark.parametrize(
    "flag", [["--top-k", "0"], ["--top-k", "a"], ["--top-k", ""], ["--top-k", "1,,5"],
             ["--top-k", "1.5"], ["--bins", "0"], ["--bins", "x"], ["--bins", "-2"]],
)  # fmt: skip
def test_bad_top_k_or_bins_is_a_usage_error(capsys, flag):
    with pytest.raises(SystemExit) as exc:
        main(["score", str(DIGITS), *flag])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and flag[0] in err


# --------------------------------------------------------------------------------------------------
# --sequences
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def token_files(tmp_path):
    rng = np.random.default_rng(5)
    b, t, c = 6, 5, 40
    x = (rng.standard_normal((b, t, c)) * 2).astype(np.float32)
    y = rng.integers(0, c, (b, t))
    y[1] = -100  # a sequence with no tokens
    y[2, :3] = -100
    y[3] = np.argmax(x[3], 1)  # a greedy sequence
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


@pytest.mark.parametrize("chunk", [[], ["--chunk-rows", "7"], ["--chunk-rows", "1"]])
def test_sequences_from_the_cli_equal_scores_sequences(capsys, token_files, chunk):
    tmp_path, x, y = token_files
    want = numbaent.score(x, y).sequences()
    args = [tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--sequences", *chunk]
    got = score_json(capsys, *args)
    has = want.tokens > 0
    assert got["sequences"] == 6 and got["greedy_sequences"] == float(np.mean(want.greedy))
    assert math.isclose(got["sequence_log_likelihood"], float(np.mean(want.log_likelihood)))
    assert math.isclose(got["sequence_perplexity"], float(np.mean(want.perplexity[has])))
    out = tmp_path / "seq.npz"
    rc, _, err = run(capsys, "score", *args, "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert set(z.files) == set(want.as_dict())
        for k, v in want.as_dict().items():
            np.testing.assert_array_equal(z[k], v, err_msg=k)
    assert want.tokens[1] == 0 and want.greedy[3]


def test_sequences_need_labels_and_a_time_axis(capsys, token_files):
    tmp_path, x, y = token_files
    rc, _, err = run(capsys, "score", tmp_path / "x.npy", "--sequences")
    assert_one_line_error(rc, err)
    assert "--sequences needs logits of shape (..., T, C) and labels of shape (..., T)" in err
    assert "no labels" in err
    np.save(tmp_path / "x2.npy", x.reshape(-1, x.shape[-1]))
    np.save(tmp_path / "y2.npy", y.reshape(-1))
    rc, _, err = run(capsys, "score", tmp_path / "x2.npy", "--labels", tmp_path / "y2.npy",
                     "--sequences")  # fmt: skip
    assert_one_line_error(rc, err)
    assert "got logits (30, 40) and labels (30,)" in err


def test_progress_line_shows_rate_bandwidth_elapsed_and_eta():
    import io

    t = [100.0]
    buf = io.StringIO()
    p = cli._Progress(1000, True, row_bytes=4000, stream=buf, clock=lambda: t[0])
    p.start()
    assert "first run compiles the kernels" in buf.getvalue()
    t[0] += 2.0
    p.update(250)
    line = buf.getvalue().rsplit("\r\x1b[K", 1)[1]
    assert "250/1,000 rows  25.0%" in line and "125 rows/s" in line
    assert "0.00 GB/s" in line and "0:02 elapsed" in line and "ETA 0:06" in line
    t[0] += 3600
    p.update(500)
    assert "1:00:02 elapsed" in buf.getvalue().rsplit("\r\x1b[K", 1)[1]
    p.close()
    assert buf.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    q = cli._Progress(1000, False, stream=quiet)
    q.start()
    q.update(10)
    q.close()
    assert quiet.getvalue() == ""  # not a terminal: nothing


@pytest.mark.slow
def test_a_bfloat16_file_larger_than_the_chunks_is_scored_with_a_small_resident_set(tmp_path):
    """1 GiB of bfloat16 logits (a .npy with a |V2 header), scored in a fresh process: its peak
    RSS stays far below the file's size (the pages of scored chunks are released). Measured by
    hand on a 2 GiB file (524288 x 2048): peak RSS 440 MB."""
    import ml_dtypes

    n, c = 262144, 2048
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", ml_dtypes.bfloat16, (n, c))
    blk = (np.random.default_rng(0).standard_normal((8192, c), np.float32) * 3).astype(x.dtype)
    for i in range(0, n, 8192):
        x[i : i + 8192] = blk
    x.flush()
    del x
    np.save(tmp_path / "y.npy", np.tile(np.arange(8192) % c, n // 8192))
    # the child reports its own high-water mark (VmHWM of its address space) at exit: ru_maxrss
    # would count this process's pages, which a child carries until its exec
    code = (
        "import atexit, runpy, sys\n"
        "def hwm():\n"
        "    line = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "    print('VmHWM', line.split()[1], file=sys.stderr)\n"
        "atexit.register(hwm)\n"
        f"sys.argv = ['numbaent', 'score', {str(tmp_path / 'x.npy')!r}, '--labels', "
        f"{str(tmp_path / 'y.npy')!r}, '--json']\n"
        "runpy.run_module('numbaent', run_name='__main__')\n"
    )
    proc = run_python(code, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stderr.split("VmHWM")[-1].split()[0]) / 1024
    assert peak_mb < 700, f"peak RSS {peak_mb:.0f} MB for a {n * c * 2 / 2**20:.0f} MiB file"
    doc = json.loads(proc.stdout)
    assert doc["rows"] == n and doc["context"]["dtype"] == "bfloat16"
    ref = numbaent.score(blk, np.arange(8192) % c).summary()
    assert math.isclose(doc["cross_entropy"], ref["cross_entropy"], rel_tol=1e-12)


LM = Path(__file__).resolve().parents[1] / "examples" / "lm_logits.npz"


def test_the_language_model_example_scores_per_sequence(capsys):
    with np.load(LM) as z:
        x, y, t = z["logits"], z["labels"], z["teacher_logits"]
    assert x.shape == t.shape == (32, 64, 104) and x.dtype == t.dtype == np.float16
    assert y.shape == (32, 64) and y.dtype == np.int64
    student = numbaent.score(x, y, base=2).summary()["cross_entropy"]
    teacher = numbaent.score(t, y, base=2).summary()["cross_entropy"]
    assert 1.5 < teacher < student < 4.0  # bits per character: the 4-gram model is the better one
    got = score_json(capsys, LM, "--sequences", "--base", "2")
    assert got["sequences"] == 32 and got["context"]["kl"] == "teacher || model"
    seq = numbaent.score(x, y, teacher_logits=t, base=2).sequences()
    assert math.isclose(got["sequence_log_likelihood"], float(np.mean(seq.log_likelihood)))


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7), reason="the file was made from the help "
                    "text of Python 3.11.7 (pydoc_data.topics changes between versions)")  # fmt: skip
def test_the_language_model_example_is_what_its_script_makes(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(LM.with_name("make_lm_logits.py")), "-o", str(tmp_path / "lm.npz")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with np.load(LM) as want, np.load(tmp_path / "lm.npz") as got:
        assert set(got.files) == set(want.files)
        for k in want.files:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_nan_policy_raise_names_the_first_nan_row(capsys, tmp_path):
    x = np.zeros((3, 4, 5), np.float32)
    x[2, 1, 3] = np.nan
    x[0, 2, 0] = np.nan  # ignored: no error for this one
    y = np.zeros((3, 4), np.int64)
    y[0, 2] = -100
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    base = ["score", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--chunk-rows", "5"]
    rc, _, err = run(capsys, *base, "--nan-policy", "raise")
    assert_one_line_error(rc, err)
    assert f"nan_policy='raise': {tmp_path / 'x.npy'} has a NaN in row (2, 1)" in err
    rc, out, err = run(capsys, *base, "--json")  # propagate: counted, left out of the means
    assert rc == 0 and json.loads(out)["nan_rows"] == 1
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in base] + ["--nan-policy", "omit"])
    assert e.value.code == 2 and "invalid choice: 'omit'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# scores from hidden states: --hidden H --weight W [--bias B], through numbaent.linear_score
# --------------------------------------------------------------------------------------------------

N_H, D_H, V_H, DT_H = 45, 12, 37, 9  # rows, d, classes, the teacher's d


@pytest.fixture
def hidden_files(tmp_path):
    """Hidden states, weight, bias, labels, a teacher (of its own d) as .npy files, and the
    logits they make (float32, as a user would have saved them) for the logits path."""
    rng = np.random.default_rng(7)
    a = {
        "hidden": rng.standard_normal((N_H, D_H)).astype(np.float32),
        "weight": (rng.standard_normal((V_H, D_H)) * 0.6).astype(np.float32),
        "bias": rng.standard_normal(V_H).astype(np.float32),
        "labels": rng.integers(0, V_H, N_H),
        "teacher_hidden": rng.standard_normal((N_H, DT_H)).astype(np.float32),
        "teacher_weight": (rng.standard_normal((V_H, DT_H)) * 0.6).astype(np.float32),
        "teacher_bias": rng.standard_normal(V_H).astype(np.float32),
    }
    a["labels"][[3, 20]] = -100
    a["logits"] = a["hidden"] @ a["weight"].T + a["bias"]
    a["teacher_logits"] = a["teacher_hidden"] @ a["teacher_weight"].T + a["teacher_bias"]
    d = tmp_path / "in"
    d.mkdir()
    for k, x in a.items():
        np.save(d / f"{k}.npy", x)
    return d, a


def _hidden_args(d, teacher=False, bias=True):
    args = ["--hidden", d / "hidden.npy", "--weight", d / "weight.npy"]
    args += ["--bias", d / "bias.npy"] if bias else []
    args += ["--labels", d / "labels.npy"]
    if teacher:
        args += ["--teacher-hidden", d / "teacher_hidden.npy", "--teacher-weight",
                 d / "teacher_weight.npy", "--teacher-bias", d / "teacher_bias.npy"]  # fmt: skip
    return args


@pytest.mark.parametrize("teacher", [False, True], ids=["labels", "teacher"])
@pytest.mark.parametrize("chunk", [[], ["--chunk-rows", "7"]], ids=["whole", "chunks of 7"])
def test_hidden_states_score_as_their_logits_do(capsys, hidden_files, teacher, chunk):
    d, a = hidden_files
    opts = ["--temperature", "1.5", "--base", "2", "--top-k", "1,3", "--bins", "5", *chunk]
    got = score_json(capsys, *_hidden_args(d, teacher), *opts)
    logits_args = [d / "logits.npy", "--labels", d / "labels.npy"]
    logits_args += ["--teacher", d / "teacher_logits.npy"] if teacher else []
    want = score_json(capsys, *logits_args, *opts)
    assert_summary_close(got, want, rtol=2e-5, atol=1e-6)  # the float32 products' rounding
    assert (got["kl_divergence"] is not None) == teacher
    ctx, ref = got["context"], want["context"]
    assert ctx["source"] == "hidden" and ref["source"] == "logits"
    assert ctx["shape"] == ref["shape"] == [N_H, V_H] and ctx["hidden_shape"] == [N_H, D_H]
    roles = ["hidden", "weight", "bias", "labels"]
    roles += ["teacher_hidden", "teacher_weight", "teacher_bias"] if teacher else []
    assert ctx["arrays"] == {r: str(d / f"{r}.npy") for r in roles}
    for k in ("units", "base", "temperature", "kl", "dtype", "top_k", "bins"):
        assert ctx[k] == ref[k], k
    # the per-row arrays: those of numbaent.linear_score, and within float32 of the logits'
    out = d.parent / "rows.npz"
    rc, table, err = run(capsys, "score", *_hidden_args(d, teacher), *opts, "-o", out)
    assert rc == 0, err
    tch = (a["teacher_hidden"], a["teacher_weight"], a["teacher_bias"]) if teacher else None
    lin = numbaent.linear_score(a["hidden"], a["weight"], a["labels"], bias=a["bias"],
                                teacher=tch, temperature=1.5, base=2)  # fmt: skip
    ref = direct(a["logits"], a["labels"], a["teacher_logits"] if teacher else None,
                 temperature=1.5, base=2)  # fmt: skip
    with np.load(out) as z:
        assert set(z.files) == set(ref.as_dict())
        for k, x in lin.as_dict().items():
            np.testing.assert_allclose(z[k], x, rtol=1e-6, atol=1e-6, err_msg=k)
            np.testing.assert_allclose(z[k], getattr(ref, k), rtol=2e-5, atol=2e-5, err_msg=k)
    first = table.splitlines()[0]
    assert first.startswith(
        f"{d / 'hidden.npy'}: {N_H} x {D_H} float32 hidden states -> {N_H} x {V_H} logits "
        f"(weight {d / 'weight.npy'}, bias {d / 'bias.npy'}, labels {d / 'labels.npy'}"
    ), first
    assert ("teacher_weight" in first) == teacher


def test_hidden_states_from_one_npz_take_their_arrays_by_name(capsys, hidden_files, tmp_path):
    d, a = hidden_files
    roles = ("hidden", "weight", "bias", "labels", "teacher_hidden", "teacher_weight",
             "teacher_bias")  # fmt: skip
    np.savez(tmp_path / "model.npz", **{r: a[r] for r in roles})
    want = score_json(capsys, *_hidden_args(d, teacher=True), "--chunk-rows", "10")
    got = score_json(capsys, "--hidden", tmp_path / "model.npz", "--chunk-rows", "10")
    assert dict(got) == dict(want)  # the same arrays, the same computation: bit for bit
    assert got["context"]["arrays"] == {r: f"{tmp_path / 'model.npz'}:{r}" for r in roles}
    # a teacher's own .npz carries its weight and bias along: 'weight', 'bias' there
    np.savez(tmp_path / "teacher.npz", hidden=a["teacher_hidden"], weight=a["teacher_weight"],
             bias=a["teacher_bias"])  # fmt: skip
    got = score_json(capsys, *_hidden_args(d), "--teacher-hidden", tmp_path / "teacher.npz",
                     "--chunk-rows", "10")  # fmt: skip
    assert dict(got) == dict(want)
    assert got["context"]["arrays"]["teacher_weight"] == f"{tmp_path / 'teacher.npz'}:weight"
    rc, out, err = run(capsys, "score", "--hidden", tmp_path / "model.npz")
    assert rc == 0, err
    assert out.splitlines()[0].endswith("logits (hidden, weight, bias, labels, teacher_hidden, "
                                         "teacher_weight, teacher_bias)")  # fmt: skip
    # an explicit file beats the .npz's own array; FILE.npz:NAME takes just that array
    got = score_json(capsys, "--hidden", f"{tmp_path / 'model.npz'}:hidden", "--weight",
                     d / "weight.npy")  # fmt: skip
    assert got["cross_entropy"] is None and got["kl_divergence"] is None
    assert got["context"]["arrays"] == {"hidden": f"{tmp_path / 'model.npz'}:hidden",
                                        "weight": str(d / "weight.npy")}  # fmt: skip


def test_bfloat16_hidden_states_and_weight(capsys, hidden_files):
    import ml_dtypes

    d, a = hidden_files
    bf = {k: a[k].astype(ml_dtypes.bfloat16) for k in ("hidden", "weight")}
    for k, x in bf.items():
        np.save(d / f"{k}_bf16.npy", x)  # stored as |V2
    args = ["--hidden", d / "hidden_bf16.npy", "--weight", d / "weight_bf16.npy",
            "--labels", d / "labels.npy"]  # fmt: skip
    got = score_json(capsys, *args, "--chunk-rows", "16")
    ref = numbaent.linear_score(bf["hidden"], bf["weight"], a["labels"]).summary()
    assert_summary_close(got, ref, rtol=1e-6)
    assert got["context"]["dtype"] == "bfloat16"


def test_hidden_states_per_sequence(capsys, tmp_path):
    rng = np.random.default_rng(8)
    h = rng.standard_normal((4, 6, 5)).astype(np.float32)
    w = rng.standard_normal((11, 5)).astype(np.float32)
    y = rng.integers(0, 11, (4, 6))
    y[1, 4:] = -100
    np.save(tmp_path / "h.npy", h)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "x.npy", h @ w.T)
    opts = ["--labels", tmp_path / "y.npy", "--sequences", "--chunk-rows", "7"]
    got = score_json(capsys, "--hidden", tmp_path / "h.npy", "--weight", tmp_path / "w.npy", *opts)
    want = score_json(capsys, tmp_path / "x.npy", *opts)
    assert got["sequences"] == 4
    assert_summary_close(got, want, rtol=1e-5, atol=1e-6)
    assert got["context"]["shape"] == [4, 6, 11] and got["context"]["hidden_shape"] == [4, 6, 5]


def _hidden_error_files(d, a):
    np.save(d / "weight_d5.npy", a["weight"][:, :5])
    np.save(d / "weight_1d.npy", a["weight"][0])
    np.save(d / "bias_short.npy", a["bias"][:-1])
    np.save(d / "labels_short.npy", a["labels"][:-1])
    np.save(d / "teacher_weight_v.npy", a["teacher_weight"][:-1])
    np.save(d / "teacher_hidden_rows.npy", a["teacher_hidden"][:-1])
    np.save(d / "hidden_1d.npy", a["hidden"][0])
    np.save(d / "int_weight.npy", a["weight"].astype(np.int32))
    bad = a["labels"].copy()
    bad[31] = V_H
    np.save(d / "labels_bad.npy", bad)


H, W, L = "--hidden {d}/hidden.npy", "--weight {d}/weight.npy", "--labels"
HIDDEN_ERRORS = {  # argv, a text the one line must hold
    "LOGITS and --hidden": (f"{{d}}/logits.npy {H} {W}", "{d}/logits.npy and --hidden"),
    "--hidden without --weight": (H, "--hidden {d}/hidden.npy needs --weight"),
    "mismatched d": (f"{H} --weight {{d}}/weight_d5.npy", "{d}/weight_d5.npy: weight shape"),
    "1-D weight": (f"{H} --weight {{d}}/weight_1d.npy", "{d}/weight_1d.npy: weight must be 2-D"),
    "bias shape": (f"{H} {W} --bias {{d}}/bias_short.npy", "{d}/bias_short.npy: bias shape"),
    "labels shape": (f"{H} {W} {L} {{d}}/labels_short.npy", "does not match hidden states"),
    "1-D hidden": (f"--hidden {{d}}/hidden_1d.npy {W}", "{d}/hidden_1d.npy: hidden states must"),
    "integer weight": (f"{H} --weight {{d}}/int_weight.npy", "{d}/int_weight.npy: dtype int32"),
    "label out of range": (
        f"{H} {W} {L} {{d}}/labels_bad.npy --chunk-rows 7",
        "{d}/labels_bad.npy: label 37 at row 31 is outside [0, 37)",
    ),
    "logits path, label out of range": (
        f"{{d}}/logits.npy {L} {{d}}/labels_bad.npy --chunk-rows 7",
        "{d}/labels_bad.npy: label 37 at row 31",
    ),
    "--weight without --hidden": (f"{{d}}/logits.npy {W}", "--weight {d}/weight.npy: applies to"),
    "--teacher with --hidden": (f"{H} {W} --teacher {{d}}/teacher_logits.npy", "--teacher-hidden"),
    "--teacher-hidden without --teacher-weight": (
        f"{H} {W} --teacher-hidden {{d}}/teacher_hidden.npy",
        "--teacher-hidden {d}/teacher_hidden.npy needs --teacher-weight",
    ),
    "teacher V": (
        f"{H} {W} --teacher-hidden {{d}}/teacher_hidden.npy --teacher-weight "
        "{d}/teacher_weight_v.npy",
        "{d}/teacher_weight_v.npy: teacher weight shape",
    ),
    "teacher rows": (
        f"{H} {W} --teacher-hidden {{d}}/teacher_hidden_rows.npy --teacher-weight "
        "{d}/teacher_weight.npy",
        "{d}/teacher_hidden_rows.npy: teacher hidden states shape",
    ),
    "missing weight file": (f"{H} --weight {{d}}/nope.npy", "{d}/nope.npy: no such file"),
}


@pytest.mark.parametrize("case", list(HIDDEN_ERRORS))
def test_hidden_state_errors_are_one_line_naming_the_file(capsys, hidden_files, case):
    d, a = hidden_files
    _hidden_error_files(d, a)
    argv, text = HIDDEN_ERRORS[case]
    out = d.parent / "o.npz"
    rc, _, err = run(capsys, "score", *argv.format(d=d).split(), "-o", out)
    assert_one_line_error(rc, err)
    assert text.format(d=d) in err, err
    assert sorted(p.name for p in d.parent.iterdir()) == ["in"]  # no output, no temporary file


def test_hidden_nan_policy_raise_names_the_hidden_file(capsys, hidden_files):
    d, a = hidden_files
    h = a["hidden"].copy()
    h[17, 2] = np.nan
    np.save(d / "hidden.npy", h)
    args = [*_hidden_args(d), "--chunk-rows", "5"]
    rc, _, err = run(capsys, "score", *args, "--nan-policy", "raise")
    assert_one_line_error(rc, err)
    assert f"{d / 'hidden.npy'} has a NaN in row 17 (its logits have a NaN" in err, err
    got = score_json(capsys, *args)
    assert got["nan_rows"] == 1


def test_neither_logits_nor_hidden_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "--labels", "y.npy"])
    assert e.value.code == 2
    assert "LOGITS (or --hidden H --weight W)" in capsys.readouterr().err
