"""Loss functions L_n(w) = mean over examples of a per-example loss, with shape checks.

The LLC estimator needs the *mean* training loss (the empirical negative log-likelihood per
example, up to constants), and, for the paired minibatch baseline, the per-example losses at w*.
This module turns the user's ``loss`` argument into a :class:`LossSpec` that provides both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["LossSpec", "resolve_loss", "LOSS_NAMES"]

LOSS_NAMES = ("mse", "cross_entropy")


def _mse_per_sample(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs - targets).pow(2).reshape(outputs.shape[0], -1).mean(dim=1)


def _ce_per_sample(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    per = F.cross_entropy(outputs, targets, reduction="none")
    return per.reshape(outputs.shape[0], -1).mean(dim=1)


@dataclass(frozen=True)
class LossSpec:
    """A mean loss and, where available, its per-example decomposition.

    Attributes:
        name: ``"mse"``, ``"cross_entropy"`` or ``"callable"``.
        mean: ``(outputs, targets) -> scalar`` mean loss over the examples.
        per_sample: ``(outputs, targets) -> (batch,)`` per-example losses whose mean is ``mean``,
            or ``None`` if the user's callable cannot be decomposed (then the paired minibatch
            baseline is evaluated by a forward pass at w* instead of read from a cache).
    """

    name: str
    mean: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    per_sample: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

    def prepare_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Check that model outputs (a probe batch) and targets fit this loss.

        Returns the targets, reshaped when they hold the same number of values per example
        as the outputs (e.g. targets ``(n,)`` for outputs ``(n, 1)``).

        Raises:
            ValueError: when the shapes or dtypes cannot be used with this loss.
        """
        b = outputs.shape[0] if outputs.ndim else 0
        if self.name == "mse":
            if not outputs.is_floating_point():
                raise ValueError(f"loss 'mse' needs floating-point model outputs; got {outputs.dtype}.")
            if outputs.shape[1:] != targets.shape[1:]:
                if outputs[0].numel() == targets[0].numel():
                    targets = targets.reshape((targets.shape[0],) + tuple(outputs.shape[1:]))
                else:
                    raise ValueError(
                        f"loss 'mse' cannot compare model outputs of shape {tuple(outputs.shape)} "
                        f"with targets of shape {tuple(targets[:b].shape)}: each example has "
                        f"{outputs[0].numel()} outputs but {targets[0].numel()} target values. "
                        "Change the model's output layer or the targets so that they match."
                    )
            return targets.to(outputs.dtype)
        if self.name == "cross_entropy":
            if outputs.ndim < 2:
                raise ValueError(
                    f"loss 'cross_entropy' needs logits of shape (batch, classes, ...); the model "
                    f"returned shape {tuple(outputs.shape)}. Use loss='mse' for regression."
                )
            k = outputs.shape[1]
            if targets.is_floating_point() and targets.shape[1:] == outputs.shape[1:]:
                return targets.to(outputs.dtype)  # class probabilities
            if targets.is_floating_point():
                if torch.all(targets == targets.round()):
                    targets = targets.long()
                else:
                    raise ValueError(
                        "loss 'cross_entropy' needs integer class labels or class probabilities of "
                        f"the outputs' shape; got float targets of shape {tuple(targets.shape)}."
                    )
            if targets.shape[1:] != outputs.shape[2:]:
                raise ValueError(
                    f"loss 'cross_entropy' with logits of shape {tuple(outputs.shape)} needs labels of "
                    f"shape (n{', ' if outputs.ndim > 2 else ''}{', '.join(map(str, outputs.shape[2:]))}); "
                    f"got {tuple(targets.shape)}."
                )
            if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k):
                raise ValueError(
                    f"class labels must lie in [0, {k - 1}] for a model with {k} output logits; "
                    f"got labels in [{int(targets.min())}, {int(targets.max())}]."
                )
            return targets.long()
        return targets

    def check_scalar(self, value: torch.Tensor) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"the loss must return a scalar mean loss; got {shape}. "
                "Reduce it with .mean() over the batch."
            )
        return value.reshape(())


def _decompose_callable(fn, outputs, targets) -> Optional[Callable]:
    """Try per-example evaluation of a user loss by vmap over singleton batches."""

    def per_sample(o, t):
        return torch.vmap(lambda oi, ti: fn(oi.unsqueeze(0), ti.unsqueeze(0)).reshape(()))(o, t)

    try:
        with torch.no_grad():
            per = per_sample(outputs, targets)
            whole = fn(outputs, targets)
        if per.shape != (outputs.shape[0],):
            return None
        if not torch.allclose(per.mean(), whole.reshape(()), rtol=1e-5, atol=1e-7):
            return None
    except Exception:  # the callable may not be vmappable; fall back to forward passes
        return None
    return per_sample


def resolve_loss(
    loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    outputs: Optional[torch.Tensor] = None,
    targets: Optional[torch.Tensor] = None,
) -> LossSpec:
    """Resolve ``"mse"``, ``"cross_entropy"`` or a callable into a :class:`LossSpec`.

    ``"mse"`` is ``torch.nn.functional.mse_loss`` with mean reduction: the squared error averaged
    over examples *and* output dimensions (the convention of Lau et al.'s DLN code). It equals the
    Gaussian negative log-likelihood with variance 1/2 per output, up to a constant, so nβ·L_n is the
    tempered NLL. ``"cross_entropy"`` is ``torch.nn.functional.cross_entropy`` on logits.
    A callable must map ``(outputs, targets)`` to the scalar mean loss over the batch; ``outputs``
    and ``targets`` (a probe batch) let us test whether it decomposes into per-example terms.

    Example:
        >>> spec = resolve_loss("mse")
        >>> float(spec.mean(torch.zeros(2, 1), torch.ones(2, 1)))
        1.0
    """
    if isinstance(loss, str):
        if loss == "mse":
            return LossSpec("mse", lambda o, t: F.mse_loss(o, t), _mse_per_sample)
        if loss in ("cross_entropy", "ce"):
            return LossSpec("cross_entropy", lambda o, t: F.cross_entropy(o, t), _ce_per_sample)
        raise ValueError(f"unknown loss {loss!r}: use one of {LOSS_NAMES} or a callable (outputs, targets) -> mean loss.")
    if not callable(loss):
        raise TypeError(f"loss must be a name in {LOSS_NAMES} or a callable; got {type(loss).__name__}.")
    per = _decompose_callable(loss, outputs, targets) if outputs is not None else None
    return LossSpec("callable", loss, per)
