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
# # 04 · The LLC over the training of a tiny language model (in-context copying)
#
# A two-layer attention-only transformer learns to continue sequences whose second half repeats the
# first half. The first half is random and cannot be predicted; the second half can, but only by
# looking back at the first copy, for example by finding the earlier occurrence of the current token
# and predicting the token that followed it (what an induction head does). This is the kind of task
# on which *induction heads* form (Olsson et al. 2022, "In-context learning and induction heads",
# arXiv:2209.11895), and their formation shows up as an abrupt drop of the loss on the repeated
# tokens after a plateau. Hoogland et al. (2024, "The developmental landscape of in-context
# learning", arXiv:2402.02364) followed such stages with the local learning coefficient (LLC; Lau et
# al. 2023, arXiv:2308.12108) estimated at training checkpoints, and Wang et al. (2024,
# "Differentiation and specialization of attention heads via the refined local learning
# coefficient", arXiv:2410.02984) refined it to parts of the weights and of the data. This notebook
# does the same on a model small enough for a CPU:
#
# 1. the task, the model (10,176 parameters) and its training, with the loss on the first and on the
#    second copy;
# 2. the sampler settings, chosen at the final checkpoint with `llc_vs_localization`, which is also
#    the localization check (does the loss or the localization γ set λ̂?);
# 3. λ̂ ± MCSE at 8 checkpoints with `estimate_llc_trajectory`, next to the loss, with the warnings
#    the package raised at each;
# 4. the weight-refined λ̂ of each layer (`params="blocks.0.*"`) and of each attention head
#    (`attention_head_params`) at the same checkpoints;
# 5. the data-refined λ̂ of the first-copy and of the second-copy tokens (`observe=`), from the same
#    chains as 3;
# 6. what the curves show, and what they cannot show.
#
# **Run it.** Full settings (the committed outputs) took 3.0 minutes on 2 CPU cores (Intel Xeon;
# the last cell prints the time and the load), and 4.4–7 minutes in earlier runs with the same
# sampler settings on a slower machine. For a smoke test in under a minute set
# `SLT_BASINS_QUICK=1` (300 training steps, 2 checkpoints, 2 values of γ, 60 steps per chain; the
# numbers are then noisier and the prose below, written for the full run, need not match them):
#
# ```bash
# SLT_BASINS_QUICK=1 python -m pytest --nbmake notebooks/04_language_model.ipynb
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
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tqdm.auto's "IProgress not found" when ipywidgets is absent
    try:
        import slt_basins
    except ImportError:  # a source checkout without `pip install -e .`: use the package next to notebooks/
        sys.path.insert(0, str(Path.cwd().parent))
        import slt_basins
from slt_basins import (LLCWarning, attention_head_params, attention_modules, default_nbeta, estimate_llc_trajectory,
                        llc_vs_localization)

QUICK = os.environ.get("SLT_BASINS_QUICK") == "1"
# The library returns matplotlib Figures and never shows them. Loading pyplot's backend now makes a
# Figure display when it is a cell's last expression (also the ones built without pyplot).
plt.switch_backend(plt.get_backend())
plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
# One thread: as fast as two for this small model, and immune to oversubscription when another
# process shares the 2 cores (two 2-thread torch processes on 2 cores slow each other down badly).
torch.set_num_threads(1)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)
T_START, CPU_START = time.perf_counter(), time.process_time()

if QUICK:
    TRAIN_STEPS, CHECKPOINTS = 300, [100, 300]
    NUM_DRAWS, NUM_BURNIN = 40, 20
    GAMMAS = [300.0, 1000.0]
else:
    TRAIN_STEPS, CHECKPOINTS = 1500, [20, 60, 120, 180, 240, 300, 600, 1500]
    NUM_DRAWS, NUM_BURNIN = 300, 150
    GAMMAS = [30.0, 100.0, 300.0, 1000.0, 3000.0]
NUM_CHAINS = 4
BATCH = 16  # SGLD minibatch (sequences) per chain and step
STEP_SIZE = 2e-5  # SGLD ε
LOCALIZATION = 300.0  # γ (chosen below, at the final checkpoint)
print(f"mode: {'QUICK' if QUICK else 'FULL'}; slt_basins {slt_basins.__version__}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")

# %% [markdown]
# ## The task: copy a random sequence in context
#
# Each sequence has 16 tokens: L distinct tokens a_1 … a_L drawn from 1..15, with L uniform in {4,
# …, 8}, written twice, after 16 − 2L filler tokens 0. Because L varies, the distance back to the
# first copy varies too, so a head that always looks a fixed number of positions back cannot do the
# copy: the model has to match content, or work out L from where the tokens start. The first copy is
# random (a uniform guess over the 15 tokens costs log 15 = 2.71 nats per token); the second copy is
# determined by the first. There are 4,096 training sequences, the data the LLC is estimated on, and
# 1,024 held-out ones. The first four training sequences:

