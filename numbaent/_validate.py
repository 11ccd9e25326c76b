"""Validation and dispatch helpers used only by the public layer. Kernels trust what comes out of here.

User input errors raise ValueError / TypeError / IndexError with messages naming the argument (and
the row, for per-row faults). Nothing here modifies an input array.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass

import numpy as np

_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
_BF16 = None


def bf16(load: bool = False):
    """The bfloat16 dtype (ml_dtypes), or None. Without ``load`` it is only looked up once
    ml_dtypes has been imported by someone: before that no array can have the dtype, and
    ``import numbaent`` does not pay for ml_dtypes' extension (0.1-0.8 s)."""
    global _BF16
    if _BF16 is None and (load or "ml_dtypes" in sys.modules):
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes is a dependency of the bfloat16 path
            return None
        _BF16 = np.dtype(ml_dtypes.bfloat16)
        _FLOATS.add(_BF16)
    return _BF16


REDUCTIONS = ("none", "sum", "mean")
NAN_POLICIES = ("propagate", "raise")


def is_float_dtype(dt) -> bool:
    dt = np.dtype(dt)
    return dt in _FLOATS or (dt.kind == "V" and dt == bf16())


def math_dtype(*arrays) -> np.dtype:
    """float64 if any input is float64, else float32 (half inputs give float32 results)."""
    for a in arrays:
        if a is not None and a.dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def score_fields(dtype, labels: bool, teacher: bool) -> dict:
    """The per-row outputs of the kernels' ``score`` (name -> dtype), for these inputs: the one
    list behind ``score`` and the single functions that take score's pass at a temperature."""
    fields = {"logsumexp": dtype, "entropy": dtype, "argmax": np.int64, "confidence": dtype,
              "margin": dtype}  # fmt: skip
    if labels:
        fields.update(cross_entropy=dtype, correct=np.bool_, rank=np.int64, brier=dtype)
    if teacher:
        fields["kl_divergence"] = dtype
    return fields


# --------------------------------------------------------------------------------------------------
# scalar options


def base_divisor(base) -> float:
    """ln(base), or 1.0 for natural units."""
    if base is None:
        return 1.0
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"base must be a positive real number other than 1 or None; got {base!r}")
    b = float(base)
    if not (b > 0) or b == 1 or not math.isfinite(b):
        raise ValueError(f"base must be a positive finite number other than 1; got {base!r}")
    return math.log(b)


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


_I64 = np.iinfo(np.int64)


def check_int(value, name: str) -> int:
    """A Python int that fits the kernels' int64 (a larger one cannot reach a Numba kernel)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if not _I64.min <= v <= _I64.max:
        raise ValueError(f"{name} must fit in a signed 64-bit integer; got {value!r}")
    return v


def check_label_smoothing(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1]; got {eps!r}")
    e = float(eps)
    if not (0.0 <= e <= 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1]; got {eps!r}")
    return e


def check_temperature(t) -> float:
    """The one check of every ``temperature`` (the functions taking one, the CLI, numbaent.dask):
    a finite float > 0 whose reciprocal is finite too (the kernels scale by 1 / T: a subnormal T
    such as 1e-310 would make that inf, and the results NaN)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"temperature must be a positive number; got {t!r}")
    try:
        tf = float(t)
    except OverflowError:  # an int beyond float64 (10**400)
        tf = math.inf
    if not (tf > 0) or not math.isfinite(tf) or not math.isfinite(1.0 / tf):
        raise ValueError(
            f"temperature must be a positive finite number whose reciprocal is finite "
            f"(1 / temperature overflows below about 5.6e-309); got {t!r}"
        )
    return tf


# --------------------------------------------------------------------------------------------------
# arrays


def as_array(a, name: str) -> np.ndarray:
    """Host array view of ``a`` (no copy for ndarrays); rejects non-numeric data."""
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except Exception as exc:
            raise TypeError(f"{name} must be an array of numbers; got {type(a).__name__}") from exc
    if arr.dtype.kind not in "biuf" and not is_float_dtype(arr.dtype):  # bfloat16 is a float
        raise not_real(name, arr.dtype)
    return arr


