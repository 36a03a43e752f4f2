"""Multi-temperature LLC: fit λ̂(nβ) across a sweep of nβ and extrapolate the multiplicity bias away.

At a single inverse temperature t = nβ the LLC estimator measures t·E_t[L − L*], which for a
singularity with learning coefficient λ and multiplicity m is (Watanabe 2009, *Algebraic Geometry and
Statistical Learning Theory*, from Z(t) ≍ t^{−λ}(log t)^{m−1}; docs page *Theory*, "Finite temperature")

    t·E_t[L − L*] = λ − (m − 1)/log t + O(1/log² t),

always below λ when m > 1 (the crossing valley w1²w2², λ = 1/2, m = 2, gives 0.39 at t = 10³). The
bias decays only like 1/log t, so more draws at one t never remove it. Estimating λ̂(t) at several t
and fitting the law above separates λ from (m − 1) (docs page *Theory*, "The multi-temperature
estimator"; Wei et al. 2022, IEEE TNNLS, regress E_β[nL_n] on 1/β over a narrow range around
β = 1/log n, which assumes m = 1).

* :func:`fit_multitemperature`: the pure fitting core (weighted least squares on given λ̂(t) ± s.e.).
* :func:`estimate_llc_multitemperature`: a model and its data; runs :func:`~slt_basins.estimate_llc`
  at each nβ, fits, and reports the local WBIC at β = 1/log n; or, with ``method="reweight"``, one
  run whose draws are reweighted to neighbouring temperatures (below).
* :func:`estimate_llc_multitemperature_potential`: a loss K(w) given directly (toys), via
  :func:`~slt_basins.estimate_llc_potential`.
* :func:`reweight_llc`: the pure core of the reweighting (no sampling), on given per-draw values.

The fit models, in x = 1/(log t + c) with c = ``log_offset`` (0 by default, the law above):

* ``"constant"``:      y = λ                      (m = 1; regular or homogeneous singularities);
* ``"multiplicity"``:  y = λ − (m − 1)·x;
* ``"quadratic"``:     y = λ − (m − 1)·x + ν·x²   (keeps the O(1/log² t) term).

Why the quadratic term matters. Z(t) ≍ t^{−λ}P(log t) with P a polynomial of degree m − 1, so
t·E_t[K] = λ − P'(ℓ)/P(ℓ) = λ − Σ_i 1/(ℓ − r_i), ℓ = log t. For m = 2 this is λ − 1/(ℓ + c) exactly
(up to the next pole), e.g. c = γ_E + 2 log 2 for w1²w2² on [−1, 1]²; c absorbs the scale of K and
of the prior (K → aK shifts c by log a), so it is not known in general. Expanding 1/(ℓ + c) in 1/ℓ
gives the quadratic model with ν = (m − 1)c. On the exact finite-t values of w1²w2² (λ = 1/2,
uniform prior on [−1, 1]²) at five t over 10²…10⁴ the linear model gives λ = 0.472, m = 1.58, the
quadratic λ = 0.494, m = 1.86; for w1²w2²w3² (m = 3) 0.425/1.93 and 0.484/2.69. The price is noise:
for equal MCSEs σ at those five t, se(λ) ≈ 1.8σ (linear) against 9.4σ (quadratic); a sweep reaching
down to t = 10 (cheap: the mixing time along a flat valley, hence the cost, grows ∝ t) cuts the
latter to ~2.4σ for seven t over 10…10⁴. Fitting c itself (y = λ − (m−1)/(ℓ + c)) is exact for m = 2
but overshoots for m = 3 (λ = 0.52) and its se(λ) is ~17σ, so it is not offered; pass
``log_offset=c`` when c is known (then the linear model is exact for m = 2). Integer m is not
imposed: with c unknown, an m = 3 law fits the m = 2 data to a residual of ~10⁻³ (below realistic
MCSEs) with λ = 0.55, so an integer constraint would choose m by noise.

The ``"auto"`` rule. Fit the linear model; if its slope m − 1 is not positive at ≥ ``threshold``
(default 3) standard errors, use the constant model (report no multiplicity). Otherwise use the linear
model, or the quadratic one when there are ≥ 4 temperatures and it lowers χ² by more than 2 (Akaike:
the extra term pays for its parameter). The first step is conservative because declaring m > 1 moves
λ; the second is a bias–variance choice between two models that both assume m > 1, where the
quadratic term is generically present. In simulations (exact crossing-valley values plus Gaussian
noise of 0.002–0.01, sweeps 10…10³, 10…10⁴, 10²…10⁴) the Akaike choice had an RMSE of λ at most
0.015 above the better of the two fixed models, except on the noisiest, narrowest sweep (0.01 over
10²…10⁴: 0.075 against 0.036 for the linear fit); a 3-s.e. test for ν did worse in most cases.

Error bars. Weighted least squares with weights 1/MCSE²; the parameter covariance is (XᵀWX)⁻¹,
multiplied by χ²/dof when that exceeds 1 (Birge ratio: the scatter is larger than the MCSEs claim,
e.g. from a missing term or underestimated MCSEs). The standard errors are statistical only: they do
not include the bias of the chosen model (the neglected O(1/log³ t) term, or O(1/log² t) for the
linear fit), nor biases that every temperature shares (step size, localisation, minibatch noise).

Step size across the sweep. By default (``step_size_scaling="stability"``) the reference temperature
is sampled first and the others get ε_t = ε·(t_ref·h + γ)/(t·h + γ), with h the top curvature that
run measured at w* and at its chains' final positions, so that SGLD's stability ratio ε·(nβ·h + γ)/4
is the same at every temperature; burn-in grows as ε/ε_t so that the flat directions relax. The
1/nβ rule of earlier releases is ``step_size_scaling="inverse"``. Details in the functions' docstrings.

The reweighting estimator (``method="reweight"``, :func:`reweight_llc`). One run at t₀ = nβ₀; its
draws U = t₀·K, K = L − L(w*), are reweighted to t = t₀(1 ∓ δ) by ω ∝ exp(−(t − t₀)·K) (the
localisation term does not depend on β, so it cancels), and λ is read as the slope of E_β[n·L_n]
against 1/β: S_δ = (E_{t₁}[K] − E_{t₂}[K])/(1/t₁ − 1/t₂), δ = 1/√(2 log n) by default (Lau et al.
2023, arXiv:2308.12108, after Watanabe 2013, JMLR 14, arXiv:1208.6338). Since dE_t[K]/dt = −Var_t(K),
its δ → 0 limit is S₀ = t₀²·Var_{t₀}(K) = β₀²·Var(n·L_n); in cumulants κ_j of U,
S_δ = (1 − δ²)·(κ₂ + δ²κ₄/6 + δ⁴κ₆/120 + …).

What it estimates. With g(t) = t·E_t[K] (what one temperature measures), S₀ = g − dg/dlog t exactly.
Under the law above, g = λ − Σ_i 1/(log t − r_i), so S₀ = λ − (m − 1)/log t − (m − 1)/log² t + O(1/log³ t):
the reweighting does not remove the multiplicity bias. It keeps the leading term and adds a second
of the same sign (S₀ < g wherever g increases with t); S_δ differs from S₀ by O(δ²(m − 1)/log² t).
Exact values with γ = 1 (quadrature): w1²w2² at t = 100, g = 0.354, S₀ = 0.334, S_δ = 0.332 (δ = 0.278);
at t = 1000, 0.390, 0.378, 0.378. Where g does not depend on t it is exact: t·K ~ Gamma(λ, 1) for a
quasi-homogeneous K under a flat prior gives S_δ = λ for every δ, and a quadratic K without
localisation gives d/2. The localisation and step-size biases grow: a direction of curvature a
contributes ½·r² to S₀ and ½·r(t₁)·r(t₂) to S_δ instead of ½·r to g, r = ta/(ta + γ), and SGLD's
inflation 1/(1 − ρ) of a Gaussian direction's variance, ρ = ε(ta + γ)/4, enters squared. What it
offers: from one run, the local slope dλ̂/dlog t = g − S₀ at t₀ (≈ (m − 1)/log² t₀ ≥ 0; positive
beyond its error bar means a sweep is needed, or localisation), and an estimate that never uses L(w*).

Its error bars. S₀ is the mean of the per-draw products (U₁ − Ū₁)(U₂ − Ū₂) (U₂ = U₁ for exact
losses) and its MCSE is the MCSE of those products (the delta method, as the centring's own error is
second order), computed as every LLC error bar is (:func:`~slt_basins.diagnostics.llc_mcse`: the larger
of ArviZ's autocorrelation-aware MCSE and the between-chain standard error). S_δ's MCSE is the MCSE of
its influence values (1 − δ²)/(2δ)·[ω₁(U − Ē₁)/ω̄₁ − ω₂(U − Ē₂)/ω̄₂]. A variance is noisier than a mean:
for t·K ~ Gamma(λ, 1) the s.d. per effective draw is √(2λ² + 6λ) against √λ for λ̂(t₀), i.e. 3.2× at
λ = 2, 10× at λ = 50. The importance weights keep a fraction ≈ exp(−δ²·λ) of the draws (Kish): small
for large models, where span=0 is the usable form (a warning says so below 10 %).

Minibatches. A minibatch run records U₁ = t₀(L_B(w) − L_B(w*)) = U + ξ, with ξ the paired minibatch
noise (mean 0 given w), so Var(U₁) = Var(U) + E[σ²(w)], and σ² ≈ t₀²·Var_i(ℓ_i(w) − ℓ_i(w*))/B grows
∝ t₀/B: often larger than Var(U) itself. The front door therefore evaluates the training loss a second
time at every draw on an independent minibatch (``observe=``: one forward pass of B examples per
draw, about a third of a step), and S₀ = Cov(U₁, U₂), which ξ does not bias. Importance weights of a
noisy U are biased by a w-dependent factor (E e^{−αξ} = e^{α²σ²(w)/2} for Gaussian ξ) that two
evaluations cannot undo, so with minibatches the default span is 0 and span > 0 is refused; exact
losses (``batch_size=None``) cost n/B times more per step. The estimate ``noise_variance`` =
mean((U₁ − U₂)²)/2 reports the noise removed. Minibatch *gradient* noise still inflates the sampled
variance itself (first order: 1 + ε·t₀²·s²/4 per direction, s² the batch gradient's variance), twice
as strongly in S₀ as in g.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader

from . import checks, diagnostics
from .data import as_tensors
from .errors import LLCWarning, SamplerDivergedError, warn
from .llc import estimate_llc, estimate_llc_potential
from .options import MODEL_DEFAULTS, POTENTIAL_DEFAULTS, LLCOptions, check_positive, default_nbeta, user_options
from .result import LLCResult

__all__ = [
    "fit_multitemperature",
    "MultiTemperatureFit",
    "MultiTemperatureResult",
    "estimate_llc_multitemperature",
    "estimate_llc_multitemperature_potential",
    "reweight_llc",
    "ReweightResult",
    "default_span",
    "default_nbetas",
]

FITS = ("constant", "multiplicity", "quadratic")
_NPARAMS = {"constant": 1, "multiplicity": 2, "quadratic": 3}
_AIC_GAIN = 2.0  # χ² drop needed to add the 1/log² t term (one parameter, Akaike)
_POOR_FIT_P = 1e-3


# --------------------------------------------------------------------------------------------------
# the fitting core (pure: no sampling)
# --------------------------------------------------------------------------------------------------
@dataclass
class MultiTemperatureFit:
    """A weighted least-squares fit of λ̂(t) = t·E_t[L − L*] against x = 1/(log t + c).

    Attributes:
        fit: the model used, ``"constant"``, ``"multiplicity"`` or ``"quadratic"``.
        llc, llc_se: the t → ∞ limit λ and its standard error (inflated by √(χ²/dof) when > 1).
        multiplicity, multiplicity_se: m = 1 + slope and its s.e.; None for the constant fit (m = 1
            is then assumed, not estimated).
        coef: (λ, m − 1[, ν]) in y = λ − (m − 1)·x + ν·x².
        cov: their covariance (inflated as above).
        chi2, dof, p_value: goodness of fit of the chosen model (p_value None when dof = 0).
        se_scale: the inflation factor max(1, √(χ²/dof)) applied to the standard errors.
        log_offset: c.
        nbeta, llc_values, se_values: the inputs, sorted by nβ.
        candidates: every model that could be fitted, one row each (λ, s.e., m, s.e., χ², dof,
            p-value, AIC = χ² + 2·parameters, slope z-score, chosen).
        notes: the warnings issued, for the record.

    The names ``llc``/``llc_se`` (not ``llc_mean``/``mcse``) are deliberate: this is a fitted
    parameter next to m and ν; see :class:`MultiTemperatureResult` for the result's names.

    Example:
        >>> f = fit_multitemperature([1e2, 1e3, 1e4], [0.40, 0.42, 0.43], [0.01] * 3, "multiplicity")
        >>> round(f.llc, 2), f.predict([1e3]).round(2).tolist(), bool(f.predict_x([0.0])[0] == f.llc)
        (0.46, [0.42], True)
    """

    fit: str
    llc: float
    llc_se: float
    multiplicity: Optional[float]
    multiplicity_se: Optional[float]
    coef: np.ndarray
    cov: np.ndarray
    chi2: float
    dof: int
    p_value: Optional[float]
    se_scale: float
    log_offset: float
    nbeta: np.ndarray
    llc_values: np.ndarray
    se_values: np.ndarray
    candidates: pd.DataFrame
    notes: list = field(default_factory=list)

    def predict(self, nbeta) -> np.ndarray:
        """The fitted λ̂(t) at the given nβ (> e^{−c})."""
        t = np.atleast_1d(np.asarray(nbeta, dtype=float))
        return _design(self.fit, _x(t, self.log_offset)) @ self.coef

    def predict_x(self, x) -> np.ndarray:
        """The fitted curve as a function of x = 1/(log t + c) (x = 0 is t = ∞, where it equals λ)."""
        return _design(self.fit, np.atleast_1d(np.asarray(x, dtype=float))) @ self.coef


def _x(t: np.ndarray, c: float) -> np.ndarray:
    return 1.0 / (np.log(t) + c)


def _design(fit: str, x: np.ndarray) -> np.ndarray:
    cols = [np.ones_like(x), -x, x * x][: _NPARAMS[fit]]
    return np.stack(cols, axis=1)


def _wls(X: np.ndarray, y: np.ndarray, se: np.ndarray):
    """Weighted least squares: (coef, raw covariance, χ²). Raises on a singular design."""
    A = X / se[:, None]
    b = y / se
    AtA = A.T @ A
    if np.linalg.cond(AtA) > 1e14:
        raise ValueError("the temperatures are too close together to fit this model (singular design); "
                         "spread nbetas over at least one decade.")
    cov = np.linalg.inv(AtA)
    coef = cov @ (A.T @ b)
    chi2 = float(((A @ coef - b) ** 2).sum())
    return coef, cov, chi2


def _fit_one(fit: str, x: np.ndarray, y: np.ndarray, se: np.ndarray) -> dict:
    k = _NPARAMS[fit]
    coef, cov, chi2 = _wls(_design(fit, x), y, se)
    dof = len(y) - k
    scale = max(1.0, math.sqrt(chi2 / dof)) if dof > 0 else 1.0
    cov = cov * scale ** 2
    sd = np.sqrt(np.diag(cov))
    row = dict(fit=fit, llc=float(coef[0]), llc_se=float(sd[0]),
               multiplicity=float(1 + coef[1]) if k > 1 else None,
               multiplicity_se=float(sd[1]) if k > 1 else None,
               chi2=chi2, dof=dof, p_value=float(stats.chi2.sf(chi2, dof)) if dof > 0 else None,
               aic=chi2 + 2 * k, se_scale=scale,
               slope_z=float(coef[1] / sd[1]) if k > 1 and sd[1] > 0 else None)
    return dict(row=row, coef=coef, cov=cov)


def _as_1d(name: str, v) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers; got {v!r}.") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {a.shape}.")
    return a


def _check_nbetas(nbetas, log_offset: float = 0.0) -> np.ndarray:
    """Validate a sweep: ≥ 2 distinct finite values with log nβ + c > 0; returned as given (unsorted)."""
    if nbetas is None or isinstance(nbetas, (str, bytes)) or np.ndim(nbetas) == 0:
        raise ValueError(f"nbetas must be a sequence of at least 2 inverse temperatures nβ; got {nbetas!r}.")
    t = _as_1d("nbetas", nbetas)
    if len(t) < 2:
        raise ValueError(f"nbetas needs at least 2 values (5 recommended, over 1–2 decades); got {len(t)}.")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"every nβ must be finite and > 0; got {t.tolist()}.")
    if np.any(np.log(t) + log_offset <= 0):
        raise ValueError(f"every nβ must exceed e^(−log_offset) = {math.exp(-log_offset):.4g} (the fit uses "
                         f"1/(log nβ + log_offset)); got {t.tolist()}. Use nβ ≳ 10.")
    s = np.sort(t)
    dup = np.isclose(s[1:], s[:-1], rtol=1e-9, atol=0)
    if dup.any():
        raise ValueError(f"nbetas contains duplicate values {sorted(set(s[1:][dup].tolist()))}: each temperature "
                         "must be distinct (raise num_draws or num_chains to sample one temperature longer).")
    return t


def _check_fit(fit: str, k: Optional[int] = None) -> None:
    """``fit`` names a model (that ``k`` temperatures can determine, when ``k`` is given)."""
    if fit not in ("auto",) + FITS:
        raise ValueError(f"fit must be one of 'auto', 'constant', 'multiplicity', 'quadratic'; got {fit!r}.")
    if fit != "auto" and k is not None and k < _NPARAMS[fit]:
        raise ValueError(f"the {fit!r} fit has {_NPARAMS[fit]} parameters and needs at least that many "
                         f"temperatures; got {k}. Add temperatures or use a simpler fit.")


def _fit_inputs(nbeta, llc, se, fit: str, log_offset, threshold) -> tuple:
    """The checked inputs of :func:`fit_multitemperature`, sorted by nβ: ``(t, y, se, c)``."""
    try:
        c = float(log_offset)
    except (TypeError, ValueError):
        raise TypeError(f"log_offset must be a number; got {log_offset!r}.") from None
    if not math.isfinite(c):
        raise ValueError(f"log_offset must be finite; got {log_offset!r}.")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number of standard errors; got {threshold!r}.")
    t = _check_nbetas(nbeta, c)
    y = _as_1d("llc", llc)
    s = _as_1d("se", se)
    if not (len(y) == len(s) == len(t)):
        raise ValueError(f"nbeta, llc and se must have the same length; got {len(t)}, {len(y)}, {len(s)}.")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"llc values must be finite; got {y.tolist()} (drop temperatures whose estimate failed).")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"standard errors must be finite and > 0; got {s.tolist()}.")
    _check_fit(fit, len(t))
    order = np.argsort(t)
    return t[order], y[order], s[order], c


def _auto_choice(fits: dict, threshold: float) -> tuple:
    """The ``"auto"`` rule of the module docstring: ``(chosen model, notes)``."""
    notes = []
    lin = fits["multiplicity"]["row"]
    z = lin["slope_z"] if lin["slope_z"] is not None else 0.0
    chosen = "constant"
    if z >= threshold:
        chosen = "multiplicity"
        if "quadratic" in fits and fits["quadratic"]["row"]["dof"] >= 1 and \
                lin["chi2"] - fits["quadratic"]["row"]["chi2"] > _AIC_GAIN:
            chosen = "quadratic"
    elif z <= -threshold:
        notes.append(f"λ̂ decreases with nβ (slope z = {z:.1f}): multiplicity only lowers λ̂ at small nβ, so this "
                     "trend is another bias. Suspects: step size (keep ε·nβ fixed across the sweep), "
                     "minibatch noise growing with nβ, poor mixing at small nβ, or w* not a local minimum. "
                     "The constant fit is reported; treat it with caution.")
    return chosen, notes


def fit_multitemperature(
    nbeta: Sequence[float],
    llc: Sequence[float],
    se: Sequence[float],
    fit: str = "auto",
    *,
    log_offset: float = 0.0,
    threshold: float = 3.0,
) -> MultiTemperatureFit:
    """Fit single-temperature LLC estimates λ̂(t) ± se(t), t = nβ, and extrapolate to t → ∞.

    Pure function (no sampling): the fitting core shared by :func:`estimate_llc_multitemperature`
    and :func:`estimate_llc_multitemperature_potential`. Models, the ``"auto"`` rule and the error
    bars are described in the module docstring; in short y = λ − (m − 1)·x + ν·x² with
    x = 1/(log t + c), truncated to 1 (``"constant"``), 2 (``"multiplicity"``) or 3 (``"quadratic"``)
    terms, by weighted least squares with weights 1/se².

    Args:
        nbeta: the inverse temperatures t = nβ (≥ 2 distinct values, each > e^{−c}).
        llc: λ̂(t), dimensionless (each the LLC estimate at that t).
        se: their standard errors (MCSEs), > 0. Assumed independent across temperatures.
        fit: ``"auto"``, ``"constant"``, ``"multiplicity"`` or ``"quadratic"``.
        log_offset: c in x = 1/(log t + c); 0 is the asymptotic law λ − (m − 1)/log t. Pass
            a known c (γ_E + 2 log 2 ≈ 1.963 for w1²w2² under a uniform prior on [−1, 1]²) to make the
            linear model exact for m = 2.
        threshold: z-score the slope m − 1 must reach for ``"auto"`` to report multiplicity.

    Returns:
        :class:`MultiTemperatureFit`.

    Warns:
        LLCWarning: fewer than 3 temperatures; the chosen fit has no residual degrees of freedom;
            a poor fit (χ² p-value < 1e-3; the s.e. is then inflated); λ̂ decreasing with t (not a
            multiplicity effect).

    Raises:
        ValueError: bad inputs (with what to change), or a model needing more temperatures.

    Example:
        >>> t = [1e2, 1e3, 1e4, 1e5, 1e6]   # exact t·E_t[w1²w2²] on [−1, 1]² (toys.crossing_valley_box_target)
        >>> y = [0.3478, 0.3873, 0.4105, 0.4258, 0.4366]
        >>> f = fit_multitemperature(t, y, [1e-3] * 5, log_offset=0.5772 + 2 * math.log(2))
        >>> f.fit, round(f.llc, 3), round(f.multiplicity, 2)
        ('multiplicity', 0.5, 2.0)
    """
    t, y, s, c = _fit_inputs(nbeta, llc, se, fit, log_offset, threshold)
    x = _x(t, c)
    k = len(t)
    fits = {name: _fit_one(name, x, y, s) for name in FITS if k >= _NPARAMS[name]}
    chosen, notes = (fit, []) if fit != "auto" else _auto_choice(fits, threshold)
    sel = fits[chosen]
    row = sel["row"]
    if k < 3:
        notes.append(f"only {k} temperatures: the fit cannot check itself (no spare degrees of freedom for a "
                     "goodness-of-fit test of the multiplicity law). Use ≥ 3, preferably 5, over 1–2 decades.")
    if row["dof"] == 0:
        notes.append(f"the {chosen!r} fit has as many parameters as temperatures (no residual degrees of "
                     "freedom): its error bar rests on the MCSEs alone and the model is not tested.")
    elif row["p_value"] is not None and row["p_value"] < _POOR_FIT_P:
        notes.append(f"the {chosen!r} fit is poor (χ² = {row['chi2']:.3g} on {row['dof']} dof, p = {row['p_value']:.2g}): "
                     f"λ̂(nβ) does not follow the model within its MCSEs. The standard errors are inflated by "
                     f"√(χ²/dof) = {row['se_scale']:.3g}. Other biases that vary with nβ (step size, localisation, "
                     "minibatch noise, unconverged chains at large nβ) or underestimated MCSEs are likely; see the "
                     "residual_z column of the table.")
    for msg in notes:
        warnings.warn(msg, LLCWarning, stacklevel=2)
    vals = [row["llc"], row["llc_se"]] + ([row["multiplicity"], row["multiplicity_se"]] if row["multiplicity"] is not None else [])
    if not all(math.isfinite(v) for v in vals):  # cannot happen for a non-singular design; guard anyway
        raise ValueError(f"the {chosen!r} fit produced non-finite values {vals}; spread nbetas further.")
    cand = pd.DataFrame([f["row"] for f in fits.values()]).set_index("fit")
    cand["chosen"] = cand.index == chosen
    return MultiTemperatureFit(
        fit=chosen, llc=row["llc"], llc_se=row["llc_se"], multiplicity=row["multiplicity"],
        multiplicity_se=row["multiplicity_se"], coef=sel["coef"], cov=sel["cov"], chi2=row["chi2"], dof=row["dof"],
        p_value=row["p_value"], se_scale=row["se_scale"], log_offset=c, nbeta=t, llc_values=y, se_values=s,
        candidates=cand, notes=notes,
    )


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass
class MultiTemperatureResult:
    """Outcome of :func:`estimate_llc_multitemperature` or :func:`estimate_llc_multitemperature_potential`.

    Names. The estimate and its error bar are ``llc_mean`` and ``mcse``, as in
    :class:`~slt_basins.LLCResult` and in the per-temperature ``table``, so code that reads a
    single-temperature result reads this one too. ``llc`` and ``llc_se`` are read-only aliases kept
    for older code. The fit record ``details`` (:class:`MultiTemperatureFit`) and its candidate
    table keep ``llc``/``llc_se``: that is the one exception, since they describe a fitted parameter
    (alongside m and ν), not a result.

    Attributes:
        llc_mean: the extrapolated learning coefficient λ (dimensionless), t → ∞ limit of the chosen
            fit. Alias: ``llc``.
        mcse: its standard error, propagated from the per-temperature MCSEs through the weighted fit
            (and inflated by √(χ²/dof) when > 1); statistical only (see :func:`fit_multitemperature`).
            Alias: ``llc_se``.
        multiplicity, multiplicity_se: m and its s.e., or None when the constant fit was used (no
            significant multiplicity bias; m = 1 is then assumed).
        fit: ``"constant"``, ``"multiplicity"`` or ``"quadratic"``.
        table: one row per temperature: nbeta, llc_mean, mcse, r_hat, ess, diverged (number of
            diverged chains), step_size (the ε used), num_draws, num_burnin, seed, step_stability and
            step_stability_end (the run's stability ratio ε·(nβ·h + γ)/c at w* and at its chains' ends;
            NaN where not measured, e.g. ``check_stability=False``), wall_s, warnings (count),
            used (in the fit), fitted, residual_z ((λ̂ − fitted)/MCSE), wbic_point. A temperature where
            every chain diverged has used = False and NaN llc_mean/mcse (with a warning).
        results: the per-temperature :class:`~slt_basins.LLCResult` (None where every chain diverged),
            in the order of ``table``.
        wbic, wbic_se: n·E_β[L_n(w)] at β = 1/log n (nβ = n/log n), in loss units (= n·L_n(w*) +
            λ̂(n/log n)·log n), and its Monte Carlo s.e.; None without an n. It is Watanabe's (2013)
            WBIC only when the loss is the per-example negative log-likelihood (for ``"mse"`` it is
            not; a Gaussian NLL is MSE/(2σ²) + const), and it is local: the posterior is localised
            at w* (strength γ), not the global Bayes posterior.
        wbic_nbeta: n/log n, or None.
        n: the number of training examples (None for a potential without ``n``).
        details: the :class:`MultiTemperatureFit` (coefficients, covariance, χ², candidate fits).
        config: settings of the sweep (method, reference nβ, step-size scaling requested and
            ``step_size_scaling_used``, ``reference_step_size`` (ε at the reference, after "auto"),
            ``stability_curvature`` h and ``stability_target`` ε·(t_ref·h + γ)/c under "stability",
            log_offset, the shared options under ``settings``, ...).

    Example:
        >>> r = estimate_llc_multitemperature_potential(          # K = w², λ = 1/2 at every nβ
        ...     lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64), nbetas=[10, 30, 100],
        ...     num_chains=8, num_draws=400, num_burnin=100, step_size=3e-3, progress=False)
        >>> r.fit, abs(r.llc_mean - 0.5) < 5 * r.mcse + 0.05, (r.llc, r.llc_se) == (r.llc_mean, r.mcse)
        ('constant', True, True)
        >>> bool(r.summary().loc["constant", "chosen"]), len(r.plot().axes)
        (True, 2)
    """

    llc_mean: float
    mcse: float
    multiplicity: Optional[float]
    multiplicity_se: Optional[float]
    fit: str
    table: pd.DataFrame
    results: list
    wbic: Optional[float]
    wbic_se: Optional[float]
    wbic_nbeta: Optional[float]
    n: Optional[int]
    details: MultiTemperatureFit
    config: dict = field(default_factory=dict)

    @property
    def llc(self) -> float:
        """Alias of :attr:`llc_mean`, kept for older code."""
        return self.llc_mean

    @property
    def llc_se(self) -> float:
        """Alias of :attr:`mcse`, kept for older code."""
        return self.mcse

    def __str__(self) -> str:
        s = f"LLC = {self.llc_mean:.4g} ± {self.mcse:.2g} ({self.fit} fit over {int(self.table['used'].sum())} temperatures"
        if self.multiplicity is not None:
            s += f"; m = {self.multiplicity:.3g} ± {self.multiplicity_se:.2g}"
        if self.details.p_value is not None:
            s += f"; χ²/dof = {self.details.chi2:.3g}/{self.details.dof}, p = {self.details.p_value:.2g}"
        s += ")"
        if self.wbic is not None:
            s += f"; WBIC = {self.wbic:.6g} ± {self.wbic_se:.2g} at nβ = n/log n = {self.wbic_nbeta:.4g}"
        return s

    def __repr__(self) -> str:
        return f"MultiTemperatureResult({self})"

    def summary(self) -> pd.DataFrame:
        """Every candidate fit (rows): λ, s.e., m, s.e., χ², dof, p-value, AIC, slope z, chosen."""
        return self.details.candidates.copy()

    def plot(self, figsize=(10, 3.8)):
        """A matplotlib Figure (not shown): λ̂(t) ± MCSE against nβ with the fitted curve (left), and
        against 1/(log nβ + c) with the extrapolation to x = 0, i.e. t = ∞, where it meets λ (right)."""
        from matplotlib.figure import Figure

        d = self.details
        fig = Figure(figsize=figsize, layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        used = self.table[self.table["used"]]
        label = f"{self.fit} fit: λ = {self.llc_mean:.3g} ± {self.mcse:.2g}"
        if self.multiplicity is not None:
            label += f", m = {self.multiplicity:.2g} ± {self.multiplicity_se:.2g}"
        tt = np.geomspace(d.nbeta.min() / 1.5, d.nbeta.max() * 1.5, 200)
        ax1.errorbar(used["nbeta"], used["llc_mean"], yerr=used["mcse"], fmt="o", capsize=3, label="λ̂(nβ) ± MCSE")
        ax1.plot(tt, d.predict(tt), "-", label=label)
        ax1.axhspan(self.llc_mean - self.mcse, self.llc_mean + self.mcse, color="C1", alpha=0.15)
        ax1.axhline(self.llc_mean, color="C1", ls="--", lw=1)
        if self.wbic_nbeta is not None:
            ax1.axvline(self.wbic_nbeta, color="gray", ls=":", lw=1, label="n/log n (WBIC)")
        ax1.set_xscale("log")
        ax1.set_xlabel("nβ")
        ax1.set_ylabel("λ̂ = nβ·(E[L] − L(w*))")
        ax1.set_title("single-temperature estimates")
        ax1.legend(fontsize=7, loc="best")
        x = _x(used["nbeta"].to_numpy(), d.log_offset)
        xx = np.linspace(0.0, x.max() * 1.05, 200)
        ax2.errorbar(x, used["llc_mean"], yerr=used["mcse"], fmt="o", capsize=3)
        ax2.plot(xx, d.predict_x(xx), "-")
        ax2.errorbar([0.0], [self.llc_mean], yerr=[self.mcse], fmt="s", color="C1", capsize=3, label="λ (t = ∞)")
        ax2.set_xlabel("x = 1/(log nβ + c)" if d.log_offset else "x = 1/log nβ")
        ax2.set_title("extrapolation to t = ∞")
        ax2.legend(fontsize=7, loc="best")
        return fig


# --------------------------------------------------------------------------------------------------
# the sweep (shared by the model and potential versions)
# --------------------------------------------------------------------------------------------------
_PER_TEMPERATURE = ("step_size", "num_draws", "num_burnin")
_MODEL_ONLY = ("batch_size", "params", "vectorize")  # options that estimate_llc_potential does not take
SCALINGS = ("stability", "inverse", "none")
_STACK = 4  # a helper's warning points at the user's line: helper → _sweep → public function → user


def _options(kwargs: dict, kind: str) -> tuple:
    """Split the keyword options of a sweep: ``(shared, per)``.

    ``shared`` is an :class:`~slt_basins.options.LLCOptions` on the defaults of the single-temperature
    front door (:data:`~slt_basins.options.MODEL_DEFAULTS` or ``POTENTIAL_DEFAULTS``), validated now,
    before any sampling; ``per`` holds ``step_size``, ``num_draws`` and ``num_burnin`` as given (a
    scalar or one value per nβ), defaulted likewise. Unknown names raise a TypeError listing the valid ones.
    """
    if "nbeta" in kwargs:
        raise TypeError("pass the sweep as nbetas=[...], not nbeta (that is the single-temperature setting).")
    valid = [name for name in user_options() if name != "nbeta" and not (kind == "potential" and name in _MODEL_ONLY)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for a multi-temperature {kind} sweep; the valid "
                        f"options are: {', '.join(valid)}.")
    defaults = MODEL_DEFAULTS if kind == "model" else POTENTIAL_DEFAULTS
    shared = defaults.replace(**{k: v for k, v in kwargs.items() if k not in _PER_TEMPERATURE})
    return shared, {name: kwargs.get(name, getattr(defaults, name)) for name in _PER_TEMPERATURE}


def _call_kwargs(opts: LLCOptions, kind: str) -> dict:
    """``opts`` as keyword arguments of :func:`~slt_basins.estimate_llc` (or ``estimate_llc_potential``)."""
    return {name: getattr(opts, name) for name in user_options() if not (kind == "potential" and name in _MODEL_ONLY)}


def _per_temperature(name: str, value, k: int) -> Optional[list]:
    """A sequence of length k for per-temperature values, or None for a scalar."""
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        vals = list(np.asarray(value).tolist())
        if len(vals) != k:
            raise ValueError(f"{name} given per temperature must have one value per nβ ({k}); got {len(vals)}.")
        return vals
    return None


def _temperature_seed(seed: int, nbeta: float) -> int:
    """A seed for one temperature, derived from (seed, nβ): its draws do not depend on the rest of the sweep."""
    bits = int(np.float64(nbeta).view(np.uint64))
    ss = np.random.SeedSequence([int(seed), bits & 0xFFFFFFFF, bits >> 32, 0x6D74])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _reference_nbeta(t_user: np.ndarray, reference_nbeta: Optional[float]) -> float:
    """t_ref, the nβ at which ``step_size`` applies: the given value, or the geometric mean of the sweep."""
    if reference_nbeta is None:
        return float(np.exp(np.log(t_user).mean()))
    t_ref = float(reference_nbeta)
    if not (math.isfinite(t_ref) and t_ref > 0):
        raise ValueError(f"reference_nbeta must be finite and > 0; got {reference_nbeta!r}.")
    return t_ref


def _reference_run(t_user: np.ndarray, ts: list, reference_nbeta: Optional[float]) -> tuple:
    """``(t_ref, index)`` of the temperature sampled first (its ε sets the others): ``reference_nbeta``,
    which must be in the sweep, or the sweep's temperature nearest the geometric mean of ``nbetas``."""
    if reference_nbeta is None:
        g = float(np.log(t_user).mean())
        i = int(np.argmin(np.abs(np.log(ts) - g)))
        return float(ts[i]), i
    t_ref = _reference_nbeta(t_user, reference_nbeta)
    hit = np.flatnonzero(np.isclose(ts, t_ref, rtol=1e-9, atol=0))
    if not len(hit):
        raise ValueError(f"reference_nbeta = {t_ref:.6g} is not one of the temperatures {[float(f'{t:.6g}') for t in ts]}; "
                         "with step_size_scaling='stability' or step_size='auto' the reference temperature is sampled "
                         "first and its measured stability sets the step size of the others, so it must be in nbetas. "
                         "Add it, or use step_size_scaling='inverse' with a numeric step_size.")
    return float(ts[hit[0]]), int(hit[0])