# %%
VOCAB, SEQ = 16, 16  # token 0 is the filler; the copied tokens are 1..15
N_TRAIN, N_HELDOUT = 4096, 1024


def copy_task(n, seed):
    """n sequences [0 … 0, a_1 … a_L, a_1 … a_L] of length SEQ, L uniform in 4..SEQ/2, the a_i distinct.

    Returns the token ids and two boolean masks of the same shape: the positions of the first copy
    and of the second copy."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, SEQ, dtype=torch.long)
    first = torch.zeros(n, SEQ, dtype=torch.bool)
    second = torch.zeros(n, SEQ, dtype=torch.bool)
    for i, L in enumerate(torch.randint(4, SEQ // 2 + 1, (n,), generator=g).tolist()):
        a = torch.randperm(VOCAB - 1, generator=g)[:L] + 1
        s = SEQ - 2 * L
        ids[i, s:s + L], ids[i, s + L:] = a, a
        first[i, s:s + L], second[i, s + L:] = True, True
    return ids, first, second


ids, first, second = copy_task(N_TRAIN, seed=0)
ids_ho, first_ho, second_ho = copy_task(N_HELDOUT, seed=1)
for row in ids[:4].tolist():
    print(" ".join(f"{t:2d}" for t in row))

# %% [markdown]
# ## The model
#
# Two attention-only blocks (no MLPs, as in the small models of Olsson et al. 2022, where an
# induction circuit is the composition of heads in two layers), 2 heads of dimension 16 per block,
# width 32, learned position embeddings, pre-LayerNorm, causal mask. It is built by hand from
# `nn.MultiheadAttention`, one of the layouts `attention_head_params` recognises, and called as
# `model(input_ids)`: `estimate_llc` calls a model with the keys of a dict batch, leaving out the
# target key `labels`, and `loss="causal_lm"` scores logits `[:, :-1]` against the token ids `[:,
# 1:]`.

# %%
class Block(nn.Module):
    """Pre-LayerNorm causal self-attention with a residual connection (no MLP)."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)


class AttnOnlyTransformer(nn.Module):
    """Token and learned position embeddings, attention-only residual blocks, a final LayerNorm and an
    unembedding. Called as ``model(input_ids)``; returns logits (batch, seq, vocab)."""

    def __init__(self, vocab=VOCAB, seq=SEQ, width=32, heads=2, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.unembed = nn.Linear(width, vocab, bias=False)
        self.register_buffer("future", torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1))

    def forward(self, input_ids):
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos.weight[:t]
        for block in self.blocks:
            h = block.ln(x)
            x = x + block.attn(h, h, h, attn_mask=self.future[:t, :t], need_weights=False)[0]
        return self.unembed(self.ln_f(x))


torch.manual_seed(0)
model = AttnOnlyTransformer()
d = sum(p.numel() for p in model.parameters())
print(f"d = {d} parameters; attention modules: {attention_modules(model)}")
print({name: p.numel() for name, p in model.named_parameters()})

# %% [markdown]
# ## Training
#
# Adam with learning rate 3·10⁻³, cosine decay to 0 at step 1,500 (so that the last checkpoint is
# close to a critical point of the training loss, checked below), batches of 64 sequences, one seed.
# State dicts are kept at 8 steps: roughly log-spaced (20, 60, 120, 600, 1500) plus three more (180,
# 240, 300) where the second-copy loss drops in this run, placed there after looking at its loss
# curve. The losses are next-token cross-entropies averaged over the targets of each part, on the
# training sequences and on the held-out ones.

# %%
def token_losses(m, ids_, first_, second_):
    """Mean next-token cross-entropy (nats) over the targets in the first copy, in the second copy, and all."""
    with torch.no_grad():
        nll = F.cross_entropy(m(ids_)[:, :-1].transpose(1, 2), ids_[:, 1:], reduction="none")
    f, s = first_[:, 1:], second_[:, 1:]  # the target at position t + 1 is predicted at position t
    return nll[f].mean().item(), nll[s].mean().item(), nll.mean().item()


EVAL_STEPS = sorted(set(np.geomspace(1, TRAIN_STEPS, 40).round().astype(int).tolist()) | set(CHECKPOINTS)
                    | set(range(100, min(TRAIN_STEPS, 400) + 1, 20)))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * s / TRAIN_STEPS)))  # cosine to 0
