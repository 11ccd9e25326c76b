"""numbaent.partial: states of class slices, combined in any order, equal the whole-row results."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import BF16, assert_close

import numbaent
from numbaent.partial import LogitState, combine, finish, partial_state

RTOL = 1e-12


def close(got, ref, rtol=RTOL):
    np.testing.assert_allclose(
        np.asarray(got, np.float64),
        np.asarray(ref, np.float64),
        rtol=rtol,
        atol=rtol,
        equal_nan=True,
    )


def random_cuts(rng, c, n_cuts):
    """Sorted cut points in [0, c], with repeats (empty slices) allowed."""
    cuts = np.sort(rng.integers(0, c + 1, n_cuts))
    return [0, *cuts.tolist(), c]


def states_of(x, y, cuts, rng=None, **kw):
    """States of the slices between ``cuts`` (with the label logits, so that ranks are known,
    unless ``label_logits=None`` is passed)."""
    if y is not None and "label_logits" not in kw:
        kw["label_logits"] = label_logits(x, y)
    parts = [
        partial_state(x[..., lo:hi], y, class_offset=lo, **kw)
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    if rng is not None:
        rng.shuffle(parts)
    return parts


def reduce_left(parts):
    s = parts[0]
    for p in parts[1:]:
        s = s.combine(p)
    return s


def check_scores(got, ref, rtol=RTOL, rank=True):
    for name in ("logsumexp", "entropy", "cross_entropy", "confidence", "margin", "brier"):
        if getattr(ref, name) is not None:
            close(getattr(got, name), getattr(ref, name), rtol)
    np.testing.assert_array_equal(got.argmax, ref.argmax)
    if ref.correct is not None:
        np.testing.assert_array_equal(got.correct, ref.correct)
        np.testing.assert_array_equal(got.ignored, ref.ignored)
        if rank:
            np.testing.assert_array_equal(got.rank, ref.rank)


def label_logits(x, y):
    """x[label] per row (0 where the label is outside [0, C): ignored or stray)."""
    c = x.shape[-1]
    if c == 0:
        return np.zeros(np.shape(y))
    y = np.asarray(y)
    ok = (y >= 0) & (y < c)
    got = np.take_along_axis(x, np.where(ok, y, 0)[..., None], axis=-1)[..., 0]
    return np.where(ok, got, 0.0)


def special_logits(rng, n, c):
    x = rng.standard_normal((n, c)) * 4
    x[0, :] = -np.inf  # a row of only -inf
    x[1, c // 3] = np.nan
    x[2, c // 2] = np.inf
    x[3, : c // 2] = -np.inf  # a prefix of -inf: early slices hold only -inf
    x[4, :] = 7.0  # ties everywhere: argmax is the first class
    x[5, 1::3] = np.inf
    x[5, 2] = np.nan  # NaN after a +inf: argmax is the NaN
    x[6, -1] = 50.0  # one dominant class at the end
    return x


@pytest.mark.parametrize("seed", range(8))
def test_random_splits_equal_score(seed):
    rng = np.random.default_rng(seed)
    n, c = 12, int(rng.integers(1, 90))
    x = rng.standard_normal((n, c)) * 5
    if seed % 2:
        x = special_logits(rng, n, c) if c >= 8 else x
    y = rng.integers(0, c, n)
    y[rng.random(n) < 0.25] = -100
    cuts = random_cuts(rng, c, int(rng.integers(0, 6)))
    parts = states_of(x, y, cuts, rng, label_logits=label_logits(x, y))
    ref = numbaent.score(x, y, backend="numpy")
    for state in (combine(parts), reduce_left(parts), reduce_left(parts[::-1])):
        assert state.classes == ((0, c),)
        check_scores(finish(state, num_classes=c), ref)
        close(state.logsumexp(), numbaent.logsumexp(x))
        close(state.entropy(), numbaent.softmax_entropy(x))
        close(state.cross_entropy(), numbaent.softmax_cross_entropy(x, y))
    s = finish(combine(parts))
    assert s.summary().keys() == ref.summary().keys()
    for k, v in ref.summary().items():
        if isinstance(v, dict):
            assert s.summary()[k].keys() == v.keys()
            close(list(s.summary()[k].values()), list(v.values()))
        else:
            close(s.summary()[k], v)
    # without the label logits, a slice counts only the rows whose label it holds: no ranks
    # unless one slice holds every label
    alone = finish(combine(states_of(x, y, cuts, label_logits=None)), num_classes=c)
    if len({(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo}) > 1:
        assert alone.rank is None
    check_scores(alone, ref, rank=False)


def test_every_split_point_and_labels_in_every_slice():
    rng = np.random.default_rng(1)
    c = 9
    x = special_logits(rng, 10, c)
    y = np.arange(10) % c
    y[7] = -100
    ref = numbaent.score(x, y, base=2)
    for k in range(c + 1):
        for j in range(k, c + 1):
            s = finish(combine(states_of(x, y, [0, k, j, c])), base=2)
            check_scores(s, ref)


def test_slice_of_only_minus_inf_and_empty_slices():
    x = np.array([[-np.inf, -np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf, -np.inf]])
    y = np.array([3, 1])
    ll = label_logits(x, y)
    left = partial_state(x[:, :2], y, label_logits=ll)
    assert np.all(left.max == -np.inf) and np.all(left.sum_exp == 0)
    empty = partial_state(x[:, 2:2], y, class_offset=2, label_logits=ll)
    assert empty.classes == () and np.all(empty.argmax == np.iinfo(np.int64).max)
    right = partial_state(x[:, 2:], y, class_offset=2, label_logits=ll)
    s = finish(combine([empty, left, right, empty]))
    check_scores(s, numbaent.score(x, y))
    assert s.logsumexp[1] == -np.inf and np.isnan(s.entropy[1]) and np.isnan(s.cross_entropy[1])


def test_no_classes_at_all_matches_score_of_empty_rows():
    x = np.empty((3, 0))
    s = finish(partial_state(x))
    check_scores(s, numbaent.score(x))


def test_label_outside_every_slice_raises_when_finishing():
    x = np.zeros((3, 6))
    y = np.array([1, 5, -100])
    a = partial_state(x[:, :3], y)
    with pytest.raises(
        IndexError, match=r"label 5 at row 1 is in no slice \(the states cover \[0, 3\)\)"
    ):
        finish(a)
    full = a.combine(partial_state(x[:, 3:], y, class_offset=3))
    finish(full)  # fine once the shard holding class 5 is in
    bad = np.array([1, 6, -1])
    s = combine(states_of(x, bad, [0, 2, 6]))
    with pytest.raises(IndexError, match=r"label 6 at row 1 is in no slice .*\[0, 6\)"):
        s.cross_entropy()
    with pytest.raises(IndexError, match="label -1 at row 2"):
        finish(combine(states_of(x, np.array([0, 0, -1]), [0, 6])))


def test_ignore_index_inside_the_class_range():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 8))
    y = np.array([0, 3, 3, 7, 3, 1])
    ref = numbaent.score(x, y, ignore_index=3)
    s = finish(combine(states_of(x, y, [0, 3, 5, 8], ignore_index=3)))
    check_scores(s, ref)
    assert list(s.cross_entropy[[1, 2, 4]]) == [0, 0, 0]


def test_huge_logits_keep_their_precision():
    x = np.array([[1e30, 1e30 - 1e15, 1e30], [-1e300, 3e300, 2.9e300]])
    y = np.array([1, 2])
    s = finish(combine(states_of(x, y, [0, 1, 3])))
    check_scores(s, numbaent.score(x, y))
    assert s.cross_entropy[0] == pytest.approx((x[0, 0] - x[0, 1]) + np.log(2), rel=1e-15)


def test_batch_axes_axis_and_base():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 17, 4)) * 3  # classes on axis 1
    y = rng.integers(0, 17, (3, 4))
    y[0, 0] = -100
    ref = numbaent.score(x, y, axis=1, base=10)
    ll = np.take_along_axis(x, np.where(y < 0, 0, y)[:, None, :], axis=1)[:, 0, :]
    parts = [
        partial_state(x[:, lo:hi], y, class_offset=lo, axis=1, label_logits=ll)
        for lo, hi in ((0, 5), (5, 17))
    ]
    s = finish(combine(parts), base=10)
    assert s.logsumexp.shape == (3, 4)
    check_scores(s, ref)


def test_one_dimensional_logits_give_zero_d_results():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    s = finish(
        combine(
            [partial_state(x[:2], 3, label_logits=3.0), partial_state(x[2:], 3, class_offset=2)]
        )
    )
    ref = numbaent.score(x, 3)
    assert np.shape(s.logsumexp) == ()
    check_scores(s, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
def test_low_precision_slices(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((20, 300)) * 3).astype(dtype)
    y = rng.integers(0, 300, 20)
    s = finish(combine(states_of(x, y, [0, 100, 101, 300])))
    ref = numbaent.score(x.astype(np.float64), y)
    assert s.logsumexp.dtype == np.float32 and s.cross_entropy.dtype == np.float32
    for name in ("logsumexp", "entropy", "cross_entropy"):
        assert_close(getattr(s, name), getattr(ref, name), np.float32, scale=2)
    np.testing.assert_array_equal(s.argmax, ref.argmax)


def test_dtype_promotes_to_float64_when_any_slice_is_float64():
    x = np.random.default_rng(5).standard_normal((2, 4))
    s = partial_state(x[:, :2].astype(np.float32)).combine(partial_state(x[:, 2:], class_offset=2))
    assert s.logsumexp().dtype == np.float64


def test_combine_errors_and_pickling():
    x = np.zeros((2, 4))
    a = partial_state(x[:, :2], np.array([0, 1]))
    with pytest.raises(ValueError, match="overlap"):
        a.combine(partial_state(x[:, 1:], np.array([0, 1]), class_offset=1))
    with pytest.raises(ValueError, match="labels and one without"):
        a.combine(partial_state(x[:, 2:], class_offset=2))
    with pytest.raises(ValueError, match="different labels"):
        a.combine(partial_state(x[:, 2:], np.array([0, 2]), class_offset=2))
    with pytest.raises(ValueError, match="ignore_index"):
        a.combine(partial_state(x[:, 2:], np.array([0, 1]), class_offset=2, ignore_index=-1))
    with pytest.raises(ValueError, match="batch shapes"):
        a.combine(partial_state(np.zeros((3, 2)), np.array([0, 1, 1]), class_offset=2))
    with pytest.raises(ValueError, match="at least one"):
        combine([])
    with pytest.raises(TypeError):
        a.combine("state")
    with pytest.raises(ValueError, match="needs labels"):
        partial_state(x).cross_entropy()
    with pytest.raises(ValueError, match="class_offset"):
        partial_state(x, class_offset=-1)
    with pytest.raises(TypeError, match="floating"):
        partial_state(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="shape"):
        partial_state(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="a shard is missing"):
        finish(a, num_classes=4)
    b = pickle.loads(pickle.dumps(a))
    assert isinstance(b, LogitState) and b.classes == a.classes
    close(
        b.combine(partial_state(x[:, 2:], np.array([0, 1]), class_offset=2)).logsumexp(),
        [np.log(4)] * 2,
    )


def test_numpy_backend_gives_the_same_state():
    rng = np.random.default_rng(6)
    x = special_logits(rng, 10, 40)
    y = rng.integers(0, 40, 10)
    a = finish(combine(states_of(x, y, [0, 13, 40], backend="numpy")))
    check_scores(a, numbaent.score(x, y))


def test_top_level_exports():
    assert numbaent.partial_state is partial_state and numbaent.LogitState is LogitState
    assert numbaent.partial.combine is combine and numbaent.partial.finish is finish


# --------------------------------------------------------------------------------------------------
# no field of a state (nor of what finish gives) is a view of an input


def _arrays(state):
    return {
        name: getattr(state, name)
        for name in ("max", "sum_exp", "sum_exp_x", "argmax", "target", "labels")
        if getattr(state, name) is not None
    }


@pytest.mark.parametrize(
    "labels_of",
    [
        lambda y: y,  # int64, contiguous: the case that was kept as a view
        lambda y: y.astype(np.int32),
        lambda y: np.repeat(y, 2)[::2],  # strided
        lambda y: y.reshape(2, 3),  # batch axes (logits reshaped to match)
    ],
    ids=["int64", "int32", "strided", "2-d"],
)
def test_state_does_not_alias_its_inputs(labels_of):
    rng = np.random.default_rng(5)
    y = labels_of(np.array([1, 2, 3, 4, 0, 2], dtype=np.int64))
    x = rng.standard_normal((*y.shape, 5))
    x_before, y_before = x.copy(), y.copy()
    s = partial_state(x, y)
    want = finish(s)
    for name, a in _arrays(s).items():
        assert not np.shares_memory(a, x) and not np.shares_memory(a, y), name
    y[...] = 0  # the caller reuses its arrays
    x[...] = 7.0
    got = finish(s)
    np.testing.assert_array_equal(s.labels, y_before)
    for name in ("cross_entropy", "correct", "ignored", "logsumexp", "entropy", "argmax"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    close(want.cross_entropy, numbaent.score(x_before, y_before).cross_entropy)


def test_combined_state_does_not_alias_its_parts():
    x = np.random.default_rng(6).standard_normal((4, 6))
    y = np.array([0, 5, 2, 3])
    a = partial_state(x[:, :3], y)
    b = partial_state(x[:, 3:], y, class_offset=3)
    s = a.combine(b)
    for part in (a, b):
        for name, arr in _arrays(s).items():
            for other in _arrays(part).values():
                assert not np.shares_memory(arr, other), name
    scores = finish(s)
    for name, arr in _arrays(s).items():
        for f in ("logsumexp", "entropy", "argmax", "cross_entropy", "correct", "ignored"):
            assert not np.shares_memory(getattr(scores, f), arr), (f, name)


def test_stray_label_once_every_class_is_in_gives_the_error_of_score():
    x = np.zeros((3, 6))
    y = np.array([1, 6, -100])
    s = combine(states_of(x, y, [0, 2, 6]))
    with pytest.raises(IndexError) as want:
        numbaent.score(x, y)
    with pytest.raises(IndexError) as got:
        finish(s, num_classes=6)
    assert str(got.value) == str(want.value)
    assert "outside [0, 6)" in str(got.value)
