"""Turn the data a user passes into two in-memory tensors, with clear errors.

Every estimator in the package works on one materialised pair ``(inputs, targets)`` held on the
compute device, and draws its own minibatches from it with seeded index streams. This avoids the
per-sample indexing cost of a ``DataLoader`` (which dominates the run time of existing LLC tools
on small models) and makes each chain's batch sequence depend only on ``(seed, chain index)``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["as_tensors"]


def _stack_batches(batches: list[Any], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for b in batches:
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise TypeError(
                f"{where} must yield (inputs, targets) pairs; got an item of type {type(b).__name__}"
                + (f" with {len(b)} entries" if isinstance(b, (tuple, list)) else "")
                + ". Wrap your data so that each item is (input, target)."
            )
        xs.append(torch.as_tensor(b[0]))
        ys.append(torch.as_tensor(b[1]))
    if not xs:
        raise ValueError(f"{where} is empty: the LLC needs at least 2 training examples.")
    return torch.cat(xs), torch.cat(ys)


def as_tensors(data: Any, *, device=None, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise ``data`` as ``(inputs, targets)`` tensors on ``device``.

    Args:
        data: a tuple/list ``(inputs, targets)`` of tensors or arrays, a map-style or iterable
            ``torch.utils.data.Dataset`` whose items are ``(input, target)`` pairs, or a
            ``DataLoader`` over such a dataset (read once, in the dataset's own order, not shuffled).
        device: where to put the tensors (``None`` keeps them where they are).
        dtype: floating dtype for floating-point tensors (the model's dtype); integer targets such
            as class labels keep their dtype.

    Returns:
        ``(inputs, targets)`` with the same first dimension ``n >= 1``.

    Raises:
        ValueError: for empty data or inputs and targets of different lengths.
        TypeError: for data of an unsupported shape.

    Example:
        >>> x, y = as_tensors((torch.zeros(5, 3), torch.ones(5)))
        >>> x.shape, y.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    if isinstance(data, DataLoader):
        ds = data.dataset
        if hasattr(ds, "__getitem__") and hasattr(ds, "__len__"):
            # Read a map-style dataset in its own order (a shuffling loader would make the
            # materialised order, and hence the minibatches, depend on the global RNG).
            data = DataLoader(ds, batch_size=data.batch_size or 1, shuffle=False, collate_fn=data.collate_fn)
        x, y = _stack_batches(list(data), "the DataLoader")
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise TypeError(
                f"data given as a tuple must be (inputs, targets); got {len(data)} entries."
            )
        x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    elif isinstance(data, Dataset) or hasattr(data, "__getitem__") or hasattr(data, "__iter__"):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            n = None
        if n == 0:
            raise ValueError("the Dataset is empty: the LLC needs at least 2 training examples.")
        loader = DataLoader(data, batch_size=max(1, min(n or 4096, 4096)), shuffle=False)
        x, y = _stack_batches(list(loader), "the Dataset")
    else:
        raise TypeError(
            "data must be a tuple (inputs, targets), a torch Dataset or a DataLoader; "
            f"got {type(data).__name__}."
        )
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            "inputs and targets need a leading example dimension; got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"inputs and targets have different lengths ({x.shape[0]} vs {y.shape[0]}); "
            "they must hold one target per input."
        )
    if x.shape[0] == 0:
        raise ValueError("the data is empty (0 examples): the LLC needs at least 2 training examples.")
    if dtype is not None:
        if x.is_floating_point():
            x = x.to(dtype)
        if y.is_floating_point():
            y = y.to(dtype)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y
