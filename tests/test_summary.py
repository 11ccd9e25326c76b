"""The one summary implementation (numbaent._summary): exact sums, so a summary does not depend on
how the rows were split, and it is the same from memory, the CLI's chunks and numbaent.dask."""

from __future__ import annotations

import json
import math
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


def main_json(path, chunk, capsys):
    from numbaent.cli import main

    assert main(["score", str(path), "--json", "--chunk-rows", chunk]) == 0
    out = json.loads(capsys.readouterr().out)
    return out


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