gen = torch.Generator().manual_seed(2)
history, states = [], {}
t0 = time.perf_counter()
for step in range(1, TRAIN_STEPS + 1):
    batch = ids[torch.randint(N_TRAIN, (64,), generator=gen)]
    loss = F.cross_entropy(model(batch)[:, :-1].transpose(1, 2), batch[:, 1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
    schedule.step()
    if step in EVAL_STEPS:
        history.append(dict(step=step, **dict(zip(["first", "second", "all"], token_losses(model, ids, first, second))),
                            **dict(zip(["first_heldout", "second_heldout", "all_heldout"],
                                       token_losses(model, ids_ho, first_ho, second_ho)))))
    if step in CHECKPOINTS:
        states[step] = copy.deepcopy(model.state_dict())
model.eval()  # no dropout here, but estimate_llc refuses a model with dropout in train mode
history = pd.DataFrame(history).set_index("step")
print(f"trained {TRAIN_STEPS} Adam steps in {time.perf_counter() - t0:.0f} s; checkpoints at {CHECKPOINTS}")
history.loc[CHECKPOINTS].round(3)

# %%
def mark_checkpoints(ax):
    for s in CHECKPOINTS:
        ax.axvline(s, color="0.85", lw=0.8, zorder=0)


fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
mark_checkpoints(ax)
ax.plot(history.index, history["first"], "C0-", label="first copy (unpredictable)")
ax.plot(history.index, history["second"], "C3-", label="second copy (predictable in context)")
ax.plot(history.index, history["second_heldout"], "C3:", label="second copy, held-out sequences")
ax.plot(history.index, history["all"], "k-", lw=0.8, label="all targets (fillers included)")
ax.axhline(np.log(VOCAB - 1), color="C0", ls="--", lw=0.8, label="log 15")
ax.set_xscale("log")
ax.set_xlabel("training step (grey lines: checkpoints)")
ax.set_ylabel("next-token loss (nats)")
ax.legend(fontsize=7)
ax.set_title("training loss by part of the sequence")
plt.close(fig)
fig

# %% [markdown]
# The second-copy loss sits on a plateau (2.78 nats at step 20, 2.63 at 120), falls between steps
# 120 and 300 (2.33 at 180, 0.91 at 240, 0.26 at 300) and reaches 0.009 at step 1500; on held-out
# sequences it is 0.010, so the model has learnt to copy rather than memorised the training
# sequences. The first-copy loss stays at 2.80–2.95 nats at the checkpoints, a little above the
# uniform guess log 15 = 2.71. The earlier fall of the loss over all targets, before step 60, while
# both copies stay near their starting values, is the filler tokens being learnt.

# %% [markdown]
# ## Choosing the sampler settings at the final checkpoint, and the localization check
#
# The estimator samples p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) with SGLD and reports λ̂ = nβ·(mean
# L_n(w_t) − L_n(w*)) (Lau et al. 2023), here with `loss="causal_lm"` on the 4,096 training
# sequences (each sequence's targets averaged, then the sequences). The settings are chosen once, at
# the last checkpoint (the trained model, usually the stiffest), and then kept for every checkpoint,
# so that the curves compare like with like:
#
# * **nβ** = n/log n = 492, the package default (the WBIC temperature).
# * **Chains, steps, batch**: 4 chains, 150 burn-in steps and 300 draws each, minibatches of 16
#   sequences per chain and step. About 450 steps per estimate is what lets the 61 estimates of this
#   notebook fit in its time budget. Each chain's baseline L_B(w*) is taken on its own minibatch, so
#   the baseline's minibatch noise cancels.
# * **ε** = 2·10⁻⁵: the package's stability ratio ε·(nβ·h_max + γ)/4 (it warns above 0.1) is then
#   about 0.02 at w*; a smaller ε would move the chains even less in 450 steps.
# * **γ** is the hard choice. It confines the chains (in the quadratic model a direction of
#   curvature h contributes ½·nβh/(nβh + γ), so directions with nβh ≲ γ are suppressed), and it also
#   sets how fast the chains equilibrate in those directions: in about 2/(εγ) steps (`relax_steps`
#   below). The scan runs the same estimate at five values of γ.
#
# For this scan only, the package's checks (the top Hessian eigenvalue at w* and at the chains'
# final positions, the MALA probe, and the Hessian density behind the localization share) are
# computed on 98 sequences instead of the default, one minibatch of 16 here
# (`slt_basins.checks.CHECK_SHARE` sets that budget; `check_examples` in the table).

# %%
train_data = {"input_ids": ids}  # causal_lm scores logits[:, :-1] against input_ids[:, 1:]
n = len(ids)
print(f"n = {n} sequences, nβ = n/log n = {default_nbeta(n):.1f}")
SAMPLER = dict(step_size=STEP_SIZE, batch_size=BATCH, num_chains=NUM_CHAINS, num_draws=NUM_DRAWS,
               num_burnin=NUM_BURNIN, seed=0)

final = AttnOnlyTransformer()
final.load_state_dict(states[CHECKPOINTS[-1]])
final.eval()
default_share = slt_basins.checks.CHECK_SHARE
slt_basins.checks.CHECK_SHARE = 1.0  # this scan only: checks on ~6x more sequences (below: check_examples)
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)  # each run's warnings are in scan.table["warnings"]
        scan = llc_vs_localization(final, train_data, "causal_lm", localizations=GAMMAS, progress=False, **SAMPLER)
finally:
    slt_basins.checks.CHECK_SHARE = default_share

WARNING_KINDS = {"R-hat": "R-hat =", "gradient": "gradient norm at w*", "ε at w*": "at w* (h_max",
                 "ε at chain ends": "at the chains' final positions", "MALA": "MALA", "λ̂ < 0": "is negative",
                 "> d/2": "exceeds d/2", "diverged": "diverged at steps", "γ sets λ̂": "rather than the loss"}


def warning_kinds(messages):
    """Short names of the package's warnings among these messages."""
    if isinstance(messages, str):
        messages = messages.split(" | ") if messages else []
    return ", ".join(k for k, pat in WARNING_KINDS.items() if any(pat in m for m in messages)) or "none"


def checks_columns(results):
    """Per-run diagnostics from result.checks (and the loss at w*)."""
    return pd.DataFrame([dict(ess_bulk=r.checks.ess_bulk, check_examples=r.config["check_examples"],
                              stab_w_star=r.checks.step_stability,
                              stab_end=r.checks.step_stability_end, mala_accept=r.checks.mala_accept,
                              loc_share=r.checks.localization_share, quadratic_llc=r.checks.quadratic_llc,
                              loc_half=r.checks.localization_half) for r in results])


sweep = pd.concat([scan.table.drop(columns="warnings"), checks_columns(scan.results)], axis=1)
# 2/(εγ): about the steps SGLD takes to equilibrate in the directions γ dominates
sweep.insert(1, "relax_steps", 2 / (STEP_SIZE * sweep["localization"]))
sweep["warnings"] = scan.table["warnings"].map(warning_kinds)
sweep.style.format({"localization": "{:g}", "relax_steps": "{:.0f}", "llc_mean": "{:.1f}", "mcse": "{:.1f}",
                    "r_hat": "{:.3f}", "ratio_to_next": "{:.2f}", "nbeta_h_max": "{:.0f}", "ess_bulk": "{:.0f}",
                    "stab_w_star": "{:.3f}", "stab_end": "{:.3f}", "mala_accept": "{:.3f}", "loc_share": "{:.2f}",
                    "quadratic_llc": "{:.0f}", "loc_half": "{:.3g}"}, na_rep="–").hide(axis="index")

# %%
scan.figure

# %% [markdown]
# What the scan shows (the figure: λ̂ ± MCSE against γ, the dotted line ∝ 1/γ):
#
# * **λ̂ falls at every step of γ**: 88.0 ± 9.1, 70.6 ± 6.0, 43.3 ± 2.0, 17.6 ± 0.4, 6.4 ± 0.1 at γ
#   = 30, 100, 300, 1000, 3000. From 300 to 3000 it falls by 2.46 and 2.74 per step of γ (factors
#   3.3 and 3), close to the 1/γ line: there γ, not the loss, sets the number. Below γ = 300 it falls
#   more slowly (by 1.63 from 100 to 300 and 1.25 from 30 to 100), but no plateau can be read off
#   within this budget: at γ = 30 and 100 the chains disagree (R-hat 1.290 and 1.188, bulk ESS 11 and
#   15 of 1,200 draws), as expected when 450 steps are far fewer than the 3,333 and 1,000 steps it
#   takes to equilibrate there.
# * **The quadratic model** puts γ's share above 0.5 at every γ of the scan: from the Hessian density
#   at w*, the share of λ̂ set by γ is 0.56, 0.56, 0.60, 0.70 and 0.83 at the five γ, and it falls to
#   0.5 only at γ ≈ 0.33 (`loc_half`), so the `LocalizationWarning` ("γ sets λ̂" in the table) fires
#   at all five. It is only a model of the loss near w*: its own value (`quadratic_llc`, 29 at γ =
#   300) is below λ̂ (43.3).
# * **Step size**: the stability ratio is 0.022–0.037 at w*, but 0.11–0.21 where the chains ended at
#   four of the five γ (warned above 0.1); the MALA probe accepts 0.89–0.99 of its proposals (the
#   package warns below 0.7).
#
# So no γ of this scan gives both converged chains and a λ̂ that the loss sets: at γ ≤ 100 the chains
# have not converged in this budget, and at every γ the quadratic model gives γ more than half of λ̂.
# From γ = 300 up the chains nearly agree (R-hat 1.053 at γ = 300, just above the package's 1.05;
# 1.008 at γ = 1000). We take **γ = 300**, the smallest γ whose chains nearly agree, and read every
# curve below as *λ̂ at γ = 300*: comparable between checkpoints sampled with the same settings, but
# not the LLC of the γ → 0 limit. At the last checkpoint it would be 1.6 times larger at γ = 100 and
# 2.5 times smaller at γ = 1000.

# %% [markdown]
# ## λ̂ over training, next to the loss
#
# `estimate_llc_trajectory` runs `estimate_llc` at every checkpoint with the same settings (nβ, γ,
# ε, chains, draws, batch size and seed) and keeps each checkpoint's warnings. `observe=` adds the
# data-refined LLCs of the last section, from the same chains, at the cost of one forward pass per
# dataset and draw. The warnings are collected rather than printed; the `warnings` column names
# them: `gradient` (w* is not a critical point of L_n), `R-hat` (the chains disagree), `ε at chain
# ends` (stability ratio above 0.1 where the chains ended), `γ sets λ̂` (the `LocalizationWarning`).

# %%
def targets_only(mask):
    """The training sequences with the loss restricted to the targets in ``mask`` (others set to -100)."""
    labels = ids.clone()
    labels[~mask] = -100
    return {"input_ids": ids, "labels": labels}


observe = {"first_copy": targets_only(first), "second_copy": targets_only(second)}
template = AttnOnlyTransformer().eval()
checkpoints = [(s, states[s]) for s in CHECKPOINTS]
t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", LLCWarning)  # each checkpoint's warnings are in traj.warnings
    traj = estimate_llc_trajectory(checkpoints, train_data, "causal_lm", model=template, localization=LOCALIZATION,
                                   observe=observe, progress=False, **SAMPLER)
print(f"{traj} ({time.perf_counter() - t0:.0f} s)")
table = traj.to_dataframe().set_index("step")
table = table.join(checks_columns(traj.results).drop(columns="ess_bulk").set_index(table.index))
table["warnings"] = [warning_kinds(m) for m in traj.warnings]
table = table.drop(columns="num_warnings").join(history[["first", "second"]])
table.style.format({"llc_mean": "{:.1f}", "mcse": "{:.1f}", "r_hat": "{:.3f}", "ess_bulk": "{:.0f}",
                    "init_loss": "{:.3f}", "grad_norm": "{:.3f}", "stab_w_star": "{:.3f}", "stab_end": "{:.3f}",
                    "mala_accept": "{:.3f}", "loc_share": "{:.2f}", "quadratic_llc": "{:.0f}", "loc_half": "{:.3g}",
                    "first": "{:.3f}", "second": "{:.3f}"}, na_rep="–")

# %% [markdown]
# Columns: `llc_mean` ± `mcse`, `r_hat` and `ess_bulk` (of 1,200 draws); `init_loss` = L_n(w*) and
# `grad_norm` = ‖∇L_n(w*)‖; the checks, here on one minibatch of 16 sequences (`check_examples`);
# `loc_share`, `quadratic_llc`, `loc_half`: the localization share, the quadratic model's λ and the
# γ where the share is 0.5; `first`, `second`: the token losses of the two copies.
#
# * **Only the last checkpoint is near a critical point.** At step 1500 ‖∇L_n‖ = 0.020 and there is
#   no gradient warning. At steps 20–600 the warning bounds the shift of λ̂ that the gradient can
#   cause, nβ²‖∇L‖²/γ, at 52.6, 12.1, 6.01, 19.2, 82.5, 17.9 and 18.1 (printed below): those λ̂ are
#   taken at points that are not minima, as any study of development must; where the bound is as
#   large as λ̂ (step 20: 52.6 against 1.6; step 240: 82.5 against 56.9) the value is not
#   established.
# * **Convergence.** R-hat is 1.007–1.053; at steps 240, 300 and 1500 it is just above 1.05 and the
#   package warns, so those error bars are approximate. The bulk ESS falls from 305–363 on the
#   plateau to 53–55 at 240, 300 and 1500.
# * **Localization.** The `LocalizationWarning` fires at every checkpoint (share 0.63–0.88). These
#   shares come from the 16-sequence checks and are rough. At step 1500 they are close to the
#   98-sequence checks of the scan above (share 0.63 and `loc_half` 0.541 here, against 0.60 and
#   0.333 there), but `loc_half` jumps from 2.26 at step 300 to 47.7 at 600 and 0.541 at 1500, up to
#   two decades between neighbouring checkpoints. They support "γ sets most of λ̂" and little more.
# * **Step size.** The stability ratio is 0.006–0.047 at w*, and 0.24–0.79 where the chains ended at
#   steps 300, 600 and 1500 (for step 1500, 0.165 with the 98-sequence checks); the MALA probe
#   accepts 0.898–0.993.

# %%
for step, msgs in zip(traj.steps, traj.warnings):
    grad = [m for m in msgs if "gradient norm" in m]
    print(f"step {step:>4}: " + (grad[0][:150] + "…" if grad else "no gradient warning"))

# %%
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True, layout="constrained")
for ax in (ax1, ax2):
    mark_checkpoints(ax)
