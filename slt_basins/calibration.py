"""Choose the step size (and localization, nβ) of an LLC estimate automatically, without a reference.

:func:`calibrate` (a model and its data) and :func:`calibrate_potential` (a loss K(w) given directly)
run short LLC estimates over a grid of step sizes ε × localizations γ (× optionally nβ), record the
diagnostics of every cell in a table, and pick a setting by the rules below. No HMC or other
reference sampler is involved: every rule uses quantities the sampler measures about itself.

The rules (applied by the pure function :func:`select_setting` to the table, in this order):

1. **Stable.** No chain diverged, and the step-size stability ε·(nβ·h + γ)/c < 1 at the chains'
   final positions (h the largest Hessian eigenvalue there, c = 4 for the Langevin kernels, 8 for
   SGNHT; ``checks["step_stability_end"]``). Above 1 the discretised chain is unstable in the
   stiffest direction it met, even if it has not blown up yet.
2. **Accepted.** Stable, and

   * *small discretisation bias*: the MALA acceptance probability a of the sampler's own proposals
     from positions of the chains during the draws and at their ends (``checks["mala_accept"]``;
     "Pooled over the scan" below) is high enough. For an unadjusted
     kernel (SGLD, RMSprop-SGLD) the criterion is on the *1-D equivalent acceptance*
     a₁ = 1 − (1 − a)/√d ≥ ``min_accept`` (default 0.998), with d the number of sampled parameters.
     Reason: on a d-dimensional Gaussian sampled by SGLD with ε·A/4 = s in every direction, the
     rejection of Metropolis-adjusting its proposal is 1 − a ≈ 0.64·√d·s^{3/2} (fitted numerically
     for d = 1…1000 and s ≤ 0.1), while λ̂ is inflated by the factor 1/(1 − s) (the step-size
     bias of the docs page *Theory*) whatever d is. A threshold on the raw joint acceptance would therefore allow a 40 %
     bias at d = 1 (a = 0.9 at s ≈ 0.3) and force needlessly small steps at large d; a₁ ≥ 0.998
     corresponds to s ≈ 0.02, a variance inflation of about 2 % in the stiffest direction, at every
     d. Where most parameters are flat (a singular model) the stiff directions dominate the
     rejection and √d over-normalises, so the rule is more lenient there; rule 3 backs it up.
     *Pooled over the scan.* A cell's a comes from :data:`CALIBRATION_PROPOSALS` = 32 proposals per
     chain (4× a run's probe) in antithetic pairs, spread over four positions of each chain: three
     during the draws and the final one (:func:`slt_basins.chains.probe_steps`). A snapshot of 8 proposals at the chains'
     final positions alone varied by up to a factor of 3 in 1 − a at the same ε between five seeds on
     a 2,410-parameter MLP (benchmarks/results/calibrate_seeds.md), and even so a per-cell verdict near
     the threshold is a coin flip. So for each (nβ, γ), log((1 − a)/√d) is fitted as α + p·log ε by least squares over
     every stable cell with 0.5 < a < 1 (:func:`fit_rejection`; p clipped to [1, 2] around the
     Gaussian 3/2), and the fitted a₁(ε) decides; a cell's own a decides where fewer than two cells
     are measured, or where its own a ≤ 0.5 (saturated). The fit's crossing ε_acc, where
     a₁ = ``min_accept``, is the ``eps_accept`` column.
     For ``sampler="mala"`` (exact at any ε) a is its own acceptance rate, which only governs
     mixing: the criterion is a ≥ ``min_accept`` with default 0.5 (the optimal MALA acceptance is
     about 0.57 in high dimension). Where no acceptance is measured (SGNHT), the stand-in is the
     step-size stability at the chains' ends: ε·(nβ·h + γ)/c ≤ 0.02, the value at which a Langevin
     kernel inflates the variance of the stiffest direction by 2 % (without a stability measurement
     either, e.g. ``check_stability=False``, only rule 3 guards against step-size bias).
   * *converged*: R-hat ≤ ``max_rhat`` (default 1.1, the classical Gelman–Rubin bound; calibration
     cells are short, so the stricter 1.05 at which :func:`~slt_basins.estimate_llc` warns would
     reject too many). Skipped with one chain.
3. **Plateau.** For each (nβ, γ), with the accepted cells in decreasing ε: a cell is on the
   plateau when the next smaller ε' of the grid is *stable and converged* (rules 1 and 2 without the
   acceptance criterion) and the two estimates agree,
   |λ̂(ε) − λ̂(ε')| ≤ ``plateau_tol``·|λ̂(ε')| + 2·√(MCSE(ε)² + MCSE(ε')²) (default tolerance 0.02,
   the relative accuracy target of the toy suite). The step-size bias is O(ε), so estimates that no
   longer move when ε shrinks have lost it, up to the resolution of the calibration runs. The
   partner's acceptance is not required: at a smaller step the discretisation bias is smaller, and
   the acceptance measured from the chains' final positions is a snapshot that, on potentials with
   long flat valleys (w1²w2⁴), falls whenever the chains happen to end in a stiff stretch. Every cell
   uses the same seed (common random numbers), which makes the difference of neighbouring cells
   less noisy than the combined MCSE assumes: the test errs on the side of agreement, and rule 2's
   acceptance criterion is what bounds the bias below that resolution.
4. **Choice.** For each (nβ, γ), the largest ε on the plateau (the largest unbiased step mixes
   fastest). The grid is √10-spaced, so a choice restricted to it jumps by a factor 3.2 whenever
   noise moves ε_acc across a grid point. So each scan runs one *refinement cell* at ε_acc/1.3
   (column ``refined``): right after the first cell that the acceptance criterion alone rejects,
   when ε_acc/1.3 lies below that cell and at least 1.25× the next grid step (the scan then goes on
   from there), or else, at the end of the scan, when it lies above the pick (or there is none),
   below a cell that was not accepted, and at least 1.25× the next smaller converged cell. The
   margin 1.3 (0.26 in log ε) is about three standard deviations of the shift of the crossing when
   the refinement cell's own snapshot (log 1 − a has a standard deviation of about 0.45 between
   seeds, measured on the MLP of benchmarks/results/calibrate_seeds.md) joins a fit of about four
   cells with slope p ≈ 1.3, so the refit rarely rejects it; 1.25 skips refinements not worth a cell. It obeys the same rules, its plateau partner is the next
   smaller step run, and the choice lands near ε_acc rather than on a grid point.
   Across settings: the largest nβ that has one (nβ is the temperature of the estimand;
   a smaller nβ is easier to sample but further from the asymptotic regime, so it is only a
   fallback), then the smallest γ that has one (localization biases λ̂ downward, docs page *Theory*;
   a γ too small to keep the chains near w* shows up as divergence or instability). Pass a single
   γ to keep yours.

**After the choice** (``step_size="auto"``). Rule 3 compares neighbouring cells within 2 % plus two
combined MCSEs, which short cells cannot resolve finely: on a tiny GPT-2 λ̂ fell from 90.7 to 87.8 to
83.9 over the chosen ε and the two cells below it, each step inside the tolerance. So the final run
also fits λ̂(ε') = a + c·ε' over the chosen cell and the stable cells below it (:func:`step_trend`,
weights 1/MCSE²) and records the implied step-size bias c·ε and its standard error as
``checks.calibration["step_bias"]`` and ``["step_bias_se"]``; an :class:`~slt_basins.errors.LLCWarning`
names them when the bias exceeds :data:`TREND_SE` = 2 standard errors and 2 % of λ̂.

If no cell qualifies, :class:`CalibrationError` (a ValueError) says what to try next (smaller step
sizes than the grid's minimum when that minimum was run; where the scan stopped early, the step
size it stopped at and the grid's minimum; a larger localization, a smaller nβ, more burn-in and
draws) and carries the full table as ``.table``.

Budget of a cell: ``num_burnin + num_draws`` steps, stretched in two documented cases, never beyond
8× (the table's ``num_draws``, ``num_burnin`` and ``attempts`` columns show what each cell used):

* below the largest accepted ε of its (nβ, γ), ε_acc, a cell runs for the same Langevin time ε·steps
  as that cell, i.e. ε_acc/ε times as many steps: a smaller step mixes proportionally slower, and
  without this the comparison partner of rule 3 fails R-hat and no plateau can be established;
* a stable cell whose R-hat exceeds ``max_rhat`` is re-run with twice the steps, until R-hat
  passes or the cap is reached, when it matters: when it passes the acceptance criterion or is the
  comparison partner of an accepted cell. Singular directions need a longer burn-in at the small
  steps their curvature away from w* demands. With ``stop_early``, a cell that still fails R-hat at
  the cap ends the scan of its (nβ, γ): smaller steps would mix even more slowly.

The default step-size grid is scale-free: it starts at the stability limit at w*,
ε_max = c/(nβ·h* + γ) with h* the largest Hessian eigenvalue at w* (measured by the same power
iteration :func:`~slt_basins.estimate_llc` uses), and goes down five decades with two points per
decade (ratio √10). Where w* is singular (h* ≈ 0), ε_max = c/γ is set by the localization and the
top cells diverge within a few steps, which costs little. Where h* is NaN (a Hessian-vector product
was not finite, e.g. a w**0 factor) or γ = 0 (nothing confines the chains to where h* was
measured, so at h* = 0 there is no scale at all), a *curvature pilot* measures it instead: rounds
of 100 SGLD steps from w*, ε growing ×10 per round from 1e-10 (or from 1/1000 of the limit at w*),
until ε·(nβh + γ)/4 at the chains' final positions reaches 0.05, and h = max(h*, the largest top
curvature met at those positions). ``CalibrationResult.grid_origin`` says which way the grid was
set, with the pilot's rounds; a NaN h* also raises an :class:`~slt_basins.errors.LLCWarning`. With ``stop_early=True`` (default) the
scan of each (nβ, γ) goes from the largest ε down and stops as soon as rule 3 is settled, so the
small-ε end of the grid is run only when it is needed.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import CalibrationError, LLCWarning, SamplerDivergedError, warn
from .options import MODEL_DEFAULTS, POTENTIAL_DEFAULTS, LLCOptions, user_options
from .result import LLCResult
from .samplers import get_kernel
from .sampling import sample
from .targets import ModelTarget, PotentialTarget

__all__ = ["calibrate", "calibrate_potential", "CalibrationResult", "CalibrationError", "select_setting",
           "default_step_sizes", "stability_step_size", "step_trend", "StepTrend"]

MIN_ACCEPT_UNADJUSTED = 0.998  # 1-D equivalent acceptance; ≈ s = ε·A/4 of 0.02 on a Gaussian
MIN_ACCEPT_MALA = 0.5
MAX_STABILITY_UNMEASURED = 0.02  # stand-in for the acceptance criterion where none is measured (SGNHT)
MAX_RHAT = 1.1
PLATEAU_TOL = 0.02
PER_DECADE = 2
DECADES = 5
CALIBRATION_PROPOSALS = 32  # MALA-probe proposals per chain in a calibration cell (module docstring, rule 2)
MAX_STRETCH = 8.0  # a cell runs at most 8× the base budget (retries for R-hat; same Langevin time below ε_acc)

_GROUP = ["nbeta", "localization"]

REFINE_MARGIN = 1.3  # the refinement cell sits at ε_acc/1.3 (module docstring, rule 4) ...
REFINE_MIN_GAIN = 1.25  # ... when that is at least 1.25× the largest accepted step of the grid

PILOT_STEPS = 100  # the curvature pilot (where w* gives no scale): steps per round ...
PILOT_START = 1e-10  # ... its first step size when h* at w* is 0 or NaN ...
PILOT_GROWTH = 10.0  # ... grown ×10 per round ...
PILOT_ROUNDS = 14  # ... for at most 14 rounds (1e-10 … 1e3) ...
PILOT_TARGET = 0.05  # ... until ε·(nβh + γ)/4 at the chains' ends reaches 0.05




def stability_step_size(h_max: float, nbeta: float, localization: float, ratio: float = 1.0,
                        sampler="sgld") -> float:
    """The step size ε at which the stability ratio ε·(nβ·h_max + γ)/c equals ``ratio`` (c = 4 for the
    Langevin kernels, 8 for SGNHT; a negative h_max counts as 0). ``ratio = 1`` is the stability limit
    where h_max was measured (the top of the default grid); the reproduction suite and the recipe's
    fallback (docs page *Estimating the LLC*, "The recipe") use 0.05, a 5 % variance inflation in the
    stiffest direction. Units: ε in squared parameter units, h_max in loss per squared parameter.

    >>> round(stability_step_size(2.0, 1000.0, 1.0, ratio=0.05), 9)
    9.995e-05

    Raises:
        ValueError: nβ·h_max + γ is not a positive finite number (e.g. h_max = 0 at γ = 0): there is no
            scale, so the step size (or the calibration grid) must be given.
    """
    c = get_kernel(sampler).stability_divisor or 4.0
    scale = nbeta * max(float(h_max), 0.0) + localization
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"cannot derive a step size from nβ·h_max + γ = {scale!r} (h_max = {h_max!r}, "
                         f"γ = {localization!r}); give it explicitly: step_size=..., or a grid with "
                         "slt_basins.calibrate(..., step_sizes=[...]).")
    return ratio * c / scale


def default_step_sizes(h_max: float, nbeta: float, localization: float, sampler="sgld",
                       per_decade: int = PER_DECADE, decades: int = DECADES) -> list[float]:
    """The default grid: ε_max = c/(nβ·h_max + γ) (the stability limit at w*, :func:`stability_step_size`;
    c = 4, or 8 for SGNHT) times 10^(−k/per_decade) for k = 0 … per_decade·decades, largest first.

    >>> [round(e, 6) for e in default_step_sizes(2.0, 1000.0, 1.0, decades=1)]
    [0.001999, 0.000632, 0.0002]
    """
    top = stability_step_size(h_max, nbeta, localization, sampler=sampler)
    return [top * 10.0 ** (-k / per_decade) for k in range(per_decade * decades + 1)]


# --- the rules (pure) ---------------------------------------------------------------------------------

def _threshold(sampler: str, min_accept: Optional[float]) -> float:
    if min_accept is not None:
        return float(min_accept)
    return MIN_ACCEPT_MALA if sampler == "mala" else MIN_ACCEPT_UNADJUSTED


def _isnum(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and not pd.isna(v)


def fit_rejection(eps, accept, d: int) -> Optional[tuple[float, float, int]]:
    """The pooled acceptance of rule 2: fit log((1 − a)/√d) = α + p·log ε by least squares over the cells
    of one (nβ, γ) whose MALA acceptance a of the sampler's proposals lies in (0.5, 1), with the slope p
    clipped to [1, 2] (3/2 on a Gaussian, module docstring). Returns (α, p, number of cells), or None
    with fewer than two such cells at distinct ε.

    The fitted 1-D equivalent acceptance at ε is 1 − exp(α + p·log ε); it crosses a threshold
    ``thr`` at ε = exp((log(1 − thr) − α)/p). Each cell's acceptance is a noisy measurement (module
    docstring, rule 2); the fit pools every measured cell of the scan.

    >>> a, p, n = fit_rejection([1e-3, 1e-4], [1 - 1e-2, 1 - 1e-2 * 10 ** -1.5], d=1)
    >>> round(p, 6), n, round(math.exp((math.log(1e-3) - a) / p), 8)  # where 1 − a₁ = 1e-3
    (1.5, 2, 0.00021544)
    """
    e, acc = np.asarray(eps, float), np.asarray(accept, float)
    use = np.isfinite(e) & np.isfinite(acc) & (acc > 0.5) & (acc < 1.0) & (e > 0)
    if len(np.unique(e[use])) < 2:
        return None
    x, y = np.log(e[use]), np.log((1.0 - acc[use]) / math.sqrt(max(int(d), 1)))
    slope = float(np.clip(np.polyfit(x, y, 1)[0], 1.0, 2.0))
    return float(np.mean(y - slope * x)), slope, int(use.sum())


def _group_fit(t: pd.DataFrame, rows: list[int], min_accept) -> tuple[np.ndarray, float]:
    """(fitted 1-D acceptance at each cell of ``rows``, ε where the fit crosses the threshold): NaN where the
    sampler is MALA or fewer than two stable cells with an unsaturated acceptance were run."""
    sub = t.iloc[rows]
    nan = (np.full(len(rows), np.nan), np.nan)
    if not len(sub) or (sub["sampler"] == "mala").any() or not sub["ran"].any():
        return nan
    s_end = sub["step_stability_end"].to_numpy(float)
    ok = sub["ran"].to_numpy(bool) & (sub["diverged"].to_numpy(float) == 0) & ~(s_end >= 1.0)
    d = int(sub.loc[sub["ran"], "d"].dropna().iloc[0]) if sub.loc[sub["ran"], "d"].notna().any() else 1
    fit = fit_rejection(sub["step_size"].to_numpy(float)[ok], sub["mala_accept"].to_numpy(float)[ok], d)
    if fit is None:
        return nan
    a, p, _ = fit
    eps = sub["step_size"].to_numpy(float)
    thr = _threshold(str(sub["sampler"].iloc[0]), min_accept)
    return 1.0 - np.exp(a + p * np.log(eps)), float(math.exp((math.log(1.0 - thr) - a) / p))


def _judge_row(r, thr: float, max_rhat: float, fit: float = np.nan) -> tuple[float, bool, bool, bool, str]:
    """Rules 1 and 2 for one cell: (1-D equivalent acceptance, stable, accepted, converged, status). ``fit`` is
    the pooled fit's 1-D acceptance at this ε (:func:`fit_rejection`); where finite it decides rule 2
    unless the cell's own acceptance is saturated (≤ 0.5)."""
    acc1, a = np.nan, r["mala_accept"]
    if _isnum(a):
        acc1 = a if r["sampler"] == "mala" else 1.0 - (1.0 - a) / math.sqrt(max(int(r["d"]), 1))
    pooled = _isnum(fit) and not (_isnum(a) and a <= 0.5)
    judged = fit if pooled else acc1
    s_end = r["step_stability_end"]
    if not r["ran"]:
        why = r.get("skip_reason")
        return acc1, False, False, False, "not run: " + (why if isinstance(why, str) and why else "skipped")
    if r["diverged"] > 0:
        return acc1, False, False, False, (f"diverged: {int(r['diverged'])} of {int(r['num_chains'])} chains"
                                           + (" (all)" if r["diverged"] >= r["num_chains"] else ""))
    if _isnum(s_end) and s_end >= 1.0:
        return acc1, False, False, False, f"unstable: ε·(nβh+γ)/c = {s_end:.3g} ≥ 1 at the chains' final positions"
    if not (_isnum(r["llc"]) and _isnum(r["mcse"])):
        return acc1, False, False, False, "rejected: no finite estimate"
    converged = not (_isnum(r["r_hat"]) and r["r_hat"] > max_rhat)
    if not _isnum(acc1) and _isnum(s_end) and s_end > MAX_STABILITY_UNMEASURED:
        return acc1, True, False, converged, (
            f"rejected: no MALA acceptance for this sampler, and ε·(nβh+γ)/c = {s_end:.3g} > "
            f"{MAX_STABILITY_UNMEASURED:g} at the chains' ends (step-size bias)")
    if _isnum(judged) and judged < thr:
        if r["sampler"] == "mala":
            what = f"MALA acceptance {judged:.4f}"
        elif not pooled:
            what = f"MALA acceptance {a:.4f} of its proposals, 1-D equivalent {judged:.4f}"
        else:
            own = f"its own {a:.4f}, 1-D equivalent {acc1:.4f}" if _isnum(a) else "none measured here"
            what = f"MALA acceptance of the pooled fit over the scan, 1-D equivalent {judged:.4f} ({own})"
        return acc1, True, False, converged, (f"rejected: {what} < {thr:g} "
                                              + ("(mixes poorly)" if r["sampler"] == "mala" else "(step-size bias)"))
    if not converged:
        return acc1, True, False, False, f"rejected: R-hat {r['r_hat']:.3f} > {max_rhat:g} (chains not mixed)"
    return acc1, True, True, True, ""


