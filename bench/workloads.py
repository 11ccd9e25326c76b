"""Benchmark workloads: shapes, seeded input generation and the input-byte formulas.

Throughput is always GB/s of the INPUT bytes a call has to read (outputs are one value per row and
are not counted), as in quack's benchmarks. The formula for each kind, with R rows, C classes,
``s`` the logits' itemsize (4 for float32, 2 for bfloat16) and int64 labels:

=============  ===================================  ==========================================
kind           inputs                               input bytes
=============  ===================================  ==========================================
ce             logits (R, C), labels (R,) int64     R*C*s + R*8
entropy        p (R, C) float32                     R*C*4
kl             p, q (R, C) float32                  2*R*C*4
softmax_kl     logits_p, logits_q (R, C) float32    2*R*C*4
score          logits (R, C), labels (R,) int64     R*C*s + R*8
score_teacher  logits, teacher (R, C), labels       2*R*C*s + R*8
=============  ===================================  ==========================================

``score`` is ``numbaent.score(logits, labels)`` (every field but the KL), ``score_teacher`` the same
with ``teacher_logits`` (every field).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

LOGIT_SCALE = 3.0

# kind -> (input names, human-readable byte formula)
KIND_INPUTS: dict[str, tuple[str, ...]] = {
    "ce": ("logits", "labels"),
    "entropy": ("p",),
    "kl": ("p", "q"),
    "softmax_kl": ("logits_p", "logits_q"),
    "score": ("logits", "labels"),
    "score_teacher": ("logits", "labels", "teacher"),
}


@dataclass(frozen=True)
class Workload:
    """One benchmark case: an operation on (rows, cols) inputs of one dtype."""

    op: str  # short label used in the name: "softmax_ce", "entropy", ...
    kind: str  # one of KIND_INPUTS
    dtype: str  # "float32" or "bfloat16"
    rows: int
    cols: int
    nominal_rows: int  # full-size shape (differs from rows/cols under --quick)
    nominal_cols: int

    @property
    def dtype_short(self) -> str:
        return {"float32": "f32", "bfloat16": "bf16"}[self.dtype]

    @property
    def name(self) -> str:
        return f"{self.op} {self.dtype_short} {self.rows}x{self.cols}"

    @property
    def nominal_name(self) -> str:
        return f"{self.op} {self.dtype_short} {self.nominal_rows}x{self.nominal_cols}"

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "bfloat16": 2}[self.dtype]

    @property
    def bytes_formula(self) -> str:
        s = self.itemsize
        return {
            "ce": f"R*C*{s} + R*8 (logits + int64 labels)",
            "entropy": "R*C*4 (p)",
            "kl": "2*R*C*4 (p, q)",
            "softmax_kl": "2*R*C*4 (logits_p, logits_q)",
            "score": f"R*C*{s} + R*8 (logits + int64 labels)",
            "score_teacher": f"2*R*C*{s} + R*8 (logits, teacher, int64 labels)",
        }[self.kind]

    @property
    def input_bytes(self) -> int:
        """Bytes of input read by one call, from the explicit per-kind formula."""
        r, c, s = self.rows, self.cols, self.itemsize
        return {
            "ce": r * c * s + r * 8,
            "entropy": r * c * 4,
            "kl": 2 * r * c * 4,
            "softmax_kl": 2 * r * c * 4,
            "score": r * c * s + r * 8,
            "score_teacher": 2 * r * c * s + r * 8,
        }[self.kind]

    def matches(self, pattern: str) -> bool:
        """``--only`` filter: substring of the actual or the full-size (nominal) name."""
        p = pattern.lower()
        return p in self.name.lower() or p in self.nominal_name.lower()

    def make_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Generate this workload's inputs with a Generator seeded from (seed, nominal name)."""
        rng = np.random.default_rng([seed, zlib.crc32(self.nominal_name.encode())])
        r, c = self.rows, self.cols
        if self.kind in ("ce", "score", "score_teacher"):
            out = {"logits": _logits(rng, r, c, self.dtype)}
            out["labels"] = rng.integers(0, c, size=r, dtype=np.int64)
            if self.kind == "score_teacher":
                out["teacher"] = _logits(rng, r, c, self.dtype)
        elif self.kind == "entropy":
            out = {"p": _probs(rng, r, c)}
        elif self.kind == "kl":
            out = {"p": _probs(rng, r, c), "q": _probs(rng, r, c)}
        elif self.kind == "softmax_kl":
            out = {
                "logits_p": _logits(rng, r, c, self.dtype),
                "logits_q": _logits(rng, r, c, self.dtype),
            }
        else:  # pragma: no cover
            raise ValueError(self.kind)
        total = sum(a.nbytes for a in out.values())
        assert total == self.input_bytes, (self.name, total, self.input_bytes)
        return out


def _logits(rng: np.random.Generator, rows: int, cols: int, dtype: str) -> np.ndarray:
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    x *= np.float32(LOGIT_SCALE)
    if dtype == "bfloat16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16)
    return x


def _probs(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Rows of softmax(random logits), float32, normalised to sum 1."""
    x = _logits(rng, rows, cols, "float32")
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


# (op, kind, dtype, full shape, --quick shape)
_TABLE: list[tuple[str, str, str, tuple[int, int], tuple[int, int]]] = [
    ("softmax_ce", "ce", "float32", (4096, 32000), (64, 2000)),
    ("softmax_ce", "ce", "float32", (65536, 1000), (512, 100)),
    ("softmax_ce", "ce", "float32", (1048576, 10), (4096, 10)),
    ("softmax_ce", "ce", "float32", (8, 262144), (4, 8192)),
    ("softmax_ce", "ce", "float32", (1, 1), (1, 1)),  # per-call overhead: nothing to compute
    ("softmax_ce", "ce", "bfloat16", (4096, 32000), (64, 2000)),
    ("entropy", "entropy", "float32", (65536, 1000), (512, 100)),
    ("kl", "kl", "float32", (65536, 1000), (512, 100)),
    ("softmax_kl", "softmax_kl", "float32", (4096, 32000), (64, 2000)),
    ("score", "score", "float32", (4096, 32000), (64, 2000)),
    ("score", "score", "float32", (65536, 1000), (512, 100)),
    ("score+teacher", "score_teacher", "float32", (4096, 32000), (64, 2000)),
]


def all_workloads(quick: bool = False) -> list[Workload]:
    out = []
    for op, kind, dtype, full, small in _TABLE:
        r, c = small if quick else full
        out.append(Workload(op, kind, dtype, r, c, full[0], full[1]))
    return out
