# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Toy learning coefficients: λ̂ against exact truths
#
# Every toy here has an exact learning coefficient λ (with multiplicity m) from `slt_basins.toys`, and
# the low-dimensional potentials also have the exact **finite-temperature target** t·E[K] (t = nβ)
# under the same localised tempered posterior the sampler targets, computed by quadrature. So two
# errors can be told apart:
#
# * λ̂ − target: the sampler's error (step size, mixing), which the MCSE partly covers;
# * target − λ: the estimator's bias at this nβ (multiplicity, localisation), which no error bar shows.
#
# The notebook runs the suite behind `slt-basins reproduce` (`slt_basins.reproduce.suite` and
# `run_case`), plots λ̂ against λ, and then measures the multiplicity bias of the crossing valleys
# w1²w2² (λ = 1/2, m = 2) and w1²w2²w3² (λ = 1/2, m = 3) as nβ grows: the leading-order value
# λ − (m−1)/log t, the exact finite-t value, and SGLD estimates at three values of nβ.
#
# **Run it.** The committed outputs come from the full settings: the package's quick suite
# (`suite(quick=True)`, all 18 cases; the 19-case full table is `slt-basins reproduce`, 3.5–8 minutes
# in docs/ground-truth.md). The committed run took 2.5 minutes on 2 CPU cores (Intel Xeon) while
# another single-threaded job ran on the second core; earlier runs on a slower machine took 4 minutes
# on idle cores and 7.5 on busy ones. For a smoke test in under a minute set
# `SLT_BASINS_QUICK=1`: six cases with shorter chains and two values of nβ (the prose below describes
# the full run):
#
# ```bash
# SLT_BASINS_QUICK=1 python -m pytest --nbmake notebooks/02_toy_rlct.ipynb
# ```

# %%
import dataclasses
import os
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tqdm.auto's "IProgress not found" when ipywidgets is absent
    try:
        import slt_basins
    except ImportError:  # a source checkout without `pip install -e .`: use the package next to notebooks/
        sys.path.insert(0, str(Path.cwd().parent))
        import slt_basins
from slt_basins import LLCWarning, estimate_llc_potential
from slt_basins.reproduce import GAMMA, NBETA, markdown_table, run_case, suite
from slt_basins.toys import crossing_valley, finite_temperature_target, multiplicity_bias

QUICK = os.environ.get("SLT_BASINS_QUICK") == "1"
# The library returns matplotlib Figures and never shows them; loading pyplot's backend now makes
# a Figure display when it is a cell's last expression.
plt.switch_backend(plt.get_backend())
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
torch.set_num_threads(1)  # as the full reproduction table; small models gain nothing from a second thread
T_START = time.perf_counter()
print(f"mode: {'QUICK' if QUICK else 'FULL'}; slt_basins {slt_basins.__version__}, torch {torch.__version__}")

# %% [markdown]
# ## The reproduction table
#
# Potentials are sampled exactly (`estimate_llc_potential`, nβ = 10³, γ = 1); reduced-rank regressions
# (RRR) and deep linear networks (DLN) are sampled as `nn.Module`s with `estimate_llc` on noiseless
# teacher data (n = 10⁴, nβ = n/log n, batch 500, γ = 1) at a teacher whose every layer has rank
# exactly r, where Aoyagi's formula is the LLC. The verdict column is the package's own.

