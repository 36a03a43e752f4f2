"""Multi-temperature LLC on crossing valleys against exact finite-t values and the true λ: the sweep
(``method="sweep"``) and the single-run reweighting (``method="reweight"``) side by side.

Potentials: w1²w2² (λ = 1/2, m = 2) and w1²w2²w3² (λ = 1/2, m = 3), sampled on R^d with the
Gaussian localiser γ = 1 at w* = 0 (the package's potential sampler has no box), so the exact
finite-t value at each nβ is g(t) = t·E_t[K] under exp(−tK − |w|²/2), computed by quadrature
(:func:`slt_basins.toys.finite_temperature_target`). These differ slightly from the uniform-box
values of slt_basins.toys.crossing_valley_box_target (e.g. 0.3903 instead of 0.3873 for w1²w2² at
t = 10³) but have the same λ and m.

Sweep: nβ = 10, 31.6, 100, 316, 1000 (two decades); SGLD with the default step-size rule
(``step_size_scaling="stability"``): ε = 5·10⁻⁴ at the reference nβ = 100 (ε·nβ = 0.05), the others
ε_t = ε·(100·h + γ)/(t·h + γ) with h the top curvature measured at the reference chains' ends, and
burn-in 2000 steps at the reference (ε·steps = 1 relaxation time of the valley), scaled by ε/ε_t above
it; draws of 2 relaxation times (2·nβ/0.05 steps, at least 1000); 256 chains.

Reweighting: one SGLD run at nβ = 100 and one at nβ = 1000, each with the settings of that temperature
in the sweep (ε·nβ = 0.05, the same burn-in and draws, 256 chains), giving S_δ (the slope of
E_β[nL] against 1/β between nβ(1 ∓ δ), δ = 1/√(2 log n) with n/log n = nβ), S₀ = β²·Var(nL) (δ → 0)
and the local slope dλ̂/dlog nβ = λ̂(nβ) − S₀, each against its exact value from quadrature.

Rows:
  * per temperature: the single-temperature λ̂(nβ) ± MCSE, the exact finite-t value, the sampler's
    error in MCSE units (z_vs_exact), and the error against the true λ = 1/2;
  * per fit (constant, multiplicity = λ − (m−1)/log t, quadratic = + ν/log² t, and the auto choice):
    λ ± se and m ± se from the sampled values, and the same fit applied to the exact finite-t values
    with the same weights (fit_on_exact: the fit's own bias, without sampling noise);
  * per reweighting run: S_δ, S₀ and the slope, with exact_finite_t their exact values.

Usage: OMP_NUM_THREADS=1 python benchmarks/multitemperature_crossing.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from slt_basins import LLCWarning, estimate_llc_multitemperature_potential, fit_multitemperature
from slt_basins.multitemperature import default_span
from slt_basins.toys import crossing_valley, finite_temperature_target
from _machine import git_state, machine

OUT = Path(__file__).parent / "results"
GAMMA = 1.0
EPS_NBETA = 0.05
T_REF = 100.0
LAMBDA = 0.5
FITS = ("constant", "multiplicity", "quadratic")


def exact_g(poly, t):
    return finite_temperature_target(poly, t, localization=GAMMA, rtol=1e-9)


def exact_slopes(poly, t0, span):
    """(S_δ, S₀, g(t₀)) by quadrature: S_δ from g at t₀(1 ∓ δ); S₀ = g − t·g' by a central difference."""
    t1, t2 = t0 * (1 - span), t0 * (1 + span)
    g0 = exact_g(poly, t0)
    s0 = g0 - (exact_g(poly, t0 * 1.001) - exact_g(poly, t0 * 0.999)) / 0.002
    return (exact_g(poly, t1) / t1 - exact_g(poly, t2) / t2) / (1 / t1 - 1 / t2), s0, g0


def steps(t, scale):
    """(burn-in, draws) of a temperature sampled with ε·nβ = 0.05: 1 and 2 relaxation times ε·steps."""
    eps = EPS_NBETA / t
    return max(500, int(scale * 1.0 / eps)), max(1000, int(scale * 2.0 / eps))


def row(name, method, llc, se, exact=None, **kw):
    return dict(potential=name, method=method, llc=llc, se=se, exact_finite_t=exact,
                z_vs_exact=None if exact is None else (llc - exact) / se, err_vs_truth=llc - LAMBDA,
                z_vs_truth=(llc - LAMBDA) / se, **kw)


