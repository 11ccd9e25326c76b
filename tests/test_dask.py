"""numbaent.dask: lazy results equal the in-memory functions (float64: 1e-12), for row chunks and
class chunks, on the synchronous scheduler and on a two-process dask.distributed cluster."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import numbaent  # noqa: E402
import numbaent.dask as nd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N, C = 37, 29
# row chunks only; class chunks (uneven); one class per chunk; one row block, many class blocks
CHUNKS = [(10, C), (10, 7), (37, 1), (N, 11)]


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def close(got, ref, rtol=1e-12):
    got_c = got.compute() if hasattr(got, "compute") else got
    ref = np.asarray(ref) if not isinstance(ref, float) else np.float64(ref)
    got_a = np.asarray(got_c)
    assert got_a.shape == np.shape(ref), (got_a.shape, np.shape(ref))
    assert got_a.dtype == np.asarray(ref).dtype, (got_a.dtype, np.asarray(ref).dtype)
    if hasattr(got, "dtype"):  # the lazy metadata is right too
        assert got.dtype == got_a.dtype and got.shape == got_a.shape
    if got_a.dtype.kind in "bi":
        np.testing.assert_array_equal(got_a, ref)
    else:
        np.testing.assert_allclose(got_a, ref, rtol=rtol, atol=rtol, equal_nan=True)


#: the evaluator fields of numbaent.score; merged partial states (class chunks) have them all (the
#: rank from the label's logit, gathered from its block first)
EVALUATOR_FIELDS = ("confidence", "margin", "rank", "brier")


def same_summary(got, ref):
    """``got`` equals ``ref`` to 1e-12 relative (top-k accuracies, counts: exactly)."""
    assert got.keys() == ref.keys()
    for k, v in ref.items():
        if v is None:
            assert got[k] is None, k
        elif isinstance(v, dict):  # top_k_accuracy
            assert got[k].keys() == v.keys(), k
            for kk, vv in v.items():
                assert got[k][kk] == pytest.approx(vv, rel=1e-12, nan_ok=True), (k, kk)
        else:
            assert got[k] == pytest.approx(v, rel=1e-12, nan_ok=True), k


def logits_with_specials(rng, n=N, c=C, dtype=np.float64):
    x = rng.standard_normal((n, c)) * 4
    x[0] = -np.inf
    x[1, 5] = np.nan
    x[2, c - 1] = np.inf
    x[3, : c // 2] = -np.inf  # whole class blocks of -inf
    x[4] = 2.5  # ties: argmax 0
    x[5, -1] = 1e30  # huge logits
    return x.astype(dtype)


def labels_for(rng, n=N, c=C):
    y = rng.integers(0, c, n)
    y[rng.random(n) < 0.2] = -100
    y[3] = c - 1
    return y


def test_import_numbaent_does_not_import_dask():
    code = "import sys, numbaent; assert 'dask' not in sys.modules, 'dask imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("chunks", CHUNKS)
def test_logit_functions(chunks):
    rng = np.random.default_rng(0)
    x = logits_with_specials(rng)
    y = labels_for(rng)
    dx = da.from_array(x, chunks=chunks)
    dy = da.from_array(y, chunks=chunks[0])
    close(nd.logsumexp(dx), numbaent.logsumexp(x))
    close(nd.softmax_entropy(dx, base=2), numbaent.softmax_entropy(x, base=2))
    close(nd.log_softmax(dx), numbaent.log_softmax(x))
    close(nd.softmax(dx), numbaent.softmax(x))
    for red in ("none", "sum", "mean"):
        close(
            nd.softmax_cross_entropy(dx, dy, reduction=red),
            numbaent.softmax_cross_entropy(x, y, reduction=red),
        )
    res = nd.logsumexp(dx)
    assert res.chunks == (dx.chunks[0],)  # per-row results keep the row chunks


@pytest.mark.parametrize("chunks", CHUNKS)
def test_cross_entropy_options(chunks):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C)) * 2
    y = labels_for(rng)
    w = rng.random(C) + 0.1
    dx = da.from_array(x, chunks=chunks)
    # labels are chunked differently from the logits below
    for red in ("none", "sum", "mean"):
        for kw in (
            dict(weight=w),
            dict(weight=da.from_array(w, chunks=10)),
            dict(label_smoothing=0.2),
            dict(weight=w, label_smoothing=0.1, ignore_index=3, base=10),
        ):
            ref_kw = {k: np.asarray(v) if k == "weight" else v for k, v in kw.items()}
            yk = np.where(y == -100, kw.get("ignore_index", -100), y)
            close(
                nd.softmax_cross_entropy(dx, da.from_array(yk, chunks=5), reduction=red, **kw),
                numbaent.softmax_cross_entropy(x, yk, reduction=red, **ref_kw),
            )
    t = numbaent.softmax(rng.standard_normal((N, C)))  # soft targets: rechunked class axis
    for red in ("none", "mean"):
        close(
            nd.softmax_cross_entropy(dx, da.from_array(t, chunks=chunks), reduction=red, weight=w),
            numbaent.softmax_cross_entropy(x, t, reduction=red, weight=w),
        )


@pytest.mark.parametrize("chunks", [(10, C), (10, 7)])
def test_all_rows_ignored_mean_is_nan_and_sum_zero(chunks):
    x = np.zeros((N, C))
    dx = da.from_array(x, chunks=chunks)
    dy = da.full(N, -100, chunks=10)
    assert math.isnan(nd.softmax_cross_entropy(dx, dy, reduction="mean").compute())
    assert nd.softmax_cross_entropy(dx, dy, reduction="sum").compute() == 0.0
    zero_w = np.zeros(C)
    y = da.zeros(N, dtype=np.int64, chunks=10)
    assert math.isnan(nd.softmax_cross_entropy(dx, y, weight=zero_w, reduction="mean").compute())


@pytest.mark.parametrize("chunks", [(10, C), (10, 7), (N, 11)])
@pytest.mark.parametrize("normalize", [False, True])
def test_probability_functions(chunks, normalize):
    rng = np.random.default_rng(2)
    p = rng.random((N, C))
    p[rng.random((N, C)) < 0.3] = 0
    p[0] = 0  # an all-zero row (NaN when normalised)
    q = rng.random((N, C)) + 0.01
    q[1, 3] = 0  # p > 0 where q = 0: +inf
    p[1, 3] = 0.5
    if not normalize:
        p, q = p / np.maximum(p.sum(1, keepdims=True), 1e-300), q / q.sum(1, keepdims=True)
    dp, dq = da.from_array(p, chunks=chunks), da.from_array(q, chunks=chunks)
    q1 = q[7]
    dq1 = da.from_array(q1, chunks=chunks[1])
    for red in ("none", "mean"):
        kw = dict(normalize=normalize, reduction=red)
        close(nd.entropy(dp, base=2, **kw), numbaent.entropy(p, base=2, **kw))
        for name in ("cross_entropy", "kl_divergence", "js_divergence"):
            close(getattr(nd, name)(dp, dq, **kw), getattr(numbaent, name)(p, q, **kw))
            close(getattr(nd, name)(dp, dq1, **kw), getattr(numbaent, name)(p, q1, **kw))
    counts = rng.integers(0, 5, (N, C))  # integer counts: float64 results
    close(
        nd.entropy(da.from_array(counts, chunks=chunks), normalize=True),
        numbaent.entropy(counts, normalize=True),
    )


@pytest.mark.parametrize("chunks", CHUNKS)
def test_score_and_summary(chunks):
    rng = np.random.default_rng(3)
    x = logits_with_specials(rng)
    x[1, 5] = 0.0  # no NaN: the summary means stay finite
    y = labels_for(rng)
    t = rng.standard_normal((N, C))
    dx, dy = da.from_array(x, chunks=chunks), da.from_array(y, chunks=chunks[0])
    for teacher, temperature in ((None, 2.0), (t, 2.0), (None, 1.0), (t, 1.0)):
        dt = None if teacher is None else da.from_array(teacher, chunks=chunks)
        s = nd.score(dx, dy, teacher_logits=dt, temperature=temperature, base=2)
        ref = numbaent.score(x, y, teacher_logits=teacher, temperature=temperature, base=2)
        assert isinstance(s, nd.DaskScores) and isinstance(s.logsumexp, da.Array)
        got = s.compute()  # class chunks, no teacher, T = 1: merged partial states
        for name, arr in ref.as_dict().items():
            close(getattr(got, name), arr)
        np.testing.assert_array_equal(got.rank, ref.rank)
        same_summary(s.summary(), ref.summary())
    s = nd.score(dx)  # no labels
    assert s.cross_entropy is None and s.summary()["accuracy"] is None
    close(s.argmax, numbaent.score(x).argmax)


def test_batch_axes_and_class_axis_not_last():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, C, 5)) * 3  # classes on axis 1
    y = rng.integers(0, C, (3, 5))
    y[0, 1] = -100
    for chunks in ((2, C, 3), (2, 8, 3)):
        dx, dy = da.from_array(x, chunks=chunks), da.from_array(y, chunks=(2, 3))
        close(nd.logsumexp(dx, axis=1), numbaent.logsumexp(x, axis=1))
        close(nd.log_softmax(dx, axis=1), numbaent.log_softmax(x, axis=1))
        close(
            nd.softmax_cross_entropy(dx, dy, axis=1, reduction="mean"),
            numbaent.softmax_cross_entropy(x, y, axis=1, reduction="mean"),
        )
        close(nd.score(dx, dy, axis=1).cross_entropy, numbaent.score(x, y, axis=1).cross_entropy)
        p = numbaent.softmax(x, axis=1)
        close(nd.entropy(da.from_array(p, chunks=chunks), axis=1), numbaent.entropy(p, axis=1))


def test_one_dimensional_input():
    x = np.log(np.arange(1.0, 9.0))
    for c in (8, 3):
        dx = da.from_array(x, chunks=c)
        close(nd.logsumexp(dx), np.float64(numbaent.logsumexp(x)))
        close(nd.softmax_cross_entropy(dx, 2), np.float64(numbaent.softmax_cross_entropy(x, 2)))
        close(nd.softmax(dx), numbaent.softmax(x))
        close(nd.entropy(da.from_array(x / x.sum(), chunks=c)), numbaent.entropy(x / x.sum()))


def test_float32_and_half_inputs():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    y = labels_for(rng)
    for chunks in ((10, C), (10, 7)):
        dx, dy = da.from_array(x, chunks=chunks), da.from_array(y, chunks=10)
        for got, ref in (
            (nd.logsumexp(dx), numbaent.logsumexp(x)),
            (nd.softmax_cross_entropy(dx, dy), numbaent.softmax_cross_entropy(x, y)),
            (
                nd.softmax_entropy(dx.astype(np.float16)),
                numbaent.softmax_entropy(x.astype(np.float16)),
            ),
        ):
            assert got.dtype == np.float32
            close(got, ref, rtol=1e-5)


def test_results_are_lazy():
    def boom(block):
        raise AssertionError("computed while building the graph")

    x = da.zeros((20, 6), chunks=(5, 2)).map_blocks(boom, dtype=np.float64)
    y = da.zeros(20, dtype=np.int64, chunks=5)
    p = da.zeros((20, 6), chunks=(5, 6)).map_blocks(boom, dtype=np.float64)
    nd.softmax_cross_entropy(x, y, reduction="mean")
    nd.score(x, y, teacher_logits=x)
    nd.log_softmax(x)
    nd.kl_divergence(p, p, normalize=True, reduction="sum")
    nd.js_divergence(x, x[0], normalize=True)


def test_errors():
    x = da.zeros((20, 6), chunks=(5, 3))
    with pytest.raises(TypeError, match="floating"):
        nd.logsumexp(da.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        nd.softmax_cross_entropy(x, da.zeros(19, dtype=np.int64))
    with pytest.raises(ValueError, match="reduction"):
        nd.softmax_entropy(x, reduction="avg")
    with pytest.raises(ValueError, match="base"):
        nd.entropy(x, base=1)
    with pytest.raises(ValueError, match="backend"):
        nd.logsumexp(x, backend="tpu")
    with pytest.raises(ValueError, match="same shape"):
        nd.kl_divergence(x, da.zeros((20, 5)))
    with pytest.raises(TypeError, match="bool"):
        nd.softmax_cross_entropy(x, da.zeros(20, dtype=bool))
    # compute-time errors name the row in the whole array, for both paths
    y = np.zeros(20, np.int64)
    y[13] = 6
    for chunks in ((5, 6), (5, 3)):
        dx = da.zeros((20, 6), chunks=chunks)
        with pytest.raises(IndexError, match="label 6 at row 13 "):
            nd.softmax_cross_entropy(dx, da.from_array(y, chunks=5)).compute()
        with pytest.raises(IndexError, match="label 6 at row 13 "):
            nd.score(dx, da.from_array(y, chunks=5)).cross_entropy.compute()
        xn = np.zeros((20, 6))
        xn[17, 4] = np.nan
        with pytest.raises(ValueError, match="logits has a NaN in row 17"):
            nd.softmax_entropy(da.from_array(xn, chunks=chunks), nan_policy="raise").compute()
        pn = np.full((20, 6), 1 / 6)
        pn[11, 5] = -0.1
        for norm in (False, True):
            with pytest.raises(ValueError, match="p has a negative entry in row 11"):
                nd.entropy(da.from_array(pn, chunks=chunks), normalize=norm).compute()
        pn[11, 5] = np.nan
        with pytest.raises(ValueError, match="p has a NaN in row 11"):
            nd.entropy(
                da.from_array(pn, chunks=chunks), nan_policy="raise", normalize=True
            ).compute()
    x3 = np.zeros((2, 6, 4))
    x3[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN in row \(1, 3\)"):
        nd.softmax_entropy(
            da.from_array(x3, chunks=(1, 6, 2)), axis=1, nan_policy="raise"
        ).compute()


def _load_example():
    spec = importlib.util.spec_from_file_location("dask_score", ROOT / "examples" / "dask_score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_script_small(tmp_path, capsys):
    ex = _load_example()
    assert (
        ex.main(["--rows", "600", "--classes", "40", "--chunk-rows", "200", "--workers", "0"]) == 0
    )
    out = capsys.readouterr().out
    assert "cross_entropy" in out and "gb_per_s" in out
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((500, 30)) * 2).astype(np.float32)
    y = rng.integers(0, 30, 500)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = ex.parse_args(
        [
            "--logits",
            str(tmp_path / "x.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--chunk-rows",
            "128",
            "--class-chunk",
            "8",
            "--workers",
            "0",
        ]
    )
    summary = ex.run(args)
    ref = numbaent.score(x, y).summary()
    for k in ("cross_entropy", "accuracy", "entropy", "rows"):
        assert summary[k] == pytest.approx(ref[k], rel=1e-6), k


def test_distributed_local_cluster():
    """Two worker processes, one thread each: row chunks and class chunks, then shut down."""
    distributed = pytest.importorskip("dask.distributed")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400, 60)) * 3
    y = rng.integers(0, 60, 400)
    y[::9] = -100
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        dy = da.from_array(y, chunks=100)
        for chunks in ((100, 60), (100, 25)):
            dx = da.from_array(x, chunks=chunks)
            loss, lse = dask.compute(
                nd.softmax_cross_entropy(dx, dy, reduction="mean"), nd.logsumexp(dx)
            )
            assert loss == pytest.approx(
                numbaent.softmax_cross_entropy(x, y, reduction="mean"), rel=1e-12
            )
            np.testing.assert_allclose(lse, numbaent.logsumexp(x), rtol=1e-12)
            same_summary(nd.score(dx, dy).summary(), numbaent.score(x, y).summary())
        assert len(client.scheduler_info()["workers"]) == 2
    assert client.status == "closed"


@pytest.mark.parametrize("label", [300, 1000, -1])
@pytest.mark.parametrize("chunks", [(5, 300), (5, 100), (20, 7)], ids=["rows", "class", "uneven"])
def test_bad_label_gives_the_in_memory_error(chunks, label):
    # class chunks merge partial states; their error is the in-memory functions', word for word
    x = np.random.default_rng(3).standard_normal((20, 300))
    y = np.zeros(20, np.int64)
    y[13] = label
    dx, dy = da.from_array(x, chunks=chunks), da.from_array(y, chunks=5)
    for lazy, eager in (
        (lambda: nd.score(dx, dy).cross_entropy, lambda: numbaent.score(x, y)),
        (lambda: nd.score(dx, dy).summary(), lambda: numbaent.score(x, y)),
        (
            lambda: nd.softmax_cross_entropy(dx, dy, reduction="mean"),
            lambda: numbaent.softmax_cross_entropy(x, y, reduction="mean"),
        ),
        (
            lambda: nd.softmax_cross_entropy(dx, dy, weight=np.ones(300)),
            lambda: numbaent.softmax_cross_entropy(x, y, weight=np.ones(300)),
        ),
    ):
        with pytest.raises(IndexError) as want:
            eager()
        with pytest.raises(IndexError) as got:
            res = lazy()
            if not isinstance(res, dict):
                res.compute()
        assert str(got.value) == str(want.value)
        assert f"label {label} at row 13 is outside [0, 300)" in str(got.value)


def test_row_chunks_carry_the_evaluator_fields_and_the_summary_options():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C)) * 3
    x[4] = 2.5  # a tie at the top: margin 0, rank by index
    y = labels_for(rng)
    dx, dy = da.from_array(x, chunks=(10, C)), da.from_array(y, chunks=10)
    s = nd.score(dx, dy, temperature=1.5)
    ref = numbaent.score(x, y, temperature=1.5)
    for name in EVALUATOR_FIELDS:
        assert isinstance(getattr(s, name), da.Array), name
        close(getattr(s, name), getattr(ref, name))
    assert s.margin.compute()[4] == 0 and s.rank.dtype == np.int64
    for opts in ({}, {"top_k": (1, 2, 29), "bins": 4}, {"top_k": 3, "bins": 1}):
        want = ref.summary(**opts)
        assert s.summary(**opts) == want  # exact states per row chunk: bit for bit
        assert s.summary_state(**opts).result() == want
    with pytest.raises(ValueError, match="do not merge"):
        s.summary_state(top_k=(1,)).merge(ref.summary_state())
    for bad in ({"top_k": (0,)}, {"bins": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            s.summary(**bad)
    # without labels: confidence and margin only
    s = nd.score(dx)
    assert s.rank is None and s.brier is None
    close(s.confidence, numbaent.score(x).confidence)
    assert s.summary()["ece"] is None and s.summary()["confidence"] is not None


def test_class_chunks_give_every_evaluator_field():
    """Merged partial states (class chunks, no teacher, temperature 1) give confidence, margin,
    brier and rank (ties with the label across blocks included), and so the summary's
    top_k_accuracy, brier, ece, mce and confidence."""
    rng = np.random.default_rng(12)
    x = logits_with_specials(rng)
    y = labels_for(rng)
    x[3, [2, 9, C - 1]] = x[3, y[3]] if y[3] >= 0 else 1.0  # the label tied in other blocks
    x[4, :] = 0.25  # every class tied
    for chunks in ((10, 7), (7, 1), (10, C)):
        s = nd.score(da.from_array(x, chunks=chunks), da.from_array(y, chunks=chunks[0]))
        ref = numbaent.score(x, y)
        np.testing.assert_array_equal(s.rank.compute(), ref.rank)
        np.testing.assert_array_equal(s.compute().correct, ref.correct)
        for name in ("confidence", "margin", "brier"):
            close(getattr(s, name), getattr(ref, name))
        got = s.summary(top_k=(1, 3), bins=10)
        same_summary(got, ref.summary(top_k=(1, 3), bins=10))
    assert got["top_k_accuracy"] is not None and got["nan_rows"] > 0  # NaN rows left out
    assert not any(math.isnan(got[k]) for k in ("accuracy", "brier", "ece", "mce", "confidence"))


# --------------------------------------------------------------------------------------------------
# scores from hidden states


def hidden_inputs(rng, dtype=np.float64, batch=(N,), d=8, dt=5):
    """Hidden states, weight, bias, labels (two ignored) and a teacher of its own d (float32)."""
    h = rng.standard_normal((*batch, d)).astype(dtype)
    w = rng.standard_normal((C, d)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = rng.integers(0, C, batch)
    y.reshape(-1)[[1, 6]] = -100
    th = rng.standard_normal((*batch, dt)).astype(np.float32)
    tw = rng.standard_normal((C, dt)).astype(np.float32)
    tb = rng.standard_normal(C).astype(np.float32)
    return h, w, b, y, (th, tw, tb)


@pytest.mark.parametrize("teacher", [False, True], ids=["labels", "teacher"])
@pytest.mark.parametrize("rows", [10, N], ids=["row chunks", "one chunk"])
def test_linear_score_equals_the_in_memory_one(rows, teacher):
    rng = np.random.default_rng(13)
    h, w, b, y, tch = hidden_inputs(rng)
    # weight and bias: a NumPy array and a dask array in several chunks (gathered into one); the
    # labels and the teacher's hidden states chunked unlike the hidden states (rechunked)
    dh = da.from_array(h, chunks=(rows, 8))
    dy = da.from_array(y, chunks=7)
    dt = (da.from_array(tch[0], chunks=(9, 5)), tch[1], da.from_array(tch[2], chunks=10))
    kw = dict(temperature=1.5, base=2, chunk_classes=7)
    s = nd.linear_score(dh, w, dy, bias=da.from_array(b, chunks=10),
                        teacher=dt if teacher else None, **kw)  # fmt: skip
    ref = numbaent.linear_score(h, w, y, bias=b, teacher=tch if teacher else None, **kw)
    assert isinstance(s, nd.DaskScores) and isinstance(s.rank, da.Array)
    got = s.compute()
    assert set(got.as_dict()) == set(ref.as_dict())  # every field, the rank included
    for name, arr in ref.as_dict().items():
        close(getattr(s, name), arr)  # the lazy metadata too
        close(getattr(got, name), arr)
    same_summary(s.summary(top_k=(1, 3)), ref.summary(top_k=(1, 3)))
    # without labels: no cross-entropy, rank or brier; confidence and margin still
    s = nd.linear_score(dh, w)
    assert s.cross_entropy is None and s.rank is None and s.brier is None
    close(s.margin, numbaent.linear_score(h, w).margin)


def test_linear_score_float32_batch_axes_and_one_row():
    rng = np.random.default_rng(14)
    h, w, b, y, _ = hidden_inputs(rng, np.float32, batch=(3, 5))
    s = nd.linear_score(da.from_array(h, chunks=(2, 3, 8)), w, da.from_array(y, chunks=(2, 3)),
                        bias=b)  # fmt: skip
    ref = numbaent.linear_score(h, w, y, bias=b)
    got = s.compute()
    for name, arr in ref.as_dict().items():
        assert getattr(s, name).shape == arr.shape == (3, 5), name
        close(getattr(got, name), arr, rtol=1e-6)
    one = nd.linear_score(da.from_array(h[1, 2]), w, y[1, 2], bias=b)  # (d,): one row
    close(one.cross_entropy, numbaent.linear_score(h[1, 2], w, y[1, 2], bias=b).cross_entropy)


def test_linear_cross_entropy_reductions():
    rng = np.random.default_rng(15)
    h, w, b, y, _ = hidden_inputs(rng)
    dh, dy = da.from_array(h, chunks=(10, 8)), da.from_array(y, chunks=10)
    cw = rng.uniform(0.5, 2.0, C)
    for opts in ({}, {"weight_classes": cw}, {"label_smoothing": 0.1}, {"temperature": 2.0},
                 {"weight_classes": cw, "label_smoothing": 0.1, "temperature": 0.5}):  # fmt: skip
        for reduction in ("none", "mean", "sum"):
            kw = dict(bias=b, reduction=reduction, chunk_classes=10, **opts)
            got = nd.linear_cross_entropy(dh, w, dy, **kw)
            ref = numbaent.linear_cross_entropy(h, w, y, **kw)
            close(got, np.float64(ref) if reduction != "none" else ref)


def test_linear_score_errors():
    rng = np.random.default_rng(16)
    h, w, b, y, (th, tw, _) = hidden_inputs(rng)
    dh = da.from_array(h, chunks=(10, 8))
    with pytest.raises(ValueError, match="hidden must be chunked along its rows only, not along d"):
        nd.linear_score(da.from_array(h, chunks=(10, 3)), w, y)
    with pytest.raises(ValueError, match="^teacher_hidden must be chunked along its rows only"):
        nd.linear_score(dh, w, y, teacher=(da.from_array(th, chunks=(10, 2)), tw))
    with pytest.raises(ValueError, match="hidden must be chunked along its rows only"):
        nd.linear_cross_entropy(da.from_array(h, chunks=(10, 3)), w, y)
    with pytest.raises(ValueError, match="the last dimensions"):
        nd.linear_score(dh, w[:, :5])
    with pytest.raises(ValueError, match="bias must have shape"):
        nd.linear_score(dh, w, bias=b[:-1])
    with pytest.raises(ValueError, match="teacher"):
        nd.linear_score(dh, w, teacher=(th[:-1], tw))
    with pytest.raises(ValueError, match="chunk_classes"):
        nd.linear_score(dh, w, chunk_classes=0)
    with pytest.raises(TypeError, match="floating"):
        nd.linear_score(dh, w.astype(np.int64))
    # at compute time: the in-memory error, its row in the whole array
    bad = y.copy()
    bad[23] = C
    with pytest.raises(IndexError, match=f"label {C} at row 23 "):
        nd.linear_score(dh, w, da.from_array(bad, chunks=10)).cross_entropy.compute()


def test_linear_score_is_lazy():
    def boom(block):
        raise AssertionError("computed while building the graph")

    h = da.zeros((20, 4), chunks=(5, 4)).map_blocks(boom, dtype=np.float64)
    y = da.zeros(20, dtype=np.int64, chunks=5)
    nd.linear_score(h, np.ones((6, 4)), y, teacher=(h, np.ones((6, 4))))
    nd.linear_cross_entropy(h, np.ones((6, 4)), y, reduction="mean")