def _plateau(t: pd.DataFrame, rows: list[int], j: int, converged, plateau_tol: float):
    """Rule 3 for the accepted cell ``rows[j]`` of one (nβ, γ): (Δλ̂, tolerance, on plateau, status)."""
    llc, mcse, eps = t["llc"].to_numpy(float), t["mcse"].to_numpy(float), t["step_size"].to_numpy(float)
    i = rows[j]
    if j + 1 == len(rows):
        return np.nan, np.nan, False, "accepted; the smallest step size of the grid, so no smaller one to compare with"
    nxt = rows[j + 1]
    if not bool(t["ran"].iloc[nxt]):
        return np.nan, np.nan, False, ("accepted (the comparison partner of the step size above; the next smaller ε "
                                       "was not run)")
    if not converged[nxt]:
        return np.nan, np.nan, False, (f"accepted; the next smaller ε = {eps[nxt]:.3g} is not stable and converged, "
                                       "so there is nothing to compare with")
    delta = llc[i] - llc[nxt]
    tol = plateau_tol * abs(llc[nxt]) + 2.0 * math.hypot(mcse[i], mcse[nxt])
    if abs(delta) <= tol:
        return delta, tol, True, f"on the plateau: λ̂ within {tol:.3g} of λ̂ = {llc[nxt]:.4g} at ε = {eps[nxt]:.3g}"
    return delta, tol, False, (f"accepted, off the plateau: λ̂ differs by {delta:+.3g} from λ̂ = {llc[nxt]:.4g} at "
                               f"ε = {eps[nxt]:.3g} (tolerance {tol:.3g})")


