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
# # 01 · Estimating the LLC of an MLP during training (scikit-learn digits)
#
# This notebook trains a small MLP on scikit-learn's bundled `load_digits` (8×8 images, 10 classes,
# no download) with cross-entropy, keeps checkpoints during training, and estimates the **local
# learning coefficient** λ̂ at each checkpoint with `slt_basins.estimate_llc`. It shows, in order:
#
# 1. the sampler settings and why they do not trigger the package's step-size warning;
# 2. λ̂ ± MCSE at every checkpoint, with the `checks` the package measures (gradient norm at w*,
#    step-size stability ε·(nβ·h_max + γ)/4 at w* and where the chains ended, the MALA acceptance
#    probe, R-hat, ESS);
# 3. the loss trace (`plot_trace`) and the ArviZ `summary()` of the last checkpoint;
# 4. a step-size check: λ̂ at four step sizes at the last checkpoint;
# 5. λ̂ ± se next to train and test loss across checkpoints.
#
# **Run it.** Full settings (the committed outputs) take about 4 minutes on 2 idle CPU cores (the
# committed run took 10 minutes on 2 cores shared with other jobs). For a smoke
# test in under a minute set `SLT_BASINS_QUICK=1` (fewer epochs, checkpoints and draws; the
# numbers are then noisier and the prose below, written for the full run, need not match them):
#
# ```bash
# SLT_BASINS_QUICK=1 python -m pytest --nbmake notebooks/01_estimate_llc.ipynb
# ```

# %%
import copy
import os
import sys
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tqdm.auto's "IProgress not found" when ipywidgets is absent
    try:
        import slt_basins
    except ImportError:  # a source checkout without `pip install -e .`: use the package next to notebooks/
        sys.path.insert(0, str(Path.cwd().parent))
        import slt_basins
from slt_basins import LLCWarning, estimate_llc

QUICK = os.environ.get("SLT_BASINS_QUICK") == "1"
# The library returns matplotlib Figures and never shows them. Loading pyplot's backend now makes a
# Figure display when it is a cell's last expression (also the ones built without pyplot).
plt.switch_backend(plt.get_backend())
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
# One thread: as fast as two for these small models, and immune to oversubscription when another
# process shares the 2 cores (two 2-thread torch processes on 2 cores slow each other down badly).
torch.set_num_threads(1)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
T_START = time.perf_counter()

if QUICK:
    EPOCHS, CHECKPOINTS = 40, [2, 10, 40]
    NUM_CHAINS, NUM_DRAWS, NUM_BURNIN = 4, 300, 150
    STEP_SIZES = [1e-4, 1e-3]
else:
    EPOCHS, CHECKPOINTS = 200, [3, 10, 25, 50, 100, 200]
    NUM_CHAINS, NUM_DRAWS, NUM_BURNIN = 4, 2000, 1000
    STEP_SIZES = [3e-5, 1e-4, 3e-4, 1e-3]