grad_warned = table.warnings.str.contains("gradient")
ax1.errorbar(table.index, table.llc_mean, yerr=2 * table.mcse, fmt="-", capsize=3, color="C0")
ax1.plot(table.index[~grad_warned], table.llc_mean[~grad_warned], "o", color="C0", label="λ̂ ± 2 MCSE (all parameters)")
ax1.plot(table.index[grad_warned], table.llc_mean[grad_warned], "o", mfc="white", color="C0",
         label="λ̂ ± 2 MCSE, gradient warning (w* not a critical point)")
ax1.set_ylabel("λ̂")
ax1.set_title(f"nβ = {traj.results[0].nbeta:.0f}, γ = {LOCALIZATION:g}, ε = {STEP_SIZE:g}, batch {BATCH}, "
              f"{NUM_CHAINS}×{NUM_DRAWS} draws", fontsize=9)
ax1.legend(fontsize=7)
ax2.plot(history.index, history["first"], "C0-", label="loss on the first copy")
ax2.plot(history.index, history["second"], "C3-", label="loss on the second copy")
ax2.set_xscale("log")
ax2.set_xlabel("training step")
ax2.set_ylabel("next-token loss (nats)")
ax2.legend(fontsize=7)
plt.close(fig)
fig

# %% [markdown]
# λ̂ is 1.6 ± 0.9 at step 20, 8.6 ± 0.4 and 13.2 ± 0.6 on the plateau (steps 60 and 120), 23.9 ± 1.4
# at step 180 as the second-copy loss starts to fall, 56.9 ± 2.3 at 240 in the middle of the drop,
# and 47.8 ± 1.8, 40.0 ± 1.3 and 43.3 ± 2.0 at steps 300, 600 and 1500. The rise from step 120 to
# step 1500 (13.2 to 43.3) is larger than the gradient bound at step 120 (6.01; step 1500 has no
# gradient warning); the maximum at step 240 is not established, since its bound (82.5) exceeds it.