def sweep(name, poly, nbetas, chains, seed, scale):
    burn_ref, _ = steps(T_REF, scale)
    draws = [steps(t, scale)[1] for t in nbetas]
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LLCWarning)
        r = estimate_llc_multitemperature_potential(
            poly, torch.zeros(poly.d, dtype=torch.float64), nbetas=nbetas, step_size=EPS_NBETA / T_REF,
            reference_nbeta=T_REF, num_draws=draws, num_burnin=burn_ref, num_chains=chains, localization=GAMMA,
            seed=seed, progress=False)
    wall = time.perf_counter() - t0
    exact = np.array([exact_g(poly, t) for t in nbetas])
    rows = [row(name, f"λ̂ at nβ = {tr['nbeta']:.4g}", tr["llc_mean"], tr["mcse"], ex, eps_nbeta=tr["step_size"] * tr["nbeta"],
                r_hat=tr["r_hat"], steps=int(tr["num_draws"] + tr["num_burnin"]))
            for (_, tr), ex in zip(r.table.iterrows(), exact)]
    se = r.table["mcse"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        fits = {f: fit_multitemperature(nbetas, r.table["llc_mean"], se, f) for f in FITS}
        on_exact = {f: fit_multitemperature(nbetas, exact, se, f) for f in FITS}
    total = int((r.table["num_draws"] + r.table["num_burnin"]).sum())
    for f, label in [("constant", "sweep fit: constant"), ("multiplicity", "sweep fit: λ − (m−1)/log t"),
                     ("quadratic", "sweep fit: λ − (m−1)/log t + ν/log² t"), ("auto", f"sweep fit: auto (→ {r.fit})")]:
        fr = r.details if f == "auto" else fits[f]
        rows.append(row(name, label, fr.llc, fr.llc_se, m=fr.multiplicity, m_se=fr.multiplicity_se,
                        fit_on_exact=on_exact[r.fit if f == "auto" else f].llc, steps=total))
    note = dict(potential=name, run="sweep", wall_s=wall, chains=chains, h=r.config.get("stability_curvature"),
                warnings=sorted({str(w.message)[:110] for w in caught}))
    return rows, note


def reweight(name, poly, t0, chains, seed, scale):
    burn, draws = steps(t0, scale)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LLCWarning)
        r = estimate_llc_multitemperature_potential(
            poly, torch.zeros(poly.d, dtype=torch.float64), method="reweight", reference_nbeta=t0,
            step_size=EPS_NBETA / t0, num_draws=draws, num_burnin=burn, num_chains=chains, localization=GAMMA,
            seed=seed, progress=False)
    wall = time.perf_counter() - start
    s_delta, s0, g0 = exact_slopes(poly, t0, r.span)
    common = dict(eps_nbeta=EPS_NBETA, r_hat=r.r_hat, steps=burn + draws)
    rows = [row(name, f"reweight at nβ = {t0:.4g}: S_δ, δ = {r.span:.3f}", r.llc_mean, r.mcse, s_delta, **common),
            row(name, f"reweight at nβ = {t0:.4g}: S₀ = β²Var(nL)", r.variance_llc, r.variance_llc_se, s0, **common),
            row(name, f"reweight at nβ = {t0:.4g}: λ̂(nβ)", r.llc_at_nbeta, r.llc_at_nbeta_se, g0, **common),
            dict(row(name, f"reweight at nβ = {t0:.4g}: dλ̂/dlog nβ", r.slope, r.slope_se, g0 - s0, **common),
                 err_vs_truth=None, z_vs_truth=None)]
    note = dict(potential=name, run=f"reweight at nβ = {t0:g}", wall_s=wall, chains=chains, h=None,
                warnings=sorted({str(w.message)[:110] for w in caught}))
    return rows, note


def write(df, notes, args, nbetas, load):
    mach = machine()
    cols = ["potential", "method", "llc", "se", "m", "m_se", "exact_finite_t", "fit_on_exact", "z_vs_exact",
            "err_vs_truth", "z_vs_truth", "eps_nbeta", "r_hat", "steps"]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        text = df.reindex(columns=cols).round(4).to_string(index=False)
    lines = "\n".join(f"- {i['potential']}, {i['run']}: {i['wall_s']:.0f} s wall, {i['chains']} chains"
                      + (f", h = {i['h']:.3g} at the reference chains' ends" if i["h"] else "")
                      + f"; warnings: {'; '.join(i['warnings']) or 'none'}" for i in notes)
    load_txt = f"load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end, on {os.cpu_count()} cores"
    print(f"machine: {mach}; {load_txt}\n\n{text}\n\n{lines}")
    OUT.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    df.to_csv(OUT / f"multitemperature_crossing{suffix}.csv", index=False)
    (OUT / f"multitemperature_crossing{suffix}.md").write_text(
        f"# multitemperature_crossing\n\nmachine: {mach}\n\n{load_txt}; code {git_state()}.\n\n"
        f"Sweep nβ = {', '.join(f'{t:.4g}' for t in nbetas)}, default step-size rule ('stability', ε·nβ = "
        f"{EPS_NBETA:g} at the reference nβ = {T_REF:g}); reweighting at nβ = 100 and 1000 with ε·nβ = {EPS_NBETA:g}; "
        f"γ = {GAMMA:g}; seed {args.seed}. True λ = 1/2 for both; exact_finite_t is the exact value of that row's "
        "quantity under exp(−tK − γ|w|²/2) by quadrature; fit_on_exact is the same fit applied to the exact values "
        "(the fit's own bias); z_vs_truth = (value − 1/2)/se.\n\n```\n" + text + "\n```\n\n" + lines + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a quarter of the steps and 64 chains (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    nbetas = list(np.geomspace(10.0, 1000.0, 5))
    chains, scale = (64, 0.25) if args.quick else (256, 1.0)
    load0 = os.getloadavg()[0]
    rows, notes = [], []
    for name, poly in [("w1²w2²", crossing_valley(1, 1)), ("w1²w2²w3²", crossing_valley(1, 1, 1))]:
        for job in [lambda: sweep(name, poly, nbetas, chains, args.seed, scale),
                    lambda: reweight(name, poly, 100.0, chains, args.seed, scale),
                    lambda: reweight(name, poly, 1000.0, chains, args.seed, scale)]:
            r, note = job()
            rows += r
            notes.append(note)
            print(f"{name}, {note['run']}: {note['wall_s']:.0f} s", flush=True)
    write(pd.DataFrame(rows), notes, args, nbetas, (load0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
