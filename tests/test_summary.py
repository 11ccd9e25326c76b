"""The one summary implementation (numbaent._summary): exact sums, so a summary does not depend on
how the rows were split, and it is the same from memory, the CLI's chunks and numbaent.dask."""

from __future__ import annotations

import functools
import json
import math
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numbaent as ne
from numbaent._summary import ExactSum, SummaryState

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(finite, max_size=60), st.integers(0, 60))
def test_exact_sum_is_the_correctly_rounded_mean_in_any_split(vals, cut):
    a = np.array(vals, dtype=np.float64)
    exact = sum((Fraction(x) for x in vals), Fraction(0))
    whole = ExactSum.of(a)
    assert whole.units == exact * 2**1074
    split = ExactSum.of(a[:cut]) + ExactSum.of(a[cut:])
    assert split == whole
    if vals:
        assert whole.mean() == float(exact / len(vals)) or math.isinf(whole.mean())
    rev = ExactSum.of(a[::-1])
    assert rev.mean() == whole.mean() or (math.isnan(rev.mean()) and math.isnan(whole.mean()))


def test_exact_sum_over_the_float64_range_and_non_finite_values():
    a = np.array([5e-324, 1e308, -1e308, 2.5e-310, 1.0, -1.0, 3.0])
    assert ExactSum.of(a).units == sum(Fraction(x) for x in a) * 2**1074
    assert ExactSum.of(np.array([1e308, 1e308])).mean() == 1e308  # the sum overflows, the mean not
    assert math.isnan(ExactSum.of(np.array([1.0, np.nan])).mean())
    assert ExactSum.of(np.array([1.0, np.inf])).mean() == math.inf
    assert math.isnan(ExactSum.of(np.array([-np.inf, np.inf])).mean())
    assert math.isnan(ExactSum.of(np.array([])).mean())
    # the cancellation a float64 sum gets wrong: 1e16 + 1 - 1e16 = 0 in float64, 1 exactly
    assert ExactSum.of(np.array([1e16, 1.0, -1e16])).mean() == 1 / 3


def _scores():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1000, 37)) * 4).astype(np.float32)
    y = rng.integers(0, 37, 1000)
    y[::7] = -100
    t = x + rng.standard_normal((1000, 37)).astype(np.float32)
    return x, y, t


def test_summary_is_bit_identical_however_the_rows_are_split():
    x, y, t = _scores()
    whole = ne.score(x, y, teacher_logits=t, base=2)
    ref = whole.summary()
    for cuts in ([500], [1, 999], [333, 666, 999], list(range(10, 1000, 10))):
        state = SummaryState()
        for lo, hi in zip([0, *cuts], [*cuts, 1000], strict=True):
            part = ne.score(x[lo:hi], y[lo:hi], teacher_logits=t[lo:hi], base=2)
            state = state + part.summary_state()
        assert state.result() == ref, cuts
    assert ref["rows"] == 1000 and ref["ignored"] == len(range(0, 1000, 7))
    assert ref["perplexity"] == 2.0 ** ref["cross_entropy"]
    kept = ~whole.ignored
    np.testing.assert_allclose(ref["cross_entropy"], whole.cross_entropy[kept].mean(), rtol=1e-6)


def test_cli_chunks_and_memory_give_the_same_summary(tmp_path, capsys):
    x, y, t = _scores()
    np.savez(tmp_path / "s.npz", logits=x, labels=y, teacher_logits=t)
    runs = []
    for chunk in ("1000", "77", "1"):
        runs.append(main_json(tmp_path / "s.npz", chunk, capsys))
    ref = ne.score(x, y, teacher_logits=t).summary()
    for r in runs:
        for k, v in ref.items():
            assert r[k] == v, (k, r[k], v)


