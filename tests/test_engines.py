"""The recipes of docs/engines.md, run at small scale: a loop over Parquet files, Ray Data's
map_batches and Spark's mapInArrow (each engine only where it is installed: neither is a dependency;
CI installs both), all equal to one summary() of the whole data set."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest

import numbaent as ne

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

C = 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three Parquet files of logits (fixed-size lists) and labels, and the arrays they hold."""
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(21)
    xs, ys, paths = [], [], []
    for i, n in enumerate((50, 1, 77)):
        x = (rng.standard_normal((n, C)) * 2).astype(np.float32)
        y = rng.integers(0, C, n)
        y[::9] = -100
        logits = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), C)
        paths.append(str(d / f"part-{i}.parquet"))
        pq.write_table(pa.table({"logits": logits, "labels": pa.array(y)}), paths[-1])
        xs.append(x)
        ys.append(y)
    return paths, np.concatenate(xs), np.concatenate(ys)


def _merge(states):
    return functools.reduce(ne.SummaryState.merge, states, ne.SummaryState()).result()


def test_a_loop_over_parquet_files(shards):
    paths, x, y = shards
    state = ne.SummaryState()
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=16):
            state = state + ne.score_batch(batch).summary_state()
    assert state.result() == ne.score(x, y).summary()


def test_ray_data_map_batches(shards):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")
    paths, x, y = shards

    def batch_state(batch):
        with ne.threads(1):
            state = ne.score_batch(batch).summary_state()
        return {"state": [pickle.dumps(state)]}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ds = ray.data.read_parquet(paths)
        parts = ds.map_batches(batch_state, batch_format="pyarrow", batch_size=16)
        summary = _merge(pickle.loads(r["state"]) for r in parts.iter_rows())
    finally:
        ray.shutdown()
    assert summary == ne.score(x, y).summary()


def test_spark_map_in_arrow(shards):
    pytest.importorskip("pyspark", reason="PySpark is not installed (pip install pyspark)")
    from pyspark.sql import SparkSession

    paths, x, y = shards

    def partition_state(batches):
        state = ne.SummaryState()
        with ne.threads(1):
            for batch in batches:
                state = state + ne.score_batch(batch).summary_state()
        yield pa.RecordBatch.from_pydict({"state": [pickle.dumps(state)]})

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .getOrCreate()
    )
    try:
        # Spark reads the fixed-size lists as array<float>: Arrow list columns of equal rows
        df = spark.read.parquet(*paths)
        rows = df.mapInArrow(partition_state, "state binary").collect()
    finally:
        spark.stop()
    assert _merge(pickle.loads(r.state) for r in rows) == ne.score(x, y).summary()
