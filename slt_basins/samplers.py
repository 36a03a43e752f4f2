"""Sampler kernels: small pure step functions over a ``(chains, d)`` parameter tensor.

Every kernel is a pair ``init(w0) -> state`` and
``step(state, loss_and_grad, noise, hyper) -> (state, loss)``:

* ``state`` is a NamedTuple of tensors whose first dimension is the chain dimension, so the
  chain loop can freeze diverged chains with one ``torch.where`` per field;
* ``loss_and_grad(w)`` maps ``(chains, d)`` parameters to the per-chain minibatch loss
  ``L_B(w)`` (shape ``(chains,)``) and its gradient ``∇L_B(w)`` (shape ``(chains, d)``);
* ``noise`` is a ``(chains, d)`` tensor of independent standard normals, drawn by the chain loop
  from per-chain generators so that each chain's stream depends only on (seed, chain index);
* ``hyper`` is a :class:`Hyper` with the step size ε, the localisation strength γ, the inverse
  temperature times sample size nβ, and the centre w*;
* the returned ``loss`` is ``L_B`` at the parameters the step *started* from, i.e. the draw.

The target density of all kernels is the localised tempered posterior

    p(w) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w − w*‖²)            (Lau et al. 2023, arXiv:2308.12108).

New kernels (RMSprop-SGLD, SGNHT, MALA) plug into the same chain loop by providing the same two
functions; see :data:`KERNELS`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

__all__ = ["Hyper", "Kernel", "SGLDState", "sgld_init", "sgld_step", "SGLD", "KERNELS", "get_kernel"]

LossAndGrad = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class Hyper(NamedTuple):
    """Sampler hyperparameters shared by all kernels.

    Attributes:
        step_size: ε > 0, the SGLD learning rate (the injected noise has variance ε).
        localization: γ ≥ 0, strength of the Gaussian pull (γ/2)‖w − w*‖² towards w*.
        nbeta: nβ > 0, the sample size times inverse temperature multiplying the mean loss.
        w_star: the centre w*, shape ``(d,)`` (broadcast over chains).
    """

    step_size: float
    localization: float
    nbeta: float
    w_star: torch.Tensor


class Kernel(NamedTuple):
    """A sampler as a pair of pure functions (see the module docstring)."""

    name: str
    init: Callable[[torch.Tensor], NamedTuple]
    step: Callable[[NamedTuple, LossAndGrad, torch.Tensor, Hyper], "tuple[NamedTuple, torch.Tensor]"]


class SGLDState(NamedTuple):
    """State of SGLD: only the parameters, shape ``(chains, d)``."""

    w: torch.Tensor


def sgld_init(w0: torch.Tensor) -> SGLDState:
    """Start SGLD chains at ``w0`` (``(chains, d)``)."""
    return SGLDState(w0)


def sgld_step(state: SGLDState, loss_and_grad: LossAndGrad, noise: torch.Tensor, hyper: Hyper):
    """One localised SGLD step (Welling & Teh 2011, with the localising pull of Lau et al. 2023).

    Δw = (ε/2)·(−nβ·∇L_B(w) − γ·(w − w*)) + √ε·ξ,   ξ ~ N(0, I).

    For a Gaussian target of precision A the stationary variance of this update is
    1/(A(1 − εA/4)): stable only for εA < 4, and biased upward by the factor 1/(1 − εA/4)
    (rlct-truth.md §7 item 5). Returns the new state and ``L_B(w)`` at the old parameters.

    Example:
        >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1))
        >>> f = lambda w: ((w ** 2).sum(1), 2 * w)
        >>> s, loss = sgld_step(sgld_init(torch.ones(2, 1)), f, torch.zeros(2, 1), h)
        >>> round(s.w[0, 0].item(), 6)  # 1 + 0.005*(-10*2 - 1)
        0.895
    """
    loss, grad = loss_and_grad(state.w)
    drift = grad.mul(-hyper.nbeta).sub_(state.w - hyper.w_star, alpha=hyper.localization)
    w = state.w + (0.5 * hyper.step_size) * drift + math.sqrt(hyper.step_size) * noise
    return SGLDState(w), loss


SGLD = Kernel("sgld", sgld_init, sgld_step)

KERNELS: dict[str, Kernel] = {"sgld": SGLD}


def get_kernel(name: str) -> Kernel:
    """Look a kernel up by name, with a clear error listing the known ones."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(KERNELS)}.") from None
