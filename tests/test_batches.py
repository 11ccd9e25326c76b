"""score_batch: Arrow record batches and dicts of arrays, read in place, equal to score()."""

from __future__ import annotations

import numpy as np
import pytest

import numbaent as ne

pa = pytest.importorskip("pyarrow")


def _fsl(x):
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[-1])


def _same(a, b):
    for k, v in b.as_dict().items():
        np.testing.assert_array_equal(getattr(a, k), v, err_msg=k)


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 6)).astype(np.float32)
    t = rng.standard_normal((9, 6)).astype(np.float32)
    y = rng.integers(0, 6, 9)
    y[3] = -100
    return x, y, t


def test_fixed_size_list_columns_are_read_in_place(data, monkeypatch):
    x, y, t = data
    batch = pa.RecordBatch.from_pydict({"logits": _fsl(x), "labels": pa.array(y),
                                        "teacher_logits": _fsl(t), "other": pa.array(range(9))})  # fmt: skip
    seen = {}
    real = ne.batches.score

    def spy(logits, labels=None, **kw):
        seen["logits"], seen["labels"] = logits, labels
        return real(logits, labels, **kw)

    monkeypatch.setattr(ne.batches, "score", spy)
    got = ne.score_batch(batch, temperature=2.0, base=2)
    _same(got, ne.score(x, y, teacher_logits=t, temperature=2.0, base=2))
    buf = batch.column("logits").values.buffers()[1]
    assert seen["logits"].ctypes.data == buf.address  # a view of the Arrow buffer: no copy
    assert seen["labels"].ctypes.data == batch.column("labels").buffers()[1].address


def test_sliced_batches_tables_and_tensor_columns(data):
    x, y, t = data
    batch = pa.RecordBatch.from_pydict({"logits": _fsl(x), "labels": pa.array(y)})
    _same(ne.score_batch(batch.slice(2, 5)), ne.score(x[2:7], y[2:7]))  # the offset applied
    table = pa.Table.from_batches([batch.slice(0, 4), batch.slice(4)])  # two chunks per column
    _same(ne.score_batch(table), ne.score(x, y))
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(x.reshape(3, 3, 6))  # (B, T, C) rows
    seq = pa.RecordBatch.from_pydict({"logits": tensor, "labels": pa.array(list(y.reshape(3, 3)),
                                      pa.list_(pa.int64(), 3))})  # fmt: skip
    got = ne.score_batch(seq)
    assert got.cross_entropy.shape == (3, 3)
    _same(got, ne.score(x.reshape(3, 3, 6), y.reshape(3, 3)))
    nested = pa.array(
        [[list(r) for r in b] for b in x.reshape(3, 3, 6)], pa.list_(pa.list_(pa.float32()))
    )
    got = ne.score_batch(pa.RecordBatch.from_pydict({"logits": nested, "labels": seq.column(1)}))
    _same(got, ne.score(x.reshape(3, 3, 6), y.reshape(3, 3)))  # lists of lists: (B, T, C)


def test_list_columns_of_equal_rows_as_spark_writes_them(data):
    x, y, _ = data
    lists = pa.array(list(x), pa.list_(pa.float32()))  # array<float>: variable-length lists
    assert not pa.types.is_fixed_size_list(lists.type)
    batch = pa.RecordBatch.from_pydict({"logits": lists, "labels": pa.array(y)})
    _same(ne.score_batch(batch), ne.score(x, y))
    _same(ne.score_batch(batch.slice(3, 4)), ne.score(x[3:7], y[3:7]))


def test_dicts_of_arrays_of_any_kind(data):
    x, y, t = data
    _same(ne.score_batch({"logits": x, "labels": y}), ne.score(x, y))
    torch = pytest.importorskip("torch")
    got = ne.score_batch({"logits": torch.from_numpy(x), "labels": torch.from_numpy(y)})
    assert isinstance(got.cross_entropy, torch.Tensor)
    np.testing.assert_array_equal(got.cross_entropy.numpy(), ne.score(x, y).cross_entropy)


def test_summary_states_of_batches_merge_to_the_whole(data):
    x, y, t = data
    batch = pa.RecordBatch.from_pydict({"logits": _fsl(x), "labels": pa.array(y)})
    state = ne.SummaryState()
    for lo in range(0, 9, 4):
        state = state + ne.score_batch(batch.slice(lo, 4)).summary_state()
    assert state.result() == ne.score(x, y).summary()


def test_bad_batches_name_the_column_and_row(data):
    x, y, _ = data
    with pytest.raises(ValueError, match=r"no column named 'logits' \(columns: 'x', 'labels'\)"):
        ne.score_batch({"x": x, "labels": y})
    with pytest.raises(TypeError, match="Arrow RecordBatch or Table, or a mapping"):
        ne.score_batch([x, y])
    with pytest.raises(TypeError, match="labels comes from the batch's 'labels' column"):
        ne.score_batch({"logits": x}, labels=y)
    ragged = pa.RecordBatch.from_pydict({"logits": pa.array([[1.0, 2.0], [3.0, 4.0], [3.0]])})
    with pytest.raises(ValueError, match="logits: row 2 has 1 values, row 0 has 2"):
        ne.score_batch(ragged)
    nulls = pa.RecordBatch.from_pydict({"logits": _fsl(x), "labels": pa.array([0, 1, None] * 3)})
    with pytest.raises(ValueError, match="labels: row 2 is null"):
        ne.score_batch(nulls)
    vals = pa.array(list(x.reshape(-1)[:-1]) + [None], pa.float32())
    inner = pa.RecordBatch.from_pydict({"logits": pa.FixedSizeListArray.from_arrays(vals, 6)})
    with pytest.raises(ValueError, match="logits: a value inside row 8 is null"):
        ne.score_batch(inner)
    with pytest.raises(IndexError):  # score's own checks still apply
        ne.score_batch({"logits": x, "labels": y + 10})
