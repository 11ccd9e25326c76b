"""Make ``examples/digits_logits.npz``: real classifier logits for trying out ``numbaent score``.

How the file was made (``python examples/make_digits_logits.py``; needs scikit-learn)::

    data      scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes), features / 16
    split     ``train_test_split(test_size=0.3, stratify=labels, random_state=0)`` -> 540 test rows
    logits    student: multinomial ``LogisticRegression(C=0.01)``, its ``decision_function``
              (pre-softmax scores) on the test rows
    teacher   a different, stronger model: ``MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3,
              solver="lbfgs", random_state=0)``; its logits are the output layer's pre-softmax
              activations (computed from ``coefs_`` / ``intercepts_``)

Arrays in the file: ``logits`` (float32, (540, 10)), ``labels`` (int64, (540,)),
``teacher_logits`` (float32, (540, 10)). Every random choice is seeded, so rerunning gives the
same file (up to the last bits that a different BLAS could change). Try it::

    numbaent score examples/digits_logits.npz
    numbaent score examples/digits_logits.npz --temperature 2 --base 2 --json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 0
TEST_SIZE = 0.3
OUT = Path(__file__).with_name("digits_logits.npz")


def _mlp_logits(mlp, x: np.ndarray) -> np.ndarray:
    """Pre-softmax outputs of a fitted ``MLPClassifier`` (ReLU hidden layers, identity output)."""
    h = x
    n = len(mlp.coefs_)
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        h = h @ w + b
        if i < n - 1:
            if mlp.activation != "relu":
                raise ValueError(f"unsupported activation {mlp.activation!r}")
            h = np.maximum(h, 0.0)
    return h


def make(out: Path = OUT) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SEED
    )

    student = LogisticRegression(C=0.01, max_iter=5000)
    student.fit(x_tr, y_tr)
    logits = student.decision_function(x_te)

    teacher = MLPClassifier(
        hidden_layer_sizes=(64,), alpha=1e-3, solver="lbfgs", max_iter=2000, random_state=SEED
    )
    teacher.fit(x_tr, y_tr)
    teacher_logits = _mlp_logits(teacher, x_te)
    # the hand-written forward pass must agree with sklearn's own prediction
    assert np.array_equal(teacher.classes_[teacher_logits.argmax(1)], teacher.predict(x_te))
    assert np.array_equal(student.classes_, np.arange(10))

    arrays = {
        "logits": np.ascontiguousarray(logits, dtype=np.float32),
        "labels": np.ascontiguousarray(y_te, dtype=np.int64),
        "teacher_logits": np.ascontiguousarray(teacher_logits, dtype=np.float32),
    }
    np.savez_compressed(out, **arrays)
    return arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=OUT, help=f"output .npz (default {OUT.name})")
    args = ap.parse_args()
    a = make(args.out)
    acc = lambda z: float((z.argmax(1) == a["labels"]).mean())  # noqa: E731
    print(
        f"wrote {args.out}: {len(a['labels'])} rows, "
        f"student accuracy {acc(a['logits']):.4f}, teacher accuracy {acc(a['teacher_logits']):.4f}"
    )


if __name__ == "__main__":
    main()
