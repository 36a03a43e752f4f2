"""Sampler kernels: small pure step functions over a ``(chains, d)`` parameter tensor.

Every kernel is a :class:`Kernel`, a pair of pure functions

* ``init(w0, loss_and_grad, hyper) -> state`` and
* ``step(state, loss_and_grad, noise, hyper) -> (state, loss, accept)``,

where

* ``state`` is a NamedTuple of tensors whose first dimension is the chain dimension and whose
  first field is the parameters ``w`` (``(chains, d)``), so the chain loop can freeze diverged
  chains with one ``torch.where`` per field;
* ``loss_and_grad(w)`` maps ``(chains, d)`` parameters to the per-chain minibatch loss
  ``L_B(w)`` (shape ``(chains,)``) and its gradient ``∇L_B(w)`` (shape ``(chains, d)``);
* ``noise`` is a ``(chains, d + kernel.extra_noise)`` tensor of independent standard normals,
  drawn by the chain loop from per-chain generators so that each chain's stream depends only on
  (seed, chain index);
* ``hyper`` is a :class:`Hyper` with the step size ε, the localisation strength γ, the inverse
  temperature times sample size nβ, the centre w* and whether adaptation is on (burn-in);
* the returned ``loss`` is ``L_B`` at the parameters the step *started* from, i.e. the draw, and
  ``accept`` is the per-chain Metropolis acceptance probability of the step (``None`` for the
  unadjusted kernels).

The target density of all kernels is the localised tempered posterior

    p(w) ∝ exp(−U(w)),   U(w) = nβ·L_n(w) + (γ/2)·‖w − w*‖²     (Lau et al. 2023, arXiv:2308.12108),

and ∇log p = −nβ·∇L − γ·(w − w*) is written ``drift`` below. Kernels with options are built by
factories (:func:`rmsprop_sgld`, :func:`adam_sgld`, :func:`sgnht`); :data:`KERNELS` holds the defaults
by name.

Example:
    >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1))
    >>> f = lambda w: ((w ** 2).sum(1), 2 * w)
    >>> k = get_kernel("sgld")
    >>> s = k.init(torch.ones(2, 1), f, h)
    >>> s, loss, acc = k.step(s, f, torch.zeros(2, 1), h)
    >>> round(s.w[0, 0].item(), 6), acc is None  # 1 + 0.005*(-10*2 - 1)
    (0.895, True)
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import torch

__all__ = [
    "Hyper", "Kernel", "SGLDState", "RMSpropState", "AdamSGLDState", "SGNHTState", "MALAState",
    "sgld_init", "sgld_step", "SGLD", "rmsprop_sgld", "adam_sgld", "sgnht", "MALA", "KERNELS", "get_kernel",
    "langevin_proposal", "langevin_log_accept",
]

LossAndGrad = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class Hyper(NamedTuple):
    """Sampler hyperparameters shared by all kernels.

    Attributes:
        step_size: ε > 0. For SGLD and MALA the Langevin step (injected noise variance ε); for
            RMSprop- and Adam-SGLD the step before preconditioning (in SGLD's units only with
            ``normalize=True``); for SGNHT the momentum form uses
            η = ε/2, so that at friction 1 it is SGLD with the same ε.
        localization: γ ≥ 0, strength of the Gaussian pull (γ/2)‖w − w*‖² towards w*.
        nbeta: nβ > 0, the sample size times inverse temperature multiplying the mean loss.
        w_star: the centre w*, shape ``(d,)`` (broadcast over chains).
        adapt: True during burn-in. Adaptive kernels (the preconditioner of RMSprop- and Adam-SGLD)
            update their statistics only while it is True, so that the draws come from a fixed
            Markov kernel (Adam-SGLD's first moment is part of the chain's state and keeps moving).

    Example:
        >>> h = Hyper(step_size=1e-4, localization=1.0, nbeta=100.0, w_star=torch.zeros(3))
        >>> h._replace(adapt=False).adapt, h.nbeta
        (False, 100.0)
    """

    step_size: float
    localization: float
    nbeta: float
    w_star: torch.Tensor
    adapt: bool = True


class Kernel(NamedTuple):
    """A sampler as a pair of pure functions (see the module docstring).

    ``extra_noise``: standard normals per chain and step beyond the d for the Langevin noise (MALA
    uses one for its accept/reject uniform). ``full_batch``: the kernel needs the exact loss
    (Metropolis correction), so minibatches are refused. ``preconditioner(state)`` returns the
    diagonal preconditioner ``(chains, d)`` of a preconditioned kernel, or None.

    ``stability_divisor`` c: the kernel is stable in a direction of curvature h while its stability
    ratio ε·(nβ·h + γ)/c < 1 (c = 4 for Langevin steps, 8 for SGNHT's momentum form with η = ε/2);
    None for kernels without such a rule (MALA, exact at any ε), which skips the stability checks.
    ``langevin``: the step is an (unadjusted) Langevin proposal, so the Metropolis acceptance of that
    proposal measures the kernel's discretisation bias (the MALA probe of the post-run checks).
    A kernel built by hand states both facts itself, and gets the same checks as the built-in ones.
    ``grads_per_step``: loss-and-gradient evaluations per step and chain (1 for every built-in kernel;
    MALA evaluates its proposal), the unit of the work-normalised efficiency ESS per 1,000 gradient
    evaluations that results report.

    Example (plain gradient descent, no noise, as a kernel; no stability rule is stated):
        >>> class GDState(NamedTuple):
        ...     w: torch.Tensor
        >>> def gd_step(state, loss_and_grad, noise, hyper):
        ...     loss, grad = loss_and_grad(state.w)
        ...     return GDState(state.w - hyper.step_size * hyper.nbeta * grad), loss, None
        >>> gd = Kernel("gd", lambda w0, f=None, h=None: GDState(w0), gd_step)
        >>> s, loss, _ = gd.step(gd.init(torch.ones(2, 1)), lambda w: ((w ** 2).sum(1), 2 * w),
        ...                      torch.zeros(2, 1), Hyper(1e-2, 0.0, 10.0, torch.zeros(1)))
        >>> s.w[:, 0].tolist(), loss.tolist(), gd.stability_divisor
        ([0.800000011920929, 0.800000011920929], [1.0, 1.0], None)
        >>> SGLD.stability_divisor, SGLD.langevin, MALA.full_batch, MALA.extra_noise
        (4.0, True, True, 1)
    """

    name: str
    init: Callable
    step: Callable
    extra_noise: int = 0
    full_batch: bool = False
    preconditioner: Optional[Callable] = None
    stability_divisor: Optional[float] = None
    langevin: bool = False
    grads_per_step: int = 1


def _drift(w: torch.Tensor, grad: torch.Tensor, hyper: Hyper) -> torch.Tensor:
    """∇log p(w) = −nβ·∇L(w) − γ·(w − w*)."""
    return grad.mul(-hyper.nbeta).sub_(w - hyper.w_star, alpha=hyper.localization)


def _potential(w: torch.Tensor, loss: torch.Tensor, hyper: Hyper) -> torch.Tensor:
    """U(w) = nβ·L(w) + (γ/2)‖w − w*‖², per chain."""
    return hyper.nbeta * loss + 0.5 * hyper.localization * (w - hyper.w_star).square().sum(-1)


def langevin_proposal(w: torch.Tensor, grad: torch.Tensor, z: torch.Tensor, hyper: Hyper,
                      precond: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The Langevin move w + (ε/2)·G·∇log p(w) + √(ε·G)·z for standard normals z (G = 1 without a
    diagonal preconditioner): SGLD's and RMSprop-SGLD's step, MALA's proposal, and Adam-SGLD's step
    with the first moment m̂ passed in place of ∇L.

    ``w``, ``grad`` (∇L at w), ``z`` and ``precond`` are ``(chains, d)``; ∇log p is the drift
    −nβ·∇L − γ·(w − w*) of the module docstring.

    >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1))
    >>> w = torch.ones(2, 1)  # K = w², ∇L = 2w: w + 0.005·(−10·2 − 1) = 0.895 without noise
    >>> langevin_proposal(w, 2 * w, torch.zeros(2, 1), h)[:, 0].tolist()
    [0.8949999809265137, 0.8949999809265137]
    """
    eps = hyper.step_size
    if precond is None:
        return w + (0.5 * eps) * _drift(w, grad, hyper) + math.sqrt(eps) * z
    return w + (0.5 * eps) * precond * _drift(w, grad, hyper) + (eps * precond).sqrt() * z


def langevin_log_accept(w, loss, grad, w_new, loss_new, grad_new, hyper: Hyper, precond=None) -> torch.Tensor:
    """log of the Metropolis–Hastings ratio of the Langevin proposal w → w_new, per chain.

    The proposal (:func:`langevin_proposal`) is q(w'|w) = N(w + (ε/2)·G·∇log p(w), ε·G) with a fixed diagonal preconditioner G
    (G = 1 for SGLD/MALA). Returns log[p(w') q(w|w') / (p(w) q(w'|w))]; the acceptance probability
    is min(1, exp(·)). Non-finite values (a proposal into overflow) are returned as −inf.

    >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1, dtype=torch.float64))
    >>> f = lambda w: ((w ** 2).sum(1), 2 * w)
    >>> w = torch.ones(1, 1, dtype=torch.float64)
    >>> w_new = langevin_proposal(w, f(w)[1], torch.zeros(1, 1, dtype=torch.float64), h)
    >>> log_a = langevin_log_accept(w, *f(w), w_new, *f(w_new), h)
    >>> float(log_a.clamp(max=0.0).exp())  # a small step: accepted with probability 1
    1.0
    """
    eps = hyper.step_size
    g = torch.ones_like(w) if precond is None else precond
    fwd = w_new - w - 0.5 * eps * g * _drift(w, grad, hyper)
    bwd = w - w_new - 0.5 * eps * g * _drift(w_new, grad_new, hyper)
    log_q = ((fwd.square() - bwd.square()) / g).sum(-1) / (2 * eps)
    out = _potential(w, loss, hyper) - _potential(w_new, loss_new, hyper) + log_q
    return torch.nan_to_num(out, nan=-math.inf, posinf=-math.inf)


# --- SGLD -----------------------------------------------------------------------------------------

class SGLDState(NamedTuple):
    """State of SGLD: only the parameters, shape ``(chains, d)``.

    >>> SGLDState(torch.zeros(2, 3)).w.shape
    torch.Size([2, 3])
    """

    w: torch.Tensor


def sgld_init(w0: torch.Tensor, loss_and_grad: Optional[LossAndGrad] = None, hyper: Optional[Hyper] = None) -> SGLDState:
    """Start SGLD chains at ``w0`` (``(chains, d)``); no evaluation is needed.

    >>> sgld_init(torch.ones(2, 1)).w.tolist()
    [[1.0], [1.0]]
    """
    return SGLDState(w0)


def sgld_step(state: SGLDState, loss_and_grad: LossAndGrad, noise: torch.Tensor, hyper: Hyper):
    """One localised SGLD step (Welling & Teh 2011, with the localising pull of Lau et al. 2023).

    Δw = (ε/2)·(−nβ·∇L_B(w) − γ·(w − w*)) + √ε·ξ,   ξ ~ N(0, I).

    For a Gaussian target of precision A the stationary variance of this update is
    1/(A(1 − εA/4)): stable only for εA < 4, and biased upward by the factor 1/(1 − εA/4)
    (the step-size bias; see the docs page Theory). Returns the new state, ``L_B(w)`` at the old parameters and None.

    >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1))
    >>> s, loss, acc = sgld_step(SGLDState(torch.ones(1, 1)), lambda w: ((w ** 2).sum(1), 2 * w),
    ...                          torch.zeros(1, 1), h)  # zero noise: the drift step alone
    >>> round(s.w.item(), 6), loss.item(), acc
    (0.895, 1.0, None)
    """
    loss, grad = loss_and_grad(state.w)
    return SGLDState(langevin_proposal(state.w, grad, noise, hyper)), loss, None


SGLD = Kernel("sgld", sgld_init, sgld_step, stability_divisor=4.0, langevin=True)


# --- RMSprop- and Adam-preconditioned SGLD --------------------------------------------------------

class RMSpropState(NamedTuple):
    """RMSprop-SGLD state: parameters, the running mean of squared loss gradients, steps adapted.

    ``w`` and ``v`` are ``(chains, d)`` (``v`` in squared units of the mean loss gradient ∇L_B, not of
    nβ·∇L_B), ``k`` is ``(chains,)``. ``v`` starts at v₀ (``init_v``, default 1).

    >>> k = rmsprop_sgld()
    >>> s = k.init(torch.ones(2, 3))
    >>> s.v[0].tolist(), s.k.tolist(), k.preconditioner(s)[0].tolist()  # before adaptation v̂ = v₀ = 1
    ([1.0, 1.0, 1.0], [0.0, 0.0], [1.0, 1.0, 1.0])
    """

    w: torch.Tensor
    v: torch.Tensor
    k: torch.Tensor


def _check_rms_options(decay: float, init_v: float, delta: float, normalize: bool, max_gain: float,
                       what: str = "rmsprop decay") -> None:
    if not 0.0 < decay < 1.0:
        raise ValueError(f"{what} must lie in (0, 1); got {decay!r}.")
    if not (init_v >= 0 and math.isfinite(init_v)):
        raise ValueError(f"init_v (v₀) must be finite and ≥ 0; got {init_v!r}.")
    if not (delta >= 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be finite and ≥ 0; got {delta!r}.")
    if not normalize and delta == 0 and init_v == 0:
        raise ValueError("with normalize=False, init_v = 0 and delta = 0 the metric G = 1/(√v̂ + δ) is infinite "
                         "wherever no loss gradient has been seen (e.g. at w*): give init_v > 0 or delta > 0.")
    if not (max_gain >= 1 and math.isfinite(max_gain)):
        raise ValueError(f"rmsprop max_gain must be finite and ≥ 1; got {max_gain!r}.")


def _second_moment(v: torch.Tensor, k: torch.Tensor, grad: torch.Tensor, decay: float, adapt: bool):
    """RMSprop's running mean of squared loss gradients and its step count, updated only while ``adapt``
    (burn-in): v ← decay·v + (1 − decay)·g², k ← k + 1; unchanged afterwards."""
    if not adapt:
        return v, k
    return decay * v + (1.0 - decay) * grad.square(), k + 1


def _rms_metric(v: torch.Tensor, k: torch.Tensor, decay: float, delta: float, normalize: bool,
                max_gain: float) -> torch.Tensor:
    """The diagonal metric G of RMSprop-/Adam-SGLD from the second moment ``v`` after ``k`` adapted steps.

    v̂ = v/(1 − decay^k) (v̂ = v = v₀ while k = 0), s = √v̂ + δ; G = 1/s, or with ``normalize``
    G_i = min(max_gain, max_j s_j / s_i) (G = 1 where every s is 0).

    >>> v, k = torch.tensor([[4.0, 1.0]]), torch.tensor([1.0])   # one step at decay 0.75: v̂ = 4·v
    >>> _rms_metric(v, k, 0.75, 0.0, False, 1e3).tolist(), _rms_metric(v, k, 0.75, 0.0, True, 1e3).tolist()
    ([[0.25, 0.5]], [[1.0, 2.0]])
    """
    corr = torch.where(k > 0, 1.0 - decay ** k, torch.ones_like(k)).unsqueeze(-1)
    s = (v / corr).sqrt() + delta
    if not normalize:
        return 1.0 / s
    top = s.amax(-1, keepdim=True)
    G = top / torch.maximum(s, top / max_gain)
    return torch.where(top > 0, G, torch.ones_like(G))


def rmsprop_sgld(decay: float = 0.99, init_v: float = 1.0, delta: float = 1e-8, normalize: bool = False,
                 max_gain: float = 1000.0) -> Kernel:
    """RMSprop-preconditioned SGLD (Li et al. 2016, pSGLD, arXiv:1512.07666), in the form of Hitchcock
    & Hoogland 2025 (arXiv:2507.21449, Appendix D): v₀ = 1, bias correction, adaptation on the loss
    gradient only.

    With g = ∇L_B(w) the minibatch gradient of the mean loss (not nβ·∇L_B, and without the
    localisation term, so that γ does not set the metric), k the number of adapted steps and v
    starting at v₀ = ``init_v``:

        v ← decay·v + (1 − decay)·g²,   k ← k + 1          (burn-in only, ``hyper.adapt``),
        v̂ = v/(1 − decay^k)                                (v̂ = v₀ before any adaptation),
        G = 1/(√v̂ + δ)                                     (δ = ``delta``),
        Δw = (ε/2)·G·(−nβ·∇L_B(w) − γ·(w − w*)) + √(ε·G)·ξ,   ξ ~ N(0, I),

    v being updated with the gradient at w before G is formed. (That g is the mean-loss gradient,
    without nβ, is our reading of the paper; v₀ and δ are in its units.) G has units 1/|∇L|, so ε is not in
    SGLD's units: near a minimum of curvature A, √v̂ ≈ RMS(∇L_B) ≈ √(A/nβ) for the full batch and
    G·nβ·A ≈ √(nβ·A), so the stable ε differs from SGLD's by a factor of order √(nβ/A).
    The bias correction with v₀ = 1 leaves a prior term: v̂ = decay^k/(1 − decay^k) + (the
    bias-corrected mean of g²); it is negligible only once decay^k ≪ E[g²], i.e. after about
    ln(1/E[g²])/(1 − decay) adapted steps (920 at decay 0.99 and E[g²] = 1e-4). Until then G is
    nearer 1/√(that prior term) in every direction, so the metric depends on the burn-in length.

    ``normalize=True`` uses G_i = min(max_gain, max_j s_j / s_i) with s = √v̂ + δ instead (smallest
    entry 1): the stiffest direction moves as under SGLD with the same ε, so ε keeps SGLD's units
    and stability rule ε·(nβ·h_max + γ) < 4, which the step-size grid of the calibration assumes;
    ``max_gain`` caps the speed-up where the loss gradient vanishes and only γ confines the chain
    (keep ε·γ·max_gain < 4). ``rmsprop_sgld(normalize=True, init_v=0.0, delta=0.0)`` is the
    normalised kernel this package used before (``KERNELS["rmsprop_sgld_normalized"]``).

    Adaptation stops after burn-in (v and k frozen), so the draws come from SGLD with a fixed diagonal
    metric G, whose stationary law is the target up to the O(ε) discretisation bias (per direction
    the variance is 1/(a(1 − ε·G_i·a/4)) on a Gaussian of precision a); the Γ correction term of
    pSGLD vanishes for a fixed G. Implementations that adapt G throughout sampling (as pSGLD does)
    sample from a time-varying kernel whose stationary law is not the target without that term.

    Example:
        >>> h = Hyper(1e-2, 0.0, 10.0, torch.zeros(1))
        >>> f = lambda w: ((w ** 2).sum(1), 2 * w)          # ∇L = 2w = 2 at w = 1
        >>> k = rmsprop_sgld(decay=0.9, delta=0.0)
        >>> s, _, _ = k.step(k.init(torch.ones(1, 1)), f, torch.zeros(1, 1), h)
        >>> round(s.v.item(), 6), round(k.preconditioner(s).item(), 6)  # v = 0.9 + 0.1·4, v̂ = 1.3/0.1
        (1.3, 0.27735)
    """
    _check_rms_options(decay, init_v, delta, normalize, max_gain)

    def init(w0, loss_and_grad=None, hyper=None):
        return RMSpropState(w0, torch.full_like(w0, init_v), torch.zeros(w0.shape[0], dtype=w0.dtype, device=w0.device))

    def precond(state: RMSpropState) -> torch.Tensor:
        return _rms_metric(state.v, state.k, decay, delta, normalize, max_gain)

    def step(state: RMSpropState, loss_and_grad, noise, hyper: Hyper):
        loss, grad = loss_and_grad(state.w)
        v, k = _second_moment(state.v, state.k, grad, decay, hyper.adapt)
        w = langevin_proposal(state.w, grad, noise, hyper, precond(RMSpropState(state.w, v, k)))
        return RMSpropState(w, v, k), loss, None

    name = "rmsprop_sgld_normalized" if normalize else "rmsprop_sgld"
    return Kernel(name, init, step, preconditioner=precond, stability_divisor=4.0, langevin=True)


class AdamSGLDState(NamedTuple):
    """Adam-SGLD state: parameters, first and second moments of the loss gradient, steps adapted, steps.

    ``w``, ``m`` (units of ∇L_B) and ``v`` (units of (∇L_B)²) are ``(chains, d)``; ``k`` (steps that
    adapted v) and ``t`` (all steps, for the bias correction of m) are ``(chains,)``.

    >>> s = adam_sgld().init(torch.ones(2, 3))
    >>> s.m[0].tolist(), s.v[0].tolist(), s.k.tolist(), s.t.tolist()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0], [0.0, 0.0])
    """

    w: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    k: torch.Tensor
    t: torch.Tensor


def adam_sgld(beta1: float = 0.9, beta2: float = 0.999, init_v: float = 1.0, delta: float = 1e-8,
              normalize: bool = False, max_gain: float = 1000.0) -> Kernel:
    """Adam-SGLD as benchmarked by Hitchcock & Hoogland 2025 (arXiv:2507.21449, Appendix D): the
    RMSprop-SGLD metric of :func:`rmsprop_sgld` (decay β₂), with the loss gradient in the drift
    replaced by Adam's bias-corrected first moment (Kingma & Ba 2014, arXiv:1412.6980).

    With g = ∇L_B(w) (mean loss, no nβ, no localisation term), m₀ = 0, v₀ = ``init_v``:

        m ← β₁·m + (1 − β₁)·g,   t ← t + 1,   m̂ = m/(1 − β₁^t)           (every step),
        v ← β₂·v + (1 − β₂)·g²,  k ← k + 1                               (burn-in only),
        G = 1/(√v̂ + δ) with v̂ = v/(1 − β₂^k)      (or normalised, as in :func:`rmsprop_sgld`),
        Δw = (ε/2)·G·(−nβ·m̂ − γ·(w − w*)) + √(ε·G)·ξ,   ξ ~ N(0, I).

    The localisation term is exact (at the current w); only the loss gradient is averaged.

    Once v is frozen, (w, m) is a Markov chain with a fixed kernel (up to the factor 1/(1 − β₁^t),
    which is 1 within β₁^t: 3e-5 after 100 steps at β₁ = 0.9). Its drift is not ∇log p at w, so a
    step is not a Langevin proposal of the target (``langevin=False``: no MALA probe), and its
    stationary law is the target only as ε → 0. On a Gaussian of loss curvature A, where (w_i, m_i)
    follow a linear recursion whose stationary covariance solves a 2×2 Lyapunov equation (used by the
    tests), the variance of a direction is, to first order in ε,

        (1/(nβA + γ))·[1 + ε·G·(γ + nβA·(1 + β₁)/(1 − β₁))/4],

    so the step-size bias of the loss part is (1 + β₁)/(1 − β₁) = 19 times SGLD's at β₁ = 0.9: the
    averaged gradient lags w by about β₁/(1 − β₁) steps, which weakens the restoring force. The
    momentum does not speed up travel either (without noise the update is heavy-ball with step
    (1 − β₁)·ε and momentum β₁, i.e. the same drift per step as SGLD once built up). It also
    averages minibatch noise over about 1/(1 − β₁) steps. ``stability_divisor`` is
    c = 4(1 − β₁)/(1 + β₁), so that the stability ratio ε·(nβ·h + γ·max G)/c of the checks measures
    this first-order variance inflation as it does for SGLD (it overstates the γ part by
    (1 + β₁)/(1 − β₁)); the chain itself stays stable until ε·G·(nβA·(1 − β₁) + γ·(1 + β₁)) < 4(1 + β₁).

    Example:
        >>> k = adam_sgld(beta1=0.5, delta=0.0)
        >>> h = Hyper(1e-2, 0.0, 10.0, torch.zeros(1))
        >>> s, _, _ = k.step(k.init(torch.ones(1, 1)), lambda w: ((w ** 2).sum(1), 2 * w), torch.zeros(1, 1), h)
        >>> s.m.item(), round(k.stability_divisor, 6), k.langevin  # m = 0.5·2; m̂ = 2 = g on the first step
        (1.0, 1.333333, False)
    """
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"adam beta1 must lie in [0, 1); got {beta1!r}.")
    _check_rms_options(beta2, init_v, delta, normalize, max_gain, what="adam beta2")

    def init(w0, loss_and_grad=None, hyper=None):
        zero = torch.zeros(w0.shape[0], dtype=w0.dtype, device=w0.device)
        return AdamSGLDState(w0, torch.zeros_like(w0), torch.full_like(w0, init_v), zero, zero.clone())

    def precond(state: AdamSGLDState) -> torch.Tensor:
        return _rms_metric(state.v, state.k, beta2, delta, normalize, max_gain)

    def step(state: AdamSGLDState, loss_and_grad, noise, hyper: Hyper):
        loss, grad = loss_and_grad(state.w)
        v, k = _second_moment(state.v, state.k, grad, beta2, hyper.adapt)
        m, t = beta1 * state.m + (1.0 - beta1) * grad, state.t + 1
        m_hat = m / (1.0 - beta1 ** t).unsqueeze(-1)
        new = AdamSGLDState(state.w, m, v, k, t)
        return new._replace(w=langevin_proposal(state.w, m_hat, noise, hyper, precond(new))), loss, None

    return Kernel("adam_sgld", init, step, preconditioner=precond,
                  stability_divisor=4.0 * (1.0 - beta1) / (1.0 + beta1), langevin=False)


# --- SGNHT -----------------------------------------------------------------------------------------

class SGNHTState(NamedTuple):
    """SGNHT state: parameters, momentum (in parameter units per step) and the thermostat α.

    >>> s = sgnht(friction=0.1).init(torch.ones(2, 1))
    >>> s.p.tolist(), s.alpha.tolist()  # at rest, α starting at the friction
    ([[0.0], [0.0]], [0.10000000149011612, 0.10000000149011612])
    """

    w: torch.Tensor
    p: torch.Tensor
    alpha: torch.Tensor


def sgnht(friction: float = 0.1) -> Kernel:
    """Stochastic-gradient Nosé–Hoover thermostat (Ding et al. 2014), in momentum form.

    With η = ε/2 and diffusion a = ``friction`` (0 < a ≤ 1):

        p ← (1 − α)·p + η·(−nβ·∇L_B(w) − γ·(w − w*)) + √(2aη)·ξ,
        w ← w + p,
        α ← α + (‖p‖²/d − η),

    α starting at a. The thermostat α adapts the friction until the kinetic energy per
    coordinate is η (the value at the target), which absorbs unknown minibatch gradient noise.
    At a = α = 1 the update is SGLD with step ε; smaller a gives momentum that travels further
    along flat directions per gradient evaluation.

    Example:
        >>> sgnht(0.05).name
        'sgnht'
    """
    if not (0.0 < friction <= 1.0):
        raise ValueError(f"sgnht friction must lie in (0, 1]; got {friction!r}.")

    def init(w0, loss_and_grad=None, hyper=None):
        return SGNHTState(w0, torch.zeros_like(w0), torch.full((w0.shape[0],), friction, dtype=w0.dtype, device=w0.device))

    def step(state: SGNHTState, loss_and_grad, noise, hyper: Hyper):
        loss, grad = loss_and_grad(state.w)
        eta = 0.5 * hyper.step_size
        p = (1.0 - state.alpha).unsqueeze(-1) * state.p + eta * _drift(state.w, grad, hyper) \
            + math.sqrt(2.0 * friction * eta) * noise
        w = state.w + p
        alpha = state.alpha + (p.square().mean(-1) - eta)
        return SGNHTState(w, p, alpha), loss, None

    return Kernel("sgnht", init, step, stability_divisor=8.0)


# --- MALA ------------------------------------------------------------------------------------------

class MALAState(NamedTuple):
    """MALA state: parameters with the full-batch loss and gradient there (cached).

    >>> s = MALA.init(torch.ones(2, 1), lambda w: ((w ** 2).sum(1), 2 * w), None)
    >>> s.loss.tolist(), s.grad.tolist()
    ([1.0, 1.0], [[2.0], [2.0]])
    """

    w: torch.Tensor
    loss: torch.Tensor
    grad: torch.Tensor


def _mala_init(w0, loss_and_grad, hyper=None) -> MALAState:
    loss, grad = loss_and_grad(w0)
    return MALAState(w0, loss, grad)


def _mala_step(state: MALAState, loss_and_grad, noise, hyper: Hyper):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996): an SGLD proposal, accepted with
    probability min(1, p(w')q(w|w') / (p(w)q(w'|w))). Exact for the localised posterior at any ε
    (full batch); one loss-and-gradient evaluation per step. The last noise column is the
    accept/reject variate (u = Φ(z))."""
    z, u = noise[:, :-1], noise[:, -1]
    w_new = langevin_proposal(state.w, state.grad, z, hyper)
    loss_new, grad_new = loss_and_grad(w_new)
    log_a = langevin_log_accept(state.w, state.loss, state.grad, w_new, loss_new, grad_new, hyper)
    take = torch.special.log_ndtr(u) < log_a
    m = take.unsqueeze(-1)
    new = MALAState(torch.where(m, w_new, state.w), torch.where(take, loss_new, state.loss),
                    torch.where(m, grad_new, state.grad))
    return new, state.loss, log_a.clamp(max=0.0).exp()


MALA = Kernel("mala", _mala_init, _mala_step, extra_noise=1, full_batch=True)

KERNELS: dict[str, Kernel] = {"sgld": SGLD, "rmsprop_sgld": rmsprop_sgld(),
                               "rmsprop_sgld_normalized": rmsprop_sgld(normalize=True, init_v=0.0, delta=0.0),
                               "adam_sgld": adam_sgld(), "sgnht": sgnht(), "mala": MALA}


def get_kernel(sampler: Union[str, Kernel]) -> Kernel:
    """Look a kernel up by name (or pass a :class:`Kernel` through), with a clear error.

    >>> get_kernel("mala") is MALA, get_kernel(SGLD) is SGLD
    (True, True)
    >>> get_kernel("hmc")
    Traceback (most recent call last):
    ...
    ValueError: unknown sampler 'hmc'; choose one of ['adam_sgld', 'mala', 'rmsprop_sgld', 'rmsprop_sgld_normalized', 'sgld', 'sgnht'], or pass a Kernel built by slt_basins.samplers.rmsprop_sgld(...) / adam_sgld(...) / sgnht(...).
    """
    if isinstance(sampler, Kernel):
        return sampler
    try:
        return KERNELS[sampler]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sampler {sampler!r}; choose one of {sorted(KERNELS)}, or pass a Kernel built by "
            "slt_basins.samplers.rmsprop_sgld(...) / adam_sgld(...) / sgnht(...)."
        ) from None