def _reason(t: pd.DataFrame, i: int, j: int, several: bool, min_accept, max_rhat: float) -> str:
    """Why cell ``i`` (compared with cell ``j``) was chosen, with its measured numbers."""
    r, partner = t.iloc[i], t.iloc[j]
    thr = _threshold(r["sampler"], min_accept)
    parts = [f"ε = {r['step_size']:.4g} is the largest step size on the plateau at γ = {r['localization']:g}, "
             f"nβ = {r['nbeta']:.4g}: no chain diverged"]
    if _isnum(r["step_stability_end"]):
        parts.append(f"ε·(nβh+γ)/c = {r['step_stability_end']:.3g} at the chains' ends")
    fit = r.get("accept_1d_fit", np.nan)
    if _isnum(fit) and not (_isnum(r["mala_accept"]) and r["mala_accept"] <= 0.5):
        own = f"; its own {r['accept_1d']:.4f}" if _isnum(r["accept_1d"]) else ""
        parts.append(f"1-D equivalent MALA acceptance of the pooled fit over the scan {fit:.4f} ≥ {thr:g}{own}")
    elif _isnum(r["accept_1d"]):
        parts.append(("MALA acceptance" if r["sampler"] == "mala" else "1-D equivalent MALA acceptance")
                     + f" {r['accept_1d']:.4f} ≥ {thr:g}")
    if bool(r.get("refined", False)) is True:
        parts.append(f"a refinement cell at ε_acc/{REFINE_MARGIN:g}, ε_acc = {r['eps_accept']:.3g} where the fit "
                     "crosses the threshold")
    if _isnum(r["r_hat"]):
        parts.append(f"R-hat {r['r_hat']:.3f} ≤ {max_rhat:g}")
    parts.append(f"λ̂ = {r['llc']:.4g} ± {r['mcse']:.2g} agrees with λ̂ = {partner['llc']:.4g} ± "
                 f"{partner['mcse']:.2g} at ε = {partner['step_size']:.3g} (|Δ| = {abs(r['delta_next']):.3g} ≤ "
                 f"{r['tol_next']:.3g})")
    if several:
        pref = ("the largest nβ, then the smallest γ, with a plateau" if t["nbeta"].nunique() > 1
                else "the smallest γ with a plateau")
        parts.append(f"chosen as {pref}")
    return "; ".join(parts) + "."


def select_setting(table: pd.DataFrame, *, min_accept: Optional[float] = None, max_rhat: float = MAX_RHAT,
                   plateau_tol: float = PLATEAU_TOL) -> tuple[pd.DataFrame, Optional[Any], str]:
    """Apply the calibration rules (module docstring) to a table of cells.

    ``table`` needs one row per cell with columns ``nbeta``, ``localization``, ``step_size``, ``ran``
    (bool), ``sampler``, ``d``, ``num_chains``, ``diverged`` (number of diverged chains), ``llc``,
    ``mcse``, ``r_hat``, ``mala_accept`` and ``step_stability_end`` (NaN where not measured).

    Returns ``(annotated, chosen, text)``: a copy of the table, sorted by (nβ descending, γ, ε
    descending), with the columns ``accept_1d`` (the quantity compared with ``min_accept``),
    ``stable``, ``converged`` (stable with R-hat ≤ ``max_rhat``: eligible as a plateau partner),
    ``accepted``, ``delta_next`` and ``tol_next`` (the plateau comparison with the next smaller ε),
    ``plateau``, ``chosen`` and ``status`` (why each cell was rejected or chosen); the index label of
    the chosen row, or None; and the reason for the choice, or, when nothing qualifies, the message
    of the :class:`CalibrationError` to raise.

    Example:
        >>> cell = dict(nbeta=100.0, localization=1.0, ran=True, sampler="sgld", d=1, num_chains=4, diverged=0,
        ...             r_hat=1.0, mala_accept=0.9999, step_stability_end=0.01)
        >>> t = pd.DataFrame([dict(cell, step_size=1e-3, llc=0.50, mcse=0.01),
        ...                   dict(cell, step_size=3e-4, llc=0.49, mcse=0.01)])
        >>> annotated, pick, why = select_setting(t)
        >>> float(annotated.loc[pick, "step_size"]), why.split(":")[0]
        (0.001, 'ε = 0.001 is the largest step size on the plateau at γ = 1, nβ = 100')
    """
    t = table.sort_values(["nbeta", "localization", "step_size"], ascending=[False, True, False]).copy()
    n = len(t)
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(zip(t["nbeta"], t["localization"])):
        groups.setdefault(k, []).append(i)
    fit, eps_acc = np.full(n, np.nan), np.full(n, np.nan)
    for rows in groups.values():
        fit[rows], eps_acc[rows] = _group_fit(t, rows, min_accept)
    judged = [_judge_row(r, _threshold(r["sampler"], min_accept), max_rhat, f)
              for (_, r), f in zip(t.iterrows(), fit)]
    acc1, stable, accepted, converged, status = (list(col) for col in zip(*judged)) if judged else ([],) * 5
    delta, tol, plateau = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
    chosen_pos: dict[tuple, int] = {}
    for k, rows in groups.items():
        for j, i in enumerate(rows):
            if accepted[i]:
                delta[i], tol[i], plateau[i], status[i] = _plateau(t, rows, j, converged, plateau_tol)
                if plateau[i]:
                    chosen_pos.setdefault(k, i)
    order = sorted(groups, key=lambda k: (-k[0], k[1]))
    winner = next((k for k in order if k in chosen_pos), None)
    chosen = np.zeros(n, bool)
    for k, i in chosen_pos.items():
        chosen[i] = k == winner
        status[i] = ("CHOSEN: largest step size on the plateau; " if k == winner
                     else "best of its (nβ, γ), not preferred; ") + status[i]
    t["accept_1d"], t["accept_1d_fit"], t["eps_accept"] = np.asarray(acc1, float), fit, eps_acc
    t["stable"], t["converged"], t["accepted"] = (np.asarray(v, bool) for v in (stable, converged, accepted))
    t["delta_next"], t["tol_next"] = delta, tol
    t["plateau"], t["chosen"], t["status"] = plateau, chosen, status
    if winner is None:
        return t, None, _failure_message(t, groups, min_accept, max_rhat, plateau_tol)
    i = chosen_pos[winner]
    j = groups[winner][groups[winner].index(i) + 1]
    return t, t.index[i], _reason(t, i, j, len(order) > 1, min_accept, max_rhat)