def _at_temperature(shared: LLCOptions, per: dict, given: dict, t: float, t_ref: float,
                    step_size_scaling: str) -> LLCOptions:
    """The options of temperature t: the values ``given`` for it, else the scalars in ``per`` (ε scaled
    by t_ref/t under ``"inverse"``, and provisionally under ``"stability"`` until the reference run has
    measured the curvature; ``"auto"`` kept); its own seed and, with a checkpoint, its own file."""
    eps = given.get("step_size")
    if eps is None:
        eps = per["step_size"]
        if eps != "auto" and step_size_scaling in ("inverse", "stability"):
            eps = float(eps) * (1.0 if t == t_ref else t_ref / t)
    counts = {}
    for name in ("num_draws", "num_burnin"):
        v = given.get(name, per[name])
        counts[name] = int(v) if isinstance(v, float) and v.is_integer() else v
    checkpoint = None if shared.checkpoint is None else f"{shared.checkpoint}.nbeta{t:.6g}"
    return shared.replace(nbeta=t, step_size=eps if eps == "auto" else float(eps),
                          seed=_temperature_seed(shared.seed, t), checkpoint=checkpoint, **counts)


class _SweepPlan(NamedTuple):
    """The validated sweep: ``options`` per temperature (sorted by nβ), the values ``given`` per
    temperature (from sequences), the reference nβ, and ``ref``, the index sampled first (or None)."""

    options: list
    given: list
    t_ref: float
    ref: Optional[int]


