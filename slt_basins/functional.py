"""A model as a pure function of one flat parameter vector.

Samplers and curvature code work on flat vectors ``w`` of length d (or ``(chains, d)`` tensors).
:class:`FlatModel` maps such a vector back to the module's named parameters and evaluates the
module with ``torch.func.functional_call``, so that ``torch.func.vmap`` can batch over chains and
``torch.func.grad`` / ``hessian`` can differentiate. The module itself is never modified.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import nn
from torch.func import functional_call

from .data import model_inputs

__all__ = ["FlatModel", "output_tensor"]


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
        >>> fm.d, fm.dtype, fm.device.type, fm.names
        (4, torch.float32, 'cpu', ['weight', 'bias'])
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
        """The number of sampled parameters (the length of ``w``)."""
        return int(self.w_star.numel())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the sampled parameters (all share one)."""
        return self.w_star.dtype

    @property
    def device(self) -> torch.device:
        """The device of the sampled parameters."""
        return self.w_star.device

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat ``(d,)`` vector into a ``{name: tensor}`` dict of parameter shapes.

        Example:
            >>> {k: tuple(v.shape) for k, v in FlatModel(nn.Linear(3, 2)).unflatten(torch.zeros(8)).items()}
            {'weight': (2, 3), 'bias': (2,)}
        """
        out = {}
        for name, chunk, shape in zip(self.names, torch.split(w, self.numels), self.shapes):
            out[name] = chunk.reshape(shape)
        return out

    def forward(self, w: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The module's raw output ``model(*args, **kwargs)`` at flat parameters ``w`` (shape ``(d,)``).

        Uses ``torch.func.functional_call``, so ``torch.func.vmap`` can batch over a leading chain
        dimension of ``w`` (and of the inputs). The output is whatever the module returns.

        Example:
            >>> fm = FlatModel(nn.Linear(3, 1))
            >>> fm.forward(fm.w_star, input=torch.zeros(2, 3)).shape
            torch.Size([2, 1])
        """
        tensors = {**self.fixed, **self.buffers, **self.unflatten(w)}
        return functional_call(self.model, tensors, args, kwargs)

    def outputs(self, w: torch.Tensor, batch: Any) -> torch.Tensor:
        """The output tensor the loss takes, on a batch, at flat parameters ``w``.

        ``batch`` is a tensor of inputs, a tuple ``(inputs, targets)`` (``model(inputs)``) or a
        dict (``model(**inputs)`` without the keys of :data:`slt_basins.data.TARGET_KEYS`); the
        module's output is reduced to one tensor by :func:`output_tensor`.

        Example:
            >>> fm = FlatModel(nn.Linear(3, 1))
            >>> fm.outputs(fm.w_star, (torch.zeros(2, 3), torch.zeros(2))).shape
            torch.Size([2, 1])
        """
        args, kwargs = model_inputs(batch)
        return output_tensor(self.forward(w, *args, **kwargs))


def output_tensor(out: Any) -> torch.Tensor:
    """The tensor of a model's output that the loss takes.

    A tensor is returned as it is; an object with a tensor ``.logits`` (a HuggingFace
    ``ModelOutput``) gives ``.logits``; a dict gives its ``"logits"`` entry, else its only tensor
    value; a tuple or list gives (the output tensor of) its first item.

    Raises:
        TypeError: for any other output, saying how to wrap the model.

    Example:
        >>> output_tensor((torch.ones(2), torch.zeros(3))).tolist()
        [1.0, 1.0]
        >>> output_tensor({"logits": torch.zeros(1), "hidden": torch.ones(1)}).tolist()
        [0.0]
    """
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return out[tensors[0]]
        raise TypeError(f"the model returned a dict with keys {list(out)} and no 'logits'; wrap the model so that "
                        "it returns the tensor the loss takes (or a dict with a 'logits' entry).")
    if isinstance(out, (tuple, list)) and len(out) > 0:
        return output_tensor(out[0])
    raise TypeError(f"the model must return a tensor, a tuple (first item used), a dict with 'logits' or an object "
                    f"with .logits; got {type(out).__name__}. Wrap the model so that forward returns the outputs "
                    "the loss takes.")
