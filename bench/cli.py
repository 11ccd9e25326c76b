"""Command line: ``python -m bench [--quick] [--only NAME] [--reps N] [--no-peers] ...``.

Exit status: 0 when every numbaent implementation that ran agreed with the reference, 1 when one
of them failed, disagreed or numbaent could not be imported (peers never affect it), 2 for usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from bench import impls as impls_mod
from bench import linear, machine, pairs, report
from bench.runner import Result, run_workload
from bench.workloads import all_workloads

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark numbaent (cpu/numpy/cuda backends) against NumPy, SciPy, torch, "
        "JAX and, on a GPU, torch CUDA and CuPy. Writes a markdown table to stdout and "
        "results/latest.{json,md,png}.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 rep (CI smoke test)")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run workloads whose name contains NAME (case-insensitive; full-size names match "
        "under --quick too); repeatable",
    )
    p.add_argument(
        "--reps", type=int, default=None, help="timed repetitions (default 5, --quick 1)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="before every timed call, the same for every implementation, busy-wait until no "
        "other thread of the process is busy (worker threads a previous call left spinning), "
        "at most this many seconds (default 0.2, --quick 0)",
    )
    p.add_argument(
        "--min-sample-ms",
        type=float,
        default=None,
        help="a timed sample is as many back-to-back calls as last at least this long, timed "
        "together (one call when a call takes longer; default 20, --quick 0)",
    )
    p.add_argument(
        "--pair-reps",
        type=int,
        default=None,
        help="repetitions of the paired ratios (bf16/f32 CE, score/softmax_kl, score/softmax_ce, "
        "score+teacher/score; default 15, --quick 1)",
    )
    p.add_argument("--no-pairs", action="store_true", help="skip the paired ratios")
    p.add_argument(
        "--linear",
        action="store_true",
        help="add the linear_score group (hidden states x weight at N=4096, d=2048, V=32000 and "
        f"128000) to a full run without --only: {linear.FULL_RUN_NOTE}; it runs by default only "
        "under --quick (tiny shapes) or when --only names it (--only linear)",
    )
    p.add_argument("--no-linear", action="store_true", help="skip the linear_score group")
    p.add_argument(
        "--linear-reps",
        type=int,
        default=None,
        help=f"timed samples per contender of the linear_score group (default {linear.DEFAULT_REPS}"
        ", --quick 1; one call each, after an untimed first call)",
    )
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="linear_score group: skip the peak-memory subprocesses",
    )
    p.add_argument("--no-peers", action="store_true", help="only numbaent's own backends")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU implementations")
    p.add_argument("--seed", type=int, default=0, help="input generator seed (default 0)")
    p.add_argument(
        "--oracle-max-s",
        type=float,
        default=10.0,
        help="skip timing the numbaent numpy oracle when its first call exceeds this (default 10)",
    )
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="default: bench/results")
    p.add_argument("--no-save", action="store_true", help="print only; write no files")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    a = p.parse_args(argv)
    # (option, --quick default, default, least value)
    for name, quick, full, least in (
        ("reps", 1, 5, 1),
        ("settle", 0.0, 0.2, 0),
        ("min_sample_ms", 0.0, 20.0, 0),
        ("pair_reps", 1, 15, 1),
        ("linear_reps", 1, linear.DEFAULT_REPS, 1),
    ):
        if getattr(a, name) is None:
            setattr(a, name, quick if a.quick else full)
        if getattr(a, name) < least:
            p.error(f"--{name.replace('_', '-')} must be >= {least}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    wls = all_workloads(quick=a.quick)
    if a.only:
        wls = [w for w in wls if any(w.matches(o) for o in a.only)]
    prs = [] if a.no_pairs else pairs.select(a.quick, a.only)
    lwls = linear.select(a.quick, a.only, a.linear, a.no_linear)
    if a.list or not (wls or prs or lwls):
        for w in all_workloads(quick=a.quick):
            print(f"{w.name:36s} (full size: {w.nominal_name}; bytes = {w.bytes_formula})")
        for pr, r, c in pairs.select(a.quick, None):
            print(f"{pr.name} {r}x{c}".ljust(36) + f" ({pr.statement})")
        for lw in linear.all_workloads(a.quick):
            print(
                f"{lw.name:36s} (full size: {lw.nominal_name}; bytes = {lw.bytes_formula}; "
                "full run: only with --linear or --only linear)"
            )
        if not (wls or prs or lwls):
            print(f"no workload matches {a.only}", file=sys.stderr)
            return 2
        return 0

    started = time.perf_counter()
    load_start = machine.loadavg()
    impls = impls_mod.select(peers=not a.no_peers, gpu=not a.no_gpu)
    gpu_ok, gpu_desc = impls_mod.gpu_status()
    if not a.no_gpu and not gpu_ok:
        print(f"GPU implementations skipped: {gpu_desc}", file=sys.stderr)

    if not (lwls or a.quick or a.only or a.linear or a.no_linear):
        print(
            "linear_score group skipped (full run): add --linear, or run --only linear "
            f"({linear.FULL_RUN_NOTE})",
            file=sys.stderr,
        )
    run: report.Run = []
    for wl in wls:
        res = run_workload(
            wl,
            impls,
            a.reps,
            seed=a.seed,
            oracle_max_s=a.oracle_max_s,
            settle_s=a.settle,
            min_sample_s=a.min_sample_ms / 1e3,
        )
        run.append((wl, res))
    pair_res = [
        pairs.run_pair(pr, r, c, a.pair_reps, a.seed, a.settle, a.min_sample_ms / 1e3)
        for pr, r, c in prs
    ]
    limpls = linear.select_impls(peers=not a.no_peers)
    lin_res: linear.LinearRun = [
        (lw, linear.run_workload(lw, limpls, a.linear_reps, a.seed, a.settle, not a.no_memory))
        for lw in lwls
    ]

    config = {
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": a.quick,
        "reps": a.reps,
        "settle_s": a.settle,
        "min_sample_s": a.min_sample_ms / 1e3,
        "pair_reps": a.pair_reps,
        "linear_reps": a.linear_reps,
        "linear_memory": not a.no_memory,
        "peers": not a.no_peers,
        "seed": a.seed,
        "only": a.only,
        "oracle_max_s": a.oracle_max_s,
        "total_s": round(time.perf_counter() - started, 2),
    }
    mach = machine.describe()
    mach["loadavg_start"] = load_start
    md = report.markdown(run, impls, mach, config, pair_res, (lin_res, limpls))
    print(md)

    if not a.no_save:
        out = a.out_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.md").write_text(md)
        (out / "latest.json").write_text(
            report.to_json(run, impls, mach, config, pair_res, lin_res)
        )
        title = f"numbaent benchmark — {mach['cpu_model']}, {mach['usable_cpus']} CPUs" + (
            f", GPU {mach['gpu']}" if gpu_ok and not a.no_gpu else ""
        )
        msg = report.chart(run, impls, out / "latest.png", title)
        if msg:
            print(msg, file=sys.stderr)
        print(
            f"wrote {out}/latest.{{md,json}}" + ("" if msg else " and latest.png"), file=sys.stderr
        )

    bad = _numbaent_failures(run, impls)
    bad += [f"{r.pair.name}: {r.status} {r.detail}" for r in pair_res if r.status != "ok"]
    bad += linear.failures(lin_res)
    for line in bad:
        print("FAIL: " + line, file=sys.stderr)
    print(f"total {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if bad else 0


def _numbaent_failures(run: report.Run, impls: list[impls_mod.Impl]) -> list[str]:
    out = []
    for wl, res in run:
        for i in impls:
            if i.role not in ("numbaent", "oracle"):
                continue
            r: Result = res[i.key]
            if r.status in ("error", "not installed"):
                out.append(f"{wl.name} / {i.label}: {r.status} {r.detail}".rstrip())
            elif r.check == "MISMATCH":
                out.append(f"{wl.name} / {i.label}: disagrees with reference: {r.check_detail}")
    return out


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
