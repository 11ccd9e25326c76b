"""Benchmarks for numbaent against NumPy, SciPy, torch, JAX (and CuPy / torch CUDA on a GPU).

Run ``python -m bench --help`` from the repository root. See ``bench/README.md``.
"""

__all__: list[str] = []
