"""Turn the data a user passes into one in-memory set of tensors, with clear errors.

Every estimator in the package works on one materialised set of n examples held on the compute
device (a :class:`TensorData`), and draws its own minibatches from it with seeded index streams,
so that each chain's batch sequence depends only on ``(seed, chain index)`` and no per-step
Python indexing of a ``Dataset`` is needed.

Accepted forms of ``data`` (see :func:`as_data`; :data:`DATA_FORMS` lists them for messages):

* a tuple ``(inputs, targets)`` of tensors or arrays with a common first dimension n;
* a dict of tensors with a common first dimension n, e.g. ``{"input_ids", "attention_mask",
  "labels"}``; the model is called as ``model(**inputs)`` on the keys that are not in
  :data:`TARGET_KEYS`, and the loss reads the one target key present (if any);
* a ``torch.utils.data.Dataset`` (map-style or iterable) whose items are ``(input, target)``
  pairs or dicts of tensors;
* a ``torch.utils.data.DataLoader``: exactly the examples one pass of the loader covers, as its
  sampler / batch sampler (with ``drop_last``), ``Subset`` dataset and ``collate_fn`` produce them,
  sorted by dataset index (see ``_read_loader``);
* a HuggingFace ``datasets.Dataset`` in torch format (``ds.with_format("torch")``), recognised by
  duck typing (``column_names`` and ``format`` attributes), without importing ``datasets``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

__all__ = [
    "TensorData", "Batch", "as_data", "as_tensors", "model_inputs", "batch_targets", "target_key",
    "describe_batch", "TARGET_KEYS", "DATA_FORMS", "IGNORE_INDEX",
]

#: Keys of a dict batch that hold the targets: they are passed to the loss and never to the model.
#: At most one of them may be present. ``"labels"`` is the HuggingFace name; ``"label"`` is the raw
#: column name of many HuggingFace classification datasets.
TARGET_KEYS = ("labels", "label", "targets", "target", "y")

#: Target value that the token losses skip (PyTorch's and HuggingFace's convention).
IGNORE_INDEX = -100

DATA_FORMS = (
    "a tuple (inputs, targets) of tensors or arrays with a common first dimension",
    "a dict of tensors with a common first dimension, e.g. {'input_ids': ..., 'labels': ...}",
    "a torch.utils.data.Dataset whose items are (input, target) tuples or dicts of tensors",
    "a torch.utils.data.DataLoader (its sampler, batch sampler, Subset, collate_fn and drop_last are respected)",
    "a HuggingFace datasets.Dataset in torch format (ds.with_format('torch'))",
)

#: A batch: ``(inputs, targets)`` or a dict of named tensors, all with the same first dimension.
Batch = Union[tuple, dict]

_CHUNK = 4096  # examples read per step from a Dataset


def target_key(batch: Any) -> Optional[str]:
    """The key of a dict batch that holds the targets: the first of :data:`TARGET_KEYS` present.

    Returns ``None`` for a dict without target keys and for tuple or tensor batches.

    Example:
        >>> target_key({"input_ids": torch.zeros(2, 3), "labels": torch.zeros(2, 3)})
        'labels'
    """
    if isinstance(batch, Mapping):
        for k in TARGET_KEYS:
            if k in batch:
                return k
    return None


def model_inputs(batch: Any) -> tuple[tuple, dict]:
    """Split a batch into the positional and keyword arguments of the model call.

    A tensor ``x`` gives ``model(x)``; a tuple ``(x, y)`` gives ``model(x)``; a dict gives
    ``model(**inputs)`` with every key that is not in :data:`TARGET_KEYS`.

    Example:
        >>> model_inputs({"input_ids": torch.zeros(1, 2), "labels": torch.zeros(1, 2)})[1].keys()
        dict_keys(['input_ids'])
    """
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k not in TARGET_KEYS}
    if isinstance(batch, (tuple, list)):
        return (batch[0],), {}
    raise TypeError(f"a batch must be a tensor, a tuple (inputs, targets) or a dict; got {type(batch).__name__}.")


def batch_targets(batch: Any) -> Optional[torch.Tensor]:
    """The targets of a batch: ``y`` of ``(x, y)``, the target key of a dict (or ``None``).

    A bare tensor is taken to *be* the targets (the form in which the losses were called before
    batches existed: ``spec.mean(outputs, targets)``).

    Example:
        >>> batch_targets((torch.zeros(2, 3), torch.ones(2))).tolist()
        [1.0, 1.0]
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        k = target_key(batch)
        return None if k is None else batch[k]
    if isinstance(batch, (tuple, list)):
        return batch[1]
    raise TypeError(f"a batch must be a tensor, a tuple (inputs, targets) or a dict; got {type(batch).__name__}.")


