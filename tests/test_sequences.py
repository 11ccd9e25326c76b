"""Scores.sequences: per-document results against a float64 per-document reference.

The reference is written from the definitions (lm-evaluation-harness' loglikelihood: the sum of
log p(token) over the continuation's tokens; is_greedy: every token is the argmax; token
perplexity exp(-loglikelihood / tokens)), one document at a time, from float64 log-softmax rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BACKENDS

import numbaent as ne

IGNORE = -100


def _reference(x, y, lengths, base=None, teacher=None):
    """Per-document dict of float64 results, from the logits themselves (not from Scores)."""
    x = np.asarray(x, np.float64)
    lsm = x - x.max(1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(1, keepdims=True))
    p = np.exp(lsm)
    ent = -(np.where(p > 0, p * lsm, 0.0)).sum(1)
    if teacher is not None:
        t = np.asarray(teacher, np.float64)
        lt = t - t.max(1, keepdims=True)
        lt = lt - np.log(np.exp(lt).sum(1, keepdims=True))
        kl = (np.exp(lt) * (lt - lsm)).sum(1)
    scale = 1.0 if base is None else math.log(base)
    out = {k: [] for k in ("log_likelihood", "tokens", "cross_entropy", "perplexity", "greedy",
                           "entropy", "kl_divergence")}  # fmt: skip
    start = 0
    for n in lengths:
        rows = [i for i in range(start, start + n) if y[i] != IGNORE]
        start += n
        ll = sum(lsm[i, y[i]] for i in rows) / scale
        k = len(rows)
        ce = -ll / k if k else math.nan
        out["log_likelihood"].append(ll)
        out["tokens"].append(k)
        out["cross_entropy"].append(ce)
        out["perplexity"].append(math.exp(ce * scale) if k else math.nan)
        out["greedy"].append(all(np.argmax(x[i]) == y[i] for i in rows))
        out["entropy"].append(sum(ent[i] for i in rows) / scale / k if k else math.nan)
        if teacher is not None:
            out["kl_divergence"].append(sum(kl[i] for i in rows) / scale / k if k else math.nan)
    return {k: np.array(v) for k, v in out.items() if v or k != "kl_divergence"}


def _check(seq, ref, rtol):
    for k, want in ref.items():
        got = getattr(seq, k)
        assert got is not None, k
        if k in ("tokens", "greedy"):
            assert np.array_equal(got, want), (k, got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True, err_msg=k)


def _data(rng, n, c, dtype, ignore_frac=0.2):
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    y = rng.integers(0, c, n)
    y[rng.random(n) < ignore_frac] = IGNORE
    # a few tokens at the argmax, so that some documents are greedy
    top = np.argmax(np.asarray(x, np.float64), 1)
    sel = rng.random(n) < 0.5
    y[sel] = top[sel]
    return x, y


@pytest.mark.parametrize("backend", BACKENDS + ["numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("base", [None, 2.0])
def test_ragged_packed_sequences_match_a_per_document_reference(backend, dtype, base):
    rng = np.random.default_rng(7)
    lengths = [5, 0, 1, 17, 3, 0, 40, 2]  # empty documents, a one-token one, uneven lengths
    n = sum(lengths)
    x, y = _data(rng, n, 11, dtype)
    y[5:6] = IGNORE  # the one-token document is all ignored
    t = (rng.standard_normal((n, 11)) * 3).astype(dtype)
    s = ne.score(x, y, teacher_logits=t, base=base, backend=backend)
    seq = s.sequences(lengths=np.array(lengths))
    ref = _reference(x, y, lengths, base=base, teacher=t)
    _check(seq, ref, 1e-12 if dtype == np.float64 else 2e-6)
    assert seq.base == base and seq.log_likelihood.dtype == np.float64
    assert seq.tokens[1] == 0 and seq.log_likelihood[1] == 0.0 and np.isnan(seq.cross_entropy[1])
    assert not np.signbit(seq.log_likelihood[1])  # 0.0, not -0.0
    assert seq.greedy[1] and seq.greedy[2]  # no tokens: vacuously greedy


@pytest.mark.parametrize("backend", BACKENDS + ["numpy"])
def test_batch_by_time_inputs_take_the_last_axis_as_the_sequence(backend):
    rng = np.random.default_rng(8)
    b, t, c = 4, 9, 13
    x, y = _data(rng, b * t, c, np.float32)
    y[2 * t : 3 * t] = IGNORE  # one all-ignored sequence
    s = ne.score(x.reshape(b, t, c), y.reshape(b, t), backend=backend)
    seq = s.sequences()
    assert seq.log_likelihood.shape == (b,) and seq.kl_divergence is None
    _check(seq, _reference(x, y, [t] * b), 2e-6)
    assert seq.tokens[2] == 0 and np.isnan(seq.perplexity[2]) and np.isnan(seq.entropy[2])
    # (B1, B2, T): one sequence per (b1, b2)
    s3 = ne.score(x.reshape(2, 2, t, c), y.reshape(2, 2, t), backend=backend)
    assert s3.sequences().tokens.shape == (2, 2)
    np.testing.assert_array_equal(s3.sequences().tokens.reshape(-1), seq.tokens)


def test_the_same_tokens_give_the_same_numbers_packed_or_batched():
    rng = np.random.default_rng(9)
    x, y = _data(rng, 5 * 7, 6, np.float32)
    packed = ne.score(x, y).sequences(lengths=[7] * 5)
    batched = ne.score(x.reshape(5, 7, 6), y.reshape(5, 7)).sequences()
    for k, v in packed.as_dict().items():
        np.testing.assert_array_equal(v, batched.as_dict()[k], err_msg=k)


def test_perplexity_is_the_same_in_every_base_and_lm_eval_relations_hold():
    rng = np.random.default_rng(10)
    x, y = _data(rng, 30, 8, np.float64, ignore_frac=0.0)
    nats = ne.score(x, y).sequences(lengths=[10, 20])
    bits = ne.score(x, y, base=2).sequences(lengths=[10, 20])
    np.testing.assert_allclose(bits.perplexity, nats.perplexity, rtol=1e-12)
    np.testing.assert_allclose(bits.log_likelihood * math.log(2), nats.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(nats.perplexity, np.exp(-nats.log_likelihood / nats.tokens))
    s = ne.score(x, y)
    assert np.array_equal(nats.greedy, [bool(s.correct[:10].all()), bool(s.correct[10:].all())])


def test_a_nan_token_makes_its_sequence_nan_only():
    x = np.zeros((4, 3))
    x[1, 0] = np.nan
    seq = ne.score(x, np.array([0, 1, 2, 0])).sequences(lengths=[2, 2])
    assert np.isnan(seq.log_likelihood[0]) and np.isfinite(seq.log_likelihood[1])
    assert seq.tokens.tolist() == [2, 2]


def test_torch_scores_give_numpy_sequences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x, y = _data(rng, 12, 5, np.float32)
    seq = ne.score(torch.from_numpy(x), torch.from_numpy(y)).sequences(lengths=[4, 8])
    ref = ne.score(x, y).sequences(lengths=[4, 8])
    assert isinstance(seq.log_likelihood, np.ndarray)
    for k, v in ref.as_dict().items():
        np.testing.assert_array_equal(getattr(seq, k), v, err_msg=k)


@pytest.mark.parametrize(
    ("tokens", "lengths", "match"),
    [
        (6, [3, -1, 4], r"lengths\[1\] is -1: sequence lengths must be >= 0"),
        (7, [3, 3], "lengths sum to 6 but the scores hold 7 tokens"),
        (6, [2.0, 4.0], "1-D array of integers; got float64"),
        (6, [[3, 3]], r"1-D array of integers; got int64 of shape \(1, 2\)"),
    ],
)
def test_bad_lengths_are_value_errors(tokens, lengths, match):
    s = ne.score(np.zeros((tokens, 2)), np.zeros(tokens, np.int64))
    with pytest.raises(ValueError, match=match):
        s.sequences(lengths=lengths)


def test_sequences_need_labels_and_packed_lengths_need_1d_scores():
    with pytest.raises(ValueError, match="needs labels"):
        ne.score(np.zeros((4, 3))).sequences()
    s = ne.score(np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64))
    with pytest.raises(
        ValueError, match=r"need 1-D scores \(N tokens\); these have shape \(2, 3\)"
    ):
        s.sequences(lengths=[3, 3])


def test_dask_scores_give_the_same_sequences_when_chunks_cut_them():
    da = pytest.importorskip("dask.array")
    import numbaent.dask as nd

    rng = np.random.default_rng(12)
    x, y = _data(rng, 40, 7, np.float32)
    lengths = [13, 0, 27]  # row chunks of 6 cut both documents
    lazy = nd.score(da.from_array(x, chunks=(6, 7)), da.from_array(y, chunks=6))
    got = lazy.sequences(lengths=lengths)
    want = ne.score(x, y).sequences(lengths=lengths)
    for k, v in want.as_dict().items():
        np.testing.assert_array_equal(getattr(got, k), v, err_msg=k)
