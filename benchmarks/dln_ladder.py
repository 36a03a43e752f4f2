"""The DLN ladder (issue #13, item 1): λ̂ against Aoyagi's λ on random deep linear networks of 10²–10⁵ parameters.

What. For each target size T ∈ {10², 10³, 10⁴, 10⁵} (``--sizes``) and shape k = 0, 1, … (``--shapes``) a random
deep linear network at a *minimal* true point (every layer of rank exactly r, where the LLC equals Aoyagi's λ;
``slt_basins.toys.DeepLinearNetwork``) is drawn, with Furman & Lau's settings (Furman & Lau 2024, "Estimating the
local learning coefficient at scale", arXiv:2402.03698): n = 10⁵ noiseless teacher examples (``--n``), x ~ N(0, I),
loss ``"mse"`` (mean over the batch *and* the outputs, slt_basins/losses.py), minibatch 500, γ = 1, nβ = n/log n.

The generator (seeded; shape k of size T always gives the same network). Furman & Lau draw the number of layers
and every width uniformly from a range per size class, then reduce the rank of the true parameter at random.
Here, with ``rng = numpy.random.default_rng([log10 T, k, 2402])``:

* the number of weight matrices L ~ U{L_min, …, L_max} and the L + 1 widths (input, hidden, output) i.i.d.
  ~ U{H_min, …, H_max}, with (L_min, L_max, H_min, H_max) = (2, 5, 2, 10) for T = 10², (2, 5, 5, 50) for 10³,
  (2, 10, 5, 100) for 10⁴ and (2, 10, 50, 500) for 10⁵ (the last three as in Furman & Lau's 10³, 10⁴ and
  10⁵ classes; their smallest class is 10³, so the 10² range is ours, smaller in the same style);
* the draw is repeated until d = Σ_l H_l·H_{l+1} lies within a factor 10^0.25 (0.56–1.78×) of T, so that d
  lands near the target (the number of draws is the ``draws`` column);
* the rank is reduced at random: r = min(widths) − u with u ~ U{0, …, min(widths) − 1}, so 1 ≤ r ≤ min(widths).
  Unlike Furman & Lau, who reduce each matrix's rank separately (a true point that is in general not
  minimal, where Aoyagi's formula is only a lower bound of the LLC), every layer gets the same rank r: the
  teacher ``DeepLinearNetwork(widths, r, teacher_seed=1000·log10 T + k)`` has W_l = U_l diag(s_l) V_lᵀ with r
  orthonormal columns and s_l ~ U[0.5, 1.5];
* data ``dln.dataset(n, seed=1)``.

Per network and sampler (``--samplers``; default the package's default ``sgld``) the table reports:

* Aoyagi's λ and m (``dln.rlct()``), d;
* λ̂ ± MCSE by the package's documented default recipe, ``estimate_llc(model, (x, y), "mse", localization=1,
  batch_size=500, step_size="auto", sampler=..., seed=0)`` with the defaults otherwise (4 chains × (500 burn-in +
  1,000 draws); ``--steps N`` replaces them by N // 3 burn-in + the rest as draws), its R-hat, its bulk ESS per
  1,000 gradient evaluations (``result.summary()``, the run's own gradients, calibration not counted), the
  chosen ε, the calibration's gradient evaluations and seconds, and the wall time (calibration included);
  nothing is tuned against λ;
* bias-corrected λ̂ (``--corrections``, default both): ``reweight`` calls ``estimate_llc_multitemperature(...,
  method="reweight")`` (one run at n/log n; λ as the slope of E_β[n·L_n] against 1/β, with minibatches the
  noise-corrected β²·Var(n·L_n)), ``sweep`` the multi-temperature sweep (5 nβ from n/log²n to n, fit
  λ − (m − 1)/log nβ [+ ν/log² nβ] chosen by the "auto" rule). Both use the default recipe's sampler, batch,
  γ, chains and steps, and the ε it chose at n/log n, the reference temperature of both (``--correction-step
  auto`` calibrates again instead); the sweep scales ε across temperatures by its default
  ``step_size_scaling``. Where ``method=`` does not exist in the checkout, the reweight column says so;
  ``none``: no correction;
* for T ≤ ``--mala-max-size`` (default 10³): a full-batch MALA reference of the same localised tempered
  posterior, so that sampler error and finite-temperature bias are told apart. For noiseless linear-teacher
  data L_n(w) − L_n(w*) = tr(D Σ̂ Dᵀ)/H_out exactly, with D = W_L⋯W_1 − P0 and Σ̂ = XᵀX/n the sufficient
  statistic (benchmarks/time_to_accuracy.py does the same); written as ‖D·chol(Σ̂)‖²_F/H_out it costs no pass
  over the n rows. ``estimate_llc_potential(K, w*, nbeta=n/log n, localization=1, sampler=...)`` with 8 chains ×
  ``--mala-steps`` (default 4·10⁵, half burn-in). ε₀ is the largest step of the calibration grid whose MALA
  acceptance is ≥ 0.5 in a cell of 8 chains × (1,000 + 1,000) steps at w* (``calibrate_potential`` with the
  R-hat and plateau rules switched off: MALA is exact at any ε, so ε only sets the mixing). With ε₀ fixed
  (``--mala-kernel fixed``, the built-in ``"mala"``) the chains drift along the DLN's symmetry directions into
  regions stiffer than w*, and the acceptance over a 2·10⁵-step run fell to 0.2–5 % (measured on the 10² and
  first 10³ shapes; the adapted steps below ended 4–46× smaller than ε₀), so by default the sampler is MALA with a per-chain step multiplier adapted during
  burn-in towards acceptance 0.574 (Robbins–Monro, gain (k + 10)^−0.6) and frozen for the draws
  (``ADAPTIVE_MALA``, a :class:`slt_basins.samplers.Kernel` passed as ``sampler``): every draw then comes from a
  fixed, exact MALA kernel. Its acceptance over the draws and its final ε are reported;
* the 1-minute load average at the start and end of the row, the torch threads, and the seconds of each part.

Targets (issue #13): the bias-corrected λ̂ within 10 % of λ at every size up to 10⁴; 10⁵ measured with its time,
under 15 minutes per shape on 2 cores. GPU: not measured here (no GPU machine in this task).

Usage: python benchmarks/dln_ladder.py [--sizes 1e2 1e3 1e4 1e5] [--shapes 3] [--samplers sgld ...]
       [--steps N] [--n 100000] [--corrections reweight sweep | none] [--mala-steps 400000]
       [--mala-max-size 1e3] [--shape-index K] [--threads 1] [--quick] [--no-save]

``--quick``: n = 10⁴, the 10² size, one shape, 600 steps, MALA 4,000 steps; nothing saved.

Writes benchmarks/results/dln_ladder.csv (rows of earlier runs with other settings are kept: a row is replaced
only by one with the same size, shape, sampler, n and steps, so sizes can be run in separate invocations),
dln_ladder.md (from the whole CSV, with each row's machine, load and git state) and dln_ladder.png (λ̂/λ against
d, one marker per estimator, MCSE error bars, a band at ±10 %).
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from slt_basins import (CalibrationError, LLCWarning, SamplerDivergedError, calibrate_potential, estimate_llc,
                        estimate_llc_multitemperature, estimate_llc_potential, top_eigenvalues)
from slt_basins.calibration import edge_drift, stability_step_size
from slt_basins.options import MODEL_DEFAULTS
from slt_basins.reproduce import STABILITY
from slt_basins.samplers import Kernel, langevin_log_accept, langevin_proposal
from slt_basins.toys import DeepLinearNetwork
from _machine import git_state, machine

OUT = Path(__file__).parent / "results"
BATCH, GAMMA, SEED, DATA_SEED = 500, 1.0, 0, 1
# (L_min, L_max, H_min, H_max) per log10 of the target size: the generator of the module docstring
SIZE_CLASSES = {2: (2, 5, 2, 10), 3: (2, 5, 5, 50), 4: (2, 10, 5, 100), 5: (2, 10, 50, 500)}
WINDOW = 10 ** 0.25  # d within a factor WINDOW of the target
MALA_CHAINS = 8
KEY = ["target", "shape", "sampler", "n", "num_burnin", "num_draws"]


# -- the generator -------------------------------------------------------------------------------------------------
def draw_shape(target: float, k: int) -> dict:
    """Shape k of size class ``target``: widths, rank, teacher seed, d and the number of draws it took."""
    e = int(round(math.log10(target)))
    if e not in SIZE_CLASSES or not math.isclose(target, 10 ** e):
        raise ValueError(f"size {target:g} is not one of 1e2, 1e3, 1e4, 1e5")
    lmin, lmax, hmin, hmax = SIZE_CLASSES[e]
    rng = np.random.default_rng([e, k, 2402])
    for draws in range(1, 1_000_001):
        L = int(rng.integers(lmin, lmax + 1))
        widths = [int(v) for v in rng.integers(hmin, hmax + 1, size=L + 1)]
        d = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        if target / WINDOW <= d <= target * WINDOW:
            break
    else:  # pragma: no cover
        raise RuntimeError(f"no shape of size {target:g} in 10⁶ draws")
    r = min(widths) - int(rng.integers(0, min(widths)))
    return dict(widths=widths, r=r, teacher_seed=1000 * e + k, d=d, draws=draws)


# -- the exact loss through the sufficient statistic ---------------------------------------------------------------
def exact_potential(dln: DeepLinearNetwork, x: torch.Tensor):
    """(K, w*): K(w) = L_n(w) − L_n(w*) for the noiseless teacher data, on (chains, d) parameters, as
    ‖(W_L⋯W_1 − P0)·R‖²_F / H_out with R Rᵀ = Σ̂ = XᵀX/n (exact: y = P0 x row by row)."""
    Ws = dln.teacher()
    P0 = Ws[0]
    for W in Ws[1:]:
        P0 = W @ P0
    R = torch.linalg.cholesky(x.T @ x / x.shape[0])
    shapes, sizes = [W.shape for W in Ws], [W.numel() for W in Ws]
    out = P0.shape[0]

    def K(w):
        parts = torch.split(w, sizes, dim=1)
        P = parts[0].reshape(-1, *shapes[0])
        for p, s in zip(parts[1:], shapes[1:]):
            P = p.reshape(-1, *s) @ P
        D = (P - P0) @ R
        return (D * D).sum((1, 2)) / out

    return K, torch.cat([W.reshape(-1) for W in Ws])


# -- MALA with its step adapted during burn-in ---------------------------------------------------------------------
TARGET_ACCEPT = 0.574  # the optimal MALA acceptance in high dimension (Roberts & Rosenthal 1998)
_LAST: dict = {}  # the chains' final step multipliers, read back after the run


class AdaptiveMALAState(NamedTuple):
    """MALA state with a per-chain step multiplier s = exp(log_s) and the number of adapted steps k."""

    w: torch.Tensor
    loss: torch.Tensor
    grad: torch.Tensor
    log_s: torch.Tensor
    k: torch.Tensor


def _amala_init(w0, loss_and_grad, hyper=None) -> AdaptiveMALAState:
    loss, grad = loss_and_grad(w0)
    zero = torch.zeros(w0.shape[0], dtype=w0.dtype, device=w0.device)
    return AdaptiveMALAState(w0, loss, grad, zero, zero.clone())


def _amala_step(state: AdaptiveMALAState, loss_and_grad, noise, hyper):
    """One MALA step with proposal N(w + (ε·s/2)∇log p, ε·s) per chain. During burn-in (``hyper.adapt``)
    log s follows Robbins–Monro towards acceptance TARGET_ACCEPT, log s += (a − 0.574)/(k + 10)^0.6; after it
    s is frozen, so the draws come from a fixed, exact MALA kernel per chain."""
    z, u = noise[:, :-1], noise[:, -1]
    g = state.log_s.exp().unsqueeze(-1).expand_as(state.w)
    w_new = langevin_proposal(state.w, state.grad, z, hyper, g)
    loss_new, grad_new = loss_and_grad(w_new)
    log_a = langevin_log_accept(state.w, state.loss, state.grad, w_new, loss_new, grad_new, hyper, g)
    a = log_a.clamp(max=0.0).exp()
    take = torch.special.log_ndtr(u) < log_a
    log_s, k = state.log_s, state.k
    if hyper.adapt:
        k = k + 1
        log_s = log_s + (a - TARGET_ACCEPT) / (k + 10) ** 0.6
    _LAST["log_s"] = log_s.detach()
    m = take.unsqueeze(-1)
    return (AdaptiveMALAState(torch.where(m, w_new, state.w), torch.where(take, loss_new, state.loss),
                              torch.where(m, grad_new, state.grad), log_s, k), state.loss, a)


ADAPTIVE_MALA = Kernel("mala_adaptive_step", _amala_init, _amala_step, extra_noise=1, full_batch=True)


# -- the estimators -----------------------------------------------------------------------------------------------
def _messages(caught) -> str:
    return " | ".join(sorted({str(w.message)[:90] for w in caught}))


def calibration_cells(table) -> dict:
    """What the calibration cells cost and found: cells run, their gradient evaluations and seconds, the chain
    loop's ms per step in the cells without divergence (4 chains; the cells' own checks included), and each
    cell's ε and verdict."""
    t = pd.DataFrame(table)
    t = t[t.ran.astype(bool)]
    ok = t[t.diverged == 0]
    steps = (ok.num_burnin + ok.num_draws).sum()
    return dict(calib_cells=int(len(t)), calib_grad_evals=int((t.num_chains * (t.num_draws + t.num_burnin)).sum()),
                calib_cells_s=float(t.wall_s.sum()), cell_ms_per_step=1000 * float(ok.wall_s.sum()) / steps if steps else
                float("nan"), calib_verdicts="; ".join(f"{e:.2g}: {_verdict(str(v))}" for e, v in zip(t.step_size, t.status)))


