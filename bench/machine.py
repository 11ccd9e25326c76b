"""Describe the machine and software the benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from bench.impls import gpu_status

PACKAGES = (
    "numbaent",
    "numpy",
    "numba",
    "numba-cuda",
    "scipy",
    "torch",
    "jax",
    "jaxlib",
    "ml_dtypes",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "cupy",
    "matplotlib",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        pass
    return info


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return None


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        mod = sys.modules.get(dist.replace("-", "_"))
        return getattr(mod, "__version__", None) if mod else None


def _vector_width(flags: list[str]) -> str:
    """The widest SIMD the CPU reports (from /proc/cpuinfo's flags, as lscpu shows them)."""
    if "avx512f" in flags:
        return "AVX-512 (512-bit)"
    if "avx2" in flags:
        return "AVX2 (256-bit)"
    if "asimd" in flags or "neon" in flags:
        return "NEON (128-bit)"
    return "SSE or narrower" if flags else "?"


def describe() -> dict[str, Any]:
    """Machine description; call after the benchmarks so imported libraries report threads."""
    cpu = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    d: dict[str, Any] = {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "cores_per_socket": cpu.get("cpu cores"),
        "vector": _vector_width(cpu.get("flags", "").split()),
        "cache": cpu.get("cache size"),
        "mem_total_gib": round(m, 1) if (m := _mem_total_gib()) else None,
        "loadavg": loadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
    }
    try:
        import numba

        d["numba_threads"] = numba.get_num_threads()
        d["numba_svml"] = bool(getattr(numba.config, "USING_SVML", False))
        try:
            d["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel function has run yet
            d["numba_threading_layer"] = None
    except ImportError:
        pass
    if "torch" in sys.modules:
        d["torch_threads"] = sys.modules["torch"].get_num_threads()
    if "jax" in sys.modules:
        try:
            d["jax_devices"] = [str(x) for x in sys.modules["jax"].devices()]
        except Exception as e:
            d["jax_devices"] = [f"error: {type(e).__name__}"]
    ok, desc = gpu_status()
    d["gpu"] = desc if ok else f"none ({desc})"
    env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("NUMBA_", "OMP_", "XLA_"))}
    if env:
        d["env"] = env
    return d


def as_markdown(d: dict[str, Any]) -> str:
    lines = [
        f"- CPU: {d['cpu_model']}, {d['logical_cpus']} logical CPUs ({d['usable_cpus']} usable)"
        + (f", cache {d['cache']}" if d.get("cache") else "")
        + (f", vectors: {d['vector']}" if d.get("vector") else ""),
        f"- Memory: {d['mem_total_gib']} GiB" if d.get("mem_total_gib") else "- Memory: ?",
        "- Threads: numba "
        + str(d.get("numba_threads", "?"))
        + (f" ({d['numba_threading_layer']})" if d.get("numba_threading_layer") else "")
        + (", SVML" if d.get("numba_svml") else ", no SVML")
        + (f", torch {d['torch_threads']}" if "torch_threads" in d else ""),
        f"- GPU: {d['gpu']}",
        "- Load average (1/5/15 min) at start: "
        + (" ".join(map(str, d["loadavg_start"])) if d.get("loadavg_start") else "?")
        + ", at end: "
        + (" ".join(map(str, d["loadavg"])) if d.get("loadavg") else "?")
        + " (load from other processes skews timings)",
        f"- Python {d['python']} on {d['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
    ]
    if d.get("env"):
        lines.append("- Env: " + ", ".join(f"{k}={v}" for k, v in d["env"].items()))
    return "\n".join(lines)
