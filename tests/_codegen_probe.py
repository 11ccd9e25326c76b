"""Run by tests/test_codegen.py in a subprocess with an empty NUMBA_CACHE_DIR (inspect_asm needs
code compiled in the process, not loaded from numba's cache): every op family once, then the
number of packed-vector instructions (ymm / zmm operands) in the code of every hot block loop,
as JSON on stdout."""

from __future__ import annotations

import json
import re

import ml_dtypes
import numpy as np

import numbaent as ne
from numbaent._kernels import _blocks, cpu_logits, cpu_prob, cpu_score

HOT = {
    _blocks: [
        "block_max", "block_sumexp", "block_sumexp_max", "block_sumexp_t_max", "block_sumexp_t",
        "_raw_max16", "_sumexp_pairs", "_sumexpk_pairs", "block_max_min", "block_rank",
    ],
    cpu_logits: ["_blk_linear", "blk_kl", "blk_kl_max"],
    cpu_prob: ["_blk_entropy", "_blk_pq", "_blk_js"],
    cpu_score: ["_blk_teacher", "_blk_teacher_fused", "_blk_teacher_t", "_count_row"],
}  # fmt: skip
PACKED = re.compile(r"^\s*v\w+\s.*%[yz]mm\d+", re.M)


def workload():
    rng = np.random.default_rng(7)
    c = 3000
    x = (rng.standard_normal((8, c)) * 4).astype(np.float32)
    t = (rng.standard_normal((8, c)) * 4).astype(np.float32)
    y = rng.integers(0, c, 8)
    p = rng.random((8, c)).astype(np.float32)
    q = rng.random((8, c)).astype(np.float32)
    ne.logsumexp(x)
    ne.softmax_entropy(x)
    ne.softmax_cross_entropy(x, y, label_smoothing=0.1)
    ne.softmax_cross_entropy(x.astype(ml_dtypes.bfloat16), y)
    ne.softmax_kl_divergence(t, x)
    ne.score(x, y, teacher_logits=t)
    ne.score(x, y, teacher_logits=t, temperature=2.0)
    ne.score(x, y)
    ne.score(x, y, temperature=2.0)
    ne.score(x.astype(ml_dtypes.bfloat16), y)
    ne.linear_score(x[:, :64], x[:, :64], y % 8)  # the rank counts of numbaent.linear
    ne.entropy(p)
    ne.kl_divergence(p, q)
    ne.js_divergence(p, q)


if __name__ == "__main__":
    workload()
    counts = {}
    for mod, names in HOT.items():
        for name in names:
            fn = getattr(mod, name)
            for sig in fn.signatures:
                counts[f"{name}{sig}"] = len(PACKED.findall(fn.inspect_asm(sig)))
    print(json.dumps(counts))