# %% [markdown]
# ## Weight-refined LLCs: per layer and per head
#
# `params=` samples only some weights and holds the rest at w*: the weight-refined (restricted) LLC
# of Wang et al. (2024). A glob on parameter names selects a layer (`"blocks.0.*"`: its LayerNorm
# and attention, 4,288 parameters); `attention_head_params(model, layer, head)` builds the boolean
# masks of one head's query, key, value and output weights inside the fused `in_proj_weight` and
# `out_proj.weight` tensors (2,096 parameters; the output bias is shared by the heads and belongs to
# none). Same checkpoints, same settings: six more trajectories.

# %%
groups = {f"layer {i}": f"blocks.{i}.*" for i in range(len(attention_modules(template)))}
heads = template.blocks[0].attn.num_heads
for layer in range(len(attention_modules(template))):
    for head in range(heads):
        groups[f"head {layer}.{head}"] = attention_head_params(template, layer, head)
sizes = {g: (sum(int(m.sum()) for m in p.values()) if isinstance(p, dict) else
             sum(q.numel() for name, q in template.named_parameters() if name.startswith(p[:-1])))
         for g, p in groups.items()}
print("parameters sampled per group:", sizes)

refined = {}
t0 = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", LLCWarning)
    for g, params in groups.items():
        refined[g] = estimate_llc_trajectory(checkpoints, train_data, "causal_lm", model=template, params=params,
                                             localization=LOCALIZATION, progress=False, **SAMPLER)
