"""``score_batch``: score one batch of a data set as an engine hands it over (an Arrow
``RecordBatch`` from Ray Data, Spark's ``mapInArrow`` or a Parquet reader, or a dict of arrays).

Columns: ``logits`` (required), ``labels`` and ``teacher_logits`` (optional). Arrow list columns
are read in place: a fixed-size list column (``pa.list_(pa.float32(), C)``), a list column whose
rows all hold C values (Spark's ``array<float>``) or a fixed-shape tensor column
(``pa.fixed_shape_tensor``) is a view of its value buffer as (rows, C) (or the tensor's shape),
an integer label column a view of its own. Reduce the batches' results through
``Scores.summary_state()`` and ``SummaryState.merge``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .scoring import Scores, score

COLUMNS = ("logits", "labels", "teacher_logits")


def _first_null(arr: Any) -> int:
    return next(i for i, ok in enumerate(arr.is_valid().to_pylist()) if not ok)


def _from_arrow(name: str, col: Any) -> np.ndarray:
    """A NumPy view of an Arrow column (no copy for lists of one length, tensors and numbers)."""
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks != 1:  # a Table's column: one piece is a view, several are joined
            col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
        else:
            col = col.chunk(0)
    if col.null_count:
        raise ValueError(
            f"{name}: row {_first_null(col)} is null; every row of a scored column needs a value"
        )
    t = col.type
    if isinstance(t, pa.FixedShapeTensorType):
        return col.to_numpy_ndarray()
    if pa.types.is_fixed_size_list(t):
        c = t.list_size
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        # Spark's array<float> and pandas' lists: rows of one length are a view as well
        lens = np.diff(col.offsets.to_numpy(zero_copy_only=False))
        if lens.size and np.any(lens != lens[0]):
            i = int(np.argmax(lens != lens[0]))
            raise ValueError(
                f"{name}: row {i} has {int(lens[i])} values, row 0 has {int(lens[0])}: a list "
                "column must hold the same number of classes in every row"
            )
        c = int(lens[0]) if lens.size else 0
    else:
        return col.to_numpy(zero_copy_only=True)
    inner = col.flatten()  # the values of these rows (the array's offset applied), no copy
    if inner.null_count:
        raise ValueError(f"{name}: a value inside row {_first_null(inner) // c} is null")
    if isinstance(inner.type, pa.FixedShapeTensorType) or pa.types.is_nested(inner.type):
        return _from_arrow(name, inner).reshape(len(col), c, -1)  # (rows, T, C) as nested lists
    return inner.to_numpy(zero_copy_only=True).reshape(len(col), c)


def score_batch(batch: Any, **score_options: Any) -> Scores:
    """:func:`numbaent.score` of one batch: an Arrow ``RecordBatch`` (or ``Table``) or a mapping
    of arrays (NumPy, torch, JAX, CuPy: whatever ``score`` takes) with the columns ``logits`` and
    optionally ``labels`` and ``teacher_logits``. ``score_options`` are ``score``'s keyword
    arguments (``temperature``, ``ignore_index``, ``base``, ``backend``, ...).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa, numbaent
    >>> x = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], np.float32))
    >>> batch = pa.RecordBatch.from_pydict({
    ...     "logits": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3),
    ...     "labels": pa.array([0, 1])})
    >>> numbaent.score_batch(batch, base=2).cross_entropy.round(4)
    array([1.    , 0.3219], dtype=float32)
    """
    names = _column_names(batch)
    if "logits" not in names:
        have = ", ".join(repr(n) for n in names) or "none"
        raise ValueError(f"batch: no column named 'logits' (columns: {have})")
    for k in ("labels", "teacher_logits"):
        if k in score_options:
            raise TypeError(f"score_batch: {k} comes from the batch's {k!r} column, not a keyword")
    cols = {}
    for name in COLUMNS:
        if name in names:
            col = batch[name] if isinstance(batch, Mapping) else batch.column(name)
            cols[name] = _from_arrow(name, col) if _is_arrow(col) else col
    return score(cols["logits"], cols.get("labels"), teacher_logits=cols.get("teacher_logits"),
                 **score_options)  # fmt: skip


def _is_arrow(col: Any) -> bool:
    return type(col).__module__.startswith("pyarrow")


def _column_names(batch: Any) -> list[str]:
    if isinstance(batch, Mapping):
        return [str(k) for k in batch]
    if _is_arrow(batch) and hasattr(batch, "schema"):
        return list(batch.schema.names)
    raise TypeError(
        f"batch must be an Arrow RecordBatch or Table, or a mapping of column names to arrays; "
        f"got {type(batch).__name__}"
    )