STEP_SIZE = 1e-4  # SGLD ε
LOCALIZATION = 100.0  # γ, as in Lau et al.'s MNIST runs
print(f"mode: {'QUICK' if QUICK else 'FULL'}; slt_basins {slt_basins.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## Data and model
#
# 1,797 digits, a stratified 75/25 train/test split, pixels scaled to [0, 1]. The MLP is
# 64 → 64 → 64 → 10 with ReLUs (8,970 parameters), trained with SGD (momentum 0.9, learning rate
# 0.05, batch 64) on the mean cross-entropy. The same seed gives the same run.

# %%
X, y = load_digits(return_X_y=True)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
x_train = torch.tensor(X_tr / 16.0, dtype=torch.float32)
x_test = torch.tensor(X_te / 16.0, dtype=torch.float32)
y_train = torch.tensor(y_tr)
y_test = torch.tensor(y_te)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
d = sum(p.numel() for p in model.parameters())
print(f"n_train = {len(x_train)}, n_test = {len(x_test)}, d = {d} parameters")


def evaluate(m):
    with torch.no_grad():
        out_tr, out_te = m(x_train), m(x_test)
        return dict(train_loss=F.cross_entropy(out_tr, y_train).item(),
                    test_loss=F.cross_entropy(out_te, y_test).item(),
                    train_acc=(out_tr.argmax(1) == y_train).float().mean().item(),
                    test_acc=(out_te.argmax(1) == y_test).float().mean().item())


opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
gen = torch.Generator().manual_seed(0)
history, checkpoints = [], {}
t0 = time.perf_counter()
for epoch in range(1, EPOCHS + 1):
    model.train()
    perm = torch.randperm(len(x_train), generator=gen)
    for i in range(0, len(x_train), 64):
        idx = perm[i:i + 64]
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    history.append(dict(epoch=epoch, **evaluate(model)))
    if epoch in CHECKPOINTS:
        checkpoints[epoch] = copy.deepcopy(model.state_dict())
history = pd.DataFrame(history).set_index("epoch")
print(f"trained {EPOCHS} epochs in {time.perf_counter() - t0:.1f} s; checkpoints at epochs {CHECKPOINTS}")
history.loc[CHECKPOINTS].round(4)

# %% [markdown]
# ## Choosing the sampler settings
#
# The estimator samples p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) with SGLD and reports
# λ̂ = nβ·(mean L_n(w_t) − L_n(w*)). With n = 1,347 training examples the default is
# nβ = n/log n ≈ 187. Before sampling, the package measures the largest Hessian eigenvalue h_max of
# L_n at w* and after sampling, at the chains' final positions; SGLD inflates the variance of the
# stiffest direction by 1/(1 − ε(nβ·h_max + γ)/4) and warns when that quantity exceeds 0.1.
# We use ε = 1e-4 and γ = 100 with full-batch gradients (n is small), 4 chains. The step-size
# check further down shows what happens when ε is raised until the warning fires.

# %%
def run_llc(m, step_size=STEP_SIZE, **kw):
    """estimate_llc with this notebook's settings; warnings are collected, not printed."""
    m.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LLCWarning)
        r = estimate_llc(m, (x_train, y_train), "cross_entropy", num_chains=NUM_CHAINS, num_draws=NUM_DRAWS,
                         num_burnin=NUM_BURNIN, step_size=step_size, localization=LOCALIZATION,
                         batch_size=None, seed=0, progress=False, **kw)
    return r, [str(w.message) for w in caught if issubclass(w.category, LLCWarning)]


def short(msg, n=90):
    return msg if len(msg) <= n else msg[: n - 1] + "…"


results, rows = {}, []
for epoch in CHECKPOINTS:
    model.load_state_dict(checkpoints[epoch])
    r, warns = run_llc(model)
    results[epoch] = (r, warns)
    c = r.checks
    rows.append(dict(epoch=epoch, llc=r.llc_mean, se=r.mcse, r_hat=c["r_hat"], ess_bulk=c["ess_bulk"],
                     grad_norm=c["grad_norm"], grad_bias_bound=c["grad_bias_bound"],
                     stab_w_star=c["step_stability"], stab_end=c["step_stability_end"],
                     mala_accept=c["mala_accept"], sample_s=c["wall_time_s"], warnings=len(warns)))
table = pd.DataFrame(rows).set_index("epoch").join(history[["train_loss", "test_loss", "test_acc"]])
print(f"nβ = {r.nbeta:.1f}, ε = {STEP_SIZE:g}, γ = {LOCALIZATION:g}, {NUM_CHAINS} chains × {NUM_DRAWS} draws "
      f"after {NUM_BURNIN} burn-in steps")
table.style.format({"llc": "{:.3f}", "se": "{:.3f}", "r_hat": "{:.3f}", "ess_bulk": "{:.0f}", "grad_norm": "{:.2g}",
                    "grad_bias_bound": "{:.2g}", "stab_w_star": "{:.3f}", "stab_end": "{:.3f}", "mala_accept": "{:.3f}",
                    "sample_s": "{:.1f}", "train_loss": "{:.4f}", "test_loss": "{:.4f}", "test_acc": "{:.3f}"}, na_rep="–")