def _plan(nbetas, shared: LLCOptions, per: dict, *, t_wbic: Optional[float], step_size_scaling: str,
          reference_nbeta: Optional[float], log_offset: float) -> _SweepPlan:
    """One validated :class:`LLCOptions` per temperature, sorted by nβ (n/log n added when ``t_wbic`` is
    set and missing), and which temperature runs first. Every check runs here, before sampling."""
    if step_size_scaling not in SCALINGS:
        raise ValueError(f"step_size_scaling must be 'stability' (ε ∝ 1/(nβ·h + γ), the default), 'inverse' "
                         f"(ε ∝ 1/nβ) or 'none'; got {step_size_scaling!r}.")
    t_user = _check_nbetas(nbetas, float(log_offset))
    k = len(t_user)
    seqs = {name: _per_temperature(name, per[name], k) for name in _PER_TEMPERATURE}
    eps = per["step_size"]
    if seqs["step_size"] is None and eps != "auto" and (
            isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating))):
        raise TypeError(f"step_size must be a number, 'auto' or one number per nβ; got {eps!r}.")
    rows = [(float(t), {name: v[i] for name, v in seqs.items() if v is not None}) for i, t in enumerate(t_user)]
    if t_wbic is not None and not np.any(np.isclose(t_user, t_wbic, rtol=1e-9, atol=0)):
        if any(v is not None for v in seqs.values()):
            raise ValueError(f"the WBIC temperature n/log n = {t_wbic:.6g} is not in nbetas, and step_size/num_draws/"
                             "num_burnin are given per temperature, so its settings are undefined: include n/log n "
                             "in nbetas (with its settings) or pass wbic=False.")
        rows.append((t_wbic, {}))
    rows.sort(key=lambda r: r[0])
    ts = [t for t, _ in rows]
    ref = None
    if seqs["step_size"] is None and (step_size_scaling == "stability" or eps == "auto"):
        t_ref, ref = _reference_run(t_user, ts, reference_nbeta)
    else:
        t_ref = _reference_nbeta(t_user, reference_nbeta)
    opts = [_at_temperature(shared, per, given, t, t_ref, step_size_scaling) for t, given in rows]
    return _SweepPlan(opts, [g for _, g in rows], t_ref, ref)