def _scan_extent(t: pd.DataFrame, groups: dict) -> tuple[str, bool, float]:
    """(a sentence on where each (nβ, γ) scan stopped when cells were skipped, whether the grid's minimum
    was run with a verdict other than R-hat in some (nβ, γ), the grid's minimum ε)."""
    eps = t["step_size"].to_numpy(float)
    grid_min = float(eps.min()) if len(t) else float("nan")
    stops, bottom_bad = [], False
    for (nb, g), rows in groups.items():
        last = t.iloc[rows[-1]]
        if last["ran"]:
            bottom_bad |= not last["accepted"] and not str(last["status"]).startswith("rejected: R-hat")
            continue
        run = [i for i in rows if bool(t["ran"].iloc[i])]
        if not run:
            continue
        skipped = [i for i in rows if i > run[-1]]
        why = t["skip_reason"].iloc[skipped[0]] if "skip_reason" in t else ""
        where = f" at γ = {g:g}, nβ = {nb:.4g}" if len(groups) > 1 else ""
        stops.append(f"the scan{where} stopped at ε = {eps[run[-1]]:.3g} (the {len(skipped)} smaller step sizes "
                     f"were skipped{': ' + why if isinstance(why, str) and why else ''}); the grid goes down to "
                     f"{eps[rows[-1]]:.3g}")
    text = "" if not stops else " T" + "; ".join(stops)[1:] + "."
    return text, bottom_bad, grid_min


DRIFT_SPAN = 9.0  # the drift diagnosis compares cells at least this factor apart in ε ...
DRIFT_KEEP = 0.5  # ... whose stability ratio at the chains' ends fell by less than this factor, staying ≥ 0.5


def edge_drift(t: pd.DataFrame) -> Optional[str]:
    """A sentence when the chains drift to the edge of stability, else None: in the cells of one (nβ, γ) that
    ran without divergence, the stability ratio ε·(nβh + γ)/c at the chains' ends stays at 0.5 or more and
    falls by less than half while ε falls at least 9×, so the curvature h where the chains ended grew about
    as fast as ε shrank. Flat directions along which the curvature rises (the rescaling symmetry of a deep
    linear network, W₁ → cW₁, W₂ → W₂/c) let an unadjusted kernel wander into regions as stiff as each step
    allows; near ratio 1 its variance inflation 1/(1 − ratio) (docs page *Theory*, step-size bias) makes
    those regions more likely, not less, so no fixed ε is stable where the chains end.

    >>> c = dict(nbeta=1e4, localization=1.0, ran=True, diverged=0)
    >>> t = pd.DataFrame([dict(c, step_size=3.4e-4, step_stability_end=1.94),
    ...                   dict(c, step_size=3.4e-5, step_stability_end=1.12)])
    >>> edge_drift(t).split(":")[0]
    'the chains drift to the edge of stability'
    """
    ok = t[t["ran"].astype(bool) & (t["diverged"] == 0) & t["step_stability_end"].notna()]
    for _, g in ok.groupby(["nbeta", "localization"]):
        g = g.sort_values("step_size", ascending=False)
        eps, ratio = g["step_size"].to_numpy(float), g["step_stability_end"].to_numpy(float)
        for i in range(len(g)):
            for j in range(len(g) - 1, i, -1):
                if eps[i] / eps[j] >= DRIFT_SPAN and ratio[j] >= max(0.5, DRIFT_KEEP * ratio[i]):
                    growth = eps[i] / eps[j] * ratio[j] / ratio[i]
                    return (f"the chains drift to the edge of stability: ε·(nβh+γ)/c at their final positions went "
                            f"from {ratio[i]:.3g} to only {ratio[j]:.3g} while ε fell {eps[i] / eps[j]:.3g}× (from "
                            f"{eps[i]:.3g} to {eps[j]:.3g}), so the curvature where they ended grew about "
                            f"{growth:.3g}×. Flat directions along which the curvature rises (e.g. the rescaling "
                            "symmetry of deep linear networks) let the chains wander as far as each step allows, "
                            "and no fixed ε is stable where they end")
    return None


def _failure_message(t: pd.DataFrame, groups: dict, min_accept, max_rhat: float, plateau_tol: float) -> str:
    """What went wrong in every (nβ, γ), and what to try next, consistent with the grid that was run:
    smaller step sizes than the grid's minimum are suggested only where that minimum was run.

    >>> c = dict(nbeta=100.0, localization=1.0, sampler="sgld", d=1, num_chains=4, diverged=0, mala_accept=1.0,
    ...          step_stability_end=0.01, llc=0.5, mcse=0.01)
    >>> t = pd.DataFrame([dict(c, step_size=1e-3, ran=True, r_hat=1.5),
    ...                   dict(c, step_size=1e-4, ran=False, r_hat=np.nan, skip_reason="did not converge")])
    >>> msg = select_setting(t)[2]
    >>> "stopped at ε = 0.001" in msg and "grid goes down to 0.0001" in msg and "grid's minimum" not in msg
    True
    """
    ran = t[t["ran"]]
    st = ran["status"]
    n_div = int(st.str.startswith("diverged").sum())
    n_unst = int(st.str.startswith("unstable").sum())
    n_acc = int(st.str.contains("MALA acceptance|no MALA acceptance").sum())
    n_rhat = int(st.str.contains("R-hat").sum())
    n_ok = int(ran["accepted"].sum())
    stopped, bottom_bad, grid_min = _scan_extent(t, groups)
    msg = [f"no setting passed the calibration rules ({len(ran)} cells run: {n_div} diverged, {n_unst} unstable, "
           f"{n_acc} rejected for step-size bias (MALA acceptance, or stability without it), {n_rhat} with R-hat > "
           f"{max_rhat:g}, {n_ok} accepted but without a plateau within plateau_tol = {plateau_tol:g} + 2 MCSE)."
           + stopped]
    drift, tips = edge_drift(ran), []
    if drift is not None:
        msg.append(drift[0].upper() + drift[1:] + ".")
        tips.append("a larger localization γ, which bounds how far the chains can wander (λ̂ then shifts down; "
                    "check that shift with a second γ); an exact kernel (sampler=\"mala\") on a small model; or "
                    "sampler=\"rmsprop_sgld\" (a per-coordinate step, though on the deep-linear-network ladder it "
                    "found no step size at 10⁴ parameters either; docs page *Estimating the LLC*, \"The recipe\")")
    if bottom_bad or (n_ok and not ran["plateau"].any() and not stopped):
        smaller = ", ".join(f"{grid_min * 10 ** (-k / 2):.2g}" for k in (1, 2, 3, 4))
        tips.append(f"smaller step sizes than the grid's minimum ε = {grid_min:.3g}, which was run (e.g. "
                    f"slt_basins.calibrate(..., step_sizes=[{smaller}]))")
    if n_div or n_unst or n_acc:
        tips.append(f"a larger localization (now γ = {', '.join(f'{g:g}' for g in sorted(t['localization'].unique()))})"
                    f" or a smaller nβ (now {', '.join(f'{b:.4g}' for b in sorted(t['nbeta'].unique()))}): both lower "
                    "the curvature the sampler meets, at the price of a downward (γ) or temperature (nβ) shift of λ̂")
    if n_rhat or (n_ok and not ran["plateau"].any()):
        tips.append("more burn-in and draws per cell (num_burnin, num_draws) or more chains: R-hat and the MCSE of "
                    "short runs at small step sizes decide whether neighbouring estimates can be compared")
    if stopped:
        tips.append("running the skipped cells anyway with slt_basins.calibrate(..., stop_early=False)")
    if not tips:
        tips.append("a wider grid of step sizes")
    return " ".join(msg) + " Try " + "; ".join(tips) + ". Every cell and its status are in this error's .table."


# --- the result ---------------------------------------------------------------------------------------

