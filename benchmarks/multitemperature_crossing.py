"""Multi-temperature LLC on crossing valleys against exact finite-t values and the true λ (issue: 9a).

Potentials: w1²w2² (λ = 1/2, m = 2) and w1²w2²w3² (λ = 1/2, m = 3), sampled on R^d with the
Gaussian localiser γ = 1 at w* = 0 (the package's potential sampler has no box), so the exact
finite-t value at each nβ is t·E_t[K] under exp(−tK − |w|²/2), computed by quadrature
(:func:`slt_basins.toys.finite_temperature_target`). These differ slightly from the uniform-box
values of slt_basins.toys.crossing_valley_box_target (e.g. 0.3903 instead of 0.3873 for w1²w2² at t = 10³) but have the same
λ and m.

Settings: nβ = 10, 31.6, 100, 316, 1000 (two decades); SGLD with ε·nβ = 0.05 at every temperature
(ε ∝ 1/nβ, the package default scaling); 256 chains; burn-in of 1 and draws of 2 relaxation times of
the valley (ε·steps = 1 and 2, i.e. steps ∝ nβ, at least 500 burn-in and 1000 draws).

Rows:
  * per temperature: the single-temperature λ̂(nβ) ± MCSE, the exact finite-t value, the sampler's
    error in MCSE units (z_vs_exact), and the error against the true λ = 1/2;
  * per fit (constant, multiplicity = λ − (m−1)/log t, quadratic = + ν/log² t, and the auto choice):
    λ ± se and m ± se from the sampled values, and the same fit applied to the exact finite-t values
    with the same weights (fit_on_exact: the fit's own bias, without sampling noise).

Usage: OMP_NUM_THREADS=1 python benchmarks/multitemperature_crossing.py [--quick]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from slt_basins import LLCWarning, estimate_llc_multitemperature_potential, fit_multitemperature
from slt_basins.toys import crossing_valley, finite_temperature_target
from _machine import machine

OUT = Path(__file__).parent / "results"
GAMMA = 1.0
EPS_NBETA = 0.05
LAMBDA = 0.5


def run(name, poly, m_true, nbetas, chains, seed, scale):
    eps = [EPS_NBETA / t for t in nbetas]
    burn = [max(500, int(scale * 1.0 / e)) for e in eps]
    draws = [max(1000, int(scale * 2.0 / e)) for e in eps]
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LLCWarning)
        r = estimate_llc_multitemperature_potential(
            poly, torch.zeros(poly.d, dtype=torch.float64), nbetas=nbetas, step_size=eps, num_draws=draws,
            num_burnin=burn, num_chains=chains, localization=GAMMA, seed=seed, progress=False)
    wall = time.perf_counter() - t0
    exact = np.array([finite_temperature_target(poly, t, localization=GAMMA) for t in nbetas])
    rows = []
    for (_, row), ex in zip(r.table.iterrows(), exact):
        rows.append(dict(potential=name, kind="single nβ", nbeta=row["nbeta"], method=f"λ̂ at nβ = {row['nbeta']:.4g}",
                         llc=row["llc_mean"], se=row["mcse"], m=None, m_se=None, exact_finite_t=ex,
                         fit_on_exact=None, z_vs_exact=(row["llc_mean"] - ex) / row["mcse"],
                         err_vs_truth=row["llc_mean"] - LAMBDA, z_vs_truth=(row["llc_mean"] - LAMBDA) / row["mcse"],
                         r_hat=row["r_hat"], steps=int(row["num_draws"] + row["num_burnin"])))
    se = r.table["mcse"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        fits = {f: fit_multitemperature(nbetas, r.table["llc_mean"], se, f) for f in ("constant", "multiplicity", "quadratic")}
        on_exact = {f: fit_multitemperature(nbetas, exact, se, f) for f in ("constant", "multiplicity", "quadratic")}
    for f, label in [("constant", "fit: constant"), ("multiplicity", "fit: λ − (m−1)/log t"),
                     ("quadratic", "fit: λ − (m−1)/log t + ν/log² t"), ("auto", f"fit: auto (→ {r.fit})")]:
        fr = r.details if f == "auto" else fits[f]
        ex = on_exact[r.fit if f == "auto" else f]
        rows.append(dict(potential=name, kind="multi-temperature", nbeta=None, method=label, llc=fr.llc, se=fr.llc_se,
                         m=fr.multiplicity, m_se=fr.multiplicity_se, exact_finite_t=None, fit_on_exact=ex.llc,
                         z_vs_exact=None, err_vs_truth=fr.llc - LAMBDA, z_vs_truth=(fr.llc - LAMBDA) / fr.llc_se,
                         r_hat=None, steps=int((r.table["num_draws"] + r.table["num_burnin"]).sum())))
    info = dict(potential=name, m_true=m_true, wall_s=wall, chains=chains,
                warnings=sorted({str(w.message).split(":")[1].strip()[:70] for w in caught if ":" in str(w.message)}))
    return rows, info


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a quarter of the steps and 64 chains (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    nbetas = list(np.geomspace(10.0, 1000.0, 5))
    chains, scale = (64, 0.25) if args.quick else (256, 1.0)
    rows, infos = [], []
    for name, poly, m in [("w1²w2²", crossing_valley(1, 1), 2), ("w1²w2²w3²", crossing_valley(1, 1, 1), 3)]:
        r, info = run(name, poly, m, nbetas, chains, args.seed, scale)
        rows += r
        infos.append(info)
        print(f"{name}: {info['wall_s']:.0f} s")
    df = pd.DataFrame(rows)
    mach = machine()
    cols = ["potential", "method", "llc", "se", "m", "m_se", "exact_finite_t", "fit_on_exact", "z_vs_exact",
            "err_vs_truth", "z_vs_truth", "r_hat", "steps"]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        text = df[cols].round(4).to_string(index=False)
    notes = "\n".join(f"- {i['potential']} (m = {i['m_true']}): {i['wall_s']:.0f} s wall, {i['chains']} chains; "
                      f"warnings: {'; '.join(i['warnings']) or 'none'}" for i in infos)
    print(f"machine: {mach}\n\n{text}\n\n{notes}")
    OUT.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    df.to_csv(OUT / f"multitemperature_crossing{suffix}.csv", index=False)
    (OUT / f"multitemperature_crossing{suffix}.md").write_text(
        f"# multitemperature_crossing\n\nmachine: {mach}\n\n"
        f"nβ = {', '.join(f'{t:.4g}' for t in nbetas)}; γ = {GAMMA:g}; ε·nβ = {EPS_NBETA:g}; seed {args.seed}. "
        "True λ = 1/2 for both; exact_finite_t is t·E_t[K] under exp(−tK − γ|w|²/2) by quadrature; "
        "fit_on_exact is the same fit applied to the exact values (the fit's own bias); z_vs_truth = "
        "(λ − 1/2)/se.\n\n```\n" + text + "\n```\n\n" + notes + "\n")


if __name__ == "__main__":
    main()