def as_probabilities(a, name: str) -> np.ndarray:
    """Probabilities or counts: floats as they are, integers and bools converted to float64."""
    arr = as_array(a, name)
    if prob_conversion(arr.dtype, name) is not None:
        arr = arr.astype(np.float64)
    return native(arr)


def as_logits(a, name: str) -> np.ndarray:
    arr = as_array(a, name)
    check_logit_dtype(arr.dtype, name)
    return native(arr)


def native(arr: np.ndarray) -> np.ndarray:
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_axis(axis, ndim: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer; got {axis!r}")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis); got a scalar")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {ndim} dimension(s)")
    return ax % ndim


@dataclass
class Rows:
    """A validated input as rows x classes: ``data`` is C-contiguous (N, C); ``batch`` the shape of
    the batch axes (the output shape of per-row results); ``moved`` the shape with the class axis
    last; ``axis`` the class axis of the original array, ``shape`` its shape. (The device adapter
    makes the same object of device arrays.)"""

    data: np.ndarray
    batch: tuple[int, ...]
    moved: tuple[int, ...]
    axis: int
    shape: tuple[int, ...]


def to_rows(arr: np.ndarray, axis: int) -> Rows:
    """Move the class axis last and flatten the batch axes. A non-last axis or a non-contiguous
    array costs one contiguous copy (documented in the README); a C-contiguous array is a view."""
    moved = np.moveaxis(arr, axis, -1) if axis != arr.ndim - 1 else arr
    batch = moved.shape[:-1]
    c = moved.shape[-1]
    n = math.prod(batch)
    data = np.ascontiguousarray(moved).reshape(n, c)
    return Rows(data, tuple(batch), tuple(moved.shape), axis, arr.shape)


def labels_rows(y, name: str, batch: tuple[int, ...]) -> np.ndarray:
    arr = as_array(y, name)
    check_labels(arr.dtype, arr.shape, name, batch)
    # any byte order: a big-endian ">u8" is not == np.uint64, and would wrap to negative labels
    u64 = arr.dtype.kind == "u" and arr.dtype.itemsize == 8
    if u64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise big_label(name, arr, batch)
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


def label_out_of_range(name: str, label: int, row, num_classes: int, ignore_index: int):
    """The IndexError of a label outside [0, C) that is not ``ignore_index`` (``row``: as
    :func:`row_name` gives it); the one text of that error, whichever path found the label."""
    return IndexError(
        f"{name}: label {label} at row {row} is outside [0, {num_classes}) and is not "
        f"ignore_index ({ignore_index})"
    )


def row_name(i: int, batch: tuple[int, ...]):
    """A flat row index as the user sees it: an int for 1-D batches, a tuple otherwise."""
    if len(batch) == 1:
        return int(i)
    return tuple(int(v) for v in np.unravel_index(int(i), batch)) if batch else ()


def check_same_shape(p: np.ndarray, q: np.ndarray, pname: str, qname: str, axis: int) -> None:
    if q.shape == p.shape:
        return
    if q.ndim == 1 and p.ndim >= 1 and q.shape[0] == p.shape[axis]:
        return
    raise ValueError(
        f"{pname} and {qname} must have the same shape (or {qname} 1-D of length C); "
        f"got {p.shape} and {q.shape}"
    )


def weight_array(weight, c: int, dtype) -> np.ndarray | None:
    if weight is None:
        return None
    w = as_array(weight, "weight")
    check_weight(w.shape, c)
    return np.ascontiguousarray(w, dtype=dtype)


def overlaps(out: np.ndarray, inputs) -> bool:
    """True if ``out`` may share memory with one of ``inputs`` (a cheap bounds check)."""
    return any(a is not None and np.may_share_memory(out, a) for a in inputs)