# %%
cases = suite(quick=True)
if QUICK:
    keep = ["w^2", "w^4", "w1^2 w2^2", "w1^2 + w2^4", "RRR (5,3,5) r=1", "DLN [4,5,3,4] r=2"]
    cases = [c for c in cases if c.name in keep]
    cases = [dataclasses.replace(c, num_chains=min(c.num_chains, 32), num_draws=c.num_draws // 2,
                                 num_burnin=c.num_burnin // 2) for c in cases]
rows = []
t0 = time.perf_counter()
for case in cases:
    rows.append(run_case(case, seed=0))
table = pd.DataFrame(rows)
print(f"{len(table)} cases in {time.perf_counter() - t0:.0f} s")
display(Markdown(markdown_table(table)))

# %% [markdown]
# Sampler diagnostics of the same runs (R-hat over chains, chains × draws, wall time) and the
# warnings each run raised (first words only):

# %%
diag = table[["case", "nbeta", "step_size", "chains", "draws", "r_hat", "step_stability", "step_stability_end",
              "diverged", "wall_s", "warnings"]].copy()
diag["warnings"] = diag["warnings"].str.slice(0, 60)
diag.style.format({"nbeta": "{:.4g}", "step_size": "{:.2g}", "r_hat": "{:.3f}", "step_stability": "{:.3g}",
                   "step_stability_end": "{:.3g}", "wall_s": "{:.1f}"}).hide(axis="index")

# %% [markdown]
# ## λ̂ against the true λ
#
# Left: the potentials, with the exact finite-t target (what a perfect sampler gives at nβ = 10³,
# γ = 1) and rank(H)/2 (what the Hessian says). Right: the cases with larger λ, as λ̂/λ.

# %%
table["lam"] = table["true_lambda"].map(lambda s: float(Fraction(s)))
pot = table[table.finite_t_target.notna() & (table.lam <= 1)]
big = table[~table.index.isin(pot.index)]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.0), layout="constrained")
yp = np.arange(len(pot))
ax1.plot(pot.lam, yp, "|", color="k", ms=14, mew=2, label="true λ")
ax1.plot(pot.finite_t_target, yp, "x", color="C3", ms=8, label=f"exact finite-t target (t = {NBETA:g}, γ = {GAMMA:g})")
ax1.errorbar(pot.llc, yp, xerr=2 * pot.se, fmt="o", capsize=3, label="λ̂ ± 2 se (SGLD)")
ax1.plot(pot.hessian_rank_half, yp, "s", mfc="none", color="gray", label="rank(H)/2")
ax1.set_yticks(yp, [f"{c} (λ = {l}, m = {m})" for c, l, m in zip(pot.case, pot.true_lambda, pot.m)], fontsize=7)
ax1.invert_yaxis()
ax1.set_xlabel("value")
ax1.set_title("potentials")
ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.13), ncols=2)

y = np.arange(len(big))
ax2.axvspan(0.9, 1.1, color="C2", alpha=0.12, label="±10 % of λ")
ax2.axvline(1, color="gray", lw=0.8)
ax2.errorbar(big.llc / big.lam, y, xerr=2 * big.se / big.lam, fmt="o", capsize=3, label="λ̂/λ ± 2 se")
has_t = big.finite_t_target.notna()
ax2.plot(big.finite_t_target[has_t] / big.lam[has_t], y[has_t.values], "x", color="C3", ms=8, label="finite-t target/λ")
ax2.set_yticks(y, [f"{c} (λ = {l})" for c, l in zip(big.case, big.true_lambda)], fontsize=7)
ax2.invert_yaxis()
ax2.set_xlabel("λ̂ / λ")
ax2.set_title("sum of powers, RRR and DLN")
ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.13), ncols=3)
plt.close(fig)
fig

# %% [markdown]
# ## Multiplicity bias of the crossing valleys as nβ grows
#
# For K with learning coefficient λ and multiplicity m, t·E_t[K] = λ − (m−1)/log t + O(1/log² t)
# (`multiplicity_bias`). `finite_temperature_target` gives the exact value at each t (quadrature,
# γ = 1 as above), and SGLD (`estimate_llc_potential`, 128 chains) estimates it at three values of
# nβ, with ε chosen so that ε·nβ stays at 0.1 or below.

# %%
if QUICK:
    T_GRID = np.logspace(1.5, 5, 5)
    SGLD_RUNS = [(1e2, 3e-4, 32, 4000), (1e3, 1e-4, 32, 6000)]  # (nβ, ε, chains, draws)
else:
    T_GRID = np.logspace(1.5, 7, 12)
    SGLD_RUNS = [(1e2, 3e-4, 128, 12000), (1e3, 1e-4, 128, 24000), (1e4, 1e-5, 128, 48000)]
valleys = {"w1²w2² (λ = 1/2, m = 2)": crossing_valley(1, 1), "w1²w2²w3² (λ = 1/2, m = 3)": crossing_valley(1, 1, 1)}