def describe_batch(batch: Any) -> str:
    """Names, shapes and dtypes of a batch's tensors, for error messages.

    Example:
        >>> describe_batch((torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)))
        'inputs (4, 3) float32, targets (4,) int64'
    """
    if isinstance(batch, torch.Tensor):
        items = [("tensor", batch)]
    elif isinstance(batch, Mapping):
        items = list(batch.items())
    else:
        items = list(zip(("inputs", "targets"), batch))
    return ", ".join(f"{k} {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in items)


@dataclass(frozen=True)
class TensorData:
    """n training examples held as tensors with a common first dimension n.

    Attributes:
        tensors: ``(inputs, targets)`` (``kind == "tuple"``) or a dict of named tensors
            (``kind == "dict"``; at most one key of :data:`TARGET_KEYS`, at least one other key).
        loader_batch_size: the batch size of the DataLoader the data came from (its
            ``batch_size``, else its batch sampler's, else the size of its first batch), or
            ``None``; the natural default minibatch size.

    Example:
        >>> data = TensorData({"x": torch.arange(6.).reshape(3, 2), "y": torch.arange(3)})
        >>> data.n, data.kind, data.take(torch.tensor([[2, 0]]))["y"].tolist()
        (3, 'dict', [[2, 0]])
        >>> data.targets.tolist(), data.rows(1, 3)["y"].tolist(), data.head(1)["x"].tolist()
        ([0, 1, 2], [1, 2], [[0.0, 1.0]])
        >>> data.with_targets(torch.ones(3)).to(dtype=torch.float64).describe()
        'x (3, 2) float64, y (3,) float64'
        >>> TensorData((torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))).describe()
        'inputs (4, 3) float32, targets (4,) int64'
    """

    tensors: Batch
    loader_batch_size: Optional[int] = None

    def __post_init__(self):
        t = self.tensors
        if isinstance(t, Mapping):
            items = dict(t)
            present = [k for k in TARGET_KEYS if k in items]
            if len(present) > 1:
                raise ValueError(f"a dict batch may hold one target key of {TARGET_KEYS}; got {present}. "
                                 "Rename or drop the others.")
            if len(items) == len(present):
                raise ValueError(f"the dict data has no model inputs: every key ({list(items)}) is a target key "
                                 f"({TARGET_KEYS}), and those are never passed to the model.")
        elif isinstance(t, tuple) and len(t) == 2:
            items = {"inputs": t[0], "targets": t[1]}
        else:
            raise TypeError("TensorData holds a tuple (inputs, targets) or a dict of tensors.")
        for k, v in items.items():
            if not isinstance(v, torch.Tensor) or v.ndim == 0:
                raise ValueError(f"{k} needs a leading example dimension; got "
                                 + (f"shape {tuple(v.shape)}." if isinstance(v, torch.Tensor) else type(v).__name__))
        lengths = {k: int(v.shape[0]) for k, v in items.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the tensors have different lengths {lengths}; they must hold one row per example.")
        if next(iter(lengths.values())) == 0:
            raise ValueError("the data is empty (0 examples): the LLC needs training examples.")
        if isinstance(t, Mapping) and not isinstance(t, dict):
            object.__setattr__(self, "tensors", items)

    @property
    def kind(self) -> str:
        """``"tuple"`` or ``"dict"``."""
        return "dict" if isinstance(self.tensors, dict) else "tuple"

    @property
    def n(self) -> int:
        """The number of examples."""
        return int(self._values()[0].shape[0])

    @property
    def batch(self) -> Batch:
        """All n examples as one batch (the ``tensors`` themselves)."""
        return self.tensors

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """The targets (``y``, or the dict's target key), or ``None`` for a dict without one."""
        return batch_targets(self.tensors)

    def _values(self) -> list[torch.Tensor]:
        return list(self.tensors.values()) if self.kind == "dict" else list(self.tensors)

    def _map(self, fn) -> Batch:
        if self.kind == "dict":
            return {k: fn(v) for k, v in self.tensors.items()}
        return tuple(fn(v) for v in self.tensors)

    def take(self, idx: torch.Tensor) -> Batch:
        """The batch of examples ``idx`` (a LongTensor of any shape ``(..., b)``).

        Every tensor of shape ``(n, *s)`` becomes ``(..., b, *s)``; with ``idx`` of shape
        ``(chains, b)`` the result can be passed to ``torch.func.vmap`` with ``in_dims=0``.
        """
        return self._map(lambda v: v[idx])

    def rows(self, start: int, stop: int) -> Batch:
        """The batch of examples ``start:stop`` (views, no copy)."""
        return self._map(lambda v: v[start:stop])

    def head(self, k: int) -> Batch:
        """The batch of the first ``min(k, n)`` examples, e.g. to probe the model's outputs."""
        return self.rows(0, k)

    def with_targets(self, targets: torch.Tensor) -> "TensorData":
        """A copy with the targets replaced (for a dict without a target key: added as ``"labels"``)."""
        if self.kind == "tuple":
            return TensorData((self.tensors[0], targets), self.loader_batch_size)
        key = target_key(self.tensors) or "labels"
        return TensorData({**self.tensors, key: targets}, self.loader_batch_size)

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "TensorData":
        """A copy on ``device`` with floating-point tensors cast to ``dtype`` (integers kept)."""
        def move(v):
            v = v.to(dtype) if dtype is not None and v.is_floating_point() else v
            return v.to(device) if device is not None else v

        return TensorData(self._map(move), self.loader_batch_size)

    def describe(self) -> str:
        """Names, shapes and dtypes of the tensors (see :func:`describe_batch`)."""
        return describe_batch(self.tensors)


# -- reading batches ------------------------------------------------------------------------------
def _tensor(v: Any, key: str, where: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(e, torch.Tensor) for e in v):
        if len({e.shape for e in v}) == 1:
            return torch.stack(list(v))
        raise ValueError(f"{where}: {key!r} holds rows of different shapes {sorted({tuple(e.shape) for e in v})}; "
                         "pad them to one length (e.g. tokenizer(..., padding='max_length', truncation=True)) or "
                         "pass a DataLoader whose collate_fn pads each batch.")
    try:
        return torch.as_tensor(np.asarray(v) if not isinstance(v, np.ndarray) else v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: {key!r} is not numeric ({type(v).__name__}: {e}); drop it (for a HuggingFace "
                         "dataset: ds.remove_columns([...]) or ds.with_format('torch', columns=[...])).") from e


def _as_batch(b: Any, where: str) -> Batch:
    """One collated batch (tuple/list of 2, or a mapping) as tensors."""
    if isinstance(b, Mapping):
        return {str(k): _tensor(v, str(k), where) for k, v in b.items()}
    if isinstance(b, (tuple, list)) and len(b) == 2:
        return (_tensor(b[0], "inputs", where), _tensor(b[1], "targets", where))
    raise TypeError(
        f"{where} must yield (input, target) pairs or dicts of tensors; got an item of type {type(b).__name__}"
        + (f" with {len(b)} entries" if isinstance(b, (tuple, list)) else "")
        + ". Wrap your data so that each item is (input, target) or a dict."
    )


def _cat(parts: list[torch.Tensor], key: str, can_pad: bool, where: str) -> torch.Tensor:
    """Concatenate along dim 0; pad dim 1 on the right when the batches differ only there."""
    if len({p.shape[1:] for p in parts}) == 1:
        return torch.cat(parts)
    ok = can_pad and len({(p.ndim,) + tuple(p.shape[2:]) for p in parts}) == 1 and parts[0].ndim >= 2
    if not ok:
        hint = ("pad every batch to one length (e.g. padding='max_length')" if not can_pad else
                "only the sequence dimension (dim 1) may differ between batches")
        raise ValueError(f"{where}: {key!r} has different shapes in different batches "
                         f"{sorted({tuple(p.shape[1:]) for p in parts})}; {hint}.")
    length = max(p.shape[1] for p in parts)
    value = IGNORE_INDEX if key in TARGET_KEYS else 0
    return torch.cat([F.pad(p, (0, 0) * (p.ndim - 2) + (0, length - p.shape[1]), value=value) for p in parts])


def _concat(batches: list[Batch], where: str) -> Batch:
    """Concatenate collated batches of one structure.

    Dict batches with an ``attention_mask`` whose sequences were padded to different lengths per
    batch (e.g. ``DataCollatorWithPadding``) are padded on the right to the longest: with 0 in the
    attention mask and the inputs, and with ``IGNORE_INDEX`` (-100) in a per-token target key.
    """
    if not batches:
        raise ValueError(f"{where} yields no examples (with drop_last=True, it needs at least batch_size of them).")
    first = batches[0]
    if isinstance(first, dict):
        keys = list(first)
        if any(not isinstance(b, dict) or list(b) != keys for b in batches):
            raise ValueError(f"{where} yields batches with different keys; every batch needs the keys {keys}.")
        return {k: _cat([b[k] for b in batches], k, "attention_mask" in keys, where) for k in keys}
    if any(not isinstance(b, tuple) for b in batches):
        raise ValueError(f"{where} mixes (input, target) pairs and dicts.")
    return tuple(_cat([b[i] for b in batches], name, False, where) for i, name in enumerate(("inputs", "targets")))


def _fetch(ds: Any, idx: list) -> list:
    """The items ``ds[i]`` for ``i`` in ``idx``, as the DataLoader reads them (``__getitems__`` first)."""
    getitems = getattr(ds, "__getitems__", None)
    return list(getitems(idx)) if getitems is not None else [ds[i] for i in idx]


def _collate(items: list, collate, where: str) -> Batch:
    try:
        return _as_batch(collate(items), where)
    except RuntimeError as e:  # default_collate on items of different shapes
        raise ValueError(f"{where}: its items cannot be stacked into one batch ({e}). Pad them to one shape, or "
                         "pass a DataLoader whose collate_fn pads each batch.") from e


# -- DataLoader --------------------------------------------------------------------------------
def _generators(loader: DataLoader) -> list[torch.Generator]:
    found = []
    for obj in (loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _loader_batches(loader: DataLoader, where: str) -> tuple[list[Batch], Optional[list]]:
    """The collated batches of one pass, and the dataset indices they hold (``None`` if unknown)."""
    ds = loader.dataset
    if isinstance(ds, IterableDataset):
        return [_as_batch(b, where) for b in loader], None
    if loader.batch_sampler is not None:
        index_batches = [list(idx) for idx in loader.batch_sampler]
        batches = [_collate(_fetch(ds, idx), loader.collate_fn, where) for idx in index_batches]
        return batches, [i for idx in index_batches for i in idx]
    order = list(loader.sampler)  # batch_size=None: collate_fn applies to each unbatched item
    items = [loader.collate_fn(ds[i]) for i in order]
    return [_collate(items[s:s + _CHUNK], default_collate, where) for s in range(0, len(items), _CHUNK)], order


def _sort_key(order: Optional[list], n: int) -> Optional[torch.Tensor]:
    """The stable permutation that sorts the rows by dataset index, when every index is an integer."""
    if order is None or len(order) != n:
        return None
    keys = []
    for i in order:
        if isinstance(i, torch.Tensor) and i.ndim == 0 and not i.is_floating_point():
            i = int(i)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            return None
        keys.append(int(i))
    return torch.from_numpy(np.argsort(np.asarray(keys), kind="stable"))


def _read_loader(loader: DataLoader) -> TensorData:
    """The examples of one pass over ``loader``, sorted by their index in the loader's dataset.

    The pass runs under torch's global RNG temporarily seeded with 0 (its state is restored
    afterwards) and with any sampler's own generator restored to its state before the pass, so
    the examples covered (with a random sampler and ``drop_last``, a random subset) are the same
    on every call and the loader is left as it was. Batches are fetched and collated here as the
    loader would (``__getitems__`` or ``dataset[i]``, then ``collate_fn``), without worker
    processes. The rows are then put in the order of their dataset indices (stable, so an index
    drawn twice appears twice), which makes the result independent of the sampler's order: a
    shuffled loader over a whole dataset gives the dataset's own order. An iterable dataset, or a
    sampler yielding non-integer keys, keeps the order of the pass.
    """
    where = "the DataLoader"
    gens = _generators(loader)
    states = [g.get_state() for g in gens]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            batches, order = _loader_batches(loader, where)
    finally:
        for g, s in zip(gens, states):
            g.set_state(s)
    size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None)
    if size is None and batches and loader.batch_sampler is not None:
        size = int((list(batches[0].values()) if isinstance(batches[0], dict) else batches[0])[0].shape[0])
    data = TensorData(_concat(batches, where), int(size) if size else None)
    perm = _sort_key(order, data.n)
    if perm is None or torch.equal(perm, torch.arange(data.n)):
        return data
    return TensorData(data._map(lambda v: v[perm.to(v.device)]), data.loader_batch_size)


# -- Datasets ----------------------------------------------------------------------------------
def _is_hf_dataset(obj: Any) -> bool:
    return hasattr(obj, "column_names") and isinstance(getattr(obj, "format", None), Mapping) \
        and hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def _read_hf(ds: Any) -> TensorData:
    """A HuggingFace ``datasets.Dataset`` in torch format, read in slices ``ds[a:b]`` (column dicts)."""
    where = "the HuggingFace dataset"
    kind = ds.format.get("type")
    if kind != "torch":
        raise TypeError(f"{where} is in format {kind!r}; call ds = ds.with_format('torch') (keeping only the "
                        "numeric columns: ds.with_format('torch', columns=[...])) and pass that.")
    n = len(ds)
    if n == 0:
        raise ValueError(f"{where} is empty: the LLC needs training examples.")
    batches = [_as_batch(dict(ds[s:min(n, s + _CHUNK)]), where) for s in range(0, n, _CHUNK)]
    return TensorData(_concat(batches, where))


def _read_dataset(ds: Dataset) -> TensorData:
    """A torch Dataset, in its own order, collated with ``default_collate`` in chunks."""
    where = "the Dataset"
    if isinstance(ds, IterableDataset):
        batches = [_as_batch(b, where) for b in DataLoader(ds, batch_size=_CHUNK)]
        return TensorData(_concat(batches, where))
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"{where} is empty: the LLC needs training examples.")
    batches = [_collate(_fetch(ds, list(range(s, min(n, s + _CHUNK)))), default_collate, where)
               for s in range(0, n, _CHUNK)]
    return TensorData(_concat(batches, where))


def as_data(data: Any, *, device=None, dtype: Optional[torch.dtype] = None) -> TensorData:
    """Materialise ``data`` as a :class:`TensorData` of n examples on ``device``.

    Args:
        data: one of the forms in :data:`DATA_FORMS` (see the module docstring), or a
            :class:`TensorData` (returned moved and cast).
        device: where to put the tensors (``None`` keeps them where they are).
        dtype: dtype for floating-point tensors (the model's); integer tensors (class labels,
            token ids, attention masks) keep theirs.

    A DataLoader gives exactly the examples of one pass of it (sampler, batch sampler,
    ``drop_last``, ``Subset`` and ``collate_fn`` respected), drawn with torch's global RNG
    temporarily seeded with 0 (and restored) and sorted by dataset index, so the result depends
    neither on the global RNG nor on shuffling; its batch size is kept in ``loader_batch_size``. Per-batch padding to
    different lengths is evened out as described in ``_concat`` (right padding, attention 0,
    targets -100). A Dataset is read in its own order.

    Raises:
        TypeError: for any other form (the message lists the accepted ones).
        ValueError: for empty data, tensors of different lengths, non-numeric fields.

    Example:
        >>> data = as_data((torch.zeros(5, 3, dtype=torch.float64), torch.ones(5)), dtype=torch.float32)
        >>> data.n, data.tensors[0].dtype
        (5, torch.float32)
    """
    if isinstance(data, TensorData):
        result = data
    elif isinstance(data, DataLoader):
        result = _read_loader(data)
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise TypeError(f"data given as a tuple must be (inputs, targets); got {len(data)} entries.")
        result = TensorData((_tensor(data[0], "inputs", "data"), _tensor(data[1], "targets", "data")))
    elif isinstance(data, Mapping):
        result = TensorData({str(k): _tensor(v, str(k), "data") for k, v in data.items()})
    elif _is_hf_dataset(data):
        result = _read_hf(data)
    elif isinstance(data, Dataset):
        result = _read_dataset(data)
    else:
        raise TypeError("data must be one of:\n  - " + "\n  - ".join(DATA_FORMS) + f"\ngot {type(data).__name__}.")
    return result.to(device, dtype)


def as_tensors(data: Any, *, device=None, dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise ``data`` as ``(inputs, targets)`` tensors (:func:`as_data` for tuple-like data).

    Returns:
        ``(inputs, targets)`` with the same first dimension ``n >= 1``.

    Raises:
        TypeError: for data whose examples are dicts (use :func:`as_data`), or an unsupported form.

    Example:
        >>> x, y = as_tensors((torch.zeros(5, 3), torch.ones(5)))
        >>> x.shape, y.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    result = as_data(data, device=device, dtype=dtype)
    if result.kind != "tuple":
        raise TypeError(f"this function takes (inputs, targets) data; the data holds named fields "
                        f"({result.describe()}). Use slt_basins.data.as_data for dict data.")
    return result.tensors