def _measured_curvature(res: Optional[LLCResult]) -> Optional[float]:
    """The largest finite top-curvature the reference run measured (at w* and at the chains' final
    positions), or None when it measured none."""
    if res is None:
        return None
    vals = [res.checks.hessian_max_abs_eig, res.checks.hessian_max_abs_eig_end]
    vals = [float(v) for v in vals if v is not None and math.isfinite(v) and v >= 0]
    return max(vals) if vals else None


def _stability_fallback(res: Optional[LLCResult], h: Optional[float], shared: LLCOptions) -> Optional[str]:
    """Why the stability rule cannot be applied after the reference run (None when it can)."""
    kernel = shared.kernel
    if res is None:
        return "every chain diverged at the reference temperature, so no curvature was measured"
    if kernel.preconditioner is not None or kernel.stability_divisor is None:
        return (f"the sampler {kernel.name!r} has no unpreconditioned stability ratio (preconditioned or "
                "Metropolis-adjusted)")
    if h is None:
        return "the reference run measured no finite curvature (see its checks.failures)"
    if h == 0 and shared.localization == 0:
        return "the measured curvature and γ are both 0"
    return None


def _rescale(plan: _SweepPlan, res: Optional[LLCResult], shared: LLCOptions, per: dict, scaling: str) -> tuple:
    """``(options, info)``: the other temperatures' ε (and, under ``"stability"``, burn-in) from the
    reference run's ε (``"auto"`` resolved) and measured curvature h: ε_t = ε_ref·(t_ref·h + γ)/(t·h + γ)
    and num_burnin_t = max(num_burnin, ⌈num_burnin·ε_ref/ε_t⌉). Falls back to ``"inverse"`` with a warning."""
    ref_opts = plan.options[plan.ref]
    eps_ref = float(res.config["step_size"]) if res is not None else ref_opts.step_size
    if eps_ref == "auto":
        raise SamplerDivergedError(f"every chain diverged at the reference temperature nβ = {plan.t_ref:.4g} with "
                                   "step_size='auto', so there is no step size to scale to the other temperatures; "
                                   "pass a numeric step_size (see slt_basins.calibrate).")
    h = _measured_curvature(res) if scaling == "stability" else None
    used, gamma = scaling, shared.localization
    why = _stability_fallback(res, h, shared) if scaling == "stability" else None
    if why is not None:
        warn(f"step_size_scaling='stability' fell back to 'inverse' (ε ∝ 1/nβ, burn-in as given): {why}.", LLCWarning)
        used = "inverse"
    opts = list(plan.options)
    for i, o in enumerate(opts):
        if i == plan.ref:
            continue
        if used == "stability":  # ε_t/ε_ref
            factor = (plan.t_ref * h + gamma) / (o.nbeta * h + gamma)
        else:
            factor = plan.t_ref / o.nbeta if used == "inverse" else 1.0
        changes = {} if "step_size" in plan.given[i] else dict(step_size=eps_ref * factor)
        if used == "stability" and "num_burnin" not in plan.given[i] and per["num_burnin"] > 0:
            changes["num_burnin"] = max(int(per["num_burnin"]), math.ceil(per["num_burnin"] / factor - 1e-9))
        opts[i] = o.replace(**changes)
    info = dict(step_size_scaling_used=used, reference_step_size=eps_ref, stability_curvature=h if used == "stability"
                else None, stability_target=None)
    if used == "stability":
        info["stability_target"] = eps_ref * (plan.t_ref * h + gamma) / shared.kernel.stability_divisor
    return opts, info


