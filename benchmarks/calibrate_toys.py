"""step_size="auto" on the low-dimensional potentials of the toy suite (issue 6, item 2).

Each potential case of ``slt_basins.reproduce.suite()`` with d ≤ 3 is run through
``reproduce.run_case`` exactly as ``slt-basins reproduce`` runs it (same nβ = 10³, γ = 1, chains,
draws, burn-in, finite-t target and accuracy rule: within max(2 %, 3 se) of the target), except that
the hand-tuned step size is replaced by ``step_size="auto"``: ``estimate_llc_potential`` first
calibrates ε (``slt_basins.calibrate``: cells with 1/5 of the draws and burn-in, scanning down from
the stability limit at w*), then runs with the chosen ε. The table reports λ̂ ± se, the target, the
chosen ε next to the suite's hand-tuned one, the verdict, the calibration's time and cells, and the
total wall time (calibration included).

Usage: python benchmarks/calibrate_toys.py [--full] [--seed 0] [--high-d]

``--full`` uses the full-mode budgets of the suite (about 4× longer); ``--high-d`` adds the
d = 1000 sum-of-powers case (reported, not part of the low-dimensional claim). Writes
``benchmarks/results/calibrate_toys.csv`` and ``calibrate_toys.md`` (with the machine).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import dataclasses
import time
from pathlib import Path

import pandas as pd

from slt_basins import reproduce
from slt_basins.llc import estimate_llc_potential
from _machine import git_state, machine

OUT = Path(__file__).parent / "results"


@contextlib.contextmanager
def keep_results(store: list):
    """Let run_case's estimate_llc_potential hand its LLCResult (with the calibration record) to us."""
    def recording(*args, **kwargs):
        r = estimate_llc_potential(*args, **kwargs)
        store.append(r)
        return r

    saved = reproduce.estimate_llc_potential
    reproduce.estimate_llc_potential = recording
    try:
        yield
    finally:
        reproduce.estimate_llc_potential = saved


def run(full: bool, seed: int, high_d: bool) -> pd.DataFrame:
    rows = []
    for case in reproduce.suite(quick=not full):
        if case.kind != "potential" or (case.d > 3 and not high_d):
            continue
        store: list = []
        t0 = time.perf_counter()
        with keep_results(store):
            row = reproduce.run_case(dataclasses.replace(case, step_size="auto"), seed=seed)
        wall = time.perf_counter() - t0
        cal = store[-1].checks["calibration"]
        cells = [c for c in cal["table"] if c["ran"]]
        rows.append(dict(
            case=case.name, d=case.d, true_lambda=row["true_lambda"], finite_t_target=row["finite_t_target"],
            llc=row["llc"], se=row["se"], rel_err_target=row["rel_err_target"], chosen_step_size=row["step_size"],
            hand_tuned_step_size=case.step_size, step_stability_end=row["step_stability_end"],
            mala_accept=store[-1].checks.get("mala_accept"), r_hat=row["r_hat"], chains=row["chains"],
            draws=row["draws"], calibration_cells=len(cells), calibration_s=cal["wall_time_s"], wall_s=wall,
            calibration_over_run=cal["wall_time_s"] / max(wall - cal["wall_time_s"], 1e-9),
            within_target=row["verdict"].startswith("meets"), verdict=row["verdict"], warnings=row["warnings"],
        ))
        r = rows[-1]
        print(f"{r['case']:>28}  λ̂ = {r['llc']:.4f} ± {r['se']:.4f}  target {r['finite_t_target']:.4f}  "
              f"ε = {r['chosen_step_size']:.3g} (hand {r['hand_tuned_step_size']:.0e})  "
              f"{'meets' if r['within_target'] else 'MISSES'}  {r['wall_s']:.1f} s", flush=True)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, info: str, mode: str) -> str:
    head = ("| case | d | finite-t target | λ̂ ± se | vs target | chosen ε | hand-tuned ε | ε·(nβh+γ)/4 at end "
            "| MALA acc. | cells | calibration s | total s | calibration ÷ run | verdict |")
    lines = ["# calibrate_toys: step_size=\"auto\" on the low-dimensional toy potentials", "",
             f"machine: {info}", "",
             f"Suite budgets: {mode}; nβ = {reproduce.NBETA:g}, γ = {reproduce.GAMMA:g}. Accuracy rule of the "
             "suite: within max(2 %, 3 se) of the exact finite-t target.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join([
            r["case"], str(r["d"]), f"{r['finite_t_target']:.4f}", f"{r['llc']:.4f} ± {r['se']:.4f}",
            f"{100 * r['rel_err_target']:+.1f}%", f"{r['chosen_step_size']:.3g}", f"{r['hand_tuned_step_size']:.0e}",
            f"{r['step_stability_end']:.2g}", f"{r['mala_accept']:.4f}", str(r["calibration_cells"]),
            f"{r['calibration_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['calibration_over_run']:.1f}×",
            r["verdict"]]) + " |")
    low = df[df["d"] <= 3]
    lines += ["", f"{int(low['within_target'].sum())} of {len(low)} low-dimensional (d ≤ 3) cases within the accuracy "
              "target" + (f"; {int(df['within_target'].sum())} of {len(df)} with the high-dimensional one." if len(df) > len(low)
                          else "."),
              "", "Timings are wall-clock on a machine shared with other jobs: compare the ratio column rather than "
              "the seconds. 'calibration ÷ run' is the calibration's time over the final run's (the run itself "
              "includes its own stability and MALA checks)."]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the suite's full-mode budgets (default: quick mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--high-d", action="store_true", help="also the d = 1000 sum-of-powers case")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    info = machine()
    print(info)
    t0, load0, code = time.perf_counter(), os.getloadavg()[0], git_state()
    df = run(args.full, args.seed, args.high_d)
    md = markdown(df, info, "full" if args.full else "quick (the suite's quick mode: 1/4 of the full draws)")
    md += (f"\n\nRun: `python benchmarks/calibrate_toys.py{' --full' if args.full else ''}"
           f"{' --high-d' if args.high_d else ''}` at code {code}; {time.perf_counter() - t0:.0f} s wall; 1-minute "
           f"load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end on this machine.")
    print(md)
    if not args.no_save:
        OUT.mkdir(exist_ok=True)
        df.to_csv(OUT / "calibrate_toys.csv", index=False)
        (OUT / "calibrate_toys.md").write_text(md + "\n")
        print(f"wrote {OUT / 'calibrate_toys.csv'} and {OUT / 'calibrate_toys.md'}")


if __name__ == "__main__":
    main()
