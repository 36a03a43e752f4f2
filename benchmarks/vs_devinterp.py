"""slt_basins against devinterp 1.3.2 on the same tasks, with the same hyperparameters, in one run.

devinterp is NOT a dependency of slt_basins. Run this inside the separate virtualenv made by
``benchmarks/setup_devinterp_env.sh``::

    bash benchmarks/setup_devinterp_env.sh
    benchmarks/.devinterp-venv/bin/python benchmarks/vs_devinterp.py

Tasks (n = 10⁴ examples everywhere, nβ = n/log n = 1085.7 passed explicitly to both packages):

  toy full batch   y = w1·w2²·x + noise (noise std 0.5), w* = 0, true λ = 1/4; full batch.
  toy batch 500    the same model and data, minibatches of 500.
  DLN              DeepLinearNetwork([10, 20, 20, 20, 10], r=3): d = 1200, λ = 50 at this minimal
                   teacher; noiseless teacher data; batch 500.
  MLP              mlp_case() of benchmarks/llc_speed.py: 10,261 parameters, batch 500 (no true λ).

For each task both packages get the same nβ, localization γ, step size ε (devinterp's ``lr``),
number of chains, draws and burn-in steps, and are timed one after the other in the same process
(wall time of the whole estimator call, devinterp first). devinterp is used as its README shows: a
``DataLoader`` over a ``TensorDataset`` (shuffled for minibatches), ``evaluate=evaluate_mse``,
``sampling_method=SGLD``, ``optimizer_kwargs=dict(lr, localization, nbeta)``, ``cores=1``,
``device="cpu"``. slt_basins gets the same tensors and ``estimate_llc`` with its defaults otherwise
(including its stability checks, which devinterp does not do).

Error bars: devinterp reports ``llc/std`` (the spread of the per-chain estimates); the table shows
it and std/√chains. slt_basins reports the ArviZ MCSE. For comparison, the MCSE and R-hat of
devinterp's own trace are also computed here (with slt_basins.diagnostics), from its ``loss/trace``.

Threads: both packages run with the same number of torch threads (--threads, default 1). On a
2-core machine shared with other processes, 2 OpenMP threads per process can make every step wait
for a descheduled thread; one thread per process keeps the paired timing meaningful.

Usage: python benchmarks/vs_devinterp.py [--tasks toy_full toy_b500 dln mlp] [--threads 1] [--scale 1.0]
       (--scale multiplies draws and burn-in of every task, for testing; the saved results use 1.0)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402
from llc_speed import mlp_case, toy_case  # noqa: E402

from slt_basins import estimate_llc  # noqa: E402
from slt_basins import diagnostics  # noqa: E402
from slt_basins.toys import DeepLinearNetwork, Polynomial, finite_temperature_target  # noqa: E402

try:
    import importlib.metadata as _md

    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    from devinterp.utils import evaluate_mse

    DEVINTERP_VERSION = _md.version("devinterp")
except ImportError:  # pragma: no cover - only outside the benchmark venv
    sys.exit("devinterp is not installed here. Run `bash benchmarks/setup_devinterp_env.sh` and use "
             "benchmarks/.devinterp-venv/bin/python benchmarks/vs_devinterp.py")

OUT = Path(__file__).parent / "results"
N = 10_000


@dataclass
class Task:
    key: str
    name: str
    make: Callable  # () -> (model, (x, y))
    batch: Optional[int]  # None: full batch
    step_size: float
    localization: float
    chains: int
    draws: int
    burnin: int
    true_lambda: Optional[float] = None
    finite_t: Optional[Callable[[float], float]] = None  # nβ -> finite-t target
    note: str = ""
    extra_ours: list = field(default_factory=list)  # (label, dict of overrides) not paired with devinterp


def _toy():
    model, data, _ = toy_case()
    return model, data


def _mlp():
    model, data, _ = mlp_case()
    return model, data


_DLN = DeepLinearNetwork([10, 20, 20, 20, 10], 3)


def _dln():
    return _DLN.model(), _DLN.dataset(N, seed=1)


def _toy_target(nbeta: float) -> float:
    # Population K(w) = E[(w1 w2² x − ξ)²] − σ² = w1² w2⁴ (E x² = 1). The empirical loss adds the
    # data-noise terms −2 w1 w2² mean(xξ) + w1² w2⁴ (mean x² − 1), which this target ignores.
    return finite_temperature_target(Polynomial("w1**2*w2**4"), nbeta, localization=1.0)


TASKS = [
    Task("toy_full", "toy w1·w2²·x, full batch", _toy, None, 3e-4, 1.0, 4, 200, 0, 0.25, _toy_target,
         note="draws cut from llc_speed's 2,000 to 200 for both packages: devinterp re-collates all 10⁴ "
              "examples from the TensorDataset at every step",
         extra_ours=[("slt_basins, 2,000 draws (llc_speed setting; not paired)", dict(num_draws=2000))]),
    Task("toy_b500", "toy w1·w2²·x, batch 500", _toy, 500, 3e-4, 1.0, 4, 2000, 0, 0.25, _toy_target),
    Task("dln", "DLN [10,20,20,20,10] r=3, batch 500", _dln, 500, 1e-5, 1.0, 4, 16000, 4000, float(_DLN.rlct().value),
         note="the setting of `slt-basins reproduce` for this DLN (README: 43.3 ± 1.6 there, 13 % below λ, "
              "chains not mixed along the degenerate directions)"),
    Task("mlp", "MLP 20-100-80-1 (llc_speed mlp_case), batch 500", _mlp, 500, 1e-5, 100.0, 4, 1000, 0),
]


def _warnings_text(caught) -> str:
    seen = []
    for w in caught:
        msg = f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
        if msg not in seen:
            seen.append(msg)
    return " | ".join(seen)


def run_devinterp(task: Task, nbeta: float, seed: int = 0) -> dict:
    model, (x, y) = task.make()
    b = task.batch or x.shape[0]
    loader = DataLoader(TensorDataset(x, y), batch_size=b, shuffle=task.batch is not None)
    torch.manual_seed(seed)  # devinterp's shuffling and its baseline batches use the global RNG
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate_mse, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=task.step_size, localization=task.localization, nbeta=nbeta),
            num_chains=task.chains, num_draws=task.draws, num_burnin_steps=task.burnin,
            cores=1, seed=seed, device="cpu", verbose=False)
        wall = time.perf_counter() - t0
    losses = np.asarray(out["loss/trace"], dtype=np.float64)  # (chains, draws), post burn-in
    per_chain = np.array([out[f"llc-chain/{i}"] for i in range(task.chains)])
    # devinterp's shared baseline L_init, recovered from llc_c = nβ·(mean_c(loss) − L_init)
    init_loss = float(np.mean(losses.mean(axis=1) - per_chain / nbeta))
    with torch.no_grad():
        full_loss = float(torch.nn.functional.mse_loss(model(x), y))
    llc_trace = nbeta * (losses - init_loss)
    std = float(out["llc/std"])
    return dict(
        wall_s=wall, llc=float(out["llc/mean"]), se=std / math.sqrt(task.chains),
        se_kind="llc/std/√chains", llc_std_chains=std,
        trace_mcse=diagnostics.mcse_mean(llc_trace), r_hat=diagnostics.rhat(llc_trace),
        baseline_shift=nbeta * (full_loss - init_loss), warnings=_warnings_text(caught),
    )


def run_ours(task: Task, nbeta: float, seed: int = 0, **overrides) -> dict:
    model, (x, y) = task.make()
    kw = dict(loss="mse", num_chains=task.chains, num_draws=task.draws, num_burnin=task.burnin,
              step_size=task.step_size, localization=task.localization, nbeta=nbeta, batch_size=task.batch,
              seed=seed, progress=False)
    kw.update(overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        r = estimate_llc(model, (x, y), **kw)
        wall = time.perf_counter() - t0
    return dict(
        wall_s=wall, llc=r.llc_mean, se=r.mcse, se_kind="MCSE", llc_std_chains=r.llc_std,
        trace_mcse=r.mcse, r_hat=r.checks.get("r_hat"), baseline_shift=0.0,
        sampling_s=r.checks.get("wall_time_s"),
        draws_run=kw["num_draws"], warnings=_warnings_text(caught),
    )


def warm_up(nbeta: float) -> None:
    """One tiny untimed call of each package (imports, first-call allocation, torch.func set-up)."""
    t = Task("warm", "", _toy, 500, 3e-4, 1.0, 2, 10, 0)
    run_devinterp(t, nbeta)
    run_ours(t, nbeta)


def run_task(task: Task, nbeta: float, scale: float) -> list[dict]:
    if scale != 1.0:
        task = Task(**{**task.__dict__, "draws": max(4, int(task.draws * scale)),
                       "burnin": int(task.burnin * scale)})
    model, (x, y) = task.make()
    base = dict(task=task.name, d=sum(p.numel() for p in model.parameters()), n=x.shape[0],
                batch=task.batch or "full", nbeta=nbeta, gamma=task.localization, step_size=task.step_size,
                chains=task.chains, burnin=task.burnin, true_lambda=task.true_lambda,
                finite_t_target=task.finite_t(nbeta) if task.finite_t else None, note=task.note)
    print(f"\n== {task.name}: {task.chains} chains × {task.draws} draws + {task.burnin} burn-in, "
          f"ε = {task.step_size:g}, γ = {task.localization:g}, nβ = {nbeta:.1f}", flush=True)
    load = os.getloadavg()[0]
    dv = run_devinterp(task, nbeta)
    print(f"   devinterp  {dv['wall_s']:8.2f} s   λ̂ = {dv['llc']:.4g} ± {dv['se']:.2g}", flush=True)
    ours = run_ours(task, nbeta)
    print(f"   slt_basins {ours['wall_s']:8.2f} s   λ̂ = {ours['llc']:.4g} ± {ours['se']:.2g}   "
          f"ratio {dv['wall_s'] / ours['wall_s']:.1f}×", flush=True)
    rows = [dict(base, package=f"devinterp {DEVINTERP_VERSION}", draws=task.draws, load_1min=load, **dv),
            dict(base, package="slt_basins", draws=task.draws, load_1min=load,
                 speed_ratio=dv["wall_s"] / ours["wall_s"], **{k: v for k, v in ours.items() if k != "draws_run"})]
    for label, over in task.extra_ours:
        if scale != 1.0 and "num_draws" in over:
            over = dict(over, num_draws=max(4, int(over["num_draws"] * scale)))
        ex = run_ours(task, nbeta, **over)
        print(f"   {label}: {ex['wall_s']:.2f} s   λ̂ = {ex['llc']:.4g} ± {ex['se']:.2g}", flush=True)
        rows.append(dict(base, package=label, draws=ex.pop("draws_run"), load_1min=os.getloadavg()[0],
                         speed_ratio_vs_paired_devinterp=dv["wall_s"] / ex["wall_s"], **ex))
    return rows


def _fmt(v, nd=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


def markdown(df: pd.DataFrame, info: str, total_s: float, scale: float) -> str:
    lines = [
        "# slt_basins vs devinterp 1.3.2",
        "",
        f"machine: {info}",
        "",
        f"devinterp {DEVINTERP_VERSION} (separate venv `benchmarks/.devinterp-venv`, never a dependency of "
        f"slt_basins); one run of `benchmarks/vs_devinterp.py`"
        + (f" with --scale {scale}" if scale != 1.0 else "") + f", {total_s:.0f} s in all. "
        "Both packages get the same nβ, γ, ε, chains, draws and burn-in per task and are timed one after "
        "the other in the same process (devinterp first); the speed ratio is devinterp's wall time over "
        "slt_basins' in the same run. `load` is the machine's 1-minute load average when the task started "
        "(other processes shared the 2 cores when it is above ~2, which slows both).",
        "",
        "| task | package | chains × draws (+burn-in) | wall s | λ̂ ± se | se kind | std across chains | "
        "MCSE of the trace | R-hat | true λ | finite-t target | speed ratio (devinterp/ours) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        ratio = r.get("speed_ratio")
        if pd.isna(ratio) and not pd.isna(r.get("speed_ratio_vs_paired_devinterp")):
            ratio_txt = f"({r['speed_ratio_vs_paired_devinterp']:.1f}× vs the paired devinterp run, not equal draws)"
        else:
            ratio_txt = "" if pd.isna(ratio) else f"**{ratio:.1f}×**"
        lines.append(
            f"| {r['task']} | {r['package']} | {r['chains']} × {r['draws']} (+{r['burnin']}) | {r['wall_s']:.2f} | "
            f"{_fmt(r['llc'])} ± {_fmt(r['se'], 2)} | {r['se_kind']} | {_fmt(r['llc_std_chains'], 3)} | "
            f"{_fmt(r['trace_mcse'], 2)} | {_fmt(r['r_hat'], 3)} | {_fmt(r['true_lambda'])} | "
            f"{_fmt(r['finite_t_target'])} | {ratio_txt} | {r['load_1min']:.1f} |")
    return "\n".join(lines) + "\n"


def _row(df, task_key_name, package_prefix):
    sel = df[(df["task"] == task_key_name) & df["package"].str.startswith(package_prefix)]
    return None if sel.empty else sel.iloc[0]


def notes(df: pd.DataFrame, nbeta: float) -> str:
    """The discussion below the table, with this run's numbers filled in."""
    names = {t.key: t.name for t in TASKS}
    L = ["## Notes (numbers from this run)", ""]
    L.append(
        f"- **nβ** = n/log n = {nbeta:.1f} (n = 10⁴) was passed to devinterp explicitly in "
        "`optimizer_kwargs=dict(lr=ε, localization=γ, nbeta=nβ)`. Its default, `devinterp.utils.default_nbeta(loader)`, "
        f"is b/log b with b the *batch size*: {500 / math.log(500):.1f} at batch 500 (13.5× smaller; the "
        "full-batch loader has b = n, so the default would coincide there). Calling it with "
        "`optimizer_kwargs=None` (the default) raises `TypeError: argument of type 'NoneType' is not iterable`.")
    L.append(
        "- **Finite-t target** (toy rows): t·E[K] for the population loss K = w1²w2⁴ under "
        "p(w) ∝ exp(−nβ·K − (γ/2)‖w‖²), by quadrature (`finite_temperature_target(Polynomial(\"w1**2*w2**4\"), "
        "nβ, localization=γ)`). It ignores the data-noise terms of the empirical loss "
        "(−2w1w2²·mean(xξ) + w1²w2⁴·(mean x² − 1)), so it is the target up to an O(1/√n) effect.")
    full, full_o = _row(df, names["toy_full"], "devinterp"), _row(df, names["toy_full"], "slt_basins")
    ext = _row(df, names["toy_full"], "slt_basins, 2,000")
    if full is not None and full_o is not None:
        tgt = full["finite_t_target"]
        txt = (f"- **Toy, full batch.** devinterp took {full['wall_s']:.1f} s for {full['chains']} × {full['draws']} draws "
               f"({full['wall_s'] / (full['chains'] * full['draws']) * 1e3:.0f} ms a step): its DataLoader indexes and "
               "collates all 10⁴ examples of the TensorDataset one by one at every step. The draws were therefore "
               f"cut from llc_speed's 2,000 to {full['draws']} for *both* packages. Result at {full['draws']} steps from "
               f"w* = 0: devinterp {full['llc']:.4g}, slt_basins {full_o['llc']:.4g}, target {tgt:.4f}"
               + (" (both well below it: the chains have not mixed along the flat directions in so few steps; "
                  "same algorithm and settings, so the same bias)" if max(full["llc"], full_o["llc"]) < 0.5 * tgt else "")
               + ". slt_basins was "
               f"{full_o['speed_ratio']:.1f}× faster in the paired run")
        if ext is not None:
            txt += (f"; with 10× the draws ({ext['draws']}, the llc_speed setting) it took {ext['wall_s']:.2f} s, "
                    f"{ext['speed_ratio_vs_paired_devinterp']:.1f}× less than devinterp's {full['draws']}-draw run, and "
                    f"gave {ext['llc']:.4g} ± {ext['se']:.2g} (|λ̂ − target| = {abs(ext['llc'] - tgt):.3g} against "
                    f"devinterp's {abs(full['llc'] - tgt):.3g})")
        L.append(txt + ".")
    b, b_o = _row(df, names["toy_b500"], "devinterp"), _row(df, names["toy_b500"], "slt_basins")
    if b is not None and b_o is not None:
        tgt = b["finite_t_target"]
        L.append(
            f"- **Toy, batch 500: devinterp's λ̂ = {b['llc']:.4g}"
            + (" is wrong" if abs(b["llc"] - tgt) > 1.0 else "") + f" (target {tgt:.4f}, true λ = 1/4).** devinterp "
            "subtracts one baseline L_init, the mean loss at w* over `num_chains` minibatches drawn before sampling "
            f"(here 4 × 500 = 2,000 of the 10⁴ examples), shared by every chain and every draw. The draws' losses "
            "are taken on minibatches that cycle through all n examples, so their mean at w* is L_n(w*), not "
            f"L_init. The difference nβ·(L_n(w*) − L_init) = {b['baseline_shift']:.4g} was measured in this run "
            "(L_init recovered from devinterp's per-chain values, L_n(w*) evaluated on the full data); it enters "
            f"every chain alike, so devinterp's std across chains ({b['llc_std_chains']:.3g}) and even the MCSE of its "
            f"trace ({b['trace_mcse']:.2g}) cannot show it. Its size is nβ × (sd of the per-example loss, ≈ 0.35 "
            "for noise sd 0.5) / √2000 ≈ 8 in either direction, against a signal of 0.25. devinterp's value minus "
            f"this shift is {b['llc'] - b['baseline_shift']:.4g}. slt_basins evaluates L_B(w*) on the same minibatch "
            f"as each L_B(w_t) (paired difference), so the baseline noise cancels: {b_o['llc']:.4g} ± {b_o['se']:.2g} "
            f"(MCSE), {b_o['speed_ratio']:.1f}× faster in the paired run.")
    d, d_o = _row(df, names["dln"], "devinterp"), _row(df, names["dln"], "slt_basins")
    if d is not None and d_o is not None:
        L.append(
            f"- **DLN** (d = {d['d']}, λ = {d['true_lambda']:g}, noiseless data so L_n(w*) = 0 and every minibatch "
            f"loss at w* is 0: the baseline problem cannot arise): devinterp {d['llc']:.4g} ± {d['se']:.2g}, slt_basins "
            f"{d_o['llc']:.4g} ± {d_o['se']:.2g}, {d_o['speed_ratio']:.1f}× faster. Both are below λ at this number of "
            "steps (chains not mixed along the degenerate directions; R-hat column).")
    m, m_o = _row(df, names["mlp"], "devinterp"), _row(df, names["mlp"], "slt_basins")
    if m is not None and m_o is not None:
        L.append(
            f"- **MLP** (no known λ; w* is the teacher, with label noise 0.1, so it is near but not at a minimum of "
            f"L_n): devinterp {m['llc']:.4g} ± {m['se']:.2g} with a baseline shift of {m['baseline_shift']:.3g} "
            f"(same mechanism as the toy, smaller because the per-example loss varies less; devinterp minus the "
            f"shift = {m['llc'] - m['baseline_shift']:.4g}), slt_basins "
            f"{m_o['llc']:.4g} ± {m_o['se']:.2g}; {m_o['speed_ratio']:.1f}× faster.")
    L.append(
        "- **Error bars.** devinterp's `llc/std` is the spread of 4 per-chain means; std/√4 is itself a very "
        "uncertain estimate and ignores autocorrelation and the shared baseline. The `MCSE of the trace` column "
        "applies the ArviZ MCSE to devinterp's own `loss/trace` for comparison.")
    L.append(
        "- **Timing.** Wall time of the whole call. slt_basins' includes its default stability checks (top "
        "Hessian eigenvalue by 20 Hessian-vector products at w* and at up to 4 chain end points); `sampling_s` in "
        "the CSV is its sampling loop alone. devinterp runs with `cores=1` (chains one after another in "
        "the process; `cores=2` was slower than `cores=1` on 2 cores in an earlier probe). One tiny untimed call of each package "
        "precedes the table. Both run with the same torch thread count (in the machine line; `--threads`, "
        "default 1): while this benchmark was written, other processes shared the 2 cores (load 4–5), and in a "
        "probe then, 2 threads per process made both packages up to ~70× slower than 1 thread (OpenMP threads "
        "waiting for each other).")
    L.append("")
    L.append("## Speed target on the toy (≥ 50× devinterp at equal or better accuracy)")
    L.append("")
    L.append("Accuracy is |λ̂ − finite-t target|; \"equal\" means the two errors differ by less than twice the "
             "combined error bar √(se₁² + se₂²) (devinterp's se = std/√chains).")
    L.append("")

    def verdict(r_o, r_dv, ratio, what):
        tgt = r_dv["finite_t_target"]
        e_dv, e_o = abs(r_dv["llc"] - tgt), abs(r_o["llc"] - tgt)
        tol = 2 * math.hypot(r_o["se"], r_dv["se"])
        acc = "better" if e_o < e_dv - tol else ("equal within error" if abs(e_o - e_dv) <= tol else "worse")
        met = ratio >= 50 and acc != "worse"
        L.append(f"- {what}: {ratio:.1f}×, |λ̂ − target| slt_basins {e_o:.3g} vs devinterp {e_dv:.3g} "
                 f"(2·combined se = {tol:.2g}: accuracy {acc}): **" + ("meets" if met else "does not meet")
                 + "** the target.")

    for r_dv, r_o in ((full, full_o), (b, b_o)):
        if r_dv is not None and r_o is not None:
            verdict(r_o, r_dv, r_o["speed_ratio"], f"{r_dv['task']}, {r_dv['chains']} × {r_dv['draws']} draws each")
    if ext is not None and full is not None:
        verdict(ext, full, ext["speed_ratio_vs_paired_devinterp"],
                f"toy full batch, slt_basins at {ext['chains']} × {ext['draws']} draws against devinterp at "
                f"{full['chains']} × {full['draws']} (not an equal-settings pair)")
    toy_rows = df[df["task"].isin([names["toy_full"], names["toy_b500"]])]
    if not toy_rows.empty and toy_rows["r_hat"].max() > 1.05:
        L.append(
            f"- On the toy, R-hat reaches {toy_rows['r_hat'].max():.2f} (> 1.05) at these step counts: the chains "
            "have not converged, so these compare equally unconverged runs of the same algorithm, not converged "
            "accuracy.")
    return "\n".join(L) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="*", default=[t.key for t in TASKS], choices=[t.key for t in TASKS])
    p.add_argument("--scale", type=float, default=1.0, help="multiply draws and burn-in (testing only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both packages (default 1)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    nbeta = N / math.log(N)  # n/log n; devinterp's default would be batch/log batch (80.5 at batch 500)
    info = machine()
    print(f"machine: {info}\ndevinterp {DEVINTERP_VERSION}; nβ = n/log n = {nbeta:.2f} for both packages")
    t0 = time.perf_counter()
    warm_up(nbeta)
    rows = []
    for task in TASKS:
        if task.key in args.tasks:
            rows += run_task(task, nbeta, args.scale)
    total = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    cols = ["task", "package", "d", "n", "batch", "nbeta", "gamma", "step_size", "chains", "draws", "burnin",
            "wall_s", "sampling_s", "llc", "se", "se_kind", "llc_std_chains", "trace_mcse", "r_hat", "true_lambda",
            "finite_t_target", "speed_ratio", "speed_ratio_vs_paired_devinterp", "baseline_shift", "load_1min",
            "note", "warnings"]
    df = df.reindex(columns=cols)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 40):
        print("\n" + df.drop(columns=["note", "warnings", "n", "nbeta"]).round(4).to_string())
    print(f"\ntotal {total:.0f} s")
    if not args.no_save:
        OUT.mkdir(exist_ok=True)
        df.to_csv(OUT / "vs_devinterp.csv", index=False)
        (OUT / "vs_devinterp.md").write_text(markdown(df, info, total, args.scale) + "\n" + notes(df, nbeta))
        print(f"saved {OUT / 'vs_devinterp.csv'} and {OUT / 'vs_devinterp.md'}")


if __name__ == "__main__":
    main()