def _run_one(call: Callable[[LLCOptions], LLCResult], opts: LLCOptions, wbic_point: bool) -> tuple:
    """Sample one temperature: ``(result, row)``, result None when every chain diverged (with a warning).

    Each warning of the run is re-issued with the temperature it is about.
    """
    t = opts.nbeta
    t0 = time.perf_counter()
    res, failure = None, ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = call(opts)
        except SamplerDivergedError as e:
            failure = str(e)
    for w in caught:
        warnings.warn(f"at nβ = {t:.4g}: {w.message}", w.category, stacklevel=_STACK)
    if res is None:
        warnings.warn(f"at nβ = {t:.4g} every chain diverged, so this temperature is left out of the fit: {failure}",
                      LLCWarning, stacklevel=_STACK)
    row = dict(
        nbeta=t, llc_mean=res.llc_mean if res else np.nan, mcse=res.mcse if res else np.nan,
        r_hat=res.checks.get("r_hat") if res else None, ess=res.checks.get("ess_bulk") if res else None,
        diverged=len(res.diverged) if res else opts.num_chains,
        step_size=float(res.config["step_size"]) if res else opts.step_size, num_draws=opts.num_draws,
        num_burnin=opts.num_burnin, seed=opts.seed,
        step_stability=res.checks.step_stability if res else None,
        step_stability_end=res.checks.step_stability_end if res else None,
        wall_s=time.perf_counter() - t0, warnings=len(caught), used=res is not None, wbic_point=wbic_point,
    )
    return res, row


def _fit_table(table: pd.DataFrame, fit: str, log_offset: float, threshold: float) -> MultiTemperatureFit:
    """Fit the temperatures that gave an estimate; adds the ``fitted`` and ``residual_z`` columns."""
    ok = table["used"].to_numpy()
    if ok.sum() < 2:
        raise SamplerDivergedError(f"only {int(ok.sum())} of {len(table)} temperatures gave an estimate (every chain "
                                   "diverged at the others); a fit needs 2. Lower step_size or raise localization.")
    zero = table["used"] & (table["mcse"] <= 0)
    if zero.any():
        raise ValueError(f"the MCSE is 0 at nβ = {table.loc[zero, 'nbeta'].tolist()} (constant traces): the chains "
                         "do not move. Raise step_size.")
    used = table[table["used"]]
    details = fit_multitemperature(used["nbeta"], used["llc_mean"], used["mcse"], fit,
                                   log_offset=log_offset, threshold=threshold)
    table["fitted"] = details.predict(table["nbeta"].to_numpy())
    table["residual_z"] = (table["llc_mean"] - table["fitted"]) / table["mcse"]
    return details


def _local_wbic(table: pd.DataFrame, results: list, n: int) -> tuple:
    """``(wbic, wbic_se)`` = n·L_n(w*) + λ̂(n/log n)·log n and its s.e. (Watanabe 2013, JMLR 14, with
    the localised posterior); ``(None, None)`` with a warning when that temperature failed."""
    r = results[int(np.flatnonzero(table["wbic_point"].to_numpy())[0])]
    if r is None:
        warnings.warn("the WBIC temperature n/log n failed (every chain diverged): wbic is None.",
                      LLCWarning, stacklevel=_STACK)
        return None, None
    wbic = float(n * r.init_loss + r.llc_mean * math.log(n))
    if not math.isfinite(wbic):
        raise ValueError(f"the WBIC is not finite (L_n(w*) = {r.init_loss!r}); check the loss at w*.")
    return wbic, float(r.mcse * math.log(n))

def _check_half_d(value: float, se: float, results: list, what: str) -> None:
    """Warn when a corrected λ̂ exceeds d/2 (d the sampled parameters of ``results``) by more than 3 s.e.:
    impossible for the LLC of a local minimum, so the correction is an artefact (heavy tails of unstable
    chains inflate Var(n·L_n); a fit extrapolates noise). The single-temperature runs check their own λ̂."""
    d = next((r.config.get("d") for r in results if r is not None and r.config.get("d")), None)
    if d is None or not (math.isfinite(value) and math.isfinite(se)) or not checks.above_half_d(value, se, d):
        return
    warn(f"{what} λ̂ = {value:.4g} ± {se:.2g} exceeds d/2 = {d / 2:g} by more than 3 s.e., but the LLC of a local "
         "minimum is at most d/2: the correction is an artefact of its runs (read their warnings: usually chains "
         "unstable at this step size, whose excursions inflate the spread of n·L_n).", LLCWarning)


def _sweep(call: Callable[[LLCOptions], LLCResult], nbetas, *, shared: LLCOptions, per: dict, n: Optional[int],
           wbic: bool, step_size_scaling: str, reference_nbeta: Optional[float], fit: str, log_offset: float,
           threshold: float, kind: str) -> MultiTemperatureResult:
    """Plan every temperature (all checks first); run the reference temperature first when its measured
    stability (or its calibrated ε) sets the others; run the rest, fit, and add the WBIC."""
    _check_fit(fit)
    t_wbic = default_nbeta(n) if (wbic and n is not None) else None
    plan = _plan(nbetas, shared, per, t_wbic=t_wbic, step_size_scaling=step_size_scaling,
                 reference_nbeta=reference_nbeta, log_offset=log_offset)
    _check_fit(fit, len(plan.options))
    is_wbic = lambda o: t_wbic is not None and math.isclose(o.nbeta, t_wbic, rel_tol=1e-9)  # noqa: E731
    opts, info, done = plan.options, dict(step_size_scaling_used=step_size_scaling), {}
    if plan.ref is not None:
        first = opts[plan.ref]
        if step_size_scaling == "stability":
            first = first.replace(check_stability=True)  # the rule reads this run's curvature
        done[plan.ref] = _run_one(call, first, is_wbic(first))
        opts, info = _rescale(plan, done[plan.ref][0], shared, per, step_size_scaling)
    for i, o in enumerate(opts):  # a loop, not a comprehension: _STACK counts the frames up to the user's call
        if i not in done:
            done[i] = _run_one(call, o, is_wbic(o))
    results = [done[i][0] for i in range(len(opts))]
    table = pd.DataFrame([done[i][1] for i in range(len(opts))])
    details = _fit_table(table, fit, log_offset, threshold)
    if details.fit != "constant" and shared.localization and kind == "model":
        warnings.warn(
            f"multiplicity detected (m = {details.multiplicity:.3g} ± {details.multiplicity_se:.2g}). A rise of λ̂ "
            f"with nβ can also come from localisation: a direction of curvature h contributes ½·nβh/(nβh + γ), "
            f"which is low where nβ·h is not ≫ γ = {shared.localization:g} (smallest nβ here "
            f"{table['nbeta'].min():.4g}), and from minibatch gradient noise, which grows with nβ. If in doubt, "
            "rerun with a smaller localization (and a larger batch) and check that m persists.",
            LLCWarning, stacklevel=3)
    _check_half_d(details.llc, details.llc_se, results, f"the sweep's extrapolated ({details.fit} fit)")
    wbic_val, wbic_se = _local_wbic(table, results, n) if t_wbic is not None else (None, None)
    skip = _PER_TEMPERATURE + ("seed", "nbeta") + (_MODEL_ONLY if kind == "potential" else ())
    config = dict(kind=kind, method="sweep", reference_nbeta=plan.t_ref, step_size_scaling=step_size_scaling,
                  **info, log_offset=float(log_offset), threshold=threshold, fit_requested=fit, seed=shared.seed,
                  settings={k: v for k, v in shared.as_dict().items() if k not in skip})
    return MultiTemperatureResult(
        llc_mean=details.llc, mcse=details.llc_se, multiplicity=details.multiplicity,
        multiplicity_se=details.multiplicity_se, fit=details.fit, table=table, results=results, wbic=wbic_val,
        wbic_se=wbic_se, wbic_nbeta=t_wbic, n=n, details=details, config=config,
    )


def default_nbetas(n: int, num_temperatures: int = 5) -> np.ndarray:
    """The default sweep: ``num_temperatures`` nβ spaced geometrically from n/log² n to n.

    Its geometric centre is n/log n, the WBIC temperature (:func:`~slt_basins.default_nbeta`),
    which is one of the points when ``num_temperatures`` is odd. The upper end nβ = n is the Bayes
    posterior (β = 1); beyond it the sampled region K ≲ 1/nβ is smaller than the O(1/n) scale on
    which the data noise of L_n matters, so λ̂ drifts toward the geometry of L_n itself. The span,
    a factor log² n (21 at n = 100, 85 at n = 10⁴, 190 at n = 10⁶), i.e. about 1.3–2.3 decades,
    gives the lever arm on 1/log nβ needed to separate λ from (m − 1)/log nβ.

    >>> [round(float(v), 1) for v in default_nbetas(1000, 3)]
    [21.0, 144.8, 1000.0]
    """
    if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, (int, np.integer)) or num_temperatures < 2:
        raise ValueError(f"num_temperatures must be an integer ≥ 2 (5 recommended); got {num_temperatures!r}.")
    if n < 3:
        raise ValueError(f"the default sweep needs n ≥ 3 training examples; got n = {n}. Pass nbetas explicitly.")
    lo, hi = n / math.log(n) ** 2, float(n)
    if lo <= 1.0:
        raise ValueError(f"n = {n} is too small for the default sweep (n/log² n = {lo:.3g} ≤ 1); pass nbetas "
                         "explicitly, all > 1.")
    return np.geomspace(lo, hi, int(num_temperatures))



# --------------------------------------------------------------------------------------------------
# the single-run reweighting estimator
# --------------------------------------------------------------------------------------------------
METHODS = ("sweep", "reweight")
_COPY = "training data, independent minibatches"  # the observed copy of the data used by method="reweight"
_MIN_KISH = 0.1  # warn when an importance-weight set keeps less than this fraction of the draws
_MAX_RHAT = 1.05


