"""Textbook array formulas, generic over the array module ``xp`` (NumPy or CuPy).

Used three ways: the "NumPy f32" peer (float32 inputs as given), the "CuPy formula" GPU peer, and
the harness's own float64 reference (inputs upcast to float64 first), which double-checks the
numbaent ``numpy`` oracle and stands in for it when numbaent cannot be imported.
Results: a per-row array, or for ``score`` a dict of per-row arrays named like ``numbaent.Scores``.
"""

from __future__ import annotations

from typing import Any


def _take_label(xp: Any, x: Any, labels: Any) -> Any:
    return xp.take_along_axis(x, labels[:, None], axis=1)[:, 0]


def logsumexp(xp: Any, x: Any) -> Any:
    m = x.max(axis=1, keepdims=True)
    t = x - m
    xp.exp(t, out=t)
    return xp.log(t.sum(axis=1)) + m[:, 0]


def log_softmax(xp: Any, x: Any) -> Any:
    m = x.max(axis=1, keepdims=True)
    t = x - m
    s = xp.exp(t).sum(axis=1, keepdims=True)
    t -= xp.log(s)
    return t


def softmax_ce(xp: Any, x: Any, labels: Any) -> Any:
    """-log softmax(x)[label] = logsumexp(x) - x[label] (max-subtracted)."""
    return logsumexp(xp, x) - _take_label(xp, x, labels)


def entropy(xp: Any, p: Any) -> Any:
    """-sum p log p (no zero guard: the benchmark's probabilities are strictly positive)."""
    return -(p * xp.log(p)).sum(axis=1)


def kl(xp: Any, p: Any, q: Any) -> Any:
    """sum p (log p - log q)."""
    return (p * (xp.log(p) - xp.log(q))).sum(axis=1)


def softmax_kl(xp: Any, a: Any, b: Any) -> Any:
    """D(softmax(a) || softmax(b)) = sum exp(la) (la - lb)."""
    la = log_softmax(xp, a)
    d = log_softmax(xp, b)
    xp.subtract(la, d, out=d)
    xp.exp(la, out=la)
    d *= la
    return d.sum(axis=1)


def top2(xp: Any, p: Any) -> tuple[Any, Any]:
    """(largest, second largest) per row, the second counted with multiplicity (a tie at the top
    gives the same value twice), from a partition of a copy of ``p``; 0 for the second of a
    one-class row (numbaent's margin is then p = 1)."""
    if p.shape[1] < 2:
        return p[:, 0], xp.zeros_like(p[:, 0])
    part = xp.partition(p, p.shape[1] - 2, axis=1)
    return part[:, -1], part[:, -2]


def rank(xp: Any, x: Any, labels: Any, exact: bool = False) -> Any:
    """Classes ranked above the label: the count of x_j > x_y (what a user writes: one compare and
    a sum). ``exact`` adds numbaent's tie rule, x_j == x_y at j < y: a second compare over the row,
    which the harness's float64 reference pays and the peers do not (the check accepts any count
    from the strict one to the strict one plus every tie, see bench/runner.py)."""
    xy = _take_label(xp, x, labels)[:, None]
    r = (x > xy).sum(axis=1)
    if exact:
        below = xp.arange(x.shape[1])[None, :] < labels[:, None]
        r += ((x == xy) & below).sum(axis=1)
    return r


def score(
    xp: Any, x: Any, labels: Any, teacher: Any = None, exact_rank: bool = False
) -> dict[str, Any]:
    """Everything numbaent.score computes, the plain way: the softmax materialised, one metric per
    op (several passes). Without ``teacher`` no ``kl_divergence``, as numbaent.score(x, labels)."""
    m = x.max(axis=1, keepdims=True)
    ls = x - m
    e = xp.exp(ls)
    s = e.sum(axis=1, keepdims=True)
    log_s = xp.log(s)
    ls -= log_s  # log_softmax
    e /= s  # softmax
    ent = -(e * ls).sum(axis=1)
    conf = e.max(axis=1)
    first, second = top2(xp, e)
    p_y = _take_label(xp, e, labels)
    brier = (e * e).sum(axis=1) - 2 * p_y + 1  # sum_j (p_j - [j == y])^2, expanded
    del e
    am = x.argmax(axis=1)
    out = {
        "logsumexp": (log_s + m)[:, 0],
        "entropy": ent,
        "argmax": am,
        "confidence": conf,
        "margin": first - second,
        "cross_entropy": -_take_label(xp, ls, labels),
        "correct": am == labels,
        "rank": rank(xp, x, labels, exact_rank),
        "brier": brier,
    }
    if teacher is not None:
        lt = log_softmax(xp, teacher)
        ls -= lt  # -(lt - ls)
        xp.exp(lt, out=lt)
        ls *= lt
        out["kl_divergence"] = -ls.sum(axis=1)
    return out


def run(
    xp: Any, kind: str, inputs: dict[str, Any], dtype: Any = None, exact_rank: bool = False
) -> Any:
    """Apply the formula for ``kind``; float inputs are first cast to ``dtype`` when given.
    ``exact_rank``: score's rank with numbaent's tie rule (the harness's reference)."""

    def f(name: str) -> Any:
        a = inputs[name]
        return a if dtype is None else a.astype(dtype)

    if kind == "ce":
        return softmax_ce(xp, f("logits"), inputs["labels"])
    if kind == "entropy":
        return entropy(xp, f("p"))
    if kind == "kl":
        return kl(xp, f("p"), f("q"))
    if kind == "softmax_kl":
        return softmax_kl(xp, f("logits_p"), f("logits_q"))
    if kind == "score":
        return score(xp, f("logits"), inputs["labels"], exact_rank=exact_rank)
    if kind == "score_teacher":
        return score(xp, f("logits"), inputs["labels"], f("teacher"), exact_rank)
    raise ValueError(kind)
