"""The checks around a run: measured before and after sampling, and the warning rules that read them.

Measurements (each stored in the :class:`~slt_basins.result.Checks` record, a failure as a
:class:`~slt_basins.result.CheckFailure`):

* **gradient at w*** — ‖∇L_n(w*)‖ and the bound nβ²‖∇L_n‖²/γ on the shift of λ̂ that a linear term
  can cause (w* should be a local minimum);
* **top curvature and step stability** — the largest |eigenvalue| h of the Hessian (power iteration on
  Hessian-vector products), at w* and at the chains' final positions, turned into the kernel's
  stability ratio ε·(nβ·h + γ·max G)/c (c = :attr:`Kernel.stability_divisor`, G the diagonal
  preconditioner). On a Gaussian, a Langevin step inflates the stationary variance of that
  direction by 1/(1 − ratio) and is unstable at ratio ≥ 1;
* **MALA probe** — the Metropolis acceptance probability of fresh Langevin proposals of the kernel
  from the chains' final positions, with the exact loss: near 1 means a small discretisation bias
  (Lau et al. 2023, arXiv:2308.12108, log it).

Warning rules: one small function per rule, each reading an :class:`Evidence` record and returning
the message or None; :func:`warn_all` issues them as :class:`~slt_basins.errors.LLCWarning`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch.func import vjp

from .errors import LLCWarning, warn
from .result import CheckFailure, Checks
from .samplers import Hyper, Kernel, langevin_log_accept, langevin_proposal

__all__ = ["top_curvature", "gradient_checks", "step_stability", "mala_probe", "Evidence", "RULES", "warn_all"]

POWER_ITERATIONS = 20
MALA_PROPOSALS = 8


def top_curvature(grad_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, iters: int = POWER_ITERATIONS,
                  scale: Optional[torch.Tensor] = None) -> float:
    """Largest |eigenvalue| of the Hessian H of the loss at ``w`` (of S·H·S with S = diag(``scale``) when
    given), by ``iters`` steps of power iteration on reverse-over-reverse Hessian-vector products.

    Units: loss per squared parameter unit. Returns NaN when a product is not finite (the caller
    reports it), 0.0 for a loss that is flat to second order.

    >>> float(top_curvature(lambda w: 2 * torch.tensor([3.0, 1.0]) * w, torch.zeros(2)))
    6.0
    """
    _, hvp = vjp(grad_fn, w)
    g = torch.Generator(device=w.device).manual_seed(0)
    v = torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v if scale is None else v * scale)[0].detach()
        if scale is not None:
            hv = hv * scale
        lam = float(hv.norm())
        if lam == 0.0 or not math.isfinite(lam):
            return math.nan if not math.isfinite(lam) else 0.0
        v = hv / lam
    return lam


def gradient_checks(checks: Checks, g: torch.Tensor, nbeta: float, gamma: float, floor: float = 0.0) -> None:
    """Fill ``grad_norm`` and ``grad_bias_bound`` = nβ²·‖g‖²/γ. A gradient at or below ``floor`` (its
    rounding level in the model's dtype) counts as zero: at γ = 0 the bound is then 0, not inf.

    >>> c = Checks(); gradient_checks(c, torch.tensor([3.0, 4.0]), nbeta=10.0, gamma=100.0)
    >>> c.grad_norm, c.grad_bias_bound
    (5.0, 25.0)
    """
    gn = float(g.norm())
    checks.grad_norm = gn
    signal = gn if gn > floor else 0.0
    checks.grad_bias_bound = (nbeta * signal) ** 2 / gamma if gamma > 0 else (math.inf if signal > 0 else 0.0)


def stability_ratio(kernel: Kernel, hyper: Hyper, h: float, gmax: float = 1.0) -> float:
    """ε·(nβ·h + γ·gmax)/c, the kernel's stability ratio in a direction of curvature h (dimensionless).

    >>> from slt_basins.samplers import SGLD
    >>> stability_ratio(SGLD, Hyper(1e-2, 1.0, 100.0, torch.zeros(1)), h=3.0)
    0.7525
    """
    return hyper.step_size * (hyper.nbeta * h + hyper.localization * gmax) / kernel.stability_divisor


def step_stability(kernel: Kernel, hyper: Hyper, grad_fn, w: torch.Tensor,
                   precond: Optional[torch.Tensor] = None) -> tuple[float, float]:
    """(h, ratio): h the largest |eigenvalue| of G^½·H·G^½ at ``w`` (G the diagonal preconditioner,
    1 without one) and the stability ratio :func:`stability_ratio` with max G."""
    h = top_curvature(grad_fn, w, scale=None if precond is None else precond.sqrt())
    gmax = 1.0 if precond is None else float(precond.max())
    return h, stability_ratio(kernel, hyper, h, gmax)


def mala_probe(kernel: Kernel, final_w: torch.Tensor, final_state, alive: np.ndarray, hyper: Hyper,
               loss_and_grad, proposals: int = MALA_PROPOSALS, seed: int = 0) -> Optional[float]:
    """Mean Metropolis acceptance probability (0–1) of ``proposals`` fresh Langevin proposals of the
    kernel per chain, from the final positions of the ``alive`` chains, with the exact loss given by
    ``loss_and_grad`` ((rows, d) → (L, ∇L)). For an unadjusted kernel a value near 1 means its
    discretisation bias is small. None when no chain is alive."""
    if len(alive) == 0 or final_state is None:
        return None
    idx = torch.as_tensor(alive, device=final_w.device).repeat_interleave(proposals)
    w = final_w[idx]
    G = None if kernel.preconditioner is None else kernel.preconditioner(final_state)[idx]
    h = hyper._replace(adapt=False)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    z = torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        loss, grad_ = loss_and_grad(w)
        w_new = langevin_proposal(w, grad_, z, h, G)
        loss_new, grad_new = loss_and_grad(w_new)
        la = langevin_log_accept(w, loss, grad_, w_new, loss_new, grad_new, h, G)
    return float(la.clamp(max=0.0).exp().mean())


def measure(checks: Checks, name: str, fn: Callable):
    """``fn()``, or None with a :class:`CheckFailure` recorded in ``checks`` when it raises."""
    try:
        return fn()
    except Exception as e:  # a check must never cost the run: record the failure instead
        checks.failures.append(CheckFailure.from_exception(name, e))
        return None


# --- warning rules -------------------------------------------------------------------------------

class Evidence(NamedTuple):
    """What the warning rules read: the estimate, its error bar, the checks and the settings."""

    llc: float
    mcse: float
    d: int
    checks: Checks
    kernel: Kernel
    hyper: Hyper
    diverged: list
    kept_chains: int
    divergence_bound: float

    @property
    def settings_hint(self) -> str:
        h = self.hyper
        return (f"lower step_size (now {h.step_size:g}), raise localization (now {h.localization:g}) "
                f"or lower nbeta (now {h.nbeta:.4g})")

    @property
    def stability_formula(self) -> str:
        if self.kernel.preconditioner is not None:
            return "ε·(nβ·h_max + γ·max G)/4 (h_max of the preconditioned Hessian G^½HG^½)"
        return f"ε·(nβ·h_max + γ)/{self.kernel.stability_divisor:g}"


def rule_diverged(e: Evidence) -> Optional[str]:
    """Some (not all) chains diverged and were left out."""
    if not e.diverged:
        return None
    steps = [e.checks.diverged_at_step[c] for c in e.diverged]
    return (f"chains {e.diverged} diverged at steps {steps} and are excluded from the estimate (the remaining "
            f"{e.kept_chains} chains are used). A chain diverges when its loss becomes non-finite or "
            f"|nβ·(L(w_t) − L(w*))| exceeds {e.divergence_bound:g}: {e.settings_hint}. A large negative excursion "
            "instead means w* is not a local minimum.")


def rule_rhat(e: Evidence) -> Optional[str]:
    """The chains disagree (R-hat > 1.05)."""
    r = e.checks.r_hat
    if r is None or r <= 1.05:
        return None
    return (f"R-hat = {r:.3f} > 1.05: the chains disagree, so the error bar is not reliable. Increase num_burnin "
            "and num_draws, or the step size if mixing is slow.")


def rule_negative(e: Evidence) -> Optional[str]:
    """λ̂ < 0 beyond 3 MCSE: w* is not a local minimum."""
    if e.llc >= -3 * e.mcse - 1e-12:
        return None
    return (f"λ̂ = {e.llc:.4g} is negative (beyond 3 MCSE): the chains found lower loss than at w*, so w* is not a "
            "local minimum of L_n (the LLC assumes one). Train further, or raise localization.")


def rule_above_half_d(e: Evidence) -> Optional[str]:
    """λ̂ > d/2 beyond 3 MCSE: impossible for the LLC of a minimum, so the estimate is biased."""
    if e.llc - 3 * e.mcse <= e.d / 2:
        return None
    return (f"λ̂ = {e.llc:.4g} ± {e.mcse:.2g} exceeds d/2 = {e.d / 2:g} by more than 3 MCSE, but the LLC of a local "
            "minimum is at most d/2 (half the number of sampled parameters). The number is an artefact of the "
            f"settings: usually a step size too large for the curvature the chains meet ({e.settings_hint}), or a "
            "w* that is not a minimum.")


def rule_gradient(e: Evidence) -> Optional[str]:
    """w* is not a critical point: the linear term can shift λ̂ by nβ²‖∇L‖²/γ."""
    bias = e.checks.grad_bias_bound
    if bias is None or bias <= max(0.1, 0.05 * abs(e.llc)):
        return None
    return (f"the gradient norm at w* is {e.checks.grad_norm:.3g}: w* is not a critical point of L_n. The linear "
            f"term can shift λ̂ by up to nβ²‖∇L‖²/γ = {bias:.3g} (against λ̂ = {e.llc:.3g}). Train to a local "
            "minimum first, or raise localization.")


def _stability_effect(e: Evidence, ratio: float) -> str:
    if ratio >= 1:
        return "the sampler is unstable in the stiffest direction (a ratio ≥ 1 has no stationary law)"
    if e.kernel.langevin:
        return (f"the stationary variance in the stiffest direction is inflated by about 1/(1−{ratio:.2g}) = "
                f"{1 / (1 - ratio):.3g}, biasing λ̂ upward")
    return "the stiffest direction is under-resolved, which biases λ̂"


def rule_stability_start(e: Evidence) -> Optional[str]:
    """The step size is too large for the curvature at w*."""
    s = e.checks.step_stability
    if s is None or not s > 0.1:
        return None
    return (f"{e.stability_formula} = {s:.3g} at w* (h_max = {e.checks.hessian_max_abs_eig:.3g} is the largest "
            f"Hessian eigenvalue): {_stability_effect(e, s)}. Lower step_size to ≤ "
            f"{0.1 * e.hyper.step_size / s:.2g} for a bias under about 11 %.")


def rule_stability_end(e: Evidence) -> Optional[str]:
    """The chains moved into regions stiffer than w*, where the step size is too large."""
    end, start = e.checks.step_stability_end, e.checks.step_stability
    if end is None or not end > 0.1 or not end > 2 * (start or 0.0):
        return None
    where = (", larger than at w*: the chains moved into stiffer regions. There " if start is not None else ": there ")
    return (f"at the chains' final positions {e.stability_formula} = {end:.3g} (h_max = "
            f"{e.checks.hessian_max_abs_eig_end:.3g}){where}{_stability_effect(e, end)}. Lower step_size to ≤ "
            f"{0.1 * e.hyper.step_size / end:.2g} or raise localization.")


def rule_curvature_nan(e: Evidence) -> Optional[str]:
    """The Hessian-vector products were not finite, so no stability was measured."""
    c = e.checks
    if not any(v is not None and math.isnan(v) for v in (c.hessian_max_abs_eig, c.hessian_max_abs_eig_end)):
        return None
    return ("the top Hessian eigenvalue is NaN (a Hessian-vector product was not finite, e.g. a w**0 factor or a "
            "non-smooth loss at w*), so the step size could not be checked against the curvature. Check that the "
            "loss is twice differentiable near w*, and validate ε by halving it.")


def rule_mala(e: Evidence) -> Optional[str]:
    """Low acceptance: MALA barely moves, or an unadjusted kernel's step has a visible bias."""
    acc, eps = e.checks.mala_accept, e.hyper.step_size
    if acc is None:
        return None
    if e.kernel.full_batch and acc < 0.2:
        return (f"MALA accepted {acc:.1%} of its proposals on average: the chains barely move, so the draws are "
                f"strongly correlated. Lower step_size (now {eps:g}); an acceptance of 0.5–0.8 mixes best.")
    if e.kernel.langevin and acc < 0.7:
        return (f"MALA would accept only {acc:.1%} of this sampler's proposals at the chains' final positions: the "
                f"step size (now {eps:g}) is large enough for a visible discretisation bias in λ̂. Lower step_size, "
                "or check with sampler='mala' on a small problem.")
    return None


RULES = (rule_diverged, rule_rhat, rule_negative, rule_above_half_d, rule_gradient, rule_stability_start,
         rule_stability_end, rule_curvature_nan, rule_mala)


def warn_all(e: Evidence) -> list[str]:
    """Issue every rule's message as an :class:`~slt_basins.errors.LLCWarning`; return the messages."""
    out = [m for m in (rule(e) for rule in RULES) if m]
    for m in out:
        warn(m, LLCWarning)
    return out