# %% [markdown]
# Columns: `llc` ± `se` (ArviZ MCSE); `r_hat` and `ess_bulk` of the per-draw LLC; `grad_norm` = ‖∇L_n(w*)‖
# and `grad_bias_bound` = nβ²‖∇L_n‖²/γ, the bound on how far the linear term can shift λ̂ when w* is
# not a critical point; `stab_w_star` / `stab_end` = ε·(nβ·h_max + γ)/4 at w* and at the chains' final
# positions (the package warns above 0.1); `mala_accept` = the mean Metropolis acceptance probability
# of fresh Langevin proposals from the chains' final positions (the package's MALA probe: SGLD's step
# has a visible discretisation bias when it is below 0.7, and the package then warns). The warnings the
# package raised, per checkpoint:

# %%
for epoch, (r, warns) in results.items():
    for w in warns:
        print(f"epoch {epoch:>3}: {short(w, 150)}")
    if not warns:
        print(f"epoch {epoch:>3}: no warning")

# %% [markdown]
# The `checks` record of the last checkpoint, as `items()` gives it: every check the package measured
# about the run (the unset ones, here divergences, resume step, step-size calibration and failed
# checks, are left out):

# %%
last = CHECKPOINTS[-1]
r_last = results[last][0]
print(r_last)
print("per-chain λ̂:", np.round(r_last.llc_per_chain, 3))
{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r_last.checks.items()}

# %% [markdown]
# ## Trace and ArviZ diagnostics at the last checkpoint

# %%
fig = r_last.plot_trace(figsize=(9, 3.2))
fig.suptitle(f"epoch {last}: per-draw nβ·(L(w_t) − L(w*)), {NUM_CHAINS} chains")
fig

# %%
r_last.summary().round(4)

# %% [markdown]
# ## Step-size check
#
# Same checkpoint, same number of steps, ε varied. Too small a step mixes slowly (low ESS, R-hat
# above 1); too large a step inflates the stationary variance and biases λ̂ upward. The package warns
# when ε·(nβ·h_max + γ)/4 > 0.1 at w*, or at the chains' final positions when it is also more than
# twice its value at w*, and when the MALA probe's acceptance falls below 0.7.

# %%
model.load_state_dict(checkpoints[last])
step_rows = []
for eps in STEP_SIZES:
    r, warns = (results[last] if eps == STEP_SIZE else run_llc(model, step_size=eps))
    step_rows.append(dict(step_size=eps, llc=r.llc_mean, se=r.mcse, r_hat=r.checks["r_hat"],
                          ess_bulk=r.checks["ess_bulk"], stab_w_star=r.checks["step_stability"],
                          stab_end=r.checks["step_stability_end"], mala_accept=r.checks["mala_accept"],
                          warning=" | ".join(short(w, 45) for w in warns)))
steps = pd.DataFrame(step_rows)
display(steps.style.format({"step_size": "{:g}", "llc": "{:.3f}", "se": "{:.3f}", "r_hat": "{:.3f}",
                            "ess_bulk": "{:.0f}", "stab_w_star": "{:.4f}", "stab_end": "{:.3f}",
                            "mala_accept": "{:.3f}"}, na_rep="–"))

fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
ax.errorbar(steps.step_size, steps.llc, yerr=2 * steps.se, fmt="o-", capsize=3, label="λ̂ ± 2 se")
for _, s in steps.iterrows():
    if s.warning:
        ax.annotate("warns", (s.step_size, s.llc), textcoords="offset points", xytext=(-30, 8), color="C3")
ax.axvline(STEP_SIZE, color="gray", ls=":", label=f"ε used above ({STEP_SIZE:g})")
ax.set_xscale("log")
ax.set_xlabel("SGLD step size ε")
ax.set_ylabel("λ̂")
ax.set_title(f"epoch {last}: λ̂ against step size")
ax.legend(fontsize=8)
plt.close(fig)
fig

# %% [markdown]
# ## λ̂ across training, next to train and test loss

# %%
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, layout="constrained")
warned_grad = [e for e, (r, w) in results.items() if any("gradient norm" in m for m in w)]
ok = [e for e in CHECKPOINTS if e not in warned_grad]
for sel, style, lab in [(ok, dict(fmt="o-", color="C0"), "λ̂ ± 2 se"),
                        (warned_grad, dict(fmt="s", color="C3", mfc="none"), "λ̂ ± 2 se, gradient warning (w* not a minimum)")]:
    if sel:
        ax1.errorbar(sel, table.loc[sel, "llc"], yerr=2 * table.loc[sel, "se"], capsize=3, label=lab, **style)
