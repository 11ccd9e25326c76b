"""The implementations compared, each a ``prepare(workload, inputs) -> zero-arg callable``.

``prepare`` does everything that should not be timed (imports, moving inputs to a device, building
jitted functions); the callable it returns does one complete computation and, for asynchronous
devices, waits for it (``block_until_ready`` / device synchronize). ``prepare`` raises
``NotInstalled`` when a package is missing and ``NotApplicable`` when the implementation has no
sensible version of the workload (e.g. bfloat16 in CuPy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import formulas
from bench.workloads import Workload

Inputs = dict[str, np.ndarray]
Prepare = Callable[[Workload, Inputs], Callable[[], Any]]


class NotInstalled(Exception):
    """An optional package is missing."""


class NotApplicable(Exception):
    """The implementation has no version of this workload."""


_IMPORTS: dict[str, Any] = {}


def optional_import(name: str) -> Any:
    """Import ``name`` once; a missing package raises NotInstalled, a broken one its own error."""
    if name not in _IMPORTS:
        try:
            mod = importlib.import_module(name)
            if getattr(mod, "__file__", None) is None and name == "numbaent":
                # the bare source directory without __init__.py imports as a namespace package
                raise ModuleNotFoundError("numbaent is an empty namespace package", name=name)
            _IMPORTS[name] = mod
        except Exception as e:  # remembered, re-raised on use
            _IMPORTS[name] = e
    mod = _IMPORTS[name]
    if isinstance(mod, BaseException):
        top = name.split(".")[0]
        if isinstance(mod, ModuleNotFoundError) and (mod.name or "").split(".")[0] == top:
            raise NotInstalled(name)
        raise mod
    return mod


def is_bf16(a: Any) -> bool:
    return getattr(getattr(a, "dtype", None), "name", "") == "bfloat16"


# ---------------------------------------------------------------------------------------------
# GPU detection (never initialises CUDA unless CuPy is importable)

_GPU: dict[str, Any] = {}


def gpu_status() -> tuple[bool, str]:
    """(available, description) of the CUDA device used by the GPU implementations."""
    if "status" not in _GPU:
        try:
            cp = optional_import("cupy")
            n = cp.cuda.runtime.getDeviceCount()
            if n < 1:
                _GPU["status"] = (False, "no CUDA device")
            else:
                props = cp.cuda.runtime.getDeviceProperties(0)
                name = props["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = props.get("totalGlobalMem", 0) / 2**30
                _GPU["status"] = (True, f"{name} ({mem:.0f} GiB), {n} device(s)")
        except NotInstalled:
            _GPU["status"] = (False, "cupy not installed")
        except Exception as e:
            _GPU["status"] = (False, f"no usable CUDA device ({type(e).__name__}: {e})")
    return _GPU["status"]


def _cuda_sync() -> None:
    optional_import("cupy").cuda.runtime.deviceSynchronize()


# ---------------------------------------------------------------------------------------------
# numbaent


def _numbaent_fn(ne: Any, kind: str, a: dict[str, Any], backend: str) -> Callable[[], Any]:
    if kind == "ce":
        f, x, y = ne.softmax_cross_entropy, a["logits"], a["labels"]
        return lambda: f(x, y, reduction="none", backend=backend)
    if kind == "entropy":
        f, p = ne.entropy, a["p"]
        return lambda: f(p, backend=backend)
    if kind == "kl":
        f, p, q = ne.kl_divergence, a["p"], a["q"]
        return lambda: f(p, q, backend=backend)
    if kind == "softmax_kl":
        f, lp, lq = ne.softmax_kl_divergence, a["logits_p"], a["logits_q"]
        return lambda: f(lp, lq, backend=backend)
    if kind == "score":
        f, x, y = ne.score, a["logits"], a["labels"]
        return lambda: f(x, y, backend=backend)
    if kind == "score_teacher":
        f, x, y, t = ne.score, a["logits"], a["labels"], a["teacher"]
        return lambda: f(x, y, teacher_logits=t, backend=backend)
    raise ValueError(kind)


def _numbaent_host(backend: str) -> Prepare:
    def prepare(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
        ne = optional_import("numbaent")
        return _numbaent_fn(ne, wl.kind, inputs, backend)

    return prepare


def _to_cupy(a: np.ndarray) -> Any:
    cp = optional_import("cupy")
    if is_bf16(a):
        # CuPy has no bfloat16 dtype; a torch CUDA bf16 tensor is the device array numbaent accepts
        try:
            torch = optional_import("torch")
        except NotInstalled:
            raise NotApplicable("bfloat16 on the GPU needs torch (CuPy has no bf16)") from None
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16).to("cuda")
    return cp.asarray(a)


def _prepare_numbaent_cuda(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    ne = optional_import("numbaent")
    dev = {k: _to_cupy(v) for k, v in inputs.items()}
    _cuda_sync()
    fn = _numbaent_fn(ne, wl.kind, dev, "cuda")

    def run() -> Any:
        r = fn()
        _cuda_sync()
        return r

    return run


# ---------------------------------------------------------------------------------------------
# NumPy / CuPy formulas


def _prepare_numpy(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    # bfloat16 is upcast to float32 inside the timed call (what a NumPy user has to do)
    dtype = np.float32 if wl.dtype == "bfloat16" else None
    return lambda: formulas.run(np, wl.kind, inputs, dtype)


def _prepare_cupy(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    cp = optional_import("cupy")
    if wl.dtype == "bfloat16":
        raise NotApplicable("CuPy has no bfloat16")
    dev = {k: cp.asarray(v) for k, v in inputs.items()}
    _cuda_sync()

    def run() -> Any:
        r = formulas.run(cp, wl.kind, dev)
        _cuda_sync()
        return r

    return run


def _prepare_cupy_copy(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    """Bandwidth yardstick: copy every input once (reads AND writes the input bytes)."""
    cp = optional_import("cupy")
    src = [cp.asarray(v.view(np.uint16) if is_bf16(v) else v) for v in inputs.values()]
    dst = [cp.empty_like(s) for s in src]
    _cuda_sync()

    def run() -> None:
        for s, d in zip(src, dst, strict=True):
            d[...] = s
        _cuda_sync()

    return run


# ---------------------------------------------------------------------------------------------
# SciPy


def _prepare_scipy(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    special = optional_import("scipy.special")
    stats = optional_import("scipy.stats")
    a = inputs
    up = wl.dtype == "bfloat16"  # SciPy has no bfloat16: upcast inside the timed call

    def f32(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32) if up else x

    if wl.kind == "ce":

        def run() -> Any:
            x = f32(a["logits"])
            lab = a["labels"][:, None]
            return special.logsumexp(x, axis=1) - np.take_along_axis(x, lab, axis=1)[:, 0]

        return run
    if wl.kind == "entropy":
        return lambda: stats.entropy(a["p"], axis=1)
    if wl.kind == "kl":
        return lambda: special.rel_entr(a["p"], a["q"]).sum(axis=1)
    if wl.kind == "softmax_kl":
        return lambda: special.rel_entr(
            special.softmax(f32(a["logits_p"]), axis=1), special.softmax(f32(a["logits_q"]), axis=1)
        ).sum(axis=1)
    if wl.kind in ("score", "score_teacher"):
        teacher = wl.kind == "score_teacher"

        def run() -> Any:
            # SciPy's softmax, then NumPy for what SciPy has no function for (top-2, rank, Brier)
            x, lab = f32(a["logits"]), a["labels"]
            ls = special.log_softmax(x, axis=1)
            p = np.exp(ls)
            am = x.argmax(axis=1)
            top2 = np.partition(p, -2, axis=1)[:, -2:]
            x_y = np.take_along_axis(x, lab[:, None], axis=1)
            p_y = np.take_along_axis(p, lab[:, None], axis=1)[:, 0]
            out = {
                "logsumexp": special.logsumexp(x, axis=1),
                "entropy": special.entr(p).sum(axis=1),
                "argmax": am,
                "confidence": p.max(axis=1),
                "margin": top2[:, 1] - top2[:, 0],
                "cross_entropy": -np.take_along_axis(ls, lab[:, None], axis=1)[:, 0],
                "correct": am == lab,
                "rank": (x > x_y).sum(axis=1),  # strictly above (ties not counted)
                "brier": (p * p).sum(axis=1) - 2 * p_y + 1,
            }
            if teacher:
                out["kl_divergence"] = special.rel_entr(
                    special.softmax(f32(a["teacher"]), axis=1), p
                ).sum(axis=1)
            return out

        return run
    raise ValueError(wl.kind)


# ---------------------------------------------------------------------------------------------
# torch (CPU and CUDA share the formulas)


def _torch_fn(torch: Any, kind: str, t: dict[str, Any]) -> Callable[[], Any]:
    F = torch.nn.functional
    if kind == "ce":
        x, y = t["logits"], t["labels"]
        return lambda: F.cross_entropy(x, y, reduction="none")
    if kind == "entropy":
        p = t["p"]
        return lambda: torch.special.entr(p).sum(1)
    if kind == "kl":
        p, q = t["p"], t["q"]
        return lambda: F.kl_div(q.log(), p, reduction="none").sum(1)
    if kind == "softmax_kl":
        lp, lq = t["logits_p"], t["logits_q"]
        return lambda: F.kl_div(
            F.log_softmax(lq, -1), F.log_softmax(lp, -1), log_target=True, reduction="none"
        ).sum(-1)
    if kind in ("score", "score_teacher"):
        x, y, tt = t["logits"], t["labels"], t.get("teacher")

        def run() -> Any:
            ls = F.log_softmax(x, -1)
            p = ls.exp()
            am = x.argmax(-1)
            top2 = torch.topk(p, 2, dim=-1).values
            out = {
                "logsumexp": torch.logsumexp(x, -1),
                "entropy": -(p * ls).sum(-1),
                "argmax": am,
                "confidence": p.amax(-1),
                "margin": top2[:, 0] - top2[:, 1],
                "cross_entropy": F.nll_loss(ls, y, reduction="none"),
                "correct": am == y,
                # strictly above the label (ties not counted: a second compare for rare rows)
                "rank": (x > x.gather(1, y[:, None])).sum(-1),
                # sum_j (p_j - [j == y])^2 expanded: no (R, C) one-hot to build
                "brier": (p * p).sum(-1) - 2 * p.gather(1, y[:, None])[:, 0] + 1,
            }
            if tt is not None:
                out["kl_divergence"] = F.kl_div(
                    ls, F.log_softmax(tt, -1), log_target=True, reduction="none"
                ).sum(-1)
            return out

        return run
    raise ValueError(kind)


def _torch_tensor(torch: Any, a: np.ndarray, device: str) -> Any:
    t = (
        torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
        if is_bf16(a)
        else torch.from_numpy(a)
    )
    return t if device == "cpu" else t.to(device)


def _torch(device: str) -> Prepare:
    def prepare(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
        torch = optional_import("torch")
        if device == "cuda" and not torch.cuda.is_available():
            raise NotApplicable("torch built without CUDA")
        t = {k: _torch_tensor(torch, v, device) for k, v in inputs.items()}  # CPU: no copy
        fn = _torch_fn(torch, wl.kind, t)
        if device == "cpu":
            return fn
        torch.cuda.synchronize()

        def run() -> Any:
            r = fn()
            torch.cuda.synchronize()
            return r

        return run

    return prepare


# ---------------------------------------------------------------------------------------------
# JAX (jit on the CPU device)

_JAX_FNS: dict[str, Any] = {}


def _jax_fns(jax: Any) -> dict[str, Any]:
    if _JAX_FNS:
        return _JAX_FNS
    jnp = jax.numpy
    jss = jax.scipy.special

    def f32(x: Any) -> Any:
        return x.astype(jnp.float32)  # no-op for float32; fused upcast for bfloat16

    def ce(x: Any, y: Any) -> Any:
        x = f32(x)
        return jax.nn.logsumexp(x, axis=1) - jnp.take_along_axis(x, y[:, None], axis=1)[:, 0]

    def entropy(p: Any) -> Any:
        return jss.entr(p).sum(1)

    def kl(p: Any, q: Any) -> Any:
        return jss.rel_entr(p, q).sum(1)

    def softmax_kl(a: Any, b: Any) -> Any:
        la = jax.nn.log_softmax(f32(a), axis=1)
        lb = jax.nn.log_softmax(f32(b), axis=1)
        return (jnp.exp(la) * (la - lb)).sum(1)

    def score_fields(x: Any, y: Any) -> tuple[dict[str, Any], Any]:
        x = f32(x)
        ls = jax.nn.log_softmax(x, axis=1)
        p = jnp.exp(ls)
        am = x.argmax(1)
        top2 = jax.lax.top_k(p, 2)[0]
        x_y = jnp.take_along_axis(x, y[:, None], axis=1)
        p_y = jnp.take_along_axis(p, y[:, None], axis=1)[:, 0]
        out = {
            "logsumexp": jax.nn.logsumexp(x, axis=1),
            "entropy": -(p * ls).sum(1),
            "argmax": am,
            "confidence": p.max(1),
            "margin": top2[:, 0] - top2[:, 1],
            "cross_entropy": -jnp.take_along_axis(ls, y[:, None], axis=1)[:, 0],
            "correct": am == y,
            "rank": (x > x_y).sum(1),  # strictly above the label (ties not counted)
            "brier": (p * p).sum(1) - 2 * p_y + 1,
        }
        return out, ls

    def score(x: Any, y: Any) -> Any:
        return score_fields(x, y)[0]

    def score_teacher(x: Any, y: Any, t: Any) -> Any:
        out, ls = score_fields(x, y)
        lt = jax.nn.log_softmax(f32(t), axis=1)
        out["kl_divergence"] = (jnp.exp(lt) * (lt - ls)).sum(1)
        return out

    for name, f in [
        ("ce", ce),
        ("entropy", entropy),
        ("kl", kl),
        ("softmax_kl", softmax_kl),
        ("score", score),
        ("score_teacher", score_teacher),
    ]:
        _JAX_FNS[name] = jax.jit(f)
    return _JAX_FNS


def _prepare_jax(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
    jax = optional_import("jax")
    cpu = jax.devices("cpu")[0]
    fn = _jax_fns(jax)[wl.kind]
    # int64 labels become int32 (JAX default, x64 disabled); inputs are put on the device ONCE
    args = [
        jax.device_put(v.astype(np.int32) if v.dtype == np.int64 else v, cpu)
        for v in inputs.values()
    ]
    jax.block_until_ready(args)
    return lambda: jax.block_until_ready(fn(*args))


def _roofline(which: str) -> Prepare:
    def prepare(wl: Workload, inputs: Inputs) -> Callable[[], Any]:
        from bench import roofline

        return roofline.prepare(which, inputs)

    return prepare


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Impl:
    key: str
    label: str
    role: str  # "numbaent" | "oracle" | "peer" | "limit"
    device: str  # "cpu" | "gpu"
    prepare: Prepare
    checked: bool = True  # compared with the reference on its first call


CPU_IMPLS: list[Impl] = [
    Impl("numbaent_cpu", "numbaent cpu", "numbaent", "cpu", _numbaent_host("cpu")),
    Impl("numbaent_numpy", "numbaent numpy (oracle)", "oracle", "cpu", _numbaent_host("numpy")),
    Impl("numpy", "NumPy f32", "peer", "cpu", _prepare_numpy),
    Impl("scipy", "SciPy", "peer", "cpu", _prepare_scipy),
    Impl("torch", "torch cpu", "peer", "cpu", _torch("cpu")),
    Impl("jax", "JAX jit cpu", "peer", "cpu", _prepare_jax),
    # the machine's own limits on the same bytes (bench/roofline.py)
    Impl("read_limit", "read (limit)", "limit", "cpu", _roofline("read"), checked=False),
    Impl("expsum_limit", "expsum (limit)", "limit", "cpu", _roofline("expsum"), checked=False),
    Impl("logsum_limit", "logsum (limit)", "limit", "cpu", _roofline("logsum"), checked=False),
]

GPU_IMPLS: list[Impl] = [
    Impl("numbaent_cuda", "numbaent cuda", "numbaent", "gpu", _prepare_numbaent_cuda),
    Impl("torch_cuda", "torch cuda", "peer", "gpu", _torch("cuda")),
    Impl("cupy", "CuPy formula", "peer", "gpu", _prepare_cupy),
    Impl("cupy_copy", "CuPy copy (limit)", "limit", "gpu", _prepare_cupy_copy, checked=False),
]


def select(peers: bool = True, gpu: bool = True) -> list[Impl]:
    """Implementations to run, in display order (the oracle is run first regardless)."""
    impls = [i for i in CPU_IMPLS if peers or i.role in ("numbaent", "oracle", "limit")]
    if gpu and gpu_status()[0]:
        impls += [i for i in GPU_IMPLS if peers or i.role == "numbaent"]
    return impls