@dataclass
class ReweightResult:
    """λ from one temperature: the slope of E_β[n·L_n] against 1/β (:func:`reweight_llc`; module docstring).

    Attributes:
        llc_mean, mcse: the estimate S_δ (dimensionless) and its chain-aware Monte Carlo standard error
            (delta method: the MCSE of the estimator's per-draw influence values, as ``llc_mcse``
            computes it). Statistical only.
        span: δ, the relative half-width of the β interval (0: the derivative, β²·Var_β(n·L_n)).
        nbeta: t₀ = nβ₀, the temperature sampled.
        nbetas: the temperatures reweighted to, t₀(1 − δ) and t₀(1 + δ) (empty for δ = 0).
        variance_llc, variance_llc_se: S₀ = Var_{t₀}(t₀·(L − L*)) = β₀²·Var(n·L_n) and its MCSE,
            with the minibatch noise removed when two independent evaluations were given.
        llc_at_nbeta, llc_at_nbeta_se: the plain estimate λ̂(t₀) = t₀·E[L − L*] (mean of the draws).
        slope, slope_se: dλ̂(t)/d log t at t₀ = λ̂(t₀) − S₀ (exact identity); ≈ (m − 1)/log² t₀ > 0
            under the multiplicity law, 0 for a quasi-homogeneous loss without localisation.
        noise_variance: the mean variance of one draw's minibatch noise (λ² units; 0 for exact losses),
            estimated as mean((U₁ − U₂)²)/2 from the two independent evaluations.
        r_hat, ess: split R-hat and bulk ESS of the per-draw values (U₁ − Ū₁)(U₂ − Ū₂) whose mean is S₀:
            whether the chains agree on the spread, not only on the mean.
        table: one row per temperature (t₀(1 − δ), t₀, t₀(1 + δ)): nbeta, llc_mean = t·E_t[L − L*]
            (reweighted), mcse, kish_ess (draws the weights keep: (Σω)²/Σω²), kish_fraction.
        result: the :class:`~slt_basins.LLCResult` of the run (None from :func:`reweight_llc`).
        wbic, wbic_se, wbic_nbeta, n: as in :class:`MultiTemperatureResult` (None unless t₀ = n/log n).
        config: the settings (method, span and how it was chosen, minibatch correction, the run's options).
        notes: the warnings issued.

    ``multiplicity`` and ``fit`` exist for code that reads either result: None and ``"reweight"``.

    >>> u = np.random.default_rng(0).gamma(2.0, 1.0, size=(4, 4000))  # t·K ~ Gamma(λ = 2): exact at any t
    >>> r = reweight_llc(u, nbeta=100.0, span=0.2)
    >>> abs(r.llc_mean - 2.0) < 4 * r.mcse, abs(r.slope) < 4 * r.slope_se
    (True, True)
    """

    llc_mean: float
    mcse: float
    span: float
    nbeta: float
    nbetas: tuple
    variance_llc: float
    variance_llc_se: float
    llc_at_nbeta: float
    llc_at_nbeta_se: float
    slope: float
    slope_se: float
    noise_variance: float
    r_hat: Optional[float]
    ess: float
    table: pd.DataFrame
    result: Optional[LLCResult] = None
    wbic: Optional[float] = None
    wbic_se: Optional[float] = None
    wbic_nbeta: Optional[float] = None
    n: Optional[int] = None
    config: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    multiplicity = None
    multiplicity_se = None
    fit = "reweight"

    @property
    def results(self) -> list:
        """``[result]``: the one run, as the sweep's ``results`` list."""
        return [self.result]

    def __str__(self) -> str:
        form = f"span δ = {self.span:.3g}" if self.span > 0 else "δ → 0: β²·Var(n·L_n)"
        s = (f"LLC = {self.llc_mean:.4g} ± {self.mcse:.2g} (reweight, {form}, nβ = {self.nbeta:.4g}; "
             f"λ̂(nβ) = {self.llc_at_nbeta:.4g} ± {self.llc_at_nbeta_se:.2g}, dλ̂/dlog nβ = {self.slope:.3g} ± "
             f"{self.slope_se:.2g})")
        if self.wbic is not None:
            s += f"; WBIC = {self.wbic:.6g} ± {self.wbic_se:.2g} at nβ = n/log n = {self.wbic_nbeta:.4g}"
        return s

    def __repr__(self) -> str:
        return f"ReweightResult({self})"


def _draws(name: str, v) -> np.ndarray:
    """A ``(chains, draws)`` float64 array of finite values, ≥ 4 draws."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] < 4:
        raise ValueError(f"{name} must be a (chains, draws) array with at least 4 draws; got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values; drop diverged chains first.")
    return a


def _mcse(x: np.ndarray, what: str) -> float:
    """The MCSE of the mean of the per-draw values ``x``, as every LLC estimate reports it
    (:func:`~slt_basins.diagnostics.llc_mcse`: the larger of ArviZ's and the between-chain standard
    error); a clear error where it is 0 or not finite. On the Gamma draws of the reweighting's coverage
    test (100 data sets of 4 × 1,000 draws) the scatter of S_δ is 0.96× (i.i.d.) and 1.06× (AR(1),
    φ = 0.9) its mean error bar, against 1.05× and 1.18× with ArviZ's alone."""
    se = diagnostics.llc_mcse(x)
    if not (math.isfinite(se) and se > 0):
        raise ValueError(f"the Monte Carlo standard error of {what} is {se!r} (constant or too short traces): the "
                         "chains do not move. Raise step_size or num_draws.")
    return float(se)


def _tilt(u: np.ndarray, alpha: float) -> tuple:
    """Self-normalised reweighting of draws ``u`` = t₀·K by ω = exp(−α·u) (to t = t₀(1 + α)):
    ``(E_t[u], influence values, Kish ESS)``; the MCSE of E_t[u] is the MCSE of the influence values."""
    logw = -alpha * u
    w = np.exp(logw - logw.max())
    wbar = w.mean()
    mean = float((w * u).mean() / wbar)
    return mean, w * (u - mean) / wbar, float(w.sum() ** 2 / (w ** 2).sum())


def _secant(u: np.ndarray, t0: float, delta: float, notes: list) -> tuple:
    """``(S_δ, se, table rows)``: the slope of E_t[K] against 1/t between t₀(1 ∓ δ) by reweighting."""
    rows, infl, means = [], [], []
    for alpha in (-delta, delta):
        m, f, kish = _tilt(u, alpha)
        means.append(m)
        infl.append(f)
        rows.append(dict(nbeta=t0 * (1 + alpha), llc_mean=(1 + alpha) * m, mcse=(1 + alpha) * _mcse(f, "E_t"),
                         kish_ess=kish, kish_fraction=kish / u.size))
        if kish < _MIN_KISH * u.size:
            notes.append(f"the importance weights to nβ = {t0 * (1 + alpha):.4g} keep {kish:.0f} of {u.size} draws "
                         f"(Kish ESS): the reweighted estimate rests on few draws. The log-weights have variance "
                         f"≈ δ²·Var(t·K) ≈ δ²·λ; use a smaller span (span=0: β²·Var(n·L_n), no weights).")
    c = (1 - delta ** 2) / (2 * delta)
    return c * (means[0] - means[1]), _mcse(c * (infl[0] - infl[1]), "the reweighted slope"), rows


def _moments(u1: np.ndarray, u2: np.ndarray) -> dict:
    """S₀ = Cov(U₁, U₂) (= Var(t·K) when U₁, U₂ are independent unbiased evaluations of t·K at the same
    draws), the mean, the slope mean − S₀, with their MCSEs, the noise variance, R-hat and ESS."""
    prod = (u1 - u1.mean()) * (u2 - u2.mean())
    mean_arr = 0.5 * (u1 + u2)
    return dict(
        variance_llc=float(prod.mean()), variance_llc_se=_mcse(prod, "β²·Var(n·L_n)"),
        llc_at_nbeta=float(mean_arr.mean()), llc_at_nbeta_se=_mcse(mean_arr, "the mean draw"),
        slope=float(mean_arr.mean() - prod.mean()), slope_se=_mcse(mean_arr - prod, "the slope"),
        noise_variance=float(0.5 * ((u1 - u2) ** 2).mean()),
        r_hat=diagnostics.rhat(prod) if prod.shape[0] > 1 else None, ess=diagnostics.ess_bulk(prod))


def reweight_llc(draws, nbeta: float, span: float = 0.0, *, copy=None) -> ReweightResult:
    """λ from the draws of one temperature: the slope of E_t[L] against 1/t, by reweighting (no sampling).

    The draws U = t₀·(L(w) − L(w*)) of one run at t₀ = nβ₀ (``LLCResult.llc_trace``) are reweighted to
    t = t₀(1 ∓ δ) with ω ∝ exp(−(t − t₀)·(L − L*)) = exp(∓δ·U) (the localisation term does not depend on β),
    and S_δ = (E_{t₁}[L] − E_{t₂}[L])/(1/t₁ − 1/t₂) = (1 − δ²)·(Ē_{t₁}[U] − Ē_{t₂}[U])/(2δ) is returned,
    i.e. the slope of E_β[n·L_n] against 1/β (Watanabe 2013, JMLR 14, arXiv:1208.6338; Lau et al. 2023,
    arXiv:2308.12108). δ = 0 gives its limit S₀ = Var_{t₀}(U) = β₀²·Var(n·L_n) (d E_β[nL]/dβ = −Var_β(nL)).
    What S_δ estimates (the finite-temperature law, localisation, step size) is in the module docstring.

    Args:
        draws: ``(chains, draws)`` values U (dimensionless), exact evaluations unless ``copy`` is given.
        nbeta: t₀ > 0, the temperature they were sampled at.
        span: δ in [0, 1).
        copy: optional second ``(chains, draws)`` evaluation of U at the same draws with independent,
            unbiased noise (a paired minibatch estimate on an independent minibatch). Then S₀ is
            estimated by the cross-covariance Cov(U₁, U₂), which the minibatch noise does not bias (noise
            independent given w and of mean 0), while Var(U₁) exceeds Var(t·K) by the noise variance.
            Importance weights of noisy U are biased (E exp(−αξ) = exp(α²σ²(w)/2) for Gaussian noise of
            variance σ²(w)), so ``span`` must then be 0.

    Returns:
        :class:`ReweightResult` (``result`` None). Error bars: the MCSEs of the per-draw influence values
        of each estimator (the delta method), as :func:`~slt_basins.diagnostics.llc_mcse` computes them
        (the larger of ArviZ's autocorrelation-aware MCSE and the between-chain standard error).

    Warns:
        LLCWarning: an importance-weight set keeps < 10 % of the draws; R-hat of the centred products
            > 1.05; S₀ ≤ 0.

    >>> rng = np.random.default_rng(1)
    >>> u = rng.gamma(3.0, 1.0, size=(4, 5000))                 # exact draws: Var = λ = 3
    >>> noisy = [u + rng.normal(0, 2.0, size=u.shape) for _ in range(2)]  # minibatch-like noise, σ² = 4
    >>> r = reweight_llc(noisy[0], 50.0, copy=noisy[1])
    >>> abs(r.variance_llc - 3.0) < 4 * r.variance_llc_se, round(r.noise_variance), float(noisy[0].var()) > 6
    (True, 4, True)
    """
    t0 = float(nbeta)
    if not (math.isfinite(t0) and t0 > 0):
        raise ValueError(f"nbeta must be finite and > 0; got {nbeta!r}.")
    delta = _check_span(span)
    u1 = _draws("draws", draws)
    u2 = u1 if copy is None else _draws("copy", copy)
    if u2.shape != u1.shape:
        raise ValueError(f"copy must have the shape of draws {u1.shape}; got {u2.shape}.")
    if copy is not None and delta > 0:
        raise ValueError("span > 0 reweights with exp(−δ·U), which is biased for noisy (minibatch) evaluations U; "
                         "with copy= use span=0 (the noise-corrected β²·Var(n·L_n)), or evaluate the full-data loss.")
    notes: list = []
    mom = _moments(u1, u2)
    est, se, rows = mom["variance_llc"], mom["variance_llc_se"], []
    if delta > 0:
        est, se, rows = _secant(u1, t0, delta, notes)
    rows.insert(len(rows) // 2, dict(nbeta=t0, llc_mean=mom["llc_at_nbeta"], mcse=mom["llc_at_nbeta_se"],
                                     kish_ess=float(u1.size), kish_fraction=1.0))
    _reweight_notes(mom, notes)
    return ReweightResult(llc_mean=float(est), mcse=float(se), span=delta, nbeta=t0,
                          nbetas=tuple(r["nbeta"] for r in rows if r["nbeta"] != t0), **mom,
                          table=pd.DataFrame(rows), config=dict(method="reweight", span=delta,
                                                                minibatch_correction=copy is not None), notes=notes)