@dataclass
class CalibrationResult:
    """Outcome of :func:`calibrate` / :func:`calibrate_potential`.

    Attributes:
        table: one row per cell (nβ, γ, ε) with λ̂, MCSE, R-hat, ESS, diverged chains, MALA acceptance
            (raw and 1-D equivalent), step-size stability at w* and at the chains' ends, wall time,
            captured warnings, the rule columns and ``status`` (why each cell was rejected or chosen).
        step_size, localization, nbeta: the chosen setting (pass ``**settings`` to an estimate).
        reason: why this setting was chosen, with the measured numbers.
        rules: the thresholds used.
        hessian_max_abs_eig: the largest Hessian eigenvalue at w* (None when neither the grid nor nβ
            was defaulted; NaN when it could not be computed).
        grid_origin: where the step-size grid came from (the grid given, h* at w*, or the curvature
            pilot's rounds and measurements where w* gave no scale).
        wall_time_s: total time of the sweep (seconds).

    Example:
        >>> cal = CalibrationResult(pd.DataFrame(), step_size=1e-4, localization=1.0, nbeta=100.0,
        ...                         reason="the largest ε on the plateau")
        >>> cal.settings
        {'step_size': 0.0001, 'localization': 1.0, 'nbeta': 100.0}
    """

    table: pd.DataFrame
    step_size: float
    localization: float
    nbeta: float
    reason: str
    rules: dict = field(default_factory=dict)
    hessian_max_abs_eig: Optional[float] = None
    wall_time_s: float = 0.0
    grid_origin: str = ""

    @property
    def settings(self) -> dict:
        """``dict(step_size=…, localization=…, nbeta=…)`` for :func:`~slt_basins.estimate_llc`."""
        return dict(step_size=self.step_size, localization=self.localization, nbeta=self.nbeta)

    def __str__(self) -> str:
        return (f"calibrated: step_size={self.step_size:.4g}, localization={self.localization:g}, "
                f"nbeta={self.nbeta:.4g} ({len(self.table)} cells, {self.wall_time_s:.1f} s). {self.reason}")

    def __repr__(self) -> str:
        return f"CalibrationResult({self})"

    def figure(self, figsize=(8, 6)):
        """A matplotlib Figure (never shown): λ̂ ± MCSE against ε per (γ, nβ) on a log axis, accepted cells
        filled, rejected hollow, all-diverged cells as × on the axis, the chosen cell as a star; below, the
        MALA rejection 1 − a₁ (1-D equivalent; MALA: 1 − its acceptance) with the threshold of rule 2."""
        return plot_table(self.table, self.rules, figsize=figsize)



def plot_table(table: pd.DataFrame, rules: dict, figsize=(8, 6)):
    """The figure of :meth:`CalibrationResult.figure` for any annotated table (e.g. ``CalibrationError.table``)."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=figsize, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    several_nb = table["nbeta"].nunique() > 1
    floor = blended_transform_factory(ax1.transData, ax1.transAxes)
    for (nb, g), grp in table[table["ran"]].groupby(_GROUP, sort=False):
        label = f"γ = {g:g}" + (f", nβ = {nb:.4g}" if several_nb else "")
        grp = grp.sort_values("step_size")
        fin = grp[np.isfinite(grp["llc"].to_numpy(float))]
        line = ax1.errorbar(fin["step_size"], fin["llc"], yerr=fin["mcse"], fmt="-", lw=1, capsize=2, label=label)
        color = line[0].get_color()
        ok = fin[fin["accepted"]]
        bad = fin[~fin["accepted"]]
        ax1.plot(ok["step_size"], ok["llc"], "o", color=color, ms=6)
        ax1.plot(bad["step_size"], bad["llc"], "o", mfc="none", color=color, ms=6)
        dead = grp[~np.isfinite(grp["llc"].to_numpy(float))]
        ax1.plot(dead["step_size"], np.full(len(dead), 0.03), "x", color=color, ms=7, transform=floor)
        rej = 1.0 - grp["accept_1d"].to_numpy(float)
        ax2.plot(grp["step_size"], np.maximum(rej, 1e-6), "o-", color=color, ms=4, lw=1)
    ch = table[table["chosen"]]
    if len(ch):
        ax1.plot(ch["step_size"], ch["llc"], "*", ms=16, mfc="gold", mec="k", zorder=5,
                 label=f"chosen: ε = {ch['step_size'].iloc[0]:.3g}")
    ax1.plot([], [], "o", color="gray", label="accepted")
    ax1.plot([], [], "o", mfc="none", color="gray", label="rejected")
    ax1.plot([], [], "x", color="gray", label="all chains diverged")
    ax1.set_xscale("log")
    ax1.set_ylabel("λ̂ ± MCSE")
    ax1.set_title("LLC against step size (calibration cells)")
    ax1.legend(fontsize=7, loc="best")
    thr = rules.get("min_accept_by_sampler", {})
    for s, a in thr.items():
        ax2.axhline(1.0 - a, color="k", ls="--", lw=1, label=f"threshold ({s}): 1 − {a:g}")
    ax2.set_yscale("log")
    ax2.set_xlabel("step size ε")
    ax2.set_ylabel("MALA rejection 1 − a₁")
    ax2.set_title("1-D equivalent MALA rejection (1 − a)/√d of the sampler's proposals (MALA: 1 − its rate)",
                  fontsize=8)
    if thr:
        ax2.legend(fontsize=7, loc="best")
    return fig


# --- the runner (shared by models and potentials) -----------------------------------------------------

def _as_list(name: str, value, default) -> list[float]:
    if value is None:
        return [default]
    vals = [value] if np.isscalar(value) else list(value)
    if not vals:
        raise ValueError(f"{name} is empty; pass at least one value (or None for the default).")
    out = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numbers; got {v!r}.") from None
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"{name} must be finite and ≥ 0; got {v!r}.")
        out.append(f)
    return sorted(set(out), key=out.index)


def _short_warnings(caught) -> str:
    return " | ".join(sorted({str(w.message).split(":")[0][:100] for w in caught}))


Run = Callable[[LLCOptions], LLCResult]  # one estimate on a fixed target: settings → result


def _cell(run: Run, opts: LLCOptions) -> dict:
    """Run one cell; a SamplerDivergedError becomes a row with every chain diverged."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = run(opts)
        except SamplerDivergedError as e:
            return dict(ran=True, llc=np.nan, mcse=np.nan, r_hat=np.nan, ess_bulk=np.nan,
                        diverged=opts.num_chains, mala_accept=np.nan, step_stability=np.nan,
                        step_stability_end=np.nan, wall_s=time.perf_counter() - t0,
                        warnings=_short_warnings(caught), error=str(e).split(". To fix")[0][:200])
    num = lambda v: np.nan if v is None else float(v)  # noqa: E731
    c = r.checks
    return dict(ran=True, llc=r.llc_mean, mcse=r.mcse, r_hat=num(c.r_hat), ess_bulk=num(c.ess_bulk),
                diverged=len(r.diverged), mala_accept=num(c.mala_accept), step_stability=num(c.step_stability),
                step_stability_end=num(c.step_stability_end), wall_s=time.perf_counter() - t0,
                warnings=_short_warnings(caught), error="", d=int(r.config["d"]), nbeta=float(r.nbeta))