print(f"{len(groups)} refined trajectories in {time.perf_counter() - t0:.0f} s")
ref_llc = pd.DataFrame({g: t.llc_mean for g, t in refined.items()}, index=pd.Index(CHECKPOINTS, name="step"))
ref_se = pd.DataFrame({g: t.mcse for g, t in refined.items()}, index=ref_llc.index)
ref_rhat = pd.DataFrame({g: [r.checks.r_hat for r in t.results] for g, t in refined.items()}, index=ref_llc.index)
shown = ref_llc.round(1).astype(str) + " ± " + ref_se.round(1).astype(str)
shown["all parameters"] = table.llc_mean.round(1).astype(str) + " ± " + table.mcse.round(1).astype(str)
for layer in range(len(attention_modules(template))):
    layer_heads = [g for g in groups if g.startswith(f"head {layer}.")]
    shown[f"heads {layer}.* summed"] = ref_llc[layer_heads].sum(axis=1).round(1)
shown["layers summed"] = ref_llc[[g for g in groups if g.startswith("layer")]].sum(axis=1).round(1)
shown

# %%
print("largest R-hat per group:", ref_rhat.max().round(3).to_dict())
print("warnings per group (checkpoints with each kind):")
for g, t in refined.items():
    kinds = pd.Series([k for m in t.warnings for k in warning_kinds(m).split(", ") if k != "none"]).value_counts()
    print(f"  {g:>8}: " + (", ".join(f"{k} ×{v}" for k, v in kinds.items()) or "none"))

# %%
fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True, layout="constrained")
for ax in (ax1, ax2):
    mark_checkpoints(ax)
for i, g in enumerate([g for g in groups if g.startswith("layer")]):
    ax1.errorbar(CHECKPOINTS, ref_llc[g], yerr=2 * ref_se[g], fmt="o-", capsize=3, color=f"C{i}",
                 label=f"{g} (blocks.{i}.*)")