def _reweight_notes(mom: dict, notes: list) -> None:
    """Issue the warnings about the spread's estimate (appended to ``notes``)."""
    if mom["r_hat"] is not None and mom["r_hat"] > _MAX_RHAT:
        notes.append(f"R-hat of the per-draw spread (U − Ū)² is {mom['r_hat']:.3f} > {_MAX_RHAT}: the chains disagree "
                     "on the width of the distribution, which the reweighting estimator measures; raise num_draws or "
                     "num_burnin.")
    if mom["variance_llc"] <= 0:
        notes.append(f"the estimated β²·Var(n·L_n) is {mom['variance_llc']:.3g} ≤ 0 (it is a variance): too few "
                     "effective draws, or minibatch noise much larger than the spread; raise num_draws or batch_size.")
    for msg in notes:
        warn(msg, LLCWarning)


def _check_span(span) -> float:
    if isinstance(span, bool) or not isinstance(span, (int, float, np.integer, np.floating)):
        raise TypeError(f"span must be a number in [0, 1) or None; got {span!r}.")
    if not (0 <= float(span) < 1):
        raise ValueError(f"span must be in [0, 1) (the temperatures are t₀(1 ± span)); got {span!r}.")
    return float(span)


def _wbic_n(t0: float) -> float:
    """The n whose WBIC temperature n/log n is t₀ (> e), by fixed-point iteration n ← t₀·log n.

    >>> round(_wbic_n(1000 / math.log(1000)), 6)
    1000.0
    """
    if t0 <= math.e:
        raise ValueError(f"the default span needs nβ > e (it solves n/log n = nβ); got {t0:.4g}: pass span.")
    n = t0 * math.log(t0) + t0
    for _ in range(200):
        n = t0 * math.log(n)
    return n


def default_span(nbeta: float, n: Optional[int] = None) -> float:
    """Lau et al.'s relative half-span δ = 1/√(2 log n) (arXiv:2308.12108), so that β = β₀(1 ± δ); n is
    the sample size, or for a potential without one the n whose n/log n is ``nbeta``.

    >>> round(default_span(100.0, 10_000), 4), round(default_span(1000 / math.log(1000)), 4)
    (0.233, 0.269)
    """
    return 1.0 / math.sqrt(2.0 * math.log(float(n) if n is not None else _wbic_n(float(nbeta))))


