"""Exact finite-temperature targets for LLC estimators (no sampling).

The SGLD-based LLC estimator at inverse temperature t = nβ estimates t·E_t[K] under a localised
tempered posterior, and for finite t this differs from λ (localisation and finite-temperature biases, ``docs/theory.md``). The
functions here give that finite-t quantity exactly (closed forms) or by deterministic quadrature,
so a sampler can be tested separately from the asymptotic bias:

* :func:`finite_temperature_target`: t·E[K] under p(w) ∝ exp(−tK(w) − γ/2‖w‖²) on R^d and/or the
  uniform prior on [−b, b]^d, by tensor-product Gauss–Legendre quadrature (d ≤ 3).
* :func:`gaussian_target`: the exact expected estimate for quadratic K, including the step-size bias
  of full-batch SGLD/ULA.
* :func:`crossing_valley_box_target`: exact t·E[w1²w2²] on [−1, 1]².
* :func:`multiplicity_bias`: the leading-order value λ − (m−1)/log t (Watanabe 2009).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from .rlct import RLCT

__all__ = [
    "finite_temperature_target",
    "gaussian_target",
    "crossing_valley_box_target",
    "multiplicity_bias",
]

EULER_GAMMA = 0.5772156649015329

_GAUSS_TAIL = 40.0  # the Gaussian factor is truncated where γ w²/2 > 40 (e^-40 ≈ 4e-18)
_MAX_POINTS = 12_000_000  # per quadrature level (both rules together)


def _positive_float(name: str, v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {v!r}") from None
    if not (f > 0 and math.isfinite(f)):
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return f


def _lowest_scales(potential, d: int, t: float, B: float) -> Sequence[float]:
    """Per variable, the smallest length scale on which exp(−tK) can vary inside [−B, B]^d."""
    terms = getattr(potential, "terms", None)
    if not isinstance(terms, dict) or not terms:
        return [B * 1e-7] * d
    scales = []
    for i in range(d):
        s = B
        for exp, c in terms.items():
            a = exp[i]
            if a == 0:
                continue
            rest = sum(exp) - a
            s = min(s, (t * abs(float(c)) * B**rest) ** (-1.0 / a))
        scales.append(s)
    return scales


def _nodes_1d(B: float, cutoff: float, h: float, delta: Optional[float], n: int, both_sides: bool):
    """Composite Gauss–Legendre nodes/weights on [0, B] (or [−B, B]).

    Breakpoints are geometric (ratio e^{−h}) from B down to ``cutoff``, then 0; optionally merged
    with a uniform grid of spacing ``delta``.
    """
    bps = [0.0]
    k = int(math.ceil(math.log(B / cutoff) / h)) if cutoff < B else 0
    bps += [B * math.exp(-h * j) for j in range(k, -1, -1)]
    if delta is not None:
        bps += list(np.arange(delta, B, delta))
    bps = np.unique(np.clip(np.array(bps), 0.0, B))
    g, gw = np.polynomial.legendre.leggauss(n)
    a, b = bps[:-1], bps[1:]
    x = ((b - a)[:, None] * (g[None, :] + 1) / 2 + a[:, None]).ravel()
    w = ((b - a)[:, None] * gw[None, :] / 2).ravel()
    if both_sides:
        x = np.concatenate([-x[::-1], x])
        w = np.concatenate([w[::-1], w])
    return x, w


def _grid_expectation(
    potential: Callable, axes: Sequence[Tuple[np.ndarray, np.ndarray]], t: float, gamma: float
) -> float:
    """t·E[K] on a tensor-product grid, chunked over the first axis."""
    d = len(axes)
    xs = [torch.as_tensor(x, dtype=torch.float64) for x, _ in axes]
    ws = [torch.as_tensor(w, dtype=torch.float64) for _, w in axes]
    # separable part: log quadrature weight − γ/2 w² per axis
    logs = [torch.log(w) - 0.5 * gamma * x * x for x, w in zip(xs, ws)]
    rest_pts = int(np.prod([len(x) for x in xs[1:]])) if d > 1 else 1
    chunk = max(1, 2_000_000 // rest_pts)
    Z = 0.0
    NUM = 0.0
    with torch.no_grad():
        for s in range(0, len(xs[0]), chunk):
            grids = torch.meshgrid(xs[0][s : s + chunk], *xs[1:], indexing="ij")
            lgrids = torch.meshgrid(logs[0][s : s + chunk], *logs[1:], indexing="ij")
            pts = torch.stack([g.reshape(-1) for g in grids], dim=-1)
            logw = sum(lg.reshape(-1) for lg in lgrids)
            tK = t * potential(pts).reshape(-1).to(torch.float64)
            if not torch.isfinite(tK).all():
                raise ValueError("the potential returned non-finite values on the quadrature grid")
            if (tK < -1e-9 * (1 + tK.abs().max())).any():
                raise ValueError("the potential is negative somewhere on the domain; K must be >= 0")
            wt = torch.exp(logw - tK)
            Z += float(wt.sum())
            NUM += float((wt * tK).sum())
    return NUM / Z


def finite_temperature_target(
    potential,
    nbeta: float,
    localization: Optional[float] = None,
    box: Optional[float] = None,
    *,
    rtol: float = 1e-5,
) -> float:
    """Exact finite-temperature target t·E[K] with t = nβ, by deterministic quadrature.

    The expectation is under p(w) ∝ exp(−t K(w) − (γ/2)‖w‖²) (Gaussian localisation at w* = 0,
    γ = ``localization``), on R^d, or on the box [−b, b]^d if ``box=b`` (uniform prior when
    ``localization`` is None), or both. This is what a perfect sampler would give for the LLC
    estimator t·(E[L] − L(w*)) with L − L(w*) = K, before the t → ∞ limit (``docs/theory.md``).

    Args:
        potential: a :class:`~slt_basins.toys.Polynomial`, or any callable mapping a float64 tensor
            of shape (chains, d) to (chains,) with an attribute ``d``. K ≥ 0 with K(0) = 0 assumed.
        nbeta: t = nβ > 0.
        localization: γ > 0, or None for no Gaussian factor.
        box: b > 0, or None for all of R^d (then ``localization`` is required).
        rtol: target accuracy of the error estimate (difference of two Gauss–Legendre rules).

    Returns:
        t·E[K] as a float (accurate to about ``rtol`` relative; the default meets the 1e-4 of the
        reference tables with a wide margin).

    Method: tensor-product composite Gauss–Legendre with panels graded geometrically toward each
    coordinate hyperplane (down to below the smallest scale t^{−1/α_i} on which the integrand varies),
    which resolves potentials whose zero set is a union of coordinate subspaces (monomials, normal
    crossings, sums in disjoint variables). Potentials even in every variable are integrated over
    one orthant. The error is estimated by comparing 10- and 8-point rules; if it is too large the
    grid is refined by adding uniform panels (needed for zero sets off the axes, e.g. (w1−w2)²). If
    that does not converge within the point budget a RuntimeWarning is issued.

    Raises:
        ValueError: d > 3, neither ``localization`` nor ``box`` given, or non-positive parameters.

    Example:
        >>> from slt_basins.toys import Polynomial
        >>> round(finite_temperature_target(Polynomial("w1**4"), 1e3, localization=100), 4)
        0.0961
        >>> round(finite_temperature_target(Polynomial("w1**2*w2**2"), 1e3, box=1), 4)
        0.3873
    """
    d = getattr(potential, "d", None)
    if d is None or isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError("potential must have an integer attribute d >= 1 (e.g. a Polynomial)")
    if d > 3:
        raise ValueError(
            f"finite_temperature_target uses tensor-product quadrature and supports d <= 3, got d = {d}; "
            "for larger d use a closed form (gaussian_target, or t*K ~ Gamma(lambda, 1) for "
            "quasi-homogeneous K with a flat prior, see docs/theory.md)"
        )
    t = _positive_float("nbeta", nbeta)
    if localization is None and box is None:
        raise ValueError(
            "give localization=gamma (Gaussian prior exp(-gamma/2 |w|^2)) and/or box=b (uniform on "
            "[-b, b]^d); with neither, the posterior of a singular K need not be normalisable"
        )
    gamma = 0.0 if localization is None else _positive_float("localization", localization)
    B = math.inf
    if box is not None:
        B = _positive_float("box", box)
    if gamma > 0:
        B = min(B, math.sqrt(2 * _GAUSS_TAIL / gamma))
    terms = getattr(potential, "terms", None)
    even = isinstance(terms, dict) and all(a % 2 == 0 for e in terms for a in e)
    scales = _lowest_scales(potential, d, t, B)
    cutoffs = [min(s * 1e-1, B * 1e-2) for s in scales]
    # geometric panel ratio e^h: exp(-(w/s)^a) varies by a factor e^(a h) in the exponent per panel,
    # so shrink h for high powers
    if isinstance(terms, dict):
        hs = [min(1.0, 2.0 / max([e[i] for e in terms] + [1])) for i in range(d)]
    else:
        hs = [0.5] * d
    result, err = float("nan"), float("inf")
    for level in range(0, 12):
        delta = None if level == 0 else B / 2**level
        axes_hi = [_nodes_1d(B, c, h, delta, 10, not even) for c, h in zip(cutoffs, hs)]
        axes_lo = [_nodes_1d(B, c, h, delta, 8, not even) for c, h in zip(cutoffs, hs)]
        npts = int(np.prod([len(a[0]) for a in axes_hi])) + int(np.prod([len(a[0]) for a in axes_lo]))
        if npts > _MAX_POINTS and level > 0:
            break
        hi = _grid_expectation(potential, axes_hi, t, gamma)
        lo = _grid_expectation(potential, axes_lo, t, gamma)
        result, err = hi, abs(hi - lo)
        if err <= rtol * max(abs(hi), 1e-3):
            return result
    warnings.warn(
        f"finite_temperature_target: quadrature did not reach rtol={rtol} (error estimate {err:.2e} "
        f"for value {result:.6g}); the zero set of K is probably not aligned with the axes",
        RuntimeWarning,
        stacklevel=2,
    )
    return result


def gaussian_target(
    curvatures: Sequence[float], nbeta: float, localization: float, step_size: float = 0.0
) -> float:
    """Exact expected LLC estimate for quadratic K = ½ Σ a_i w_i², including SGLD step-size bias.

    For the full-batch SGLD/ULA update w' = w + (ε/2)∇log p + √ε ξ on p ∝ exp(−tK − γ/2‖w‖²), the
    stationary variance in direction i is 1/(A_i(1 − εA_i/4)) with A_i = t a_i + γ, hence
    (step-size and localisation biases, ``docs/theory.md``)::

        E[t K] = Σ_i ½ · (t a_i / (t a_i + γ)) / (1 − ε (t a_i + γ)/4).

    With ``step_size=0`` this is the exact posterior value Σ ½ t a_i/(t a_i + γ).

    Args:
        curvatures: a_i ≥ 0 (eigenvalues of Hess K; flat directions contribute 0).
        nbeta: t = nβ > 0. localization: γ ≥ 0. step_size: ε ≥ 0.

    Raises:
        ValueError: negative curvature, bad parameters, or an unstable step ε(t a_i + γ) ≥ 4.

    Example:
        >>> round(gaussian_target([2.0], 1e3, 1e4), 4)      # w² at t = 1e3, γ = 1e4
        0.0833
    """
    t = _positive_float("nbeta", nbeta)
    gamma = float(localization)
    eps = float(step_size)
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"localization must be >= 0, got {localization!r}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"step_size must be >= 0, got {step_size!r}")
    a = np.atleast_1d(np.asarray(curvatures, dtype=float))
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise ValueError("curvatures must be a 1-D sequence of finite numbers")
    if np.any(a < 0):
        raise ValueError("curvatures must be >= 0 (K = 1/2 sum a_i w_i^2 must have a minimum at 0)")
    A = t * a + gamma
    if np.any(A <= 0):
        raise ValueError("a direction with a_i = 0 needs localization > 0 (improper posterior)")
    stab = eps * A / 4
    if np.any(stab >= 1):
        worst = float(A.max())
        raise ValueError(
            f"unstable step size: eps*(t*a_i + gamma) = {eps * worst:.4g} >= 4; SGLD diverges. "
            f"Use step_size < {4 / worst:.3g}"
        )
    return float(np.sum(0.5 * (t * a / A) / (1 - stab)))


def crossing_valley_box_target(nbeta: float) -> float:
    """Exact t·E_t[w1²w2²] under the uniform prior on [−1, 1]² (up to exponentially small terms).

    Value: 1/2 − 1/(log t + γ_E + 2 log 2) (tests/data/cases.json, id 6), the
    multiplicity bias of the crossing valley (λ = 1/2, m = 2). Valid for t ≳ 10 (the neglected
    terms are O(e^{−t})).

    Example:
        >>> round(crossing_valley_box_target(1e3), 4)
        0.3873
    """
    t = _positive_float("nbeta", nbeta)
    return 0.5 - 1.0 / (math.log(t) + EULER_GAMMA + 2 * math.log(2))


def multiplicity_bias(rlct, nbeta: float) -> float:
    """Leading-order finite-t value λ − (m − 1)/log t of t·E_t[K] (Watanabe 2009; ``docs/theory.md``).

    From Z(t) ≍ C t^{−λ}(log t)^{m−1}: t·E_t[K] = λ − (m−1)/log t + O(1/log² t). The bias is
    downward whenever m > 1.

    Args:
        rlct: an :class:`RLCT`, or a pair (λ, m).
        nbeta: t = nβ > 1.

    Example:
        >>> from slt_basins.toys import crossing_valley
        >>> round(multiplicity_bias(crossing_valley().rlct(), 1e4), 4)
        0.3914
    """
    if isinstance(rlct, RLCT):
        lam, m = float(rlct.value), rlct.multiplicity
    else:
        try:
            lam, m = rlct
            lam, m = float(lam), int(m)
        except (TypeError, ValueError):
            raise ValueError("rlct must be an RLCT or a pair (lambda, m)") from None
    t = _positive_float("nbeta", nbeta)
    if t <= 1:
        raise ValueError(f"nbeta must be > 1 (log t > 0), got {nbeta!r}")
    return lam - (m - 1) / math.log(t)