def _verdict(status: str) -> str:
    """A calibration cell's status, shortened (idempotent: also applied to the stored strings)."""
    if status.startswith("rejected: MALA acceptance of the pooled fit"):
        return "rejected: step-size bias (pooled MALA-acceptance fit)"
    if status.startswith("rejected: MALA acceptance"):
        return status.split(",")[0]
    if status.startswith("unstable"):
        return status.split(" at the chains")[0]
    if status.startswith("accepted; the next smaller"):
        return "accepted, but no plateau (the next smaller ε is not stable and converged)"
    return status[:70]


def default_recipe(model, data, sampler: str, burnin: int, draws: int) -> tuple:
    """The package's documented default recipe; (result or None, row fields). A calibration that finds no step
    size is a measured outcome: its cells' cost and verdicts are kept."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = estimate_llc(model, data, "mse", localization=GAMMA, batch_size=BATCH, step_size="auto",
                             sampler=sampler, num_burnin=burnin, num_draws=draws, seed=SEED, progress=False)
        except (SamplerDivergedError, CalibrationError, ValueError, TypeError) as e:
            wall = time.perf_counter() - t0
            fields = dict(wall_s=wall, note=f"{type(e).__name__}: {str(e)[:300]}")
            if isinstance(e, CalibrationError) and getattr(e, "table", None) is not None:
                fields.update(calibration_cells(e.table), calib_s=wall, calib_drift=edge_drift(e.table) or "")
            return None, fields
    wall = time.perf_counter() - t0
    cal = r.checks["calibration"]
    summ = r.summary().loc["llc"]
    return r, dict(
        step_size=float(r.config["step_size"]), llc=float(r.llc_mean), mcse=float(r.mcse),
        r_hat=float(r.checks["r_hat"]), ess_bulk=float(summ["ess_bulk"]),
        ess_per_1k_grad=float(summ["ess_bulk_per_1k_grad"]), grad_evals=int(r.grad_evals),
        **calibration_cells(cal["table"]),
        calib_s=float(cal["wall_time_s"]), run_s=float(r.checks["wall_time_s"]),
        checks_s=float(r.checks.get("checks_time_s") or 0.0), wall_s=wall,
        probe_accept=r.checks.get("mala_accept"), step_stability_end=r.checks.get("step_stability_end"),
        diverged=len(r.diverged), note=_messages(caught))


# the documented fallback when step_size="auto" finds nothing: the reproduction suite's ε·(nβ·h* + γ)/4 = STABILITY
FALLBACK_STRETCH = 2  # (0.05) at w*, with twice the default steps (docs page *Estimating the LLC*, "The recipe", step 2)


def fallback_rule(model, data, sampler: str, burnin: int, draws: int) -> dict:
    """The recipe's documented fallback where ``step_size="auto"`` raised CalibrationError: a numeric ε with
    ε·(nβ·h* + γ)/4 = 0.05 at w* (h* the top Hessian eigenvalue of the loss on up to 4,000 examples, as the
    reproduction suite does), twice the steps, and every warning kept (a chain-end stability warning is the
    recipe's reason to distrust the number). Row fields prefixed ``fb_``."""
    x, y = data
    t0 = time.perf_counter()
    h = float(top_eigenvalues(model, (x[:4000], y[:4000]), loss="mse", k=1)[0])
    eps = stability_step_size(h, len(x) / math.log(len(x)), GAMMA, ratio=STABILITY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = estimate_llc(model, data, "mse", localization=GAMMA, batch_size=BATCH, step_size=eps, sampler=sampler,
                             num_burnin=FALLBACK_STRETCH * burnin, num_draws=FALLBACK_STRETCH * draws, seed=SEED,
                             progress=False)
        except SamplerDivergedError as e:
            return dict(fb_step_size=eps, fb_h_star=h, fb_wall_s=time.perf_counter() - t0,
                        fb_note=f"SamplerDivergedError: {str(e)[:200]}")
    summ = r.summary().loc["llc"]
    return dict(fb_step_size=eps, fb_h_star=h, fb_llc=float(r.llc_mean), fb_mcse=float(r.mcse),
                fb_r_hat=float(r.checks["r_hat"]), fb_ess_per_1k_grad=float(summ["ess_bulk_per_1k_grad"]),
                fb_stability_end=r.checks.get("step_stability_end"), fb_diverged=len(r.diverged),
                fb_wall_s=time.perf_counter() - t0, fb_note=_messages(caught))


def has_reweight() -> bool:
    return "method" in inspect.signature(estimate_llc_multitemperature).parameters


def correction(method: str, model, data, sampler: str, eps, burnin: int, draws: int) -> dict:
    """A bias-corrected λ̂ by ``estimate_llc_multitemperature`` (``method="reweight"`` or the sweep)."""
    p = f"{method}_"
    if method == "reweight" and not has_reweight():
        return {p + "note": "not available: estimate_llc_multitemperature has no method= argument in this checkout"}
    kw = dict(step_size=eps, localization=GAMMA, batch_size=BATCH, sampler=sampler, num_burnin=burnin,
              num_draws=draws, seed=SEED, progress=False)
    if method == "reweight":
        kw["method"] = "reweight"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mt = estimate_llc_multitemperature(model, data, "mse", **kw)
        except (SamplerDivergedError, CalibrationError, ValueError, TypeError) as e:
            return {p + "wall_s": time.perf_counter() - t0, p + "note": f"{type(e).__name__}: {str(e)[:300]}"}
    tab = mt.table
    m = getattr(mt, "multiplicity", None)
    eps_col = tab["step_size"] if "step_size" in tab else [float("nan")] * len(tab)
    out = {p + "llc": float(mt.llc_mean), p + "se": float(mt.mcse), p + "m": float("nan") if m is None else float(m),
           p + "fit": str(getattr(mt, "fit", method)), p + "wall_s": time.perf_counter() - t0,
           p + "temperatures": "; ".join(f"nβ {t:.4g}: {v:.4g} ± {s:.2g}" + (f" (ε {e:.2g})" if e == e else "")
                                         for t, v, s, e in zip(tab["nbeta"], tab["llc_mean"], tab["mcse"], eps_col)),
           p + "note": _messages(caught)}
    if "r_hat" in tab:
        out[p + "r_hat_max"] = float(pd.to_numeric(tab["r_hat"], errors="coerce").max())
    elif getattr(mt, "r_hat", None) is not None:
        out[p + "r_hat_max"] = float(mt.r_hat)
    if hasattr(mt, "slope"):  # the reweighting's local slope dλ̂/dlog nβ and its plain λ̂(t₀)
        out[p + "slope"], out[p + "slope_se"] = float(mt.slope), float(mt.slope_se)
    return out


def mala_reference(dln, x, n: int, steps: int, kernel: str = "adaptive") -> dict:
    """Full-batch MALA on the exact L_n (module docstring): ε₀ from the acceptance scan at w*, then 8 chains ×
    steps, with the step adapted during burn-in (``kernel="adaptive"``) or fixed at ε₀ (``"fixed"``)."""
    K, w_star = exact_potential(dln, x)
    nbeta = n / math.log(n)
    t0 = time.perf_counter()
    _LAST.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cal = calibrate_potential(K, w_star, nbeta=nbeta, sampler="mala", num_chains=MALA_CHAINS, num_draws=1000,
                                      num_burnin=1000, max_rhat=1e9, plateau_tol=1e9, seed=SEED, progress=False)
            eps = float(cal.step_size)
            t1 = time.perf_counter()
            r = estimate_llc_potential(K, w_star, nbeta=nbeta, localization=GAMMA, step_size=eps,
                                       sampler=ADAPTIVE_MALA if kernel == "adaptive" else "mala",
                                       num_chains=MALA_CHAINS, num_burnin=steps // 2, num_draws=steps - steps // 2,
                                       seed=SEED, progress=False)
        except (SamplerDivergedError, CalibrationError) as e:
            return dict(mala_wall_s=time.perf_counter() - t0, mala_note=f"{type(e).__name__}: {str(e)[:300]}")
    final = (eps * _LAST["log_s"].exp()).cpu().numpy() if kernel == "adaptive" and "log_s" in _LAST else np.array([eps])
    return dict(mala_llc=float(r.llc_mean), mala_mcse=float(r.mcse), mala_r_hat=float(r.checks["r_hat"]),
                mala_accept=float(r.checks["mala_accept"]), mala_kernel=kernel, mala_eps0=eps,
                mala_eps=float(np.exp(np.log(final).mean())), mala_eps_range=f"{final.min():.3g}–{final.max():.3g}",
                mala_steps=steps, mala_calib_s=t1 - t0, mala_wall_s=time.perf_counter() - t0,
                mala_note=_messages(caught))


# -- one network -----------------------------------------------------------------------------------------------------
def setup(target: float, k: int, args) -> tuple:
    """(dln, x, y, base row fields) of shape k of size ``target``."""
    shape = draw_shape(target, k)
    dln = DeepLinearNetwork(shape["widths"], shape["r"], teacher_seed=shape["teacher_seed"])
    truth = dln.rlct()
    assert dln.d == shape["d"]
    x, y = dln.dataset(args.n, seed=DATA_SEED)
    base = dict(target=int(target), shape=k, widths=str(shape["widths"]), r=shape["r"], d=shape["d"],
                draws=shape["draws"], lam=float(truth.value), m=int(truth.multiplicity), n=args.n,
                nbeta=args.n / math.log(args.n), num_burnin=args.burnin, num_draws=args.draws,
                threads=torch.get_num_threads(), machine=machine(), git=git_state(),
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    print(f"\n== size {target:g}, shape {k}: widths {shape['widths']}, r = {shape['r']}, d = {shape['d']}, "
          f"λ = {float(truth.value):g}, m = {truth.multiplicity}", flush=True)
    return dln, x, y, base


def reference(dln, x, args) -> dict:
    load = os.getloadavg()[0]
    ref = mala_reference(dln, x, args.n, args.mala_steps, args.mala_kernel)
    ref.update(mala_load=load, mala_load_end=os.getloadavg()[0], mala_git=git_state())
    print("MALA reference:", {k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in ref.items()}, flush=True)
    return ref


def run_shape(target: float, k: int, args) -> list[dict]:
    dln, x, y, base = setup(target, k, args)
    ref = reference(dln, x, args) if target <= args.mala_max_size else {}
    rows = []
    for sampler in args.samplers:
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        r, fields = default_recipe(dln.model(), (x, y), sampler, args.burnin, args.draws)
        row = {**base, "sampler": sampler, **fields}
        print(f"{sampler}: " + ", ".join(f"{k_} = {v:.4g}" if isinstance(v, float) else f"{k_} = {v}"
                                         for k_, v in fields.items()), flush=True)
        if r is None and args.fallback and str(fields.get("note", "")).startswith("CalibrationError"):
            row.update(fallback_rule(dln.model(), (x, y), sampler, args.burnin, args.draws))
            print("  fallback rule: " + ", ".join(f"{k_} = {v:.4g}" if isinstance(v, float) else f"{k_} = {v}"
                                                  for k_, v in row.items() if k_.startswith("fb_")), flush=True)
        for method in args.corrections:
            if r is not None:
                eps = row["step_size"]
            elif "fb_llc" in row and target <= args.fallback_corrections_max:
                eps = row["fb_step_size"]  # the corrections at the fallback's ε, with the default steps
            else:
                break
            eps = eps if args.correction_step == "recipe" else "auto"
            c = correction(method, dln.model(), (x, y), sampler, eps, args.burnin, args.draws)
            row.update(c)
            print(f"  correction {method}: " + ", ".join(f"{k_} = {v:.4g}" if isinstance(v, float) else f"{k_} = {v}"
                                                         for k_, v in c.items()), flush=True)
        row.update(ref)
        row.update(load_start=load0, load_end=os.getloadavg()[0],
                   row_wall_s=time.perf_counter() - t0 + ref.get("mala_wall_s", 0.0))
        rows.append(row)
    return rows


def reference_only(target: float, k: int, args) -> list[dict]:
    """``--reference-only``: recompute the MALA reference of one shape and put it into the CSV rows of that
    (size, shape, n) (every sampler and budget); a row with sampler "none" when there is none yet."""
    dln, x, _, base = setup(target, k, args)
    ref = reference(dln, x, args)
    csv = args.out / "dln_ladder.csv"
    old = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=KEY)
    mine = old[(old.target == int(target)) & (old["shape"] == k) & (old.n == args.n)]
    if not len(mine):
        return [{**base, "sampler": "none", **ref, "load_start": ref["mala_load"], "load_end": ref["mala_load_end"],
                 "row_wall_s": ref.get("mala_wall_s", 0.0)}]
    rows = []
    for _, r in mine.iterrows():
        row = {c: v for c, v in r.items() if not str(c).startswith("mala_")}
        prev = r.get("mala_wall_s")
        row["row_wall_s"] = float(r.get("row_wall_s", 0.0)) - (float(prev) if prev == prev and prev is not None else 0.0) \
            + ref.get("mala_wall_s", 0.0)
        rows.append({**row, **ref})
    return rows


# -- report ------------------------------------------------------------------------------------------------------------
def _f(v, fmt="{:.4g}"):
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _pm(df_row, a, b):
    v, s = df_row.get(a), df_row.get(b)
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f"{v:.4g} ± {s:.2g} ({v / df_row['lam']:.3f})"


def _total(row) -> float:
    """Seconds of the row: the recipe, its corrections and the shape's MALA reference, as measured."""
    parts = [row.get(c) for c in ("wall_s", "fb_wall_s", "reweight_wall_s", "sweep_wall_s", "mala_wall_s")]
    return float(sum(v for v in parts if isinstance(v, (int, float)) and math.isfinite(v)))


def corrected(row) -> tuple:
    """(value, s.e., method) of the bias-corrected λ̂: reweight when measured, else the sweep."""
    for m in ("reweight", "sweep"):
        v = row.get(f"{m}_llc")
        if v is not None and isinstance(v, float) and math.isfinite(v):
            return v, row.get(f"{m}_se"), m
    return float("nan"), float("nan"), None


def default_steps(df: pd.DataFrame) -> pd.Series:
    return (df.num_burnin == MODEL_DEFAULTS.num_burnin) & (df.num_draws == MODEL_DEFAULTS.num_draws)


def figure(df: pd.DataFrame, path: Path) -> None:
    """λ̂/λ against d: one marker per estimator (filled: default budget; hollow: short timing runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    ax.axhspan(0.9, 1.1, color="0.88", label="±10 % of λ")
    ax.axhline(1.0, color="k", lw=0.8)
    refs = df.drop_duplicates(["target", "shape", "n"])
    series = [(f"default recipe ({s})", df[df.sampler == s], "llc", "mcse", "o", 1.0) for s in sorted(df.sampler.unique())]
    if "fb_llc" in df:
        series.append(("fallback rule (auto found no ε)", df, "fb_llc", "fb_mcse", "v", 1.0))
    series += [("reweight (method='reweight')", df, "reweight_llc", "reweight_se", "s", 1.07),
               ("sweep (5 temperatures)", df, "sweep_llc", "sweep_se", "D", 1.14),
               ("full-batch MALA reference", refs, "mala_llc", "mala_mcse", "^", 0.93)]
    for i, (label, sub, col, se, marker, shift) in enumerate(series):
        if col not in sub or sub[col].isna().all():
            continue
        sub = sub[sub[col].notna()]
        color = f"C{i}"
        is_full = default_steps(sub) | (col == "mala_llc")  # MALA has its own budget (--mala-steps)
        for full, part in ((True, sub[is_full]), (False, sub[~is_full])):
            if len(part):
                ax.errorbar(part.d * shift, part[col] / part.lam, yerr=part[se] / part.lam, fmt=marker, ms=5,
                            capsize=2, color=color, mfc=color if full else "none",
                            label=label + ("" if full else ", short timing run"))
    failed = df[df.llc.isna() & (df.fb_llc.isna() if "fb_llc" in df else True)] if "llc" in df else df.iloc[:0]
    if len(failed):
        lo = ax.get_ylim()[0]
        ax.scatter(failed.d, np.full(len(failed), lo + 0.02), marker="x", color="C0",
                   label="default recipe: no step size found (CalibrationError)")
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters d")
    ax.set_ylabel("λ̂ / λ (Aoyagi)")
    ns = ", ".join(f"{v:,}" for v in sorted(df.n.unique()))
    ax.set_title(f"DLN ladder: n = {ns}, batch {BATCH}, γ = {GAMMA:g}, nβ = n/log n (error bars: MCSE)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def projection(df: pd.DataFrame) -> list[str]:
    """Projected seconds per shape at the default budget, from every row's measured parts (short ones included).
    Where the calibration found no step size (no run), the time per step is the calibration cells'."""
    steps = MODEL_DEFAULTS.num_burnin + MODEL_DEFAULTS.num_draws
    lines = ["| size | rows (steps) | ms per step, 4 chains | calibration s | recipe s | reweight s | sweep s "
             "| per shape: recipe + reweight + sweep | MALA reference s (steps) |", "|---|---|---|---|---|---|---|---|---|"]
    df = df[df.calib_s.notna()] if "calib_s" in df else df.iloc[:0]
    for target, g in df.groupby("target"):
        own = g.num_burnin + g.num_draws
        scale = steps / own
        from_cells = g.run_s.isna()
        ms = (1000 * g.run_s / own).where(~from_cells, g.get("cell_ms_per_step"))
        run = (g.run_s + g.checks_s.fillna(0)).where(~from_cells, ms * own / 1000)
        recipe = g.calib_s + run * scale
        est = {}
        for m in ("reweight", "sweep"):
            col = f"{m}_wall_s"
            if col in g and g[col].notna().any():
                est[m], est[m + "_src"] = float((g[col] * scale).mean()), "measured"
            else:  # not measured: one run (reweight) or five runs (sweep) of the recipe's length, no calibration
                est[m], est[m + "_src"] = float((run * scale).mean() * (1 if m == "reweight" else 5)), "est."
        total = recipe.mean() + est["reweight"] + est["sweep"]
        refs = df[(df.target == target)].drop_duplicates(["shape", "n"])
        mala = refs["mala_wall_s"].dropna() if "mala_wall_s" in refs else pd.Series(dtype=float)
        msteps = sorted(refs["mala_steps"].dropna().astype(int).unique()) if "mala_steps" in refs else []
        budgets = ", ".join(sorted({f"{b + d_}" for b, d_ in zip(g.num_burnin, g.num_draws)}))
        note = " (from calibration cells)" if from_cells.all() else (" (some from cells)" if from_cells.any() else "")
        lines.append(f"| {target:.0e} | {len(g)} ({budgets}) | {ms.mean():.3g} ({ms.min():.3g}–{ms.max():.3g}){note} | "
                     f"{g.calib_s.mean():.0f} ({g.calib_s.min():.0f}–{g.calib_s.max():.0f}) | {recipe.mean():.0f} | "
                     f"{est['reweight']:.0f} ({est['reweight_src']}) | {est['sweep']:.0f} ({est['sweep_src']}) | "
                     f"{total / 60:.1f} min | "
                     + (f"{mala.mean():.0f} ({', '.join(map(str, msteps))})" if len(mala) else "—") + " |")
    return lines


def comparison(df: pd.DataFrame) -> list[str]:
    """The samplers side by side on each shape with a MALA reference: λ̂/MALA (the sampler's error, which the
    finite-temperature bias does not enter), R-hat and bulk ESS per 1,000 gradient evaluations."""
    full = df[default_steps(df) & df.mala_llc.notna()] if "mala_llc" in df else df.iloc[:0]
    samplers = sorted(full.sampler.unique()) if len(full) else []
    if len(samplers) < 2:
        return []
    L = ["", "## Samplers against the MALA reference (default budget)", "",
         "Each sampler runs the default recipe (`step_size=\"auto\"`, its own calibration). λ̂/MALA is the sampler's "
         "error alone: the MALA reference is the exact value of the same estimand (same nβ, γ), so the "
         "finite-temperature bias cancels. ESS/1k grad: bulk ESS per 1,000 gradient evaluations of the run; "
         "calibration seconds in brackets after the wall time.", "",
         "| size | shape | d | MALA ± MCSE | " + " | ".join(f"{s}: λ̂/MALA (R-hat; ESS/1k grad; wall s)" for s in samplers)
         + " |", "|---|---|---|---|" + "---|" * len(samplers)]
    ratios: dict = {s: [] for s in samplers}
    for (t, k), g in full.groupby(["target", "shape"]):
        ref, se = float(g.mala_llc.iloc[0]), float(g.mala_mcse.iloc[0])
        cells = []
        for s in samplers:
            r = g[g.sampler == s]
            if not len(r) or not math.isfinite(float(r.llc.iloc[0])):
                cells.append("no ε (CalibrationError)" if len(r) else "—")
                continue
            r = r.iloc[0]
            q = r["llc"] / ref
            ratios[s].append(q)
            cells.append(f"{q:.3f} ± {r['mcse'] / ref:.3f} ({r['r_hat']:.3f}; {_f(r.get('ess_per_1k_grad'), '{:.3g}')}; "
                         f"{r['wall_s']:.0f} [{_f(r.get('calib_s'), '{:.0f}')}])")
        L.append(f"| {t:.0e} | {k} | {int(g.d.iloc[0])} | {ref:.4g} ± {se:.2g} | " + " | ".join(cells) + " |")
    L += [""] + [f"- {s}: estimate on {len(v)} of {int(full[full.sampler == s].shape[0])} shapes; within 10 % of the "
                 f"MALA reference on {sum(abs(q - 1) <= 0.1 for q in v)}"
                 + (f"; λ̂/MALA {min(v):.3f}–{max(v):.3f}" if v else "") for s, v in ratios.items()]
    return L


def write_md(df: pd.DataFrame, path: Path) -> None:
    everything = df
    df = df[df.sampler == MODEL_DEFAULTS.sampler] if (df.sampler == MODEL_DEFAULTS.sampler).any() else df
    full = df[default_steps(df)]
    sizes_done = {t: int(g["shape"].nunique()) for t, g in full.groupby("target")}
    missing = [f"{t:.0e}" for t in (100, 1000, 10_000, 100_000) if sizes_done.get(t, 0) < 3]
    no_corr = full[[not math.isfinite(corrected(r)[0]) for _, r in full.iterrows()]] if len(full) else full
    partial = bool(missing) or len(no_corr) > 0
    L = ["# DLN ladder: λ̂ against Aoyagi's λ on random deep linear networks", ""]
    if partial:
        L += [f"**Partial.** Sizes without 3 shapes at the default budget: {', '.join(missing) or 'none'}; rows "
              f"without a bias-corrected λ̂: {len(no_corr)}"
              + (" (estimate_llc_multitemperature has no method='reweight' in the checkout that ran them)"
                 if not has_reweight() else "") + ".", ""]
    L += ["Settings (Furman & Lau 2024, arXiv:2402.03698): noiseless teacher data, x ~ N(0, I), loss \"mse\" (mean "
          f"over the batch and the outputs), batch {BATCH}, γ = {GAMMA:g}, nβ = n/log n. Default recipe: "
          "`estimate_llc(model, data, \"mse\", localization=1, batch_size=500, step_size=\"auto\", seed=0)`, 4 chains × "
          "(500 burn-in + 1,000 draws). Shapes: the generator of `benchmarks/dln_ladder.py` (widths and depth drawn "
          "per size class, d within 0.56–1.78× the target, a random rank r shared by every layer: minimal points). Corrections: `estimate_llc_multitemperature(..., "
          "method=\"reweight\")` and the 5-temperature sweep (n/log²n … n), with the recipe's sampler, steps and chosen "
          "ε at n/log n. MALA reference: the same localised posterior at nβ = n/log n sampled exactly, on the loss "
          "written through Σ̂ = XᵀX/n, by MALA with its step adapted during burn-in and frozen for the draws "
          "(8 chains; `--mala-steps` per chain, half burn-in); it separates the sampler's error (recipe − MALA) from "
          "the estimand's finite-temperature and localisation bias (MALA − λ).",
          "", "Machines, loads and code of the rows:", ""]
    for (mach, thr), g in everything.groupby(["machine", "threads"]):
        ml = pd.concat([g[c] for c in ("mala_load", "mala_load_end") if c in g]).dropna()
        mg = sorted(g["mala_git"].dropna().unique()) if "mala_git" in g else []
        L.append(f"- {mach}; torch threads {thr}: {len(g)} rows, 1-minute load average {g.load_start.min():.1f}–"
                 f"{g.load_start.max():.1f} at the start of a row and {g.load_end.min():.1f}–{g.load_end.max():.1f} at "
                 f"its end" + (f", {ml.min():.1f}–{ml.max():.1f} around the MALA references" if len(ml) else "")
                 + f"; code {', '.join(sorted(g.git.unique()))}" + (f" (MALA references: {', '.join(mg)})" if mg else "")
                 + f"; {', '.join(sorted(g.date.str[:10].unique()))}.")
    L += ["", "## λ̂ per network (default budget)", "",
          "λ̂/λ in brackets. ESS per 1k grad: bulk ESS of the run per 1,000 gradient evaluations of the run "
          "(calibration not counted; its evaluations are in the CSV). Wall: calibration + run + checks.", "",
          "| size | shape | widths | r | d | λ (m) | sampler | ε (auto) | λ̂ ± MCSE (default recipe) | R-hat | "
          "ESS/1k grad | wall s | reweight λ̂ ± s.e. | sweep λ̂ ± s.e. (fit) | MALA reference ± MCSE (acc.; R-hat) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in full.sort_values(["target", "shape", "sampler"]).iterrows():
        corr = [_pm(r, f"{m}_llc", f"{m}_se") + (" **> d/2: an artefact**" if r.get(f"{m}_llc", 0) - 3 * r.get(
            f"{m}_se", 0) > r["d"] / 2 else "") for m in ("reweight", "sweep")]
        for i, m in enumerate(("reweight", "sweep")):
            if corr[i] == "—" and isinstance(r.get(f"{m}_note"), str) and r.get(f"{m}_note", "").startswith("not avail"):
                corr[i] = "not available"
        if corr[1] != "—" and isinstance(r.get("sweep_fit"), str):
            corr[1] += f" ({r['sweep_fit']})"
        mala = _pm(r, "mala_llc", "mala_mcse")
        if mala != "—":
            mala += f" (acc. {r['mala_accept']:.2f}; R-hat {r['mala_r_hat']:.3f})"
        elif isinstance(r.get("mala_note"), str) and r.get("mala_note"):
            mala = r["mala_note"][:60]
        est = _pm(r, "llc", "mcse")
        if est == "—" and isinstance(r.get("note"), str):
            est = "no ε: " + r["note"].split(":")[0] if r["note"].startswith("CalibrationError") else r["note"][:50]
            fb = _pm(r, "fb_llc", "fb_mcse")
            if fb == "—" and str(r.get("fb_note", "")).startswith("SamplerDivergedError"):
                est += f"; fallback rule ε = {r['fb_step_size']:.2g}: every chain diverged"
            elif fb != "—":
                est += (f"; fallback rule ε = {r['fb_step_size']:.2g}: {fb}, R-hat {r['fb_r_hat']:.3f}, "
                        f"end ratio {_f(r.get('fb_stability_end'), '{:.2g}')}")
        L.append(f"| {r['target']:.0e} | {r['shape']} | {r['widths']} | {r['r']} | {r['d']} | {r['lam']:g} ({r['m']}) | "
                 f"{r['sampler']} | {_f(r.get('step_size'), '{:.3g}')} | {est} | "
                 f"{_f(r.get('r_hat'), '{:.3f}')} | {_f(r.get('ess_per_1k_grad'), '{:.3g}')} | "
                 f"{_f(r.get('wall_s'), '{:.0f}')} | {corr[0]} | {corr[1]} | {mala} |")
    failed = df[df.llc.isna() & df.note.astype(str).str.startswith("CalibrationError")] if "llc" in df else df.iloc[:0]
    if len(failed):
        L += ["", "## Rows where step_size=\"auto\" found no step size", "",
              "The default recipe raised `CalibrationError` (no ε passed the calibration rules); the cells run, "
              "each as ε: verdict:", ""]
        for _, r in failed.sort_values(["target", "shape"]).iterrows():
            L.append(f"- {r['target']:.0e} shape {r['shape']} ({r['sampler']}, {r['num_burnin']} + {r['num_draws']} "
                     f"steps): " + "; ".join(f"{e}: {_verdict(v)}" for e, v in re.findall(
                         r"(\d[\d.e+-]*): (.*?)(?=; \d[\d.e+-]*: |$)", str(r.get("calib_verdicts", "")))) + "."
                     + (f" Diagnosis: {r['calib_drift']}." if isinstance(r.get("calib_drift"), str) and r["calib_drift"]
                        else ""))
    L += ["", "## Seconds per row (1 torch thread on 2 shared cores)", "",
          "| size | shape | sampler | steps | calibration s (cells) | run s | checks s | recipe wall s | "
          "sweep s | reweight s | MALA s (of which ε scan) | row total s (recipe + corrections + MALA) | "
          "load start → end |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.sort_values(["target", "shape", "sampler", "num_draws"]).iterrows():
        L.append(f"| {r['target']:.0e} | {r['shape']} | {r['sampler']} | {r['num_burnin']} + {r['num_draws']} | "
                 f"{_f(r.get('calib_s'), '{:.0f}')} ({_f(r.get('calib_cells'), '{:.0f}')}) | {_f(r.get('run_s'), '{:.1f}')} | "
                 f"{_f(r.get('checks_s'), '{:.1f}')} | {_f(r.get('wall_s'), '{:.0f}')} | {_f(r.get('sweep_wall_s'), '{:.0f}')} | "
                 f"{_f(r.get('reweight_wall_s'), '{:.0f}')} | {_f(r.get('mala_wall_s'), '{:.0f}')} "
                 f"({_f(r.get('mala_calib_s'), '{:.0f}')}) | {_f(_total(r), '{:.0f}')} | "
                 f"{r['load_start']:.1f} → {r['load_end']:.1f} |")
    L += ["", "## Projected cost per shape at the default budget", "",
          "Means over the measured rows of each size, short-budget rows included: their calibration cells have the "
          "size of the default run's (100 burn-in + 200 draws), so their calibration time is the default's; the run "
          "and its checks, and each correction's measured wall time, are scaled by 1,500 / the row's steps (the "
          "corrections reuse the recipe's ε and do not calibrate). The checks inside each temperature do not all "
          "scale with the steps, so for short rows the projection errs high.", ""] + projection(df)
    L += ["", "## Targets", ""]
    for t in (100, 1000, 10_000):
        g = full[full.target == t]
        parts = []
        for m in ("reweight", "sweep"):
            col = f"{m}_llc"
            q = (g[col] / g.lam).dropna() if col in g else pd.Series(dtype=float)
            if len(q):
                ok = bool(((q - 1).abs() <= 0.1).all())
                parts.append(f"{m} **{'met' if ok else 'NOT met'}** on {len(q)} row(s) (λ̂/λ "
                             f"{', '.join(f'{v:.3f}' for v in q)})")
        fb = g["fb_llc"].notna() if "fb_llc" in g else pd.Series(False, index=g.index)
        if fb.any():
            parts.append(f"{int(fb.sum())} of these row(s) ran at the fallback rule's ε (step_size=\"auto\" found none)")
        none = int((g.llc.isna() & ~fb).sum()) if "llc" in g else 0
        if none:
            parts.append(f"{none} of {len(g)} row(s) have no estimate at all (the default recipe found no step size), "
                         "so the target is **NOT met** there")
        L.append(f"- {t:.0e}: bias-corrected λ̂ within 10 % of λ: " + ("; ".join(parts) if parts else "**not measured**")
                 + ".")
    g = df[df.target == 100_000]
    if len(g):
        full5 = g[default_steps(g)]
        est = [_f(r.get("llc") if r.get("llc") == r.get("llc") else r.get("fb_llc"), "{:.5g}") for _, r in full5.iterrows()]
        L.append(f"- 1e+05: {len(full5)} shape(s) at the default budget; seconds per shape (recipe, with its fallback "
                 f"where auto found no step size): {', '.join(f'{_total(r):.0f}' for _, r in full5.iterrows())} "
                 f"(target: under 900 s per shape on 2 cores); λ̂ {', '.join(est)} against λ "
                 f"{', '.join(f'{v:g}' for v in full5.lam)}; no correction run at this size.")
    else:
        L.append("- 1e+05: **not measured**.")
    L += ["- GPU: not measured (no GPU machine in this task).", "",
          "Figure: `dln_ladder.png` (λ̂/λ against d; filled markers: default budget, hollow: short timing runs; "
          "error bars: MCSE or the fit's s.e.; grey band: ±10 %). Every column of every row: `dln_ladder.csv`."]
    L += comparison(everything)
    path.write_text("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e2, 1e3, 1e4, 1e5])
    ap.add_argument("--shapes", type=int, default=3, help="shapes 0 … SHAPES−1 per size")
    ap.add_argument("--shape-index", type=int, nargs="+", default=None, help="run only these shape indices")
    ap.add_argument("--samplers", nargs="+", default=[MODEL_DEFAULTS.sampler])
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per chain (a third burn-in); default the package's 500 burn-in + 1000 draws")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--corrections", nargs="+", default=["reweight", "sweep"], choices=["reweight", "sweep", "none"])
    ap.add_argument("--correction-step", choices=["recipe", "auto"], default="recipe",
                    help="ε of the corrections: the default recipe's chosen ε (at n/log n), or step_size='auto' again")
    ap.add_argument("--mala-steps", type=int, default=400_000, help="MALA reference steps per chain (half burn-in)")
    ap.add_argument("--mala-max-size", type=float, default=1e3)
    ap.add_argument("--mala-kernel", choices=["adaptive", "fixed"], default="adaptive",
                    help="MALA's step adapted during burn-in (default) or fixed at the scan's ε₀")
    ap.add_argument("--reference-only", action="store_true",
                    help="only (re)compute the MALA reference of the shapes and write it into their CSV rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="n = 10⁴, size 10², one shape, 600 steps; nothing saved")
    ap.add_argument("--no-fallback", dest="fallback", action="store_false",
                    help="skip the documented fallback rule where step_size='auto' finds no step size")
    ap.add_argument("--fallback-corrections-max", type=float, default=1e4,
                    help="run the corrections at the fallback's ε only up to this size")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite the md and png from the CSV; run nothing")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the CSV, md and png (default benchmarks/results)")
    args = ap.parse_args()
    if args.report_only:
        df = pd.read_csv(args.out / "dln_ladder.csv")
        write_md(df, args.out / "dln_ladder.md")
        figure(df, args.out / "dln_ladder.png")
        return
    if args.quick:  # nothing saved, unless --out names another folder
        args.n, args.sizes, args.shapes, args.steps, args.mala_steps = 10_000, [1e2], 1, 600, 4000
        args.no_save = args.no_save or args.out == OUT
    torch.set_num_threads(args.threads)
    if args.steps is None:
        args.burnin, args.draws = MODEL_DEFAULTS.num_burnin, MODEL_DEFAULTS.num_draws
    else:
        args.burnin, args.draws = args.steps // 3, args.steps - args.steps // 3
    methods = [c for c in dict.fromkeys(args.corrections) if c != "none"]
    args.corrections = methods
    print(f"{machine()}; corrections: {methods or 'none'} (method='reweight' "
          f"{'available' if has_reweight() else 'not available'} in this checkout)", flush=True)
    rows = []
    for target in args.sizes:
        for k in (args.shape_index if args.shape_index is not None else range(args.shapes)):
            rows += (reference_only if args.reference_only else run_shape)(target, k, args)
            if not args.no_save:  # after every shape, so that an interrupted ladder keeps what it measured
                save(pd.DataFrame(rows), args.out)
    df = pd.DataFrame(rows)
    print(df.drop(columns=["machine", "note"], errors="ignore").to_string(index=False))


def save(df: pd.DataFrame, out: Path) -> None:
    """Merge ``df`` into out/dln_ladder.csv (rows with the same KEY replaced) and redraw the md and png."""
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "dln_ladder.csv"
    if csv.exists():  # keep rows of earlier runs with other (size, shape, sampler, n, steps)
        old = pd.read_csv(csv)
        mala = [c for c in old.columns if c.startswith("mala_")]
        if mala and ("mala_llc" not in df or df["mala_llc"].isna().any()):
            # a shape's MALA reference is kept until it is recomputed (it does not depend on the sampler run)
            refs = old.dropna(subset=["mala_llc"]).drop_duplicates(["target", "shape", "n"])[["target", "shape", "n"] + mala]
            fresh = df[[c for c in df.columns if not c.startswith("mala_")]]
            keep = df[df["mala_llc"].notna()] if "mala_llc" in df else df.iloc[:0]
            df = pd.concat([keep, fresh[~fresh.index.isin(keep.index)].merge(refs, on=["target", "shape", "n"], how="left")],
                           ignore_index=True)
        old = old[~old.set_index(KEY).index.isin(df.set_index(KEY).index)]
        df = pd.concat([old, df], ignore_index=True)
    df = df.sort_values(KEY, kind="stable").reset_index(drop=True)
    df.to_csv(csv, index=False)
    write_md(df, out / "dln_ladder.md")
    figure(df, out / "dln_ladder.png")
    print(f"wrote {csv}, {out / 'dln_ladder.md'} and {out / 'dln_ladder.png'}", flush=True)


if __name__ == "__main__":
    main()