curves, sgld = {}, []
t0 = time.perf_counter()
for name, K in valleys.items():
    R = K.rlct()
    curves[name] = dict(exact=[finite_temperature_target(K, t, localization=GAMMA) for t in T_GRID],
                        leading=[multiplicity_bias(R, t) for t in T_GRID], lam=float(R.value))
    for nb, eps, chains, draws in SGLD_RUNS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LLCWarning)
            r = estimate_llc_potential(K, torch.zeros(K.d, dtype=torch.float64), nbeta=nb, localization=GAMMA,
                                       step_size=eps, num_chains=chains, num_draws=draws, num_burnin=draws // 3,
                                       seed=0, progress=False)
        target = finite_temperature_target(K, nb, localization=GAMMA)
        sgld.append(dict(potential=name, nbeta=nb, step_size=eps, chains=r.num_chains, draws=r.num_draws,
                         llc=r.llc_mean, se=r.mcse, exact_target=target, z=(r.llc_mean - target) / r.mcse,
                         leading_order=multiplicity_bias(R, nb), r_hat=r.checks["r_hat"],
                         stab_end=r.checks["step_stability_end"], mala_accept=r.checks["mala_accept"],
                         diverged=len(r.diverged),
                         warnings=" | ".join(str(w.message)[:50] for w in caught)))
sgld = pd.DataFrame(sgld)
print(f"quadrature and SGLD in {time.perf_counter() - t0:.0f} s")
sgld.style.format({"nbeta": "{:g}", "step_size": "{:g}", "llc": "{:.4f}", "se": "{:.4f}", "exact_target": "{:.4f}",
                   "z": "{:+.1f}", "leading_order": "{:.4f}", "r_hat": "{:.3f}", "stab_end": "{:.3f}",
                   "mala_accept": "{:.3f}"}, na_rep="–").hide(axis="index")

# %% [markdown]
# `z` = (λ̂ − exact target)/se: how many standard errors the sampler is from the exact finite-t value;
# `mala_accept` = the package's MALA probe, the mean Metropolis acceptance probability of 8 fresh
# Langevin proposals per chain, in antithetic pairs, from four positions of each chain (three kept during
# the draws and the final one; below 0.7 the package warns of a visible step-size bias).

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
for ax, (name, c) in zip(axes, curves.items()):
    ax.axhline(c["lam"], color="k", lw=1, ls="--", label="λ (t → ∞)")
    ax.plot(T_GRID, c["exact"], "-", color="C3", label="exact t·E_t[K] (quadrature, γ = 1)")
    ax.plot(T_GRID, c["leading"], ":", color="C0", label="λ − (m−1)/log t (leading order)")
    s = sgld[sgld.potential == name]
    ax.errorbar(s.nbeta, s.llc, yerr=2 * s.se, fmt="o", color="k", capsize=3, label="SGLD λ̂ ± 2 se")
    ax.set_xscale("log")
    ax.set_xlabel("t = nβ")
    ax.set_title(name)
    ax.set_ylim(0, 0.55)
axes[0].set_ylabel("t·E_t[K]  (what the LLC estimator targets)")
axes[0].legend(fontsize=7, loc="lower right")
plt.close(fig)
fig

# %%
bias = pd.DataFrame({name: {f"t = {t:.0e}": f"{e:.4f} (λ − {c['lam'] - e:.4f})" for t, e in zip(T_GRID, c["exact"])}
                     for name, c in curves.items()})
