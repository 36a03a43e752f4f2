"""Speed and peak memory of slt_basins.curvature on CPU.

Cases (each run in a fresh subprocess, so its peak resident memory ``ru_maxrss`` is its own):

* ``rank_exact``  – ``hessian_rank(method="exact")`` (float64 dense Hessian + eigvalsh),
* ``rank_mf``     – ``hessian_rank(method="matrix_free")`` (Lanczos on HVPs),
* ``g_rank``      – ``g_rank`` (float64 G, svdvals),
  all at the minimum of a bias-free deep linear network [w, w, w] (d = 2w², teacher of layer rank 2,
  n = 100 noiseless examples), for d ≈ 10², 10³, 5·10³;
* ``top10_mf``    – ``top_eigenvalues(k=10, method="matrix_free")`` and
* ``trace``       – ``hessian_trace(num_samples=100)``,
  on a tanh MLP [100, h, h, 10] at its random initialisation with random targets (n = 512), for
  d ≈ 10⁴, 10⁵, 10⁶.

Reported per case: wall time of the first public call in the process (model/data construction
excluded; includes one-time costs such as lazy imports and LAPACK initialisation), the time of a
second identical call when the first took < 30 s (``seconds_warm``), the child's peak RSS
(``ru_maxrss``) and its growth during the first call, the 1-minute load average (other processes
sharing the CPU inflate times), and the result.
Targets: exact rank at d = 5000 ≤ 60 s; matrix-free top-10 eigenvalues and trace at d = 10⁶ ≤ 10 min.

Usage::

    PYTHONPATH=. python benchmarks/curvature_speed.py            # full run (~10-20 min on 2 cores)
    PYTHONPATH=. python benchmarks/curvature_speed.py --quick    # small sizes only (< 1 min)

Writes ``benchmarks/results/curvature_speed.csv`` and ``curvature_speed.md`` (with the machine).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

FULL_CASES = (
    [("rank_exact", d) for d in (100, 1000, 5000)]
    + [("rank_mf", d) for d in (100, 1000, 5000)]
    + [("g_rank", d) for d in (100, 1000, 5000)]
    + [("top10_mf", d) for d in (10_000, 100_000, 1_000_000)]
    + [("trace", d) for d in (10_000, 100_000, 1_000_000)]
)
QUICK_CASES = (
    [("rank_exact", d) for d in (100, 1000)]
    + [("rank_mf", d) for d in (100, 1000)]
    + [("g_rank", d) for d in (100, 1000)]
    + [("top10_mf", 10_000), ("trace", 10_000)]
)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _dln_teacher(d_target: int, n: int = 100):
    import torch
    from torch import nn

    w = max(2, round(math.sqrt(d_target / 2)))
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(w, w, bias=False), nn.Linear(w, w, bias=False)).double()
    with torch.no_grad():
        for lay in m:
            U = torch.randn(w, 2, generator=g, dtype=torch.float64)
            V = torch.randn(w, 2, generator=g, dtype=torch.float64)
            lay.weight.copy_(U @ V.T / math.sqrt(2))
        x = torch.randn(n, w, generator=g, dtype=torch.float64)
        y = m(x)
    return m, x, y, f"DLN [{w},{w},{w}] teacher rank 2, n={n}"


def _mlp(d_target: int, n: int = 512):
    import torch
    from torch import nn

    # d = 100 h + h + h² + h + 10 h + 10 = h² + 112 h + 10
    h = max(1, round((-112 + math.sqrt(112**2 + 4 * (d_target - 10))) / 2))
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(100, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 10))
    x, y = torch.randn(n, 100), torch.randn(n, 10)
    return m, x, y, f"tanh MLP [100,{h},{h},10] float32 init, random targets, n={n}"


def run_case(case: str, d_target: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from slt_basins import curvature as C

    if case in ("rank_exact", "rank_mf", "g_rank"):
        m, x, y, desc = _dln_teacher(d_target)
    else:
        m, x, y, desc = _mlp(d_target)
    d = sum(p.numel() for p in m.parameters())

    def call():
        if case == "rank_exact":
            r = C.hessian_rank(m, (x, y), method="exact")
            return f"rank={r.rank} gap={r.gap_decades:.1f}dec"
        if case == "rank_mf":
            r = C.hessian_rank(m, (x, y), method="matrix_free")
            return f"rank={r.rank} gap={r.gap_decades:.1f}dec {r.method}"
        if case == "g_rank":
            r = C.g_rank(m, x)
            return f"rank={r.rank} gap={r.gap_decades:.1f}dec G={y.numel()}x{d}"
        if case == "top10_mf":
            vals = C.top_eigenvalues(m, (x, y), k=10, method="matrix_free")
            return "top10=[" + ", ".join(f"{v:.4g}" for v in vals[:3]) + f", ..., {vals[-1]:.4g}]"
        if case == "trace":
            t = C.hessian_trace(m, (x, y), num_samples=100, seed=0)
            return f"trace={t.estimate:.5g} ± {t.stderr:.2g} (100 probes)"
        raise ValueError(case)

    load0 = os.getloadavg()[0]
    rss0 = _maxrss_mb()
    t0 = time.perf_counter()
    out = call()
    elapsed = time.perf_counter() - t0
    rss1 = _maxrss_mb()
    warm = None
    if elapsed < 30:  # repeat once in the same process: first-call costs (lazy imports, LAPACK init) excluded
        t1 = time.perf_counter()
        call()
        warm = round(time.perf_counter() - t1, 3)
    return {
        "case": case,
        "d": d,
        "model": desc,
        "seconds": round(elapsed, 3),
        "seconds_warm": warm,
        "peak_rss_MB": round(rss1, 1),
        "rss_growth_MB": round(rss1 - rss0, 1),
        "loadavg_1min": round(max(load0, os.getloadavg()[0]), 2),
        "result": out,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-case timeout (s)")
    ap.add_argument("--out", default=str(RESULTS / "curvature_speed.csv"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:  # child process: one case, JSON on the last stdout line
        print(json.dumps(run_case(args.case, args.d)), flush=True)
        return

    import pandas as pd

    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for case, d in QUICK_CASES if args.quick else FULL_CASES:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--d", str(d)]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            if p.returncode != 0:
                row = {"case": case, "d": d, "result": "FAILED: " + p.stderr.strip().splitlines()[-1]}
            else:
                row = json.loads(p.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            row = {"case": case, "d": d, "result": f"TIMEOUT after {args.timeout:.0f} s"}
        row["process_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{case:>10} d={row['d']:>8}: {row.get('seconds', float('nan')):>8} s  "
              f"peak {row.get('peak_rss_MB', float('nan'))} MB  {row['result']}", flush=True)

    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns=["model"], errors="ignore").to_string(index=False))

    def get(case, d):
        sel = df[(df["case"] == case) & (df["d"] >= 0.9 * d) & (df["d"] <= 1.1 * d)]
        return None if sel.empty or "seconds" not in sel or math.isnan(sel["seconds"].iloc[0]) else float(sel["seconds"].iloc[0])

    lines = [
        "# curvature_speed benchmark" + (" (--quick)" if args.quick else ""),
        "",
        f"Machine: {machine()}.",
        f"Run: {time.strftime('%Y-%m-%d %H:%M:%S')}; each case in a fresh subprocess; `seconds` is the wall "
        "time of the first public call (incl. one-time lazy-import / LAPACK start-up costs), "
        "`seconds_warm` of a second identical call (only when the first took < 30 s); `peak_rss_MB` is "
        "the child's ru_maxrss (includes ~350 MB of Python + torch + model/data), `rss_growth_MB` its "
        "growth during the first call; `loadavg_1min` is the max 1-min load average seen (the machine "
        "is shared: load above the core count means contended, inflated timings).",
        "",
        "Models: rank cases use a bias-free deep linear network [w,w,w] at a teacher minimum (layer "
        "rank 2, n = 100 noiseless float64 examples); top-10 / trace cases use a float32 tanh MLP "
        "[100,h,h,10] at initialisation with random targets (n = 512), evaluated in float64.",
        "",
        df.to_markdown(index=False) if _has_tabulate() else "```\n" + df.to_string(index=False) + "\n```",
        "",
        "Targets:",
    ]
    for label, case, d, limit in [
        ("exact float64 Hessian rank, d = 5000", "rank_exact", 5000, 60),
        ("matrix-free top-10 eigenvalues, d = 10^6", "top10_mf", 1_000_000, 600),
        ("Hutchinson trace (100 probes), d = 10^6", "trace", 1_000_000, 600),
    ]:
        s = get(case, d)
        verdict = "not run" if s is None else (f"{s:.1f} s — {'met' if s <= limit else 'MISSED'}")
        lines.append(f"- {label}: target ≤ {limit} s: {verdict}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