def _reweight_run(call: Callable, shared: LLCOptions, per: dict, *, t0: float, span, n: Optional[int],
                  minibatch: bool, wbic: bool, kind: str) -> ReweightResult:
    """One run at t₀ (with an independent minibatch evaluation of the training loss when ``minibatch``),
    then :func:`reweight_llc` on its draws; ``span=None``: :func:`default_span`, or 0 with minibatches."""
    for name in _PER_TEMPERATURE:
        if isinstance(per[name], (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(f"method='reweight' samples one temperature: give {name} as a single value.")
    t0 = float(t0)
    delta = (0.0 if minibatch else default_span(t0, n)) if span is None else _check_span(span)
    if minibatch and delta > 0:
        raise ValueError(f"span = {delta:g} > 0 reweights with exp(−δ·nβ·L̂), which is biased for the minibatch "
                         "losses L̂ this run records; use span=0 (β²·Var(n·L_n), minibatch noise removed by an "
                         "independent second evaluation), or batch_size=None (exact full-data losses).")
    opts = shared.replace(nbeta=t0, step_size=per["step_size"], num_draws=per["num_draws"],
                          num_burnin=per["num_burnin"])
    res = call(opts, minibatch)
    copy = res.observed[_COPY].llc_trace if minibatch else None
    out = reweight_llc(res.llc_trace, t0, delta, copy=copy)
    out.result, out.n = res, n
    _check_half_d(out.llc_mean, out.mcse, [res], "the reweighted")
    if wbic and n is not None and math.isclose(t0, default_nbeta(n), rel_tol=1e-9):
        out.wbic_nbeta = t0
        out.wbic, out.wbic_se = float(n * res.init_loss + out.llc_at_nbeta * math.log(n)), out.llc_at_nbeta_se * math.log(n)
    out.config.update(kind=kind, span_default=span is None, settings={k: v for k, v in opts.as_dict().items()})
    return out


_SWEEP_DOC = """
    Step size across the sweep (``method="sweep"``). SGLD is stable in a direction of curvature h while
    the ratio ρ = ε·(nβ·h + γ)/4 is below 1, and its step-size bias grows with ρ (a quadratic direction's
    variance is inflated by 1/(1 − ρ)). ``step_size`` ε is the value for the reference temperature t_ref
    (``reference_nbeta``; by default the sweep's temperature nearest the geometric mean of ``nbetas``,
    i.e. n/log n for the default sweep). ``step_size="auto"`` calibrates it there
    (:func:`slt_basins.calibrate`'s rules, once). Then, with ``step_size_scaling``:

    * ``"stability"`` (default): t_ref is sampled first, with its stability checks on; h is the
      largest top-Hessian eigenvalue that run measured, at w* and at its chains' final positions
      (Lanczos, :func:`slt_basins.checks.top_curvature`). Every other temperature runs with
      ε_t = ε·(t_ref·h + γ)/(t·h + γ), which keeps ρ at its reference value, and with
      num_burnin_t = max(num_burnin, ⌈num_burnin·ε/ε_t⌉) steps of burn-in, which keeps ε_t·num_burnin_t,
      hence the number of relaxation times 2/(ε_t·γ) of the slowest (flat) directions, at least at the
      reference value. Where nβ·h ≫ γ this is the 1/nβ rule; where γ dominates (small nβ, or flat
      directions) ε no longer shrinks needlessly at large nβ (so those chains still mix) nor grows past
      stability at small nβ. h at the chains' ends matters for singular minima: the curvature at w*
      of w1²w2² is 0, but in the valley the chains explore it is ≈ 2·w1². It is measured at t_ref only;
      chains at other nβ may reach stiffer regions (their own chain-end stability checks, in the
      ``step_stability_end`` column, report it). Falls back to ``"inverse"`` with a warning when no
      curvature was measured (every chain diverged at t_ref, a preconditioned or Metropolis sampler).
    * ``"inverse"`` (the rule of earlier releases): ε_t = ε·t_ref/t, burn-in as given; t_ref defaults
      to the geometric mean of ``nbetas``. It keeps ε·nβ·h fixed, but at small nβ, where γ dominates,
      ρ = ε_t(t·h + γ)/4 grows like 1/t.
    * ``"none"``: ε_t = ε at every temperature.

    Draws are not scaled: pass ``num_draws`` per temperature (e.g. ∝ ε/ε_t, as ``table["step_size"]``
    shows) when the large-nβ chains mix too slowly (R-hat and ESS are in the table). ``step_size``,
    ``num_draws`` and ``num_burnin`` may each be given as a sequence with one value per entry of
    ``nbetas`` (in the same order); a sequence is used as given (a sequence ``step_size`` turns the
    scaling off). Temperature t uses its own seed, derived from (``seed``, t).

    Assumptions: w* is a local minimum of the loss; the biases that do not follow the multiplicity
    law (localisation: a direction of curvature h gives ½·nβh/(nβh + γ), low where nβh ≲ γ; step
    size; minibatch gradient noise, which inflates a stiff direction's variance by about
    1 + ε·nβ²·σ²/(4B) for per-example gradient variance σ² and batch size B, i.e. ∝ nβ at a fixed ρ, an
    upward trend that mimics m > 1) are small at every temperature, in particular at the ends of the sweep.

    The reweighting alternative (``method="reweight"``) samples one temperature t₀ (``reference_nbeta``,
    default n/log n) and returns λ as the slope of E_β[n·L_n] against 1/β there (:func:`reweight_llc`,
    a :class:`ReweightResult`); ``span`` is its relative half-width δ (default 1/√(2 log n) with exact
    losses; 0, i.e. β²·Var(n·L_n), with minibatches). Choosing: the sweep costs one run per temperature and
    extrapolates the multiplicity bias away (docs page *Estimating*, "Bias correction"); the reweighting
    costs one run, keeps the bias (λ − (m − 1)/log t − (m − 1)/log² t), has a larger error bar than the
    single-temperature λ̂ (a variance instead of a mean), and reports the local slope dλ̂/dlog nβ, whose
    sign tells whether a sweep is needed. ``nbetas``, ``num_temperatures``, ``fit``, ``log_offset``,
    ``threshold`` and ``step_size_scaling`` are sweep settings (``nbetas`` is refused with
    ``method="reweight"``, the others ignored).
"""


def _with_sweep_doc(fn):
    fn.__doc__ = fn.__doc__.replace("    <<sweep>>\n", "\n" + _SWEEP_DOC.strip("\n") + "\n\n")
    return fn


def _check_method(method: str, nbetas, span) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be 'sweep' (fit λ̂ over several nβ) or 'reweight' (one run, slope of "
                         f"E_β[nL] against 1/β); got {method!r}.")
    if method == "reweight" and nbetas is not None:
        raise ValueError("method='reweight' samples one temperature (reference_nbeta, default n/log n): nbetas "
                         "belongs to method='sweep'.")
    if method == "sweep" and span is not None:
        raise ValueError("span is the reweighting half-width: it applies to method='reweight' only.")


@_with_sweep_doc
def estimate_llc_multitemperature(
    model: nn.Module,
    data: Any,
    loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "mse",
    *,
    method: str = "sweep",
    nbetas: Optional[Sequence[float]] = None,
    num_temperatures: int = 5,
    fit: str = "auto",
    log_offset: float = 0.0,
    threshold: float = 3.0,
    wbic: bool = True,
    step_size_scaling: str = "stability",
    reference_nbeta: Optional[float] = None,
    span: Optional[float] = None,
    **kwargs,
) -> Union[MultiTemperatureResult, ReweightResult]:
    """Estimate λ(w*) of ``model`` by fitting λ̂(nβ) over a sweep of nβ, or by reweighting one run.

    ``method="sweep"``: runs :func:`~slt_basins.estimate_llc` at each nβ (each gives λ̂(t) =
    t·(E_t[L_n] − L_n(w*)) ± MCSE), then fits λ̂(t) = λ − (m − 1)/log t [+ ν/log² t] by weighted least
    squares (see :func:`fit_multitemperature` for the models, the ``"auto"`` rule and the error bars)
    and returns the t → ∞ limit λ ± s.e., with m ± s.e. when the fit shows a significant multiplicity
    bias. ``method="reweight"``: one run at t₀, λ as the slope of E_β[n·L_n] against 1/β
    (:func:`reweight_llc`). λ is dimensionless. Both report the local WBIC n·E_β[L_n(w)] at β = 1/log n,
    in loss units (the reweighting only when t₀ = n/log n).

    Args:
        model, data, loss: as in :func:`~slt_basins.estimate_llc`.
        method: ``"sweep"`` or ``"reweight"`` (see below).
        nbetas: the sweep of nβ (≥ 2 distinct values > 1, ideally 5 over 1–2 decades). Default
            :func:`default_nbetas`: ``num_temperatures`` values geometric from n/log² n to n, centred on
            n/log n.
        num_temperatures: size of the default sweep (ignored when ``nbetas`` is given).
        fit: ``"auto"``, ``"constant"`` (m = 1), ``"multiplicity"`` or ``"quadratic"``.
        log_offset: c in the fit variable 1/(log nβ + c) (default 0).
        threshold: slope z-score needed for ``"auto"`` to report m > 1.
        wbic: report the WBIC; n/log n is added to the sweep when it is not already in it (and is
            then also used in the fit).
        step_size_scaling, reference_nbeta: see below; for ``"reweight"`` ``reference_nbeta`` is t₀.
        span: the reweighting's relative half-width δ in [0, 1) (``"reweight"`` only; see below).
        **kwargs: any field of :class:`~slt_basins.options.LLCOptions` but ``nbeta`` (num_chains,
            num_draws, num_burnin, step_size, localization, seed, batch_size, sampler, progress, ...),
            on the defaults of :func:`~slt_basins.estimate_llc` (``MODEL_DEFAULTS``); all are checked
            before any sampling. ``checkpoint=path`` checkpoints each temperature to its own file
            ``path.nbeta<nβ>``.
    <<sweep>>
    Returns:
        :class:`MultiTemperatureResult` (λ, s.e., m, per-temperature table and results, WBIC), or for
        ``method="reweight"`` a :class:`ReweightResult`; both have ``llc_mean``, ``mcse``, ``table``,
        ``results`` and ``wbic``.

    Raises:
        ValueError: bad inputs (fewer than 2 nbetas, nβ ≤ 1, duplicates, ...), with what to change.
        TypeError: an unknown keyword option (the message lists the valid ones), or ``nbeta``.
        SamplerDivergedError: fewer than 2 temperatures gave an estimate.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(1000, 3); y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(1000)
        >>> model = nn.Linear(3, 1)  # trained by least squares below
        >>> sol = torch.linalg.lstsq(torch.cat([x, torch.ones(1000, 1)], 1), y[:, None]).solution
        >>> with torch.no_grad(): _ = model.weight.copy_(sol[:3].T); _ = model.bias.copy_(sol[3])
        >>> r = estimate_llc_multitemperature(model, (x, y), step_size=5e-4, localization=1.0,
        ...                                   num_draws=400, num_burnin=100, progress=False)
        >>> r.fit, 1.5 < r.llc_mean < 2.5   # regular: λ = d/2 = 2, no multiplicity
        ('constant', True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    _check_method(method, nbetas, span)
    if isinstance(data, DataLoader) and kwargs.get("batch_size") is None:
        kwargs["batch_size"] = data.batch_size
    shared, per = _options(kwargs, "model")
    x, y = as_tensors(data)  # read once; every temperature reuses the tensors
    n = int(x.shape[0])
    if method == "reweight":
        t0 = default_nbeta(n) if reference_nbeta is None else check_positive("reference_nbeta", reference_nbeta)
        return _reweight_run(
            lambda o, copy: estimate_llc(model, (x, y), loss, observe={_COPY: (x, y)} if copy else None,
                                         **_call_kwargs(o, "model")),
            shared, per, t0=t0, span=span, n=n, minibatch=shared.batch_size is not None and shared.batch_size < n,
            wbic=wbic, kind="model")
    if nbetas is None:
        nbetas = default_nbetas(n, num_temperatures)
    return _sweep(lambda o: estimate_llc(model, (x, y), loss, **_call_kwargs(o, "model")), nbetas, shared=shared,
                  per=per, n=n, wbic=wbic, step_size_scaling=step_size_scaling, reference_nbeta=reference_nbeta,
                  fit=fit, log_offset=log_offset, threshold=threshold, kind="model")


@_with_sweep_doc
def estimate_llc_multitemperature_potential(
    potential: Callable[[torch.Tensor], torch.Tensor],
    w_star,
    *,
    method: str = "sweep",
    nbetas: Optional[Sequence[float]] = None,
    n: Optional[int] = None,
    fit: str = "auto",
    log_offset: float = 0.0,
    threshold: float = 3.0,
    step_size_scaling: str = "stability",
    reference_nbeta: Optional[float] = None,
    span: Optional[float] = None,
    **kwargs,
) -> Union[MultiTemperatureResult, ReweightResult]:
    """Estimate λ of a loss K(w) at w* from λ̂(nβ) = nβ·E[K − K(w*)] over a sweep of nβ, or by reweighting.

    The potential counterpart of :func:`estimate_llc_multitemperature`: runs
    :func:`~slt_basins.estimate_llc_potential` at each nβ in ``nbetas`` and fits the multiplicity law
    with :func:`fit_multitemperature` (``method="sweep"``), or runs it once at ``reference_nbeta`` and
    reweights (``method="reweight"``, :func:`reweight_llc`; K is exact, so the default span is
    Lau et al.'s δ = 1/√(2 log n), with n the sample size or, without one, the n whose n/log n is
    nβ). There is no dataset, so no WBIC unless ``n`` is given (then nβ = n/log n is added to the
    sweep if missing and wbic = n·K(w*) + λ̂(n/log n)·log n).

    Args:
        potential, w_star: as in :func:`~slt_basins.estimate_llc_potential` (K must have a local
            minimum at w_star).
        method: ``"sweep"`` (default) or ``"reweight"``.
        nbetas: the sweep (≥ 2 distinct values > 1; e.g. ``np.geomspace(10, 1e3, 5)``); required for
            the sweep, refused for the reweighting.
        n: optional sample size for the WBIC (and the default sweep centre / reweighting nβ, n/log n).
        fit, log_offset, threshold, step_size_scaling, reference_nbeta, span: as in
            :func:`estimate_llc_multitemperature` (``reference_nbeta`` is the reweighting's nβ, required
            there unless ``n`` is given).
        **kwargs: any field of :class:`~slt_basins.options.LLCOptions` that
            :func:`~slt_basins.estimate_llc_potential` takes (num_chains, num_draws, num_burnin,
            step_size, localization, sampler, seed, progress, ...; not ``nbeta``, ``batch_size``,
            ``params`` or ``vectorize``), on its defaults (``POTENTIAL_DEFAULTS``: γ = 1); all are
            checked before any sampling, and an unknown name is a TypeError listing the valid ones.
            ``checkpoint=path`` checkpoints each temperature to its own file ``path.nbeta<nβ>``.
    <<sweep>>
    Example:
        >>> from slt_basins.toys import crossing_valley
        >>> r = estimate_llc_multitemperature_potential(
        ...     crossing_valley(1, 1), torch.zeros(2, dtype=torch.float64), nbetas=[10, 30, 100],
        ...     step_size=3e-3, num_chains=64, num_draws=[600, 800, 2000], num_burnin=[200, 300, 1000],
        ...     fit="multiplicity", step_size_scaling="inverse", progress=False,
        ...     check_stability=False)   # ε·nβ ≈ 0.1 throughout
        >>> bool(r.llc_mean > r.table["llc_mean"].max())   # extrapolated above every single-temperature value
        True
        >>> q = estimate_llc_multitemperature_potential(  # K = w1² + w2², no localisation: λ = 1 at any δ
        ...     lambda w: (w ** 2).sum(1), torch.zeros(2, dtype=torch.float64), method="reweight",
        ...     reference_nbeta=100.0, span=0.0, localization=0.0, step_size=1e-3, num_chains=8,
        ...     num_draws=2000, progress=False)
        >>> abs(q.llc_mean - 1.0 / (1 - 0.05) ** 2) < 4 * q.mcse  # (½ per direction)·(1 − ε·nβ·a/4)⁻²
        True
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3):
        raise ValueError(f"n must be an integer ≥ 3 (the sample size for the WBIC) or None; got {n!r}.")
    _check_method(method, nbetas, span)
    shared, per = _options(kwargs, "potential")
    if method == "reweight":
        if reference_nbeta is None and n is None:
            raise ValueError("method='reweight' needs the temperature: pass reference_nbeta (or n, for n/log n).")
        t0 = default_nbeta(int(n)) if reference_nbeta is None else check_positive("reference_nbeta", reference_nbeta)
        return _reweight_run(lambda o, copy: estimate_llc_potential(potential, w_star, **_call_kwargs(o, "potential")),
                             shared, per, t0=t0, span=span, n=None if n is None else int(n), minibatch=False,
                             wbic=n is not None, kind="potential")
    if nbetas is None:
        raise ValueError("method='sweep' needs nbetas, the sweep of nβ (e.g. np.geomspace(10, 1e3, 5)).")
    shared_n = None if n is None else int(n)
    return _sweep(lambda o: estimate_llc_potential(potential, w_star, **_call_kwargs(o, "potential")), nbetas,
                  shared=shared, per=per, n=shared_n, wbic=n is not None,
                  step_size_scaling=step_size_scaling, reference_nbeta=reference_nbeta, fit=fit,
                  log_offset=log_offset, threshold=threshold, kind="potential")