ax1.set_ylabel("λ̂, one layer sampled")
ax1.legend(fontsize=7)
for i, g in enumerate([g for g in groups if g.startswith("head")]):
    ax2.errorbar(CHECKPOINTS, ref_llc[g], yerr=2 * ref_se[g], fmt="o-" if g.startswith("head 1") else "s--",
                 capsize=3, color=f"C{i + 2}", label=g)
ax2.set_ylabel("λ̂, one head sampled")
ax2.set_xscale("log")
ax2.set_xlabel("training step")
ax2.legend(fontsize=7, ncol=2)
ax1.set_title("weight-refined λ̂ ± 2 MCSE (the other weights held at w*)", fontsize=9)
plt.close(fig)
fig

# %% [markdown]
# * **When.** All six groups are near 0 on the plateau (0.1–1.7 at steps 20–120) and jump between
#   steps 180 and 240, with the second-copy loss: layer 0 from 4.9 ± 0.3 to 22.0 ± 2.0, layer 1 from
#   3.8 ± 0.4 to 19.0 ± 1.3, each head from 1.9–2.7 to 7.8–11.7. Both layers change in the same
#   window, as a circuit spread over both layers would make them; nothing here says which head does
#   what.
# * **Differences between heads.** At step 1500 the layer-0 heads (9.9 ± 0.5, 9.7 ± 0.5) are above
#   the layer-1 heads (7.2 ± 0.3, 6.8 ± 0.3). Head 1.1 falls from 11.7 ± 1.4 at step 240 to 6.8 ±
#   0.3, while head 1.0 stays between 6.3 and 7.8 from step 240 on.
# * **Additivity.** The two heads of a layer add up to the layer's λ̂ within the error bars (step
#   1500: 19.6 against 20.1 ± 1.0 for layer 0, 14.0 against 13.9 ± 0.5 for layer 1), and the two
#   layers sum to 34.0 against 43.3 ± 2.0 with all 10,176 parameters sampled (embeddings,
#   unembedding and the final LayerNorm are the rest). That is what the localization-dominated
#   regime predicts: where nβh ≪ γ in most directions, λ̂ ≈ nβ·tr(H_block)/(2γ) for the sampled
#   block, and traces of diagonal blocks add. Restricted LLCs of a singular model at small γ need
#   not add; the agreement here says more about γ than about the heads.
# * **Warnings.** Every group has the `LocalizationWarning` at all 8 checkpoints and the gradient
#   warning at 7; R-hat exceeds 1.05 at 1–4 checkpoints per group (largest 1.228, head 1.1).

# %% [markdown]
# ## Data-refined LLC: the first copy and the second copy
#
# The data-refined LLC evaluates another dataset's loss at every draw of the same chains: λ̂_obs =
# nβ·(mean L_obs(w_t) − L_obs(w*)), with the posterior still defined by the training loss (Wang et
# al. 2024). The two datasets are the training sequences with the loss restricted to the targets in
# the first copy, or in the second copy: `labels` equal to the token ids with every other position
# set to −100, which `causal_lm` skips. They were passed as `observe=` to the trajectory above, so
# they needed no extra sampling.

# %%
fields = (("llc", "llc_mean"), ("mcse", "mcse"), ("loss", "init_loss"))  # λ̂_obs, its MCSE, L_obs(w*)
obs = pd.DataFrame({f"{name}_{col}": [getattr(r.observed[name], attr) for r in traj.results]
                    for name in observe for col, attr in fields}, index=pd.Index(CHECKPOINTS, name="step"))
obs["all_llc"], obs["all_mcse"] = table.llc_mean, table.mcse
obs.round(3)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6), layout="constrained")
mark_checkpoints(ax)
for name, color, lab in [("first_copy", "C0", "first copy's targets"), ("second_copy", "C3", "second copy's targets")]:
    ax.errorbar(CHECKPOINTS, obs[f"{name}_llc"], yerr=2 * obs[f"{name}_mcse"], fmt="o-", capsize=3, color=color,
                label=f"λ̂_obs, {lab}")
ax.errorbar(CHECKPOINTS, obs["all_llc"], yerr=2 * obs["all_mcse"], fmt="k.--", capsize=3, lw=0.8,
            label="λ̂, the training loss (all targets)")
ax.set_xscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("λ̂ ± 2 MCSE")
ax.set_title("data-refined λ̂ from the same chains", fontsize=9)
ax.legend(fontsize=7)
plt.close(fig)
fig