ax1.axhline(0, color="gray", lw=0.8)
ax1.set_ylabel("LLC λ̂")
ax1.legend(fontsize=8)
ax1.set_title(f"nβ = {r_last.nbeta:.0f}, ε = {STEP_SIZE:g}, γ = {LOCALIZATION:g}")
ax2.plot(history.index, history.train_loss, label="train loss")
ax2.plot(history.index, history.test_loss, label="test loss")
ax2.plot(CHECKPOINTS, history.loc[CHECKPOINTS, "train_loss"], "k.", label="checkpoints")
ax2.set_yscale("log")
ax2.set_xscale("log")
ax2.set_xlabel("epoch")
ax2.set_ylabel("mean cross-entropy")
ax2.legend(fontsize=8)
plt.close(fig)
fig

# %%
print(f"notebook run time: {time.perf_counter() - T_START:.0f} s ({'QUICK' if QUICK else 'FULL'} mode)")

# %% [markdown]
# ## What the measured output shows (full run)
#
# * **Training.** Training loss falls from 0.39 (epoch 3) to 3·10⁻⁴ (epoch 200), training accuracy is
#   1.000 from epoch 50 on, and test loss is lowest among the checkpoints at epoch 50 (0.108) and rises
#   to 0.128 by epoch 200, while test accuracy goes from 0.836 to 0.980.
# * **Which checkpoints are minima.** The gradient check separates them: at epoch 3 the bound
#   nβ²‖∇L‖²/γ on the shift of λ̂ is 421 and λ̂ = −7.1 ± 0.6 (negative: the chains found lower loss
#   than w*; the package also warns that λ̂ is negative beyond 3 MCSE and that R-hat = 1.093 exceeds
#   1.05), at epoch 10 the bound (34) is larger than λ̂ (6.2), at epochs 25 and 50 it is 1.3 and 0.29
#   (still flagged, against λ̂ ≈ 7 and 5), and at epochs 100 and 200 it is below 10⁻³ and the package
#   raises no warning. Only the last two checkpoints meet the LLC's assumption; the plot marks the
#   others.
# * **λ̂ across training.** From epoch 25 on, λ̂ decreases monotonically: 7.08 ± 0.11, 5.42 ± 0.09,
#   4.35 ± 0.09, 3.66 ± 0.09 at epochs 25, 50, 100, 200, while the training loss keeps falling and the
#   test loss rises. No checkpoint is an exact minimum of the cross-entropy (the training loss is still
#   decreasing at epoch 200), so the last value is the LLC at this point of training, not at a limit.
# * **Diagnostics.** With ε = 10⁻⁴ and γ = 100, ε·(nβ·h_max + γ)/4 is at most 0.053 at w* and 0.073
#   where the chains ended, below the package's 0.1 threshold at every checkpoint; at epoch 200 the top
#   Hessian eigenvalue is 0.11 at w* and 6.9 where the chains ended. The MALA probe accepts 0.97–0.99
#   of fresh Langevin proposals from the chains' final positions at every checkpoint, well above the
#   0.7 below which the package warns of a visible step-size bias. R-hat is 1.014–1.030 and the bulk
#   ESS 139–233 (of 8,000 draws) for epochs 10–200. At epoch 200 the four chains' own estimates are
#   3.37–3.86, a spread of 0.49 against an MCSE of 0.085 on their mean: R-hat = 1.022 is above the 1.01
#   ArviZ recommends, so the error bar should be read as approximate.
# * **Step size.** At epoch 200: 3.84 ± 0.21 at ε = 3·10⁻⁵ (R-hat 1.11, flagged: too few effective
#   draws), 3.66 ± 0.09 at 10⁻⁴, 3.74 ± 0.06 at 3·10⁻⁴ and 4.06 ± 0.04 at 10⁻³. The two middle values
#   agree within their error bars (a plateau); at 10⁻³ the package warns that ε·(nβ·h_max + γ)/4 = 0.255
#   where the chains ended, and λ̂ is 0.40 (11 %) above the plateau, the upward step-size bias the
#   warning names. The MALA acceptance falls as ε grows (0.997, 0.984, 0.922, 0.830) but stays above
#   0.7 even at 10⁻³, so here the stability check, not the MALA probe, is the one that flags the bias.