def prepare_out(out, shape: tuple[int, ...], dtype: np.dtype, name: str = "out", inputs=()):
    """Validate a user ``out`` array; returns (array to fill with kernels, final out or None).
    An ``out`` that may overlap one of ``inputs`` (what the kernel reads) is filled through a
    temporary: the kernels write row results while other rows are still being read."""
    if out is None:
        return np.empty(shape, dtype), None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray for host inputs; got {type(out).__name__}")
    check_out(name, out.shape, out.dtype, shape, dtype)
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if out.flags.c_contiguous and not overlaps(out, inputs):
        return out, out
    return np.empty(shape, dtype), out


def first_nan_row(results: np.ndarray, inputs: dict):
    """(row, name) of the first row whose result is NaN because input ``name`` (a 2-D row array, or
    None) has a NaN in that row; None if there is no such row. Only NaN result rows are scanned."""
    res = results.reshape(results.shape[0], -1) if results.ndim > 1 else results
    nan_rows = np.isnan(res).any(axis=1) if res.ndim > 1 else np.isnan(res)
    for i in np.flatnonzero(nan_rows):
        for name, a in inputs.items():
            if a is None or a.ndim != 2 or a.shape[1] == 0:
                continue
            row = a[i] if a.shape[0] > 1 else a[0]
            if np.isnan(np.asarray(row, dtype=np.float64)).any():
                return int(i), name
    return None


def to_units(res: np.ndarray, divisor: float) -> None:
    """Divide the per-row results ``res`` by the unit ``divisor`` (ln base) in place; a value
    beyond the float32 range in those units is +-inf, the contract's answer, without a warning."""
    if divisor != 1.0:
        with np.errstate(over="ignore"):
            np.divide(res, divisor, out=res, casting="unsafe")


@np.errstate(over="ignore")  # the float64 mean or sum of float32 results, stored back
def finish(
    res: np.ndarray,
    batch: tuple[int, ...],
    out_final,
    *,
    divisor: float,
    reduction: str,
    nan_policy: str,
    nan_inputs: dict,
    denom: float | None = None,
    sum_of,
):
    """Common tail of every per-row function: nan_policy, units, reduction, output shape and ``out``.

    ``res`` is the (N,) result the kernel filled (a view of ``out`` when ``out`` was usable
    directly). ``denom`` is the mean's denominator (default: the number of rows); ``sum_of`` the
    backend's float64 sum of a vector."""
    if nan_policy == "raise":
        hit = first_nan_row(res, nan_inputs)
        if hit is not None:
            raise nan_row(hit[1], row_name(hit[0], batch))
    if reduction == "none":
        to_units(res, divisor)
        shaped = res.reshape(batch)
        if out_final is not None:
            if not np.shares_memory(out_final, shaped):
                out_final[...] = shaped
            return out_final
        return shaped
    total = sum_of(res)
    if reduction == "sum":
        val = total
    else:
        d = res.shape[0] if denom is None else denom
        val = total / d if d != 0 else math.nan
    val /= divisor
    if out_final is not None:
        out_final[()] = val
        return out_final
    return val


def outputs(out, batch: tuple[int, ...], dtype: np.dtype, reduction: str, inputs=()):
    """(kernel target of shape (N,), final ``out`` or None) for a per-row result; ``inputs``: the
    arrays the kernel reads (an ``out`` overlapping them is filled through a temporary)."""
    n = math.prod(batch)
    if reduction == "none":
        target, final = prepare_out(out, batch, dtype, inputs=inputs)
        return target.reshape(n), final
    final = None
    if out is not None:
        _, final = prepare_out(out, (), dtype)
    return np.empty(n, dtype), final


def scalar_if_0d(res, out):
    """A 1-D input has a 0-d batch: return a NumPy scalar of the result dtype (unless ``out``)."""
    if out is None and isinstance(res, np.ndarray) and res.ndim == 0:
        return res[()]
    return res


# --------------------------------------------------------------------------------------------------
# the user-facing messages, each written once: both adapters (host and device memory), numbaent.dask
# and partial_state check array metadata (dtype, shape) through these (the CLI through the ops)