# %% [markdown]
# * **The second copy's λ̂_obs follows its loss**: 8.7–15.0 on the plateau, 35.2 ± 2.4 at step 180,
#   102.5 ± 6.7 at 240 (the middle of the drop), then 80.9 ± 3.4, 60.8 ± 3.8 and 67.9 ± 4.1 at 300,
#   600 and 1500. From step 120 to 240 it grows 6.8-fold, against 4.3-fold for λ̂ of the whole
#   training loss (13.2 to 56.9).
# * **The first copy's λ̂_obs is noisier** (MCSE 1.8–5.2) and has no jump at the drop: it goes from
#   10.4 ± 2.8 at step 120 to 32.4 ± 2.9 at 180, as the second copy's does (15.0 to 35.2), but then
#   to 27.8 ± 3.7 at 240 while the second copy's triples; elsewhere it is 26.6 ± 5.2 at step 20, 2.8
#   ± 3.8 at 60 and 30.2 ± 1.8 at 1500, and its loss stays at 2.79–2.94 nats.
# * **Scales.** Each λ̂_obs is nβ times a mean over its own targets per sequence (the training loss
#   averages 15 targets per sequence, fillers included), so the two need not add up to λ̂. And w*
#   minimises neither subset's loss: wherever the chains' mean moves away from w* (as it does where
#   ∇L_n(w*) ≠ 0), a first-order term, the subset's gradient times that displacement, enters λ̂_obs,
#   and the package's gradient check, which is about the training loss, does not bound it. That is a
#   likely reason for the first copy's λ̂_obs at step 20 (26.6) being 16 times λ̂ (1.6).

# %%
wall, cpu = time.perf_counter() - T_START, time.process_time() - CPU_START
print(f"notebook run time: {wall:.0f} s wall, {cpu:.0f} s CPU ({'QUICK' if QUICK else 'FULL'} mode; "
      f"1-min load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

# %% [markdown]
# ## What the curves show, and what they cannot show (full run)
#
# **What they show.**
#
# * A stage in the loss: the second-copy loss stays at 2.63–2.78 nats from step 20 to step 120,
#   falls to 0.91 at step 240 and 0.26 at 300, and ends at 0.009 (0.010 on held-out sequences); the
#   first copy stays at 2.80–2.95 nats.
# * λ̂ at γ = 300 changes with it: 13.2 ± 0.6 at step 120, before the drop, 56.9 ± 2.3 at 240 and
#   40.0–47.8 from step 300 on. The jump falls between steps 180 and 240, the window of the loss
#   drop, in λ̂, in all six weight-refined λ̂ (4.5-fold for layer 0, 5-fold for layer 1), and in the
#   data-refined λ̂ of the second copy (35.2 ± 2.4 to 102.5 ± 6.7), but not in the first copy's
#   (32.4 ± 2.9 to 27.8 ± 3.7 over the same two checkpoints).
#
# **What they cannot show.**
#
# * **How the copy is done.** λ̂ describes how the loss changes around w*, not what a head computes.
#   Whether the heads form a previous-token head and an induction head (Olsson et al. 2022) needs
#   attention patterns or ablations, which this notebook does not look at.
# * **The LLC of the γ → 0 limit.** At the last checkpoint λ̂ goes from 70.6 to 43.3 to 17.6 as γ
#   goes from 100 to 300 to 1000, and in the quadratic model it falls like γ^−0.60 around γ = 300.
#   The curves compare checkpoints at one γ (as developmental studies compare them at fixed sampler
#   settings); at another γ they would be rescaled, and not necessarily by the same factor at every
#   checkpoint, since the share varies between checkpoints.
# * **Values at points that are not minima.** Only the last checkpoint passes the gradient check.
#   Where the bound nβ²‖∇L‖²/γ is as large as λ̂ (steps 20 and 240), the value is not established;
#   in particular the maximum at step 240 may come from w* being in the middle of a descent.
# * **Convergence beyond R-hat.** 450 steps per chain; R-hat reaches 1.053 for the whole model and
#   1.228 for head 1.1. Chains that agree can still have missed flat directions that need more steps
#   (docs: *Theory*, error bars).
# * **Run-to-run spread.** One training seed, one draw of the data, one sampler seed. The MCSE
#   covers the sampler's randomness only; another training seed may move the step of the drop and
#   the values.
# * **Finite nβ and ε.** At nβ = 492 the finite-temperature bias of a singular minimum (its
#   multiplicity term) is not measured here. ε = 2·10⁻⁵ keeps the stability ratio at or below
#   0.047 at w*, but where the chains ended it reached 0.24–0.79 on 16 sequences (0.165 on 98 at
#   the last checkpoint), an upward bias in the stiffest direction; the MALA probe's 0.898–0.993,
#   above the package's 0.7, suggests that the discretisation bias is small overall.
# * **Fine structure.** 8 checkpoints, three of them in the drop. Hoogland et al. (2024) find
#   several stages in a two-layer attention-only language model; sub-stages this short would pass
#   between these checkpoints.
# * **What a part contributes.** A head's restricted λ̂ holds every other weight at w*: it measures
#   the head's degeneracy given the rest of the network, not its share of the whole. That the heads
#   add up to their layer here is a property of the γ-dominated regime, not of LLCs.
# * **The checks themselves.** By default they use one minibatch (16 sequences here): `loc_half`
#   moved from 2.26 to 47.7 to 0.541 over the last three checkpoints, and at the last checkpoint
#   the stability ratio where the chains ended was 0.786 on 16 sequences against 0.165 on 98 (the
#   share: 0.63 against 0.60). Read them as flags, not as measurements.
