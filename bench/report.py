"""Markdown tables, JSON and the PNG bar chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import linear as linear_mod
from bench import roofline
from bench.impls import Impl
from bench.machine import as_markdown
from bench.pairs import PairResult
from bench.pairs import markdown as pairs_md
from bench.runner import Result
from bench.workloads import Workload

Run = list[tuple[Workload, dict[str, Result]]]

NOTES = """\
Notes:
- GB/s = input bytes read per call (formula per workload above; outputs not counted) / min time.
  Rows/s = rows / min time. Warm-up (JIT compile) call excluded; implementations are timed
  interleaved, round robin within each repetition, with a pause (settle) before every timed
  sample, the same for all, so that the worker threads a previous call left spinning have gone
  idle. A sample is one call, or as many back-to-back calls as last the minimum sample time
  (calls/sample in the details), timed together and divided by their number.
- speedup = peer min time / numbaent min time (> 1: numbaent faster). "Best peer" is the fastest
  peer on the same device whose result agreed with the reference.
- Each result is checked once against the numbaent `numpy` oracle (itself checked against the
  harness's float64 formula), max |x - ref| / (|ref| + mean|ref|) <= 1e-3 (1e-2 for bf16 output);
  `(!)` marks a disagreement (see details).
- bf16: NumPy and SciPy upcast to float32 inside the timed call; JAX upcasts inside the jit (fused);
  torch and numbaent read bf16 directly (torch returns bf16). JAX gets int32 labels (x64 off).
- CuPy copy reads and writes every input once (`y[...] = x`): its GB/s counts the input bytes
  only, so a kernel that only reads can reach up to ~2x the copy's figure."""


#: what a --quick run's report says first (markdown and JSON): its shapes are too small and its
#: repetitions too few for any figure to measure the implementations
SMOKE_TEST = (
    "Smoke test (--quick): tiny shapes. Its figures are not timings: GB/s, speedups and ratios "
    "of calls this short measure start-up and noise, not the implementations, and the targets "
    "are not evaluated; only the checks against the reference count."
)


def _min(r: Result | None) -> float | None:
    if r is None or r.status != "ok" or not r.times:
        return None
    return min(r.times)


def _usable(r: Result | None) -> float | None:
    """Min time if the result may count as a competitor (ran and did not disagree)."""
    t = _min(r)
    return t if t is not None and r is not None and r.check != "MISMATCH" else None


def limit_fraction(wl: Workload, res: dict[str, Result]) -> tuple[float, float] | None:
    """(numbaent cpu's time over the limit's, the limit in GB/s): the limit is the slower of the
    workload's two yardsticks (bench/roofline.py: read, and expsum or logsum), same run."""
    ts = [_min(res.get(k)) for k in roofline.limit_keys(wl.kind)]
    t = _min(res.get("numbaent_cpu"))
    if not t or not all(ts):
        return None
    lim = max(ts)  # type: ignore[type-var]
    return lim / t, wl.input_bytes / lim / 1e9


def cell(wl: Workload, r: Result | None) -> str:
    if r is None:
        return ""
    if r.status == "ok" and r.times:
        s = _num(wl.input_bytes / min(r.times) / 1e9)
        return s + " (!)" if r.check == "MISMATCH" else s
    if r.status == "error":
        return f"error: {r.error or 'Exception'}"
    return r.status


def best_peer(impls: list[Impl], res: dict[str, Result], device: str) -> tuple[Impl, float] | None:
    cands = [
        (i, t)
        for i in impls
        if i.role == "peer" and i.device == device and (t := _usable(res.get(i.key))) is not None
    ]
    return min(cands, key=lambda it: it[1]) if cands else None


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _mb(nbytes: int) -> str:
    return _num(nbytes / 1e6)


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num is not None and den else "—"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(
    run: Run,
    impls: list[Impl],
    machine: dict[str, Any],
    config: dict[str, Any],
    pairs: list[PairResult] | None = None,
    linear: tuple[linear_mod.LinearRun, list[linear_mod.LinearImpl]] | None = None,
) -> str:
    """The report. ``linear``: the linear_score group's results and contenders (its own
    section). The throughput, speedup, workload and details tables only when ``run`` has
    workloads (``--only pair`` / ``--only linear`` runs have none)."""
    has_gpu = any(i.device == "gpu" for i in impls)
    parts = ["# numbaent benchmark", ""]
    if config["quick"]:
        parts += [f"**{SMOKE_TEST}**", ""]
    parts += [
        f"{config['created']} — reps={config['reps']}, settle <= {config.get('settle_s', 0):g} s, "
        f"samples >= {config.get('min_sample_s', 0) * 1e3:g} ms"
        + (f", linear_score reps={config.get('linear_reps')}" if linear and linear[0] else "")
        + (", --quick (reduced shapes)" if config["quick"] else "")
        + ("" if config["peers"] else ", --no-peers"),
        "",
        as_markdown(machine),
        "",
    ]
    parts += _workload_tables(run, impls, has_gpu)
    parts += pairs_md(pairs or [], quick=config["quick"])
    parts += _half_vs_f32(run)
    if linear is not None:
        parts += linear_mod.markdown(linear[0], linear[1], quick=config["quick"])
    if run:
        parts += _details(run, impls)
    return "\n".join(parts)


def _workload_tables(run: Run, impls: list[Impl], has_gpu: bool) -> list[str]:
    if not run:
        return []
    parts = [
        "## Throughput, GB/s of input (min time)",
        "",
    ]
    header = ["workload", "MB in"] + [i.label for i in impls]
    header.append("numbaent cpu vs best CPU peer")
    has_limit = any(i.role == "limit" and i.device == "cpu" for i in impls)
    if has_limit:
        header.append("numbaent cpu / limit")
    if has_gpu:
        header += ["numbaent cuda vs best GPU peer", "numbaent cuda / copy"]
    rows = []
    for wl, res in run:
        row = [wl.name, _mb(wl.input_bytes)] + [cell(wl, res.get(i.key)) for i in impls]
        cpu_t = _min(res.get("numbaent_cpu"))
        bp = best_peer(impls, res, "cpu")
        row.append(f"{_ratio(bp[1], cpu_t)} ({bp[0].label})" if bp and cpu_t else "—")
        if has_limit:
            lim = limit_fraction(wl, res)
            row.append(f"{lim[0]:.2f} (limit {_num(lim[1])} GB/s)" if lim else "—")
        if has_gpu:
            cuda_t = _min(res.get("numbaent_cuda"))
            bg = best_peer(impls, res, "gpu")
            row.append(f"{_ratio(bg[1], cuda_t)} ({bg[0].label})" if bg and cuda_t else "—")
            copy_t = _min(res.get("cupy_copy"))
            row.append(f"{copy_t / cuda_t:.0%}" if copy_t and cuda_t else "—")
        rows.append(row)
    parts += [_table(header, rows), ""]

    # speedup of numbaent vs every other implementation on the same device
    vs = [("numbaent_cpu", i) for i in impls if i.device == "cpu" and i.role in ("oracle", "peer")]
    vs += [("numbaent_cuda", i) for i in impls if i.device == "gpu" and i.role != "numbaent"]
    if vs:
        parts += ["## Speedup of numbaent (peer time / numbaent time)", ""]
        sh = ["workload"] + [
            f"{'cpu' if a == 'numbaent_cpu' else 'cuda'} vs {i.label}" for a, i in vs
        ]
        srows = [
            [wl.name] + [_ratio(_min(res.get(i.key)), _min(res.get(a))) for a, i in vs]
            for wl, res in run
        ]
        parts += [_table(sh, srows), ""]
    return parts


def _details(run: Run, impls: list[Impl]) -> list[str]:
    parts = ["## Workloads", ""]
    wrows = [
        [wl.name, f"{wl.rows}x{wl.cols}", wl.dtype, wl.bytes_formula, f"{wl.input_bytes:,}"]
        for wl, _ in run
    ]
    parts += [_table(["workload", "R x C", "dtype", "input bytes", "bytes"], wrows), ""]

    parts += ["## Details", ""]
    drows = []
    for wl, res in run:
        for i in impls:
            r = res.get(i.key)
            if r is None:
                continue
            t, med = _min(r), (r.median_s if r.times else None)
            drows.append(
                [
                    wl.name,
                    i.label,
                    f"{t:.4g}" if t else "",
                    f"{med:.4g}" if med else "",
                    str(r.calls) if r.times else "",
                    _num(wl.input_bytes / t / 1e9) if t else "",
                    f"{wl.rows / t / 1e6:.3g}" if t else "",
                    f"{r.first_call_s:.3g}" if r.first_call_s is not None else "",
                    ("" if r.check == "unchecked" and r.status != "ok" else r.check)
                    + (f" ({r.max_rel_err:.1e})" if r.max_rel_err is not None else ""),
                    "; ".join(
                        s
                        for s in (
                            r.status if r.status != "ok" else "",
                            r.detail,
                            r.check_detail if r.check == "MISMATCH" else "",
                        )
                        if s
                    ),
                ]
            )
    dh = [
        "workload",
        "impl",
        "min s",
        "median s",
        "calls/sample",
        "GB/s",
        "Mrows/s",
        "1st call s",
        "check",
        "note",
    ]
    parts += [_table(dh, [[c.replace("|", "\\|") for c in r] for r in drows]), "", NOTES, ""]
    return parts


def _half_vs_f32(run: Run) -> list[str]:
    """Rows/s of every bfloat16 workload over its float32 twin (same op and shape), per
    numbaent backend: the reading that matters for half inputs is rows per second, not GB/s."""
    by_name = {(wl.op, wl.rows, wl.cols, wl.dtype): res for wl, res in run}
    lines = []
    for wl, res in run:
        if wl.dtype != "bfloat16":
            continue
        twin = by_name.get((wl.op, wl.rows, wl.cols, "float32"))
        if twin is None:
            continue
        for key, label in (("numbaent_cpu", "cpu"), ("numbaent_cuda", "cuda")):
            h, f = _min(res.get(key)), _min(twin.get(key))
            if h and f:
                lines.append(
                    f"- {wl.op} {wl.rows}x{wl.cols}, numbaent {label}: bfloat16 rows/s = "
                    f"{f / h:.2f}x float32's ({h * 1e3:.2f} ms vs {f * 1e3:.2f} ms)"
                )
    head = "## bfloat16 against float32 across workloads (rows/s, min times; timed minutes apart)"
    return [head, "", *lines, ""] if lines else []


def to_json(
    run: Run,
    impls: list[Impl],
    machine: dict[str, Any],
    config: dict[str, Any],
    pairs: list[PairResult] | None = None,
    linear: linear_mod.LinearRun | None = None,
) -> str:
    doc = {
        "schema": 1,
        "smoke_test": bool(config["quick"]),  # True: the figures are not timings
        "note": SMOKE_TEST if config["quick"] else None,
        "config": config,
        "machine": machine,
        "impls": [
            {"key": i.key, "label": i.label, "role": i.role, "device": i.device} for i in impls
        ],
        "workloads": [
            {
                "name": wl.name,
                "nominal_name": wl.nominal_name,
                "kind": wl.kind,
                "dtype": wl.dtype,
                "rows": wl.rows,
                "cols": wl.cols,
                "input_bytes": wl.input_bytes,
                "bytes_formula": wl.bytes_formula,
                "results": {k: r.to_json(wl) for k, r in res.items()},
                "numbaent_cpu_fraction_of_limit": (
                    lim[0] if (lim := limit_fraction(wl, res)) else None
                ),
                "numbaent_cpu_speedup_vs": {
                    i.key: (t / c)
                    for i in impls
                    if i.device == "cpu"
                    and i.role != "numbaent"
                    and (t := _min(res.get(i.key)))
                    and (c := _min(res.get("numbaent_cpu")))
                },
            }
            for wl, res in run
        ],
        "pairs": [p.to_json() for p in pairs or []],
        "linear": linear_mod.to_json(linear or []),
    }
    return json.dumps(doc, indent=2, default=str)


def chart(run: Run, impls: list[Impl], path: Path, title: str) -> str | None:
    """Grouped bar chart of GB/s; returns a message when it could not be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed; skipping chart"
    shown = [i for i in impls if any(_min(res.get(i.key)) for _, res in run)]
    if not run or not shown:
        return "nothing timed; skipping chart"
    n, k = len(run), len(shown)
    width = 0.8 / k
    from matplotlib.patches import Patch

    handles = []
    fig, ax = plt.subplots(figsize=(max(10.0, 1.5 * n + 2), 6.5))
    top = 0.0
    for j, impl in enumerate(shown):
        xs, ys, flagged = [], [], []
        for w, (wl, res) in enumerate(run):
            t = _min(res.get(impl.key))
            if t:
                xs.append(w - 0.4 + width * (j + 0.5))
                ys.append(wl.input_bytes / t / 1e9)
                flagged.append(res[impl.key].check == "MISMATCH")
                top = max(top, ys[-1])
        bars = ax.bar(xs, ys, width, color=f"C{j % 10}")
        handles.append(Patch(color=f"C{j % 10}", label=impl.label))
        for b, bad in zip(bars, flagged, strict=True):
            if bad:  # disagreed with the reference
                b.set_hatch("xx")
    ax.set_xticks(range(n))
    ax.set_xticklabels([wl.name.replace(" ", "\n", 2) for wl, _ in run], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("GB/s of input (min time, log scale)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_ylim(top=top * 1.6)
    ax.legend(
        handles=handles,
        fontsize=8,
        ncol=min(k, 5),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    ax.set_title(
        title + " (hatched: disagrees with reference)", fontsize=10, pad=28 + 14 * ((k - 1) // 5)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