def not_real(name: str, dtype) -> TypeError:
    return TypeError(f"{name} must hold real numbers; got dtype {dtype}")


def check_logit_dtype(dtype, name: str) -> None:
    dt = np.dtype(dtype)
    if not is_float_dtype(dt.newbyteorder("=")):  # byte order aside (">f8" is a float too)
        raise TypeError(
            f"{name} must be a floating array (float16, bfloat16, float32 or float64); "
            f"got dtype {dtype}"
        )


def prob_conversion(dtype, name: str):
    """Probabilities or counts: None for floats (read as they are), float64 for integers and bools."""
    dt = np.dtype(dtype)
    if is_float_dtype(dt.newbyteorder("=")):
        return None
    if dt.kind not in "biu":
        raise not_real(name, dtype)
    return np.dtype(np.float64)


def check_labels(dtype, shape, name: str, batch) -> None:
    if np.dtype(dtype).kind not in "iu":
        raise TypeError(f"{name} must be integer class labels; got dtype {dtype}")
    if tuple(shape) != tuple(batch):
        raise ValueError(
            f"{name} must have shape {tuple(batch)} (the logits' shape without the class axis); "
            f"got {tuple(shape)}"
        )


def big_label(name: str, labels: np.ndarray, batch) -> IndexError:
    """The error of a uint64 label beyond int64 (``labels``: host uint64 labels holding one)."""
    flat = labels.ravel()
    i = int(np.flatnonzero(flat > np.iinfo(np.int64).max)[0])
    return IndexError(f"{name}: label {flat[i]} at row {row_name(i, batch)} is out of range")


def check_weight(shape, c: int) -> None:
    if len(shape) != 1 or shape[0] != c:
        raise ValueError(f"weight must be a 1-D array of length C = {c}; got shape {tuple(shape)}")


def check_pair_shape(pshape, qshape) -> None:
    """logits_p and logits_q: exactly the same shape (not the class-axis-last one)."""
    if tuple(pshape) != tuple(qshape):
        raise ValueError(
            "logits_p and logits_q must have the same shape; "
            f"got {tuple(pshape)} and {tuple(qshape)}"
        )


def check_teacher_shape(shape, logits_shape) -> None:
    if tuple(shape) != tuple(logits_shape):
        raise ValueError(
            f"teacher_logits must have the logits' shape {tuple(logits_shape)}; got {tuple(shape)}"
        )


def check_soft_target(dtype, shape, logits_shape, batch, ignore_index: int) -> None:
    """A non-integer ``target`` of softmax_cross_entropy: probabilities of the logits' shape."""
    if np.dtype(dtype).kind == "b":
        raise TypeError("target must be integer class labels or floating probabilities; got bool")
    if tuple(shape) != tuple(logits_shape):
        raise ValueError(
            f"target must be integer labels of shape {tuple(batch)} or probabilities of the "
            f"logits' shape {tuple(logits_shape)}; got shape {tuple(shape)} with dtype {dtype}"
        )
    if ignore_index != -100:
        raise ValueError(
            "ignore_index is only supported for integer class labels; soft (probability) targets "
            f"take no ignore_index (got {ignore_index})"
        )


def check_out(name: str, shape, dtype, want_shape, want_dtype) -> None:
    if tuple(shape) != tuple(want_shape):
        raise ValueError(f"{name} has shape {tuple(shape)}; expected {tuple(want_shape)}")
    if np.dtype(dtype) != np.dtype(want_dtype):
        raise TypeError(f"{name} has dtype {dtype}; expected {np.dtype(want_dtype)}")


def negative_entry(name: str, row) -> ValueError:
    return ValueError(
        f"{name} has a negative entry in row {row}; probabilities and counts must be >= 0"
    )


def nan_row(name: str, row) -> ValueError:
    return ValueError(f"nan_policy='raise': {name} has a NaN in row {row}")


def options(base, reduction: str, nan_policy: str) -> float:
    """The options every per-row function takes: the unit divisor (ln base), checked choices."""
    divisor = base_divisor(base)
    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    return divisor