def main_json(path, chunk, capsys, *flags):
    """The summary of ``numbaent score --json`` as the dict of ``summary()``: top-k keys back to
    ints, "NaN" / "Infinity" back to floats."""
    from numbaent.cli import main

    assert main(["score", str(path), "--json", "--chunk-rows", chunk, *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    out.pop("context")
    if out["top_k_accuracy"] is not None:
        out["top_k_accuracy"] = {int(k): _num(v) for k, v in out["top_k_accuracy"].items()}
    return {k: _num(v) for k, v in out.items()}


def _num(v):
    return float(v) if isinstance(v, str) else v


def test_dask_summary_equals_the_in_memory_summary():
    da = pytest.importorskip("dask.array")
    import numbaent.dask as nd

    x, y, t = _scores()
    ref = ne.score(x, y, teacher_logits=t).summary()
    got = nd.score(da.from_array(x, chunks=(130, 37)), da.from_array(y, chunks=130),
                   teacher_logits=da.from_array(t, chunks=(130, 37))).summary()  # fmt: skip
    assert got == ref


def test_states_of_different_scores_do_not_merge():
    x, y, _ = _scores()
    a = ne.score(x[:10], y[:10]).summary_state()
    b = ne.score(x[10:20]).summary_state()
    with pytest.raises(ValueError, match="do not merge"):
        a.merge(b)
    with pytest.raises(ValueError, match="do not merge"):
        a.merge(ne.score(x[10:20], y[10:20], base=2).summary_state())
    with pytest.raises(TypeError, match="SummaryState"):
        a.merge({})
    assert SummaryState().merge(a) == a and a.merge(SummaryState()) == a


def test_nan_rows_are_left_out_of_the_means_and_counted():
    import numbaent as ne

    x = np.log(np.array([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.6, 0.4]]))
    x[1, 0] = np.nan  # model statistics NaN
    t = x[:, ::-1].copy()
    t[1, 0], t[2, 1] = 0.0, np.nan  # row 2: only its teacher is NaN
    y = np.array([0, 1, 1, -100])
    s = ne.score(x, y, teacher_logits=t).summary()
    clean = ne.score(x[[0, 2]], y[[0, 2]], teacher_logits=t[[0, 2]])
    assert s["nan_rows"] == 1 and s["rows"] == 4 and s["ignored"] == 1
    assert s["cross_entropy"] == float(np.mean(clean.cross_entropy))  # rows 0 and 2
    assert s["accuracy"] == float(np.mean(clean.correct))
    assert s["entropy"] == float(np.mean(clean.entropy))
    assert s["kl_divergence"] == float(clean.kl_divergence[0])  # row 2's NaN KL left out too
    # an ignored NaN row is ignored, not a NaN row; merged chunks count the same
    a = ne.score(x[:2], y[:2], teacher_logits=t[:2]).summary_state()
    b = ne.score(x[2:], y[2:], teacher_logits=t[2:]).summary_state()
    assert (a + b).result() == s
    all_nan = ne.score(np.full((2, 3), np.nan), np.array([0, 1])).summary()
    assert all_nan["nan_rows"] == 2 and math.isnan(all_nan["cross_entropy"])  # a mean of no rows


# --------------------------------------------------------------------------------------------------
# top-k accuracy, Brier score and calibration (ECE / MCE)
# --------------------------------------------------------------------------------------------------

BACKENDS = ["numpy", "cpu"]
KEYS = ["cross_entropy", "perplexity", "accuracy", "top_k_accuracy", "brier", "ece", "mce",
        "confidence", "entropy", "kl_divergence", "rows", "ignored", "nan_rows"]  # fmt: skip


def _classifier(seed=0, n=1000, c=37, scale=2.0):
    """Float64 logits without ties, labels drawn from the model's own softmax (so that the model
    is roughly calibrated and every confidence bin is used), every 9th row ignored."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * scale * rng.uniform(0.2, 2.0, (n, 1))
    p = _softmax(x)
    y = (rng.random((n, 1)) < np.cumsum(p, axis=1)).argmax(axis=1)
    y[::9] = -100
    t = x + rng.standard_normal((n, c))
    return x, y, t


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _hand_calibration(conf, correct, bins):
    """ECE and MCE by their formulas, in float64 (bins by the float product: no edge values)."""
    b = np.minimum(np.floor(conf * bins), bins - 1).astype(int)
    ece, mce = 0.0, 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            ece += m.sum() / conf.size * gap
            mce = max(mce, gap)
    return ece, mce


def _rel_equal(got, want, rel=1e-12):
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        if isinstance(w, dict):
            assert g.keys() == w.keys(), k
            for kk in w:
                assert g[kk] == pytest.approx(w[kk], rel=rel, nan_ok=True), (k, kk)
        elif w is None:
            assert g is None, k
        else:
            assert g == pytest.approx(w, rel=rel, nan_ok=True), k


def test_summary_keys_in_the_contract_order():
    x, y, t = _classifier(n=50)
    assert list(ne.score(x, y, teacher_logits=t).summary()) == KEYS
    assert list(ne.score(x).summary()) == KEYS
    assert list(SummaryState().result()) == KEYS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [{}, {"top_k": (1, 2, 3, 10, 37, 50), "bins": 10}])
def test_merged_states_equal_the_summary_over_any_chunking(backend, options):
    x, y, t = _classifier()
    whole = ne.score(x, y, teacher_logits=t, backend=backend)
    ref = whole.summary(**options)
    assert ref["top_k_accuracy"] is not None and ref["ece"] is not None
    rng = np.random.default_rng(7)
    random_cuts = sorted(rng.choice(np.arange(1, 1000), 30, replace=False).tolist())
    for cuts in (list(range(1, 1000)), list(range(7, 1000, 7)), [], random_cuts, [0, 0, 500]):
        state = SummaryState()
        for lo, hi in zip([0, *cuts], [*cuts, 1000], strict=True):
            part = ne.score(x[lo:hi], y[lo:hi], teacher_logits=t[lo:hi], backend=backend)
            state = state + part.summary_state(**options)
        got = state.result()
        _rel_equal(got, ref)  # the contract: 1e-12 relative
        assert got == ref  # and in fact bit for bit: every value is exact up to its rounding
    # a random order of the chunks merges to the same state
    parts = [part.summary_state(**options) for part in _row_slices(whole, random_cuts)]
    order = rng.permutation(len(parts))
    assert _merge_all([parts[i] for i in order]).result() == ref


def _row_slices(s, cuts):
    for lo, hi in zip([0, *cuts], [*cuts, s.logsumexp.size], strict=True):
        yield type(s)(**{k: v[lo:hi] for k, v in s.as_dict().items()}, base=s.base)


def _merge_all(states):
    return functools.reduce(SummaryState.merge, states, SummaryState())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bins", [15, 10, 1, 7])
def test_ece_and_mce_are_the_hand_formula(backend, bins):
    x, y, _ = _classifier(seed=1)
    s = ne.score(x, y, backend=backend)
    got = s.summary(bins=bins)
    keep = y != -100
    p = _softmax(x[keep])
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y[keep]
    ece, mce = _hand_calibration(conf, correct, bins)
    assert got["ece"] == pytest.approx(ece, rel=1e-12)
    assert got["mce"] == pytest.approx(mce, rel=1e-12)
    assert got["confidence"] == pytest.approx(conf.mean(), rel=1e-12)
    assert 0 < got["ece"] <= got["mce"] <= 1
    if bins == 1:  # one bin: |accuracy - mean confidence|
        assert (
            got["ece"] == got["mce"] == pytest.approx(abs(correct.mean() - conf.mean()), rel=1e-12)
        )


@pytest.mark.parametrize("norm", ["l1", "max"])
def test_ece_and_mce_equal_torchmetrics(norm):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    x, y, _ = _classifier(seed=2, n=3000, c=10)
    p = _softmax(x)
    got = ne.score(x, y).summary()["ece" if norm == "l1" else "mce"]
    metric = tm.MulticlassCalibrationError(num_classes=10, n_bins=15, norm=norm, ignore_index=-100)
    want = float(metric(torch.tensor(p), torch.tensor(y)))
    # torchmetrics works in float32 (confidences, its linspace bin edges, the per-bin means)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_the_binning_edge_rule_and_where_torchmetrics_differs():
    """Our bin of a confidence c is min(floor(c * bins), bins - 1) of the exact product: bins
    [k/B, (k+1)/B), the last one closed at 1. torchmetrics (1.9) bins by confidence too, with
    torch.bucketize(c, linspace(0, 1, B + 1), right=True) - 1 in float32: the same left-closed
    bins, but (a) c == 1.0 lands in an extra bin of its own, (b) its edges are the float32
    roundings of k/B (up to 4e-8 off), and (c) it works in float32. (a) is the one difference a
    real model meets: rows whose confidence rounds to 1.0."""
    from numbaent._summary import calibration_bins

    third = 1 / 3  # the float64 1/3 is below 1/3: 3 * third is 1.0 in float64, 0.99.. exactly
    vals = np.array([0.0, 1e-300, third, 0.5, 2 / 3, 0.2, 0.6, 0.9999, 1.0])
    assert calibration_bins(vals, 3).tolist() == [0, 0, 0, 1, 1, 0, 1, 2, 2]
    assert calibration_bins(vals, 5).tolist() == [0, 0, 1, 2, 3, 1, 2, 4, 4]  # 0.6: 0.59..
    assert calibration_bins(vals, 2).tolist() == [0, 0, 0, 1, 1, 0, 1, 1, 1]
    for bins in (3, 7, 15, 100):
        for v in np.concatenate(
            [np.arange(bins + 1) / bins, np.nextafter(np.arange(bins) / bins, 1)]
        ):
            want = min(int(Fraction(float(v)) * bins), bins - 1)
            assert calibration_bins(np.array([v]), bins)[0] == want, (bins, v)

    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    # rows of confidence exactly 1 (one logit far above the others) and rows in the last bin
    x = np.full((8, 4), -1e4)
    x[:, 0] = 0.0
    x[4:] = [3.5, 0.0, -3.0, -3.0]  # confidence ~0.97: the last of 15 bins
    y = np.array([0, 0, 1, 1, 0, 0, 0, 0])  # over-confident at 1.0, under- below
    s = ne.score(x, y)
    conf = s.confidence
    assert (conf[:4] == 1.0).all() and (conf[4:] >= 14 / 15).all()
    # ours: one bin for all eight rows
    acc = s.correct.mean()
    assert s.summary()["ece"] == pytest.approx(abs(acc - conf.mean()), rel=1e-12)
    # torchmetrics: the rows of confidence 1.0 in a bin of their own
    tmp = torch.tensor(_softmax(x))
    ece_tm = float(tm.MulticlassCalibrationError(num_classes=4, n_bins=15)(tmp, torch.tensor(y)))
    split = (
        4 * abs(s.correct[:4].mean() - 1.0) + 4 * abs(s.correct[4:].mean() - conf[4:].mean())
    ) / 8
    assert ece_tm == pytest.approx(split, rel=1e-6)
    assert ece_tm != pytest.approx(s.summary()["ece"], rel=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_accuracy_equals_sklearn(backend):
    sk = pytest.importorskip("sklearn.metrics")
    x, y, _ = _classifier(seed=3, c=12)  # float64 normals: no ties
    ks = (1, 2, 3, 5, 11, 12, 40)
    got = ne.score(x, y, backend=backend).summary(top_k=ks)["top_k_accuracy"]
    assert list(got) == list(ks)
    keep = y != -100
    for k in ks:
        if k < 12:
            want = sk.top_k_accuracy_score(y[keep], x[keep], k=k, labels=range(12))
            assert got[k] == pytest.approx(want, rel=1e-12), k
        else:
            assert got[k] == 1.0  # k >= C: every rank is below k
    assert got[1] == ne.score(x, y, backend=backend).summary()["accuracy"]


def test_top_k_entries_are_sorted_without_repeats_and_one_int_is_one_k():
    x, y, _ = _classifier(n=60)
    s = ne.score(x, y)
    assert list(s.summary(top_k=(5, 1, 5))["top_k_accuracy"]) == [1, 5]
    assert list(s.summary(top_k=3)["top_k_accuracy"]) == [3]
    assert list(s.summary(top_k=np.array([2, 4]))["top_k_accuracy"]) == [2, 4]
    assert s.summary(top_k=())["top_k_accuracy"] == {}
    # states of the same k in another order merge
    assert (s.summary_state(top_k=(5, 1)) + s.summary_state(top_k=[1, 5])).result()["rows"] == 120


@pytest.mark.parametrize("backend", BACKENDS)
def test_brier_is_the_hand_multiclass_formula(backend):
    x, y, _ = _classifier(seed=4, c=9)
    got = ne.score(x, y, backend=backend).summary()["brier"]
    keep = y != -100
    p = _softmax(x[keep])
    onehot = np.eye(9)[y[keep]]
    want = np.mean(np.sum((p - onehot) ** 2, axis=1))
    assert got == pytest.approx(want, rel=1e-12)
    sk = pytest.importorskip("sklearn.metrics")
    assert got == pytest.approx(sk.brier_score_loss(y[keep], p, labels=range(9)), rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_rows_are_left_out_of_the_new_keys_too(backend):
    x, y, t = _classifier(seed=5, n=40, c=6)
    x[[3, 8]] = np.nan
    x[11, 2] = np.inf
    x[13] = -np.inf
    y[13] = 2
    t[20, 1] = np.nan  # a NaN teacher row: out of the KL mean only
    bad = np.zeros(40, bool)
    bad[[3, 8, 11, 13]] = True
    bad &= y != -100
    s = ne.score(x, y, teacher_logits=t, backend=backend)
    got = s.summary(top_k=(1, 2, 3))
    clean = ne.score(x[~bad], y[~bad], teacher_logits=t[~bad], backend=backend)
    want = clean.summary(top_k=(1, 2, 3))
    assert got["nan_rows"] == bad.sum() == 4
    for k in KEYS:
        if k not in ("rows", "nan_rows", "kl_divergence"):
            assert got[k] == want[k], k
    assert got["kl_divergence"] == want["kl_divergence"]  # row 20 out of both
    assert all(0 < v <= 1 for v in got["top_k_accuracy"].values())
    assert not any(math.isnan(got[k]) for k in ("brier", "ece", "mce", "confidence"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_rows_left_gives_nan_and_no_labels_gives_none(backend):
    x, y, _ = _classifier(seed=6, n=30, c=5)
    cases = {
        "all ignored": ne.score(x, np.full(30, -100), backend=backend),
        "all NaN": ne.score(np.full((3, 5), np.nan), np.array([0, 1, 2]), backend=backend),
        "no rows": ne.score(x[:0], y[:0], backend=backend),
    }
    for what, s in cases.items():
        got = s.summary(top_k=(1, 3))
        for k in ("cross_entropy", "perplexity", "accuracy", "brier", "ece", "mce", "confidence",
                  "entropy"):  # fmt: skip
            assert math.isnan(got[k]), (what, k)
        assert list(got["top_k_accuracy"]) == [1, 3], what
        assert all(math.isnan(v) for v in got["top_k_accuracy"].values()), what
        assert got["kl_divergence"] is None
    assert cases["all ignored"].summary()["ignored"] == 30
    assert cases["all NaN"].summary()["nan_rows"] == 3
    # without labels: no accuracy, top-k, Brier or calibration; confidence and entropy are there
    got = ne.score(x, backend=backend).summary()
    for k in ("cross_entropy", "perplexity", "accuracy", "top_k_accuracy", "brier", "ece", "mce"):
        assert got[k] is None, k
    assert got["ignored"] == 0 and got["confidence"] == pytest.approx(_softmax(x).max(1).mean())


def test_ignored_rows_leave_every_mean():
    x, y, _ = _classifier(seed=8, n=200, c=7)
    s = ne.score(x, y).summary(top_k=(1, 2), bins=5)
    keep = y != -100
    assert s == {**ne.score(x[keep], y[keep]).summary(top_k=(1, 2), bins=5), "rows": 200,
                 "ignored": int((~keep).sum())}  # fmt: skip


def test_states_of_other_top_k_bins_base_or_labels_refuse_to_merge():
    x, y, _ = _classifier(n=40)
    s = ne.score(x[:20], y[:20])
    a = s.summary_state()
    other = ne.score(x[20:], y[20:])
    before = pickle.dumps(a)
    refusals = {
        "top_k": other.summary_state(top_k=(1, 3)),
        "bins": other.summary_state(bins=10),
        "base": ne.score(x[20:], y[20:], base=2).summary_state(),
        "labels": ne.score(x[20:]).summary_state(),
    }
    for what, b in refusals.items():
        with pytest.raises(ValueError, match=f"do not merge.*{what}"):
            a.merge(b)
        with pytest.raises(ValueError, match="do not merge"):
            b + a
    merged = a + other.summary_state()
    assert pickle.dumps(a) == before  # the operands are left unchanged
    assert merged.result() == ne.score(x, y).summary()
    assert SummaryState() + merged == merged == merged + SummaryState()  # the empty identity
    assert pickle.loads(pickle.dumps(merged)) == merged


@pytest.mark.parametrize("bad", [0, -1, 1.0, 2.5, True, "5", (1, 0), (1, 2.0), [None], (np.True_,)])
def test_top_k_must_be_positive_ints(bad):
    s = ne.score(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="top_k"):
        s.summary(top_k=bad)
    with pytest.raises(ValueError, match="top_k"):
        s.summary_state(top_k=bad)


@pytest.mark.parametrize("bad", [0, -3, 1.0, 15.5, True, "15", None, (15,)])
def test_bins_must_be_a_positive_int(bad):
    s = ne.score(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="bins"):
        s.summary(bins=bad)
    with pytest.raises(ValueError, match="bins"):
        SummaryState.of_arrays(rows=0, bins=bad)
    assert s.summary(bins=np.int64(3))["ece"] == s.summary(bins=3)["ece"]


def test_cli_flags_give_the_summary_of_the_same_options(tmp_path, capsys):
    x, y, t = _classifier()
    np.savez(tmp_path / "s.npz", logits=x, labels=y, teacher_logits=t)
    ref = ne.score(x, y, teacher_logits=t).summary(top_k=(1, 3, 10), bins=20)
    for chunk in ("1000", "77", "1"):
        got = main_json(tmp_path / "s.npz", chunk, capsys, "--top-k", "10,1,3", "--bins", "20")
        assert got == ref, chunk


def test_dask_passes_top_k_and_bins_through():
    da = pytest.importorskip("dask.array")
    import numbaent.dask as nd

    x, y, t = _classifier()
    ref = ne.score(x, y, teacher_logits=t).summary(top_k=(2, 7), bins=9)
    s = nd.score(da.from_array(x, chunks=(130, 37)), da.from_array(y, chunks=130),
                 teacher_logits=da.from_array(t, chunks=(130, 37)))  # fmt: skip
    assert s.summary(top_k=(2, 7), bins=9) == ref
    assert s.summary_state(top_k=(2, 7), bins=9).result() == ref
    with pytest.raises(ValueError, match="bins"):
        s.summary(bins=0)
