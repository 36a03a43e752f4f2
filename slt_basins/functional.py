"""A model as a pure function of one flat parameter vector.

Samplers and curvature code work on flat vectors ``w`` of length d (or ``(chains, d)`` tensors).
:class:`FlatModel` maps such a vector back to the module's named parameters and evaluates the
module with ``torch.func.functional_call``, so that ``torch.func.vmap`` can batch over chains and
``torch.func.grad`` / ``hessian`` can differentiate. The module itself is never modified.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["FlatModel"]


class FlatModel:
    """View of ``model``'s trainable parameters as one flat vector.

    Args:
        model: any ``nn.Module``. Parameters with ``requires_grad=False`` are held fixed, as are
            buffers (e.g. BatchNorm running statistics, which are copied so the module is untouched).
        params: optional subset of parameter names, or a predicate ``name -> bool``, to expose as
            the vector; the others are held at their current values.

    Attributes:
        names, shapes, numels: the selected parameters, in ``model.named_parameters()`` order.
        w_star: their current values, flattened (a detached copy), shape ``(d,)``.

    Example:
        >>> fm = FlatModel(nn.Linear(3, 1))
        >>> fm.d
        4
        >>> fm.forward(fm.w_star, torch.zeros(2, 3)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        model: nn.Module,
        params: Optional[Union[Iterable[str], Callable[[str], bool]]] = None,
    ):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if params is not None:
            if callable(params):
                named = [(n, p) for n, p in named if params(n)]
            else:
                wanted = list(params)
                have = dict(named)
                missing = [n for n in wanted if n not in have]
                if missing:
                    raise ValueError(
                        f"unknown parameter name(s) {missing}; the model's trainable parameters are "
                        f"{list(have)}."
                    )
                named = [(n, have[n]) for n in wanted]
        if not named:
            raise ValueError(
                "the model has no trainable parameters (none with requires_grad=True"
                + (" among those selected" if params is not None else "")
                + "), so there is nothing to sample or differentiate."
            )
        self.model = model
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        sel = set(self.names)
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if n not in sel}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.w_star = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) > 1:
            raise ValueError(f"all sampled parameters must share one dtype; got {sorted(map(str, dtypes))}.")
        if not torch.isfinite(self.w_star).all():
            bad = [n for n, p in named if not torch.isfinite(p).all()]
            raise ValueError(
                f"the model's parameters at w* are not finite (NaN or inf in {bad}); "
                "the LLC needs a trained model at a finite local minimum."
            )

    @property
    def d(self) -> int:
        return int(self.w_star.numel())

    @property
    def dtype(self) -> torch.dtype:
        return self.w_star.dtype

    @property
    def device(self) -> torch.device:
        return self.w_star.device

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat ``(d,)`` vector into a ``{name: tensor}`` dict of parameter shapes."""
        out = {}
        for name, chunk, shape in zip(self.names, torch.split(w, self.numels), self.shapes):
            out[name] = chunk.reshape(shape)
        return out

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Model outputs at flat parameters ``w`` (shape ``(d,)``) on inputs ``x``."""
        tensors = {**self.fixed, **self.buffers, **self.unflatten(w)}
        return functional_call(self.model, tensors, (x,))

    def to(self, device=None, dtype=None) -> "FlatModel":
        """Move w*, fixed parameters and buffers (the module itself is moved too)."""
        self.model.to(device=device)
        self.w_star = self.w_star.to(device=device, dtype=dtype)
        self.fixed = {n: t.to(device) for n, t in self.fixed.items()}
        self.buffers = {n: t.to(device) for n, t in self.buffers.items()}
        return self
