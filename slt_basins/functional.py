"""A model as a pure function of one flat parameter vector.

Samplers and curvature code work on flat vectors ``w`` of length d (or ``(chains, d)`` tensors).
:class:`FlatModel` maps such a vector back to the module's named parameters and evaluates the
module with ``torch.func.functional_call``, so that ``torch.func.vmap`` can batch over chains and
``torch.func.grad`` / ``hessian`` can differentiate. The module itself is never modified.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import nn
from torch.func import functional_call

from .data import model_inputs

__all__ = ["FlatModel", "output_tensor"]


class FlatModel:
    """View of ``model``'s trainable parameters (or some of their entries) as one flat vector.

    Args:
        model: any ``nn.Module``. Parameters with ``requires_grad=False`` are held fixed, as are
            buffers (e.g. BatchNorm running statistics, which are copied so the module is untouched).
        params: which trainable parameters (or entries) form the vector; everything else is held at
            its current value w*. One of

            * ``None``: every trainable parameter, in ``model.named_parameters()`` order;
            * a list or tuple of exact names or :mod:`fnmatch` glob patterns (``"transformer.h.0.*"``;
              one string alone counts as one pattern). The vector holds each item's matches in the
              order given (a pattern's matches in ``named_parameters()`` order), each parameter once.
              An item that matches no trainable parameter is an error that lists their names;
            * a callable ``name -> bool``: the parameters it accepts, in ``named_parameters()`` order;
            * a dict ``{name: mask}`` of boolean tensors of the parameter's shape: only the ``True``
              entries of each are sampled (the *weight-refined* LLC of Wang et al. 2024,
              arXiv:2410.02984), in the dict's order and row-major order within a tensor. Masks of
              another shape or dtype, or with no ``True`` entry, are errors.

    Attributes:
        names: the parameters with sampled entries, in the order their entries appear in ``w``;
            a masked parameter is named once, whole or not.
        shapes: the full shape of each of ``names``.
        numels: the number of *sampled* entries of each (the tensor's numel, or its mask's count);
            they sum to ``d``.
        masks: ``{name: bool mask}`` for the masked parameters only (a mask that is all ``True``
            is dropped: that parameter is sampled whole).
        w_star: the sampled entries' current values, flattened (a detached copy), shape ``(d,)``.

    Example:
        >>> fm = FlatModel(nn.Linear(3, 1))
        >>> fm.d, fm.dtype, fm.device.type, fm.names
        (4, torch.float32, 'cpu', ['weight', 'bias'])
        >>> fm.forward(fm.w_star, torch.zeros(2, 3)).shape
        torch.Size([2, 1])
        >>> lin = nn.Linear(3, 2)
        >>> part = FlatModel(lin, {"weight": torch.tensor([[True, False, True], [False, False, False]])})
        >>> part.d, part.names, part.selection
        (2, ['weight'], ['weight[2 of 6]'])
        >>> torch.equal(part.w_star, lin.weight.detach()[0, [0, 2]])
        True
    """

    def __init__(
        self,
        model: nn.Module,
        params: Selection = None,
    ):
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        named, masks = _select(trainable, params)
        if not named:
            raise ValueError(
                "the model has no trainable parameters (none with requires_grad=True"
                + (" among those selected" if params is not None else "")
                + "), so there is nothing to sample or differentiate."
            )
        self.model = model
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.masks = masks
        self._index = {n: m.reshape(-1).nonzero().squeeze(1) for n, m in masks.items()}
        self.numels = [int(self._index[n].numel()) if n in masks else p.numel() for n, p in named]
        sel = set(self.names)
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if n not in sel}
        self._base = {n: p.detach().clone() for n, p in named if n in masks}  # w* of masked tensors
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.w_star = torch.cat([self._entries(n, p) for n, p in named]).clone()
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) > 1:
            raise ValueError(f"all sampled parameters must share one dtype; got {sorted(map(str, dtypes))}.")
        if not torch.isfinite(self.w_star).all():
            bad = [n for n, p in named if not torch.isfinite(p).all()]
            raise ValueError(
                f"the model's parameters at w* are not finite (NaN or inf in {bad}); "
                "the LLC needs a trained model at a finite local minimum."
            )

    def _entries(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """The sampled entries of parameter ``name`` (all of them, or its mask's), flattened."""
        flat = p.detach().reshape(-1)
        return flat[self._index[name]] if name in self._index else flat

    @property
    def selection(self) -> list[str]:
        """What is sampled, one string per parameter: its name, or ``"name[k of N]"`` when only the k
        entries of its mask (of N) are.

        Example:
            >>> FlatModel(nn.Linear(3, 1), ["bias"]).selection
            ['bias']
        """
        out = []
        for name, shape, k in zip(self.names, self.shapes, self.numels):
            out.append(f"{name}[{k} of {math.prod(shape)}]" if name in self.masks else name)
        return out

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

        A masked parameter's tensor is its value at w* with the mask's entries replaced by those of
        ``w`` (an out-of-place ``index_put``, so that ``torch.func.vmap`` over a leading chain
        dimension of ``w``, autograd and ``torch.func`` transforms all apply).

        Example:
            >>> {k: tuple(v.shape) for k, v in FlatModel(nn.Linear(3, 2)).unflatten(torch.zeros(8)).items()}
            {'weight': (2, 3), 'bias': (2,)}
            >>> lin = nn.Linear(2, 1)
            >>> with torch.no_grad():
            ...     _ = lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
            >>> FlatModel(lin, {"weight": torch.tensor([[False, True]])}).unflatten(torch.tensor([5.0]))["weight"]
            tensor([[1., 5.]])
        """
        out = {}
        for name, chunk, shape in zip(self.names, torch.split(w, self.numels), self.shapes):
            if name in self._index:
                base = self._base[name].reshape(-1)
                out[name] = base.index_put((self._index[name],), chunk).reshape(shape)
            else:
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


Selection = Union[None, str, Iterable[str], Callable[[str], bool], Mapping[str, Any]]


def _select(trainable: list, params: Selection) -> tuple[list, dict]:
    """The (name, parameter) pairs that ``params`` selects among ``trainable``, and their masks."""
    if params is None:
        return trainable, {}
    if isinstance(params, Mapping):
        return _by_masks(trainable, params)
    if callable(params) and not isinstance(params, str):
        return [(n, p) for n, p in trainable if params(n)], {}
    items = [params] if isinstance(params, str) else list(params)
    have = dict(trainable)
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise TypeError(f"params must hold parameter names or glob patterns (strings); got {bad[:3]!r}. For a "
                        "part of a tensor pass a dict {name: bool mask}, for a rule a callable name -> bool.")
    chosen, missing = {}, []
    for item in items:
        hits = [item] if item in have else [n for n in have if fnmatch.fnmatchcase(n, item)]
        if not hits:
            missing.append(item)
        for n in hits:
            chosen.setdefault(n, have[n])
    if missing:
        raise ValueError(f"unknown parameter name(s) {missing}: no trainable parameter has that name or matches "
                         f"it as a glob pattern; the model's trainable parameters are {list(have)}.")
    return list(chosen.items()), {}


def _by_masks(trainable: list, masks: Mapping[str, Any]) -> tuple[list, dict]:
    """``params={name: bool mask}``: validate each mask against its parameter; all-True masks are dropped."""
    have = dict(trainable)
    missing = [n for n in masks if n not in have]
    if missing:
        raise ValueError(f"unknown parameter name(s) {missing} in the masks given as params; the model's "
                         f"trainable parameters are {list(have)}.")
    named, kept = [], {}
    for name, mask in masks.items():
        p = have[name]
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise ValueError(f"the mask of {name!r} has dtype {m.dtype}; masks must be boolean tensors "
                             "(e.g. `values != 0` or `mask.bool()`), True for the entries to sample.")
        if tuple(m.shape) != tuple(p.shape):
            raise ValueError(f"the mask of {name!r} has shape {tuple(m.shape)}, but the parameter has shape "
                             f"{tuple(p.shape)}; a mask must have the parameter's shape.")
        if not bool(m.any()):
            raise ValueError(f"the mask of {name!r} selects no entry (all False); leave {name!r} out of params "
                             "to hold it at w*.")
        named.append((name, p))
        if not bool(m.all()):
            kept[name] = m.to(p.device).clone()
    return named, kept


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
