"""The NumPy oracle (the ``numpy`` backend): plain float64 NumPy written for clarity, not speed.

Every other backend is tested against these functions. They take the same validated 2-D inputs as
the kernels (rows x classes; half types already decoded to float) and return float64 results; the
dispatch layer casts to the output dtype. Special cases are spelled out, one rule per line.
"""

from __future__ import annotations

import numpy as np


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _xlogy(x, y):
    """x * log(y) with 0 where x == 0 (whatever y is, NaN aside)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = x * np.log(y)
    return np.where(x == 0, 0.0, t)


def _row_has_nan(a):
    return np.isnan(a).any(axis=1) if a.shape[1] else np.zeros(a.shape[0], bool)


def _has_posinf(a):
    return np.isposinf(a).any(axis=1) if a.shape[1] else np.zeros(a.shape[0], bool)


def _prob_flags(p, q=None):
    flags = (p < 0).any(axis=1).astype(np.int8)
    if q is not None:
        flags |= ((q < 0).any(axis=1) * 2).astype(np.int8)
    return flags


def _normalized(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / a.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# probability rows


def entropy(p, normalize):
    p = _f64(p)
    flags = _prob_flags(p)
    inf_row = _has_posinf(p)
    if normalize:
        p = _normalized(p)
    h = 0.0 - _xlogy(p, p).sum(axis=1)
    h[inf_row] = np.nan  # an infinite probability (or count) is not a distribution
    return h, flags


def _pq(p, q, normalize):
    p = _f64(p)
    q = np.broadcast_to(_f64(q), p.shape)
    flags = _prob_flags(p, q)
    # an infinite probability (or count) in p or q is not a distribution: the row is NaN
    bad = _has_posinf(p) | _has_posinf(q) | _row_has_nan(q)  # NaN in q: even where p == 0
    if normalize:
        p, q = _normalized(p), _normalized(q)
    return p, q, flags, bad


def cross_entropy(p, q, normalize):
    p, q, flags, bad = _pq(p, q, normalize)
    with np.errstate(invalid="ignore"):  # +inf and -inf terms only in a row with an infinite q: bad
        h = 0.0 - _xlogy(p, q).sum(axis=1)
    h[bad] = np.nan
    return h, flags


def kl_divergence(p, q, normalize):
    p, q, flags, bad = _pq(p, q, normalize)
    with np.errstate(invalid="ignore"):  # inf - inf only in a row with an infinite p: bad, NaN
        d = (_xlogy(p, p) - _xlogy(p, q)).sum(axis=1)
    d[bad] = np.nan
    return d, flags


def js_divergence(p, q, normalize):
    p, q, flags, bad = _pq(p, q, normalize)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_m = np.log(p + q) - np.log(2.0)  # log of the mixture (p + q) / 2, which may underflow
        pm = np.where(p == 0, 0.0, p * log_m)
        qm = np.where(q == 0, 0.0, q * log_m)
        js = 0.5 * (_xlogy(p, p) - pm).sum(axis=1)  # an infinite p or q: inf - inf, NaN (the
        js += 0.5 * (_xlogy(q, q) - qm).sum(axis=1)  # contract's answer for such a row)
    js[bad] = np.nan
    return js, flags


# --------------------------------------------------------------------------------------------------
# logit rows


def _shift(x):
    """(x - m, log sum exp(x - m), m, valid) per row, m the row max. Valid rows have no NaN, no
    +inf and at least one finite value. Working with x - m keeps huge logits (1e30, 3e38) exact."""
    x = _f64(x)
    n, c = x.shape
    if c == 0:
        return x, np.full(n, -np.inf), np.full(n, -np.inf), np.zeros(n, bool)
    m = x.max(axis=1)
    valid = np.isfinite(m) & ~_row_has_nan(x)
    ms = np.where(valid, m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = x - ms[:, None]
        log_s = np.log(np.exp(d).sum(axis=1))
    return d, log_s, m, valid


def logsumexp(x):
    d, log_s, m, valid = _shift(x)
    lse = np.where(valid, m + log_s, np.nan)
    lse[(m == -np.inf) & ~_row_has_nan(_f64(x))] = -np.inf  # all -inf (or empty): -inf
    return lse


def log_softmax(x):
    d, log_s, _, valid = _shift(x)
    with np.errstate(invalid="ignore"):
        out = d - log_s[:, None]
    out[~valid] = np.nan
    return out


def softmax(x):
    return np.exp(log_softmax(x))


def softmax_entropy(x):
    logp = log_softmax(x)
    p = np.exp(logp)
    return 0.0 - _xlogy(p, p).sum(axis=1) if x.shape[1] else np.full(x.shape[0], np.nan)


def _weighted_nll(logp, coef):
    """-sum_j coef_j * logp_j, a term with coef_j == 0 contributing 0 (even where logp_j = -inf)."""
    with np.errstate(invalid="ignore", over="ignore"):  # a product beyond float64: +inf, exact
        t = coef * logp
    return 0.0 - np.where(coef == 0, 0.0, t).sum(axis=1)  # +0.0, not -0.0, for a zero loss


def ce_labels(x, y, weight, ignore_index, eps, inv_t=1.0):
    """torch.nn.functional.cross_entropy with class-index targets, per row (weight included), of
    the logits x / T (inv_t = 1 / T; x / T is never formed: see _scaled).
    Returns (loss, row_weight, bad) with bad[i] = 1 for a label outside [0, C) that is not ignored."""
    x = _f64(x)
    n, c = x.shape
    y = np.asarray(y, np.int64)
    w = np.ones(c) if weight is None else _f64(weight)
    ignored = y == ignore_index
    bad = (~ignored & ((y < 0) | (y >= c))).astype(np.int8)
    ok = ~ignored & (bad == 0)
    loss = np.zeros(n)
    row_w = np.zeros(n)
    logp = _log_softmax_t(x, inv_t)
    for i in np.flatnonzero(ok):
        coef = (eps / c) * w
        coef[y[i]] += (1.0 - eps) * w[y[i]]
        if eps == 0:
            coef = np.zeros(c)
            coef[y[i]] = w[y[i]]
        loss[i] = _weighted_nll(logp[i : i + 1], coef[None, :])[0]
        row_w[i] = w[y[i]]
    # a row without a valid softmax (NaN, +inf, all -inf) is NaN, even at class weight 0
    _, _, _, valid = _shift(x)
    loss[ok & ~valid] = np.nan
    loss[bad == 1] = np.nan
    return loss, row_w, bad


def ce_soft(x, t, weight, eps, inv_t=1.0):
    """Cross-entropy against probability targets t (label smoothing eps, class weights), of the
    logits x / T (inv_t = 1 / T)."""
    x = _f64(x)
    c = x.shape[1]
    w = np.ones(c) if weight is None else _f64(weight)
    with np.errstate(invalid="ignore", over="ignore"):  # an inf target: its row is NaN below
        coef = w * (_f64(t) * (1.0 - eps) + (eps / c if c else 0.0))
    loss = _weighted_nll(_log_softmax_t(x, inv_t), coef)
    # a NaN or +inf logit makes the row NaN, even where its target is 0
    loss[_row_has_nan(x) | np.isposinf(x).any(axis=1)] = np.nan
    loss[_has_posinf(_f64(t))] = np.nan  # an infinite target probability: not a distribution
    return loss


def _log_softmax_t(x, inv_t):
    """log softmax(x / T), from (x - max) / T (x / T itself may overflow)."""
    return log_softmax(x) if inv_t == 1.0 else log_softmax(_scaled(x, inv_t))


def _scaled(x, inv_t):
    """(x - max) / T: softmax(x / T) without forming x / T, which overflows for huge logits."""
    d, _, _, valid = _shift(x)
    with np.errstate(invalid="ignore", over="ignore"):
        d = d * inv_t
    d[~valid] = np.nan
    return d


def softmax_kl(xp, xq, inv_t):
    xp, xq = _f64(xp), _f64(xq)
    if not xp.shape[1]:
        return np.full(xp.shape[0], np.nan)
    lp = log_softmax(_scaled(xp, inv_t))
    lq = log_softmax(_scaled(xq, inv_t))
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        t = np.where(p == 0, 0.0, p * (lp - lq))
    # softmax of a finite logit is > 0 however small: over a student probability of exactly 0
    # (a -inf logit) KL is +inf, also where exp() underflows p to 0 in this precision
    t[np.isfinite(xp) & (xq == -np.inf)] = np.inf
    kl = t.sum(axis=1)
    kl[_row_has_nan(xp) | _row_has_nan(xq)] = np.nan  # a NaN anywhere in either row: NaN
    return kl


def _rank(x, y, ok):
    """Classes ranked above the label: x_j > x_y, or x_j == x_y and j < y; -1 where not ok."""
    rank = np.full(x.shape[0], -1, np.int64)
    for i in np.flatnonzero(ok):
        xy = x[i, y[i]]
        j = np.arange(x.shape[1])
        rank[i] = np.count_nonzero((x[i] > xy) | ((x[i] == xy) & (j < y[i])))
    return rank


def score(x, y, ignore_index, teacher, inv_t):
    """Dict of per-row arrays of the model's distribution p = softmax(x / T) (it = 1 / T):
    logsumexp (of x / T), entropy, argmax, confidence (max p), margin (largest minus second-largest
    p, counted with multiplicity) and, with labels, cross_entropy, correct, rank, brier, bad; with a
    teacher, kl_divergence (teacher || model) at the same temperature. argmax, rank and correct
    are decided on x as given."""
    x = _f64(x)
    n, c = x.shape
    d = _scaled(x, inv_t)  # (x - max) / T; NaN for a row with a NaN or +inf, or all -inf
    valid = ~np.isnan(d).any(axis=1) if c else np.zeros(n, bool)
    lse = logsumexp(d) + np.where(valid, x.max(axis=1, initial=-np.inf) * inv_t, 0.0)
    lse[(x.max(axis=1, initial=-np.inf) == -np.inf) & ~_row_has_nan(x)] = -np.inf
    p = softmax(d)
    p_sorted = -np.sort(-p, axis=1)  # descending; NaN rows stay NaN below
    res = {
        "logsumexp": lse,
        "entropy": softmax_entropy(d),
        "argmax": np.argmax(x, axis=1) if c else np.zeros(n, np.int64),
        "confidence": np.where(valid, p_sorted[:, 0] if c else 0.0, np.nan),
        "margin": np.where(valid, (p_sorted[:, 0] - p_sorted[:, 1]) if c > 1 else 1.0, np.nan),
    }
    if y is not None:
        y = np.asarray(y, np.int64)
        loss, _, bad = ce_labels(d, y, None, ignore_index, 0.0)
        ok = valid & (y != ignore_index) & (bad == 0)
        rank = _rank(x, y, ok)
        onehot = np.zeros((n, c))
        onehot[np.flatnonzero(ok), y[ok]] = 1.0
        brier = ((p - onehot) ** 2).sum(axis=1)
        brier[y == ignore_index] = 0.0
        res["cross_entropy"] = loss
        res["correct"] = rank == 0
        res["rank"] = rank
        res["brier"] = brier
        res["bad"] = bad
    if teacher is not None:
        res["kl_divergence"] = softmax_kl(teacher, x, inv_t)
    return res