def _pilot(run: Run, opts: LLCOptions) -> tuple[Optional[float], float, int]:
    """(h* at w*, nβ, d) from a 4-step SGLD run with a negligible step (the run's own stability check)."""
    opts = opts.replace(sampler="sgld", num_chains=1, num_draws=4, num_burnin=0, step_size=1e-12,
                        divergence_bound=1e300, progress=False, distributed=False, chain_group=None,
                        checkpoint=None, checkpoint_every=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = run(opts)
        except SamplerDivergedError:
            raise ValueError("the loss is not finite within about 1e-6 of w* (a 4-step pilot run with step size "
                             "1e-12 diverged), so no step size can work: check the loss near w*.") from None
    h = r.checks.hessian_max_abs_eig
    return (None if h is None else float(h)), float(r.nbeta), int(r.config["d"])


class _Sweep(NamedTuple):
    """The fixed settings of one calibration sweep."""

    run: Run
    base: LLCOptions
    min_accept: Optional[float]
    max_rhat: float
    plateau_tol: float
    stop_early: bool

    def budget(self, stretch: float) -> dict:
        return dict(num_draws=int(round(self.base.num_draws * stretch)),
                    num_burnin=int(round(self.base.num_burnin * stretch)))

    def select(self, rows: list[dict]):
        return select_setting(_frame(rows), min_accept=self.min_accept, max_rhat=self.max_rhat,
                              plateau_tol=self.plateau_tol)


def _run_cell(sw: _Sweep, row: dict, group_rows: list[dict], stretch: float, anchored: bool):
    """Run (and, when it converges too slowly but matters, re-run longer) the cell ``row``; returns
    its annotated line, whether the group has a pick now, whether it was slow, and the stretch used."""
    eps, spent = row["step_size"], 0.0
    while True:
        budget = sw.budget(stretch)
        out = _cell(sw.run, sw.base.replace(**budget, step_size=eps, localization=row["localization"],
                                            nbeta=row["nbeta"], progress=False,
                                            probe_proposals=CALIBRATION_PROPOSALS))
        out.pop("nbeta", None)
        spent += out["wall_s"]
        row.update(out, **budget, wall_s=spent, attempts=row["attempts"] + 1)
        ann, pick, _ = sw.select(group_rows + [row])
        mine = ann[ann["step_size"] == eps].iloc[0]
        slow = bool(mine["stable"]) and _isnum(mine["r_hat"]) and mine["r_hat"] > sw.max_rhat
        # worth converging: it passed the acceptance criterion, or it is a plateau partner
        useful = str(mine["status"]).startswith("rejected: R-hat") or anchored
        if slow and useful and stretch < MAX_STRETCH:
            stretch = min(MAX_STRETCH, 2.0 * stretch)  # converging too slowly: retry longer
            continue
        return mine, pick, slow, stretch


def _refinement(ann: pd.DataFrame, below: Optional[float]) -> Optional[float]:
    """The step size of the refinement cell (module docstring, rule 4), or None: ε_acc/:data:`REFINE_MARGIN`
    (ε_acc the ``eps_accept`` of the annotated group ``ann``) when the next larger step run was not
    accepted and the step lies at least :data:`REFINE_MIN_GAIN` × ``below`` (the next smaller step of the
    grid, None for none)."""
    if not len(ann):
        return None
    e = float(ann["eps_accept"].iloc[0]) / REFINE_MARGIN
    ran = ann[ann["ran"]]
    above = ran[ran["step_size"] > e]
    if not (math.isfinite(e) and len(above)) or bool(above.loc[above["step_size"].idxmin(), "accepted"]):
        return None
    return e if below is None or e >= REFINE_MIN_GAIN * below else None


def _scan(sw: _Sweep, nb: float, g: float, eps_list: list[float], sampler: str, bar) -> list[dict]:
    """The cells of one (nβ, γ), from the largest ε down (stopping early once settled), with at most one
    refinement cell: inserted after the first cell that the acceptance criterion alone rejects, or, if the
    scan ends without a pick, run last between the cells run (module docstring, rule 4)."""
    steps0 = sw.base.num_draws + sw.base.num_burnin
    skip, t_anchor, rows, refined = None, None, [], False
    queue = [(e, False) for e in eps_list]  # (ε, is the refinement cell)
    while queue:
        eps, is_refinement = queue.pop(0)
        stretch = 1.0 if t_anchor is None else min(MAX_STRETCH, max(1.0, t_anchor / (eps * steps0)))
        row = dict(nbeta=nb, localization=g, step_size=eps, sampler=sampler, num_chains=sw.base.num_chains,
                   d=np.nan, **sw.budget(stretch), attempts=0, refined=is_refinement)
        rows.append(row)
        if skip is not None:
            row.update(ran=False, llc=np.nan, mcse=np.nan, r_hat=np.nan, ess_bulk=np.nan, diverged=0,
                       mala_accept=np.nan, step_stability=np.nan, step_stability_end=np.nan, wall_s=0.0,
                       warnings="", error="", skip_reason=skip, num_draws=0, num_burnin=0)
        else:
            bar.set_postfix_str(f"γ={g:g} ε={eps:.3g}")
            mine, pick, slow, stretch = _run_cell(sw, row, [r for r in rows[:-1] if r["ran"]], stretch,
                                                  t_anchor is not None)
            if t_anchor is None and mine["accepted"]:
                t_anchor = eps * (row["num_draws"] + row["num_burnin"])
            if sw.stop_early and pick is not None:
                skip = "the scan of this (nβ, γ) had settled at a larger step size"
            elif sw.stop_early and slow and stretch >= MAX_STRETCH:
                skip = (f"ε = {eps:.3g} did not converge with {MAX_STRETCH:g}× the cell budget, and smaller "
                        "steps mix more slowly")
            elif not refined and str(mine["status"]).startswith("rejected: MALA acceptance") and queue:
                ann = sw.select([r for r in rows if r["ran"]])[0]
                if (e := _refinement(ann, queue[0][0])) is not None:
                    queue.insert(0, (e, True))
                    refined, bar.total = True, bar.total + 1
        bar.update(1)
    return rows if refined else _refine_last(sw, rows, bar)


def _refine_last(sw: _Sweep, rows: list[dict], bar) -> list[dict]:
    """After a scan of one (nβ, γ) without a refinement cell (the pooled fit needs two measured cells, and
    it moves as cells are added), run it last, between the cells run, when it lies above the pick (if
    any) and the next smaller converged cell can be its plateau partner."""
    ran = [r for r in rows if r["ran"]]
    if not ran:
        return rows
    ann, pick, _ = sw.select(ran)
    e = _refinement(ann, None)
    low = ann.loc[ann["converged"], "step_size"]
    low = low[low < e] if e is not None else low[:0]
    if (e is None or not len(low) or e < REFINE_MIN_GAIN * float(low.max())
            or (pick is not None and e <= float(ann.loc[pick, "step_size"]))):
        return rows
    row = dict({k: ran[0][k] for k in ("nbeta", "localization", "sampler", "num_chains")}, step_size=e,
               d=np.nan, **sw.budget(1.0), attempts=0, refined=True)
    bar.total += 1
    _run_cell(sw, row, ran, 1.0, False)
    bar.update(1)
    return rows + [row]


def _curvature_pilot(run: Run, opts: LLCOptions, h_star: Optional[float]) -> tuple[Optional[float], str]:
    """(h, description): the largest top Hessian eigenvalue at the final positions of short SGLD runs from w*
    (the runs' own ``hessian_max_abs_eig_end``), for a grid where w* alone gives no scale.

    Rounds of :data:`PILOT_STEPS` steps, the step size growing ×:data:`PILOT_GROWTH` per round from
    :data:`PILOT_START` (or from 1/1000 of the stability limit at w* when h* > 0), until the stability
    ratio ε·(nβh + γ)/4 at the chains' ends reaches :data:`PILOT_TARGET` (then the stiffest direction the
    chains met relaxes within a few steps, so they have reached the region the cells will sample), a chain
    diverges, or :data:`PILOT_ROUNDS` rounds have run. h is the maximum over rounds (None if none measured)."""
    scale = opts.nbeta * h_star + opts.localization if h_star is not None and math.isfinite(h_star) else 0.0
    eps = 1e-3 * 4.0 / scale if scale > 0 else PILOT_START
    h_max, log = None, []
    for _ in range(PILOT_ROUNDS):
        o = opts.replace(sampler="sgld", num_draws=PILOT_STEPS, num_burnin=0, step_size=eps, progress=False,
                         check_stability=True, distributed=False, chain_group=None, checkpoint=None,
                         checkpoint_every=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                r = run(o)
            except SamplerDivergedError:
                log.append(f"ε = {eps:.2g}: every chain diverged")
                break
        h, s = r.checks.hessian_max_abs_eig_end, r.checks.step_stability_end
        if h is not None and math.isfinite(h):
            h_max = h if h_max is None else max(h_max, h)
        log.append(f"ε = {eps:.2g}: h = {h if h is not None else float('nan'):.3g}, ratio "
                   f"{s if s is not None else float('nan'):.2g}" + (f", {len(r.diverged)} diverged" if r.diverged else ""))
        if r.diverged or (s is not None and s >= PILOT_TARGET):
            break
        eps *= PILOT_GROWTH
    return h_max, f"{len(log)} pilot rounds of {PILOT_STEPS} SGLD steps from w* ({'; '.join(log)})"


def _grid_origin(run: Run, base: LLCOptions, h_star: Optional[float], nb: float, g_min: float):
    """(h that sets ε_max = c/(nβh + γ), a sentence saying where it came from). The curvature at w* sets it,
    except where that is NaN or γ = 0 (nothing then confines the chains to where h* was measured): there
    h = max(h*, the curvature met by :func:`_curvature_pilot`)."""
    if h_star is None:
        raise ValueError("the top Hessian eigenvalue at w* could not be measured (check_stability=False, or a model "
                         "torch.func cannot transform), so there is no default step-size grid: give one explicitly "
                         "with slt_basins.calibrate(..., step_sizes=[...]) (or calibrate_potential), e.g. a geometric "
                         "grid such as [1e-3, 3e-4, 1e-4, 3e-5, 1e-5], or use a numeric step_size.")
    at_w = f"h* = {h_star:.4g}, the top Hessian eigenvalue at w*"
    if math.isfinite(h_star) and g_min > 0:
        return h_star, f"ε_max = c/(nβ·h* + γ) with {at_w}"
    why = "is NaN (a Hessian-vector product was not finite)" if math.isnan(h_star) else "alone gives no scale at γ = 0"
    h_pilot, how = _curvature_pilot(run, base.replace(localization=g_min, nbeta=nb), h_star)
    h = max([v for v in (h_star, h_pilot) if v is not None and math.isfinite(v)], default=None)
    if h is None or not nb * h + g_min > 0:
        raise ValueError(f"no step-size grid can be derived: {at_w}, {why}, and {how} measured no curvature either. "
                         "Give a grid explicitly with slt_basins.calibrate(..., step_sizes=[...]) (or "
                         "calibrate_potential), or use a numeric step_size.")
    text = (f"ε_max = c/(nβ·h + γ) with h = {h:.4g}: {at_w}, {why}, so h is the largest curvature met at the "
            f"chains' final positions in {how}")
    if math.isnan(h_star):
        warn(f"calibration: {at_w} is NaN (a Hessian-vector product was not finite, e.g. a w**0 factor or a "
             f"non-smooth loss at w*); the step-size grid was derived instead from {text.split(': ', 1)[1]}.",
             LLCWarning)
    return h, text


def _grid_plan(run: Run, base: LLCOptions, step_sizes, gammas: list[float], nbetas):
    """[(nβ, γ, ε grid)] of the sweep, h* at w* (None when not needed) and where the grid came from: the
    default grid and nβ come from a pilot run (and, where w* gives no scale, from :func:`_curvature_pilot`)."""
    nb_in = None if nbetas is None else _as_list("nbetas", nbetas, None)
    if nb_in is not None and any(b <= 0 for b in nb_in):
        raise ValueError(f"nbetas must be > 0; got {nbetas!r}.")
    grid = None if step_sizes is None else _as_list("step_sizes", step_sizes, None)
    if grid is not None and any(e <= 0 for e in grid):
        raise ValueError(f"step sizes must be > 0; got {step_sizes!r}.")
    h_star, origin = None, "the grid given (step_sizes)"
    if grid is None or nb_in is None:
        h_star, nb_default, _ = _pilot(run, base.replace(localization=gammas[0],
                                                          nbeta=None if nb_in is None else nb_in[0]))
        nb_in = [nb_default] if nb_in is None else nb_in
    h_grid = None
    if grid is None:
        h_grid, origin = _grid_origin(run, base, h_star, max(nb_in), min(gammas))
    return [(nb, g, sorted(grid, reverse=True) if grid is not None else default_step_sizes(h_grid, nb, g, base.kernel))
            for nb in sorted(nb_in, reverse=True) for g in sorted(gammas)], h_star, origin


def _calibrate(run: Run, base: LLCOptions, *, step_sizes, localizations, nbetas, min_accept, max_rhat,
               plateau_tol, stop_early: bool, progress: bool) -> CalibrationResult:
    """The sweep behind :func:`calibrate`, :func:`calibrate_potential` and ``step_size="auto"``.

    ``run`` estimates the LLC of one fixed target with given settings; ``base`` holds the settings
    of every cell except step size, localization and nβ, which the sweep varies."""
    t_start = time.perf_counter()
    sampler = base.kernel.name
    gammas = _as_list("localizations", localizations, base.localization)
    plan, h_star, origin = _grid_plan(run, base, step_sizes, gammas, nbetas)
    sw = _Sweep(run, base, min_accept, max_rhat, plateau_tol, stop_early)
    rules = dict(min_accept=min_accept, min_accept_by_sampler={sampler: _threshold(sampler, min_accept)},
                 max_rhat=max_rhat, plateau_tol=plateau_tol, stop_early=stop_early, num_chains=base.num_chains,
                 num_draws=base.num_draws, num_burnin=base.num_burnin)
    rows: list[dict] = []
    bar = tqdm(total=sum(len(p[2]) for p in plan), desc="calibrating", unit="cell", disable=not progress)
    try:
        for nb, g, eps_list in plan:
            rows += _scan(sw, nb, g, eps_list, sampler, bar)
    finally:
        bar.close()
    d_known = [r["d"] for r in rows if not pd.isna(r["d"])]
    for r in rows:  # all-diverged cells return no d; every cell samples the same parameters
        if pd.isna(r["d"]) and d_known:
            r["d"] = d_known[0]
    table, pick, text = sw.select(rows)
    table = table.reset_index(drop=True)
    if pick is None:
        raise CalibrationError(text, table)
    best = table[table["chosen"]].iloc[0]
    return CalibrationResult(table=table, step_size=float(best["step_size"]),
                             localization=float(best["localization"]), nbeta=float(best["nbeta"]), reason=text,
                             rules=rules, hessian_max_abs_eig=h_star, wall_time_s=time.perf_counter() - t_start,
                             grid_origin=origin)


_COLUMNS = ["nbeta", "localization", "step_size", "refined", "num_draws", "num_burnin", "attempts", "ran", "llc", "mcse", "r_hat", "ess_bulk", "diverged",
            "num_chains", "mala_accept", "step_stability", "step_stability_end", "wall_s", "sampler", "d",
            "warnings", "error", "skip_reason"]


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df[[c for c in _COLUMNS if c in df] + [c for c in df if c not in _COLUMNS]]


# --- public entry points ------------------------------------------------------------------------------


def calibrate(
    model,
    data,
    loss="mse",
    *,
    step_sizes: Optional[Sequence[float]] = None,
    localizations: Union[None, float, Sequence[float]] = None,
    nbetas: Union[None, float, Sequence[float]] = None,
    sampler="sgld",
    num_chains: int = 4,
    num_draws: int = 300,
    num_burnin: int = 200,
    batch_size: Optional[int] = None,
    seed: int = 0,
    min_accept: Optional[float] = None,
    max_rhat: float = MAX_RHAT,
    plateau_tol: float = PLATEAU_TOL,
    stop_early: bool = True,
    progress: bool = True,
    **estimate_llc_kwargs,
) -> CalibrationResult:
    """Sweep step size × localization (× nβ) with short :func:`~slt_basins.estimate_llc` runs and pick a
    setting by the rules of :mod:`slt_basins.calibration` (no reference sampler needed).

    Args:
        model, data, loss: as in :func:`~slt_basins.estimate_llc`; the model is not modified.
        step_sizes: the ε grid; default: from ε_max = c/(nβ·h* + γ) (c = 4, 8 for SGNHT; h* the largest
            Hessian eigenvalue at w*) down five decades, two points per decade.
        localizations: γ values (a number or a list); default: estimate_llc's default γ. With several,
            the smallest γ with a plateau is chosen.
        nbetas: nβ values; default: n/log n. With several, the largest nβ with a plateau is chosen.
        sampler, batch_size, seed: as in estimate_llc; every cell uses the same seed.
        num_chains, num_draws, num_burnin: the budget of each cell (default 4 × (200 + 300) steps).
        **estimate_llc_kwargs: passed to every cell (``params``, ``device``, ``divergence_bound``, ...).
        min_accept: threshold of rule 2 on the 1-D equivalent MALA acceptance 1 − (1 − a)/√d (unadjusted
            kernels; default 0.998 ≈ a 2 % variance inflation on a Gaussian) or on MALA's own acceptance
            rate (default 0.5).
        max_rhat: rule 2's bound on R-hat (default 1.1).
        plateau_tol: rule 3's relative tolerance between neighbouring step sizes (default 0.02), on top of
            2 combined MCSEs.
        stop_early: scan each (nβ, γ) from the largest ε down and stop once its plateau is found; the cells
            not run are kept in the table with ``ran=False``. False runs every cell (a fuller figure).
        progress: a progress bar over cells (the cells themselves run silently; their warnings are
            captured into the table's ``warnings`` column).

    Cost: one 4-step pilot run (at most 10 Hessian-vector products for h*, on one minibatch for a minibatch
    model) when the grid or nβ is defaulted,
    then (num_burnin + num_draws) steps per cell that runs, up to 8× for the retries and comparison
    partners described in the module docstring, plus each cell's stability and MALA checks; cells
    where every chain diverges stop early. With ``stop_early`` a scan typically runs the diverging
    top of the grid plus 2–4 full cells (6–11 cells in all on the toy suite's potentials).

    Returns:
        :class:`CalibrationResult`; use ``estimate_llc(model, data, **result.settings)``.

    Raises:
        CalibrationError: no setting passed; the message says what to try next, ``.table`` has every cell.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(500, 3); y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(500)
        >>> model = nn.Linear(3, 1)
        >>> sol = torch.linalg.lstsq(torch.cat([x, torch.ones(500, 1)], 1), y[:, None]).solution
        >>> with torch.no_grad(): _ = model.weight.copy_(sol[:3].T); _ = model.bias.copy_(sol[3])
        >>> calibrate(model, (x, y), step_size=1e-4)  # the swept settings have their own arguments
        Traceback (most recent call last):
        ...
        TypeError: pass 'step_size' through the calibration's own arguments (step_sizes, localizations, nbetas, progress), not as an extra keyword.

        The sweep itself (about 6 cells of 500 steps; minutes on 2 CPU cores, so not run here):

        >>> cal = calibrate(model, (x, y), localizations=1.0, progress=False)  # doctest: +SKIP
        >>> cal.step_size < 4 / (cal.nbeta * cal.hessian_max_abs_eig)  # doctest: +SKIP
        True
        >>> r = estimate_llc(model, (x, y), **cal.settings, progress=False)  # doctest: +SKIP
    """
    base = _base_options(MODEL_DEFAULTS, sampler=sampler, num_chains=num_chains, num_draws=num_draws,
                         num_burnin=num_burnin, batch_size=batch_size, seed=seed, **estimate_llc_kwargs)
    target = ModelTarget.build(model, data, loss, base)
    return _calibrate(lambda o: sample(target, o), base, step_sizes=step_sizes, localizations=localizations,
                      nbetas=nbetas, min_accept=min_accept, max_rhat=max_rhat, plateau_tol=plateau_tol,
                      stop_early=stop_early, progress=progress)


def _base_options(defaults: LLCOptions, **options) -> LLCOptions:
    """The settings every cell shares; the swept ones must come through the calibration's own arguments."""
    for k in ("step_size", "localization", "nbeta", "progress"):
        if k in options:
            raise TypeError(f"pass {k!r} through the calibration's own arguments (step_sizes, localizations, "
                            "nbetas, progress), not as an extra keyword.")
    names = set(user_options())
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; the estimate's options are {sorted(names)}.")
    return defaults.replace(**options, checkpoint=None, checkpoint_every=None, callback=None)


def calibrate_potential(
    potential,
    w_star,
    *,
    nbeta: Union[float, Sequence[float]],
    step_sizes: Optional[Sequence[float]] = None,
    localizations: Union[None, float, Sequence[float]] = None,
    sampler="sgld",
    num_chains: int = 4,
    num_draws: int = 300,
    num_burnin: int = 200,
    seed: int = 0,
    min_accept: Optional[float] = None,
    max_rhat: float = MAX_RHAT,
    plateau_tol: float = PLATEAU_TOL,
    stop_early: bool = True,
    progress: bool = True,
    **estimate_kwargs,
) -> CalibrationResult:
    """:func:`calibrate` for a loss K(w) given directly (cells run :func:`~slt_basins.estimate_llc_potential`).

    Args:
        potential, w_star: as in estimate_llc_potential.
        nbeta: nβ, or a list of values (the largest with a plateau is chosen).
        localizations: γ values; default estimate_llc_potential's default γ = 1.
        step_sizes, sampler, num_chains, num_draws, num_burnin, seed: as in :func:`calibrate`.
        **estimate_kwargs: passed to every cell (``device``, ``divergence_bound``, ...).
        min_accept, max_rhat, plateau_tol, stop_early, progress: the rules and the scan, as in
            :func:`calibrate`.

    Example:
        >>> import torch
        >>> cal = calibrate_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64),
        ...                           nbeta=100.0, step_sizes=[2e-3, 2e-4, 6.3e-5], num_draws=200,
        ...                           num_burnin=100, progress=False)
        >>> round(cal.step_size, 6)  # 2e-3 is rejected for step-size bias; a refinement cell lands below it
        0.000285
        >>> 0 < cal.step_size * (100.0 * 2 + 1) / 4 <= 0.05  # a small fraction of the stability limit
        True
    """
    base = _base_options(POTENTIAL_DEFAULTS, sampler=sampler, num_chains=num_chains, num_draws=num_draws,
                         num_burnin=num_burnin, seed=seed, **estimate_kwargs)
    target = PotentialTarget.build(potential, w_star, base)
    return _calibrate(lambda o: sample(target, o), base, step_sizes=step_sizes, localizations=localizations,
                      nbetas=nbeta, min_accept=min_accept, max_rhat=max_rhat, plateau_tol=plateau_tol,
                      stop_early=stop_early, progress=progress)


# --- step_size="auto" ---------------------------------------------------------------------------------

TREND_SE = 2.0  # run_auto warns when the cells' step-size trend puts the bias at the chosen ε beyond 2 se ...
# ... and beyond PLATEAU_TOL of λ̂ (module docstring, "After the choice")


class StepTrend(NamedTuple):
    """The step-size bias at a chosen ε implied by the calibration cells (:func:`step_trend`): ``bias`` =
    c·ε from a weighted least-squares line λ̂(ε') = a + c·ε' (weights 1/MCSE²) over ``cells`` cells,
    ``se`` its standard error (ε·se(c)), the cells' ``step_sizes`` and ``llcs``, and ``limit`` = a, the
    line's λ̂ at ε → 0."""

    bias: float
    se: float
    cells: int
    step_sizes: tuple
    llcs: tuple
    limit: float


def step_trend(table: pd.DataFrame, step_size: float, nbeta: float, localization: float) -> Optional[StepTrend]:
    """How much λ̂ at ``step_size`` exceeds its ε → 0 limit, by a weighted linear fit over the calibration
    cells of (``nbeta``, ``localization``) at that step size or below that ran stable, without divergence,
    and with a finite positive MCSE. None with fewer than two distinct step sizes.

    The step-size bias of an unadjusted Langevin kernel is O(ε) (docs page *Theory*, "Step-size bias"),
    so λ̂(ε) ≈ λ̂(0) + c·ε over a plateau's few cells; ``bias`` = c·ε. The error bar treats the cells as
    independent; they share the seed (common random numbers), which makes neighbouring cells agree more
    than their MCSEs say, so ``se`` errs on the wide side. A fall of λ̂ with ε can also come from the
    smaller steps not having equilibrated (their R-hat says so).

    >>> t = pd.DataFrame(dict(nbeta=100.0, localization=1.0, step_size=[4e-3, 2e-3, 1e-3], ran=True, diverged=0,
    ...                       stable=True, llc=[1.3, 1.2, 1.1], mcse=0.01))
    >>> tr = step_trend(t, 2e-3, 100.0, 1.0)   # the chosen 2e-3 and the 1e-3 below it
    >>> round(tr.bias, 6), tr.cells, round(tr.limit, 6)   # λ̂ = 1.0 + 100·ε: the bias at ε = 2e-3 is 0.2
    (0.2, 2, 1.0)
    """
    t = table[(table["nbeta"] == nbeta) & (table["localization"] == localization) & table["ran"].astype(bool)
              & (table["diverged"] == 0) & table["stable"].astype(bool) & (table["step_size"] <= step_size * (1 + 1e-9))]
    t = t[np.isfinite(t["llc"].to_numpy(float)) & (t["mcse"].to_numpy(float) > 0)]
    x, y = t["step_size"].to_numpy(float), t["llc"].to_numpy(float)
    if len(np.unique(x)) < 2:
        return None
    w = 1.0 / t["mcse"].to_numpy(float) ** 2
    xm, ym = float((w * x).sum() / w.sum()), float((w * y).sum() / w.sum())
    sxx = float((w * (x - xm) ** 2).sum())
    c = float((w * (x - xm) * (y - ym)).sum()) / sxx
    return StepTrend(c * step_size, step_size / math.sqrt(sxx), len(t), tuple(x.tolist()), tuple(y.tolist()),
                     ym - c * xm)


def _trend_warning(tr: Optional[StepTrend], llc: float, step_size: float) -> Optional[str]:
    """The warning of ``step_size="auto"`` when the cells' trend is significant and large (:data:`TREND_SE`)."""
    if tr is None or not (abs(tr.bias) > TREND_SE * tr.se and abs(tr.bias) > PLATEAU_TOL * abs(llc)):
        return None
    cells = ", ".join(f"{v:.4g} at ε = {e:.3g}" for e, v in sorted(zip(tr.step_sizes, tr.llcs), reverse=True))
    way = "falls" if tr.bias > 0 else "rises"
    return (f'step_size="auto" chose ε = {step_size:.3g}, but λ̂ {way} as the step shrinks in its calibration cells '
            f"({cells}): a line in ε puts the step-size bias of λ̂ at the chosen ε at {tr.bias:+.3g} ± {tr.se:.2g} "
            + (f"({tr.bias / llc:+.1%} of λ̂ = {llc:.4g})" if llc else f"(λ̂ = {llc:.4g})")
            + ", more than the error bar says. Confirm with "
            f"step_size={step_size / 3:.2g} and 3× num_draws and num_burnin; a smaller step that has not "
            "equilibrated shows the same trend (check its R-hat).")


AUTO_FRACTION = 5  # calibration cells get 1/5 of the user's draws and burn-in ...
AUTO_MIN_DRAWS, AUTO_MIN_BURNIN = 200, 100  # ... but at least this many


def auto_budget(num_draws: int, num_burnin: int) -> tuple[int, int]:
    """(draws, burn-in) of each calibration cell behind ``step_size="auto"``."""
    return (max(AUTO_MIN_DRAWS, num_draws // AUTO_FRACTION), max(AUTO_MIN_BURNIN, num_burnin // AUTO_FRACTION))


def run_auto(run: Run, opts: LLCOptions) -> LLCResult:
    """``step_size="auto"``: calibrate ε at the user's γ, nβ, sampler, chains and batch size with cells of
    :func:`auto_budget` draws, then run ``opts`` with the chosen ε. ``run`` estimates the LLC of one
    fixed target (the front doors pass the shared sampling tail on their target); the calibration
    summary is stored in ``result.checks.calibration``."""
    draws, burn = auto_budget(opts.num_draws, opts.num_burnin)
    base = opts.replace(step_size=1.0, num_draws=draws, num_burnin=burn, checkpoint=None, checkpoint_every=None,
                        callback=None)
    try:
        cal = _calibrate(run, base, step_sizes=None, localizations=[opts.localization],
                         nbetas=None if opts.nbeta is None else [opts.nbeta], min_accept=None,
                         max_rhat=MAX_RHAT, plateau_tol=PLATEAU_TOL, stop_early=True, progress=opts.progress)
    except CalibrationError as e:
        raise CalibrationError(
            f'step_size="auto" found no step size (calibration cells of {draws} draws after {burn} burn-in steps, '
            f"1/{AUTO_FRACTION} of the run's): {e} To go further, call slt_basins.calibrate(...) or "
            "calibrate_potential(...) directly (they take step_sizes=[...], localizations, nbetas, stop_early and "
            "the cells' num_draws, num_burnin), or pass a numeric step_size.", e.table) from None
    result = run(opts.replace(step_size=cal.step_size))
    result.config["step_size_auto"] = True
    tr = step_trend(cal.table, cal.step_size, cal.nbeta, cal.localization)
    result.checks.calibration = dict(step_size=cal.step_size, reason=cal.reason, wall_time_s=cal.wall_time_s,
                                     hessian_max_abs_eig=cal.hessian_max_abs_eig, grid_origin=cal.grid_origin,
                                     rules=cal.rules, step_bias=None if tr is None else tr.bias,
                                     step_bias_se=None if tr is None else tr.se,
                                     table=cal.table.to_dict("records"))
    if (msg := _trend_warning(tr, result.llc_mean, cal.step_size)) is not None:
        warn(msg, LLCWarning)
    return result