bias.iloc[[0, len(T_GRID) // 2, -1]]

# %%
print(f"notebook run time: {time.perf_counter() - T_START:.0f} s ({'QUICK' if QUICK else 'FULL'} mode)")

# %% [markdown]
# ## What the measured output shows (full run)
#
# * **Potentials (9 cases).** Every estimate meets the package's criterion, within max(2 %, 3 se) of its
#   exact finite-t target; the deviations range from −8.3 % (w1²w2²w3², 2.5 se) to +5.6 %
#   (w1² + w2⁴, 1.8 se). Against λ itself the crossing valleys are 20.7 % (m = 2) and 44.0 % (m = 3)
#   low, and so are their exact targets (0.3903 and 0.3056 against λ = 0.5): that gap is the
#   estimator's finite-nβ bias, not sampler error.
# * **rank(H)/2 and rank(G)/2** are equal in every row, and equal λ only for w² (0.5). They are 0 for
#   w⁴, w⁶, w⁸, the three crossing valleys, Σ w_i⁴ (λ = 125) and the five r = 0 RRRs (λ = 6 to 8), and
#   they sit below λ for w1² + w2⁴ (0.5 vs 0.75), RRR r = 1 (4.5 vs 8) and the DLNs (6, 18, 25.5 vs 7,
#   21.5, 50).
# * **RRR (6 cases).** The quick suite runs them at full length (4 chains × 8,000 draws), and all six
#   land within 10 % of λ, from −8.4 % (RRR (5,4,5)) to +4.4 % (RRR (8,3,4)), with R-hat 1.004–1.032.
#   RRR (5,3,5) r = 1 ends at ε·(nβ·h_max + γ)/4 = 0.101, above 0.1 but less than twice its 0.052 at
#   w*, so the package does not warn.
# * **DLN (3 cases).** They run a quarter of the full row's steps (4 chains × 2,000 draws; 4,000 for
#   the largest). They have no quadrature target; the `finite-t target` column of the table holds the
#   finite-t value g measured by exact MALA (docs/ground-truth.md; the figure does not show it). All
#   three miss 10 % of λ; each verdict is labelled quick and names the cause its diagnostics show.
#   DLN [4,5,3,4] gives 6.27 ± 0.30, 10.4 % below λ = 7 and 5.2 % below g = 6.611 ± 0.065.
#   DLN [10,5,5,5,10] gives 16.69 ± 0.63, 22.4 % below λ = 21.5 but 24.4 % above g = 13.42 ± 0.20
#   (g itself is 38 % below λ). DLN [10,20,20,20,10] gives 25.96 ± 3.4, 46.0 % below g = 48.08 ± 0.23,
#   with R-hat 1.49. The package flags the step size where the chains ended for DLN [4,5,3,4]
#   (ε·(nβ·h_max + γ)/4 = 0.173) and DLN [10,5,5,5,10] (1.06, at which SGLD is unstable in the
#   stiffest direction). The verdicts follow the diagnostics: DLN [4,5,3,4] is within 3 se of g (the
#   sampler's error, inside its error bar); DLN [10,5,5,5,10] has chains that agree (R-hat 1.024) and
#   λ̂ above g, the direction of the bias from an inflated variance in the stiffest direction, so its
#   verdict names step-size bias with the unstable ratio (its se does not cover a step-size error);
#   DLN [10,20,20,20,10] lies far below g with R-hat 1.49: not mixed.
# * **Convergence.** R-hat exceeds 1.05 in 6 of the 18 runs (the diagnostics table): w⁸, w1²w2⁴,
#   w1²w2²w3², w1² + w2⁴, Σ w_i⁴ and DLN [10,20,20,20,10]. The full table (docs/ground-truth.md) runs
#   the potentials and the DLNs 4× longer.
# * **Multiplicity bias.** The exact t·E_t[K] approaches λ = 1/2 slowly: for w1²w2² it is 0.327, 0.420
#   and 0.445 at t = 30, 3·10⁴ and 10⁷ (still 0.055 below λ at 10⁷); for w1²w2²w3² 0.230, 0.351 and 0.395
#   (0.106 below at 10⁷). The leading-order value λ − (m−1)/log t lies below the exact value at every
#   t shown, far below for m = 3 at small t (0.066 against 0.260 at t = 100).
# * **SGLD against the exact finite-t values.** No run raised a warning; the MALA probe accepts
#   0.997–1.000 of its proposals in every run. At nβ = 10² and 10³ the four estimates are
#   1.5–2.0 se above the exact values (0.3675 vs 0.3542, 0.3985 vs 0.3903, 0.2716 vs 0.2595, 0.3172 vs 0.3056); at
#   nβ = 10⁴ both are below (0.3957 vs 0.4123, −2.6 se; 0.3070 vs 0.3384, −3.3 se, R-hat 1.048). So at
#   nβ = 10⁴ the sampler's error is larger than its MCSE; at every nβ the estimates are closer to the
#   exact finite-t values than to λ, and closer than the leading-order formula is.
