"""Loss functions L_n(w) = mean over examples of a per-example loss, with shape checks.

The LLC estimator λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)) needs the *mean* training loss (the empirical
negative log-likelihood per example, up to constants; Lau et al. 2023, "Quantifying degeneracy in
singular models via the learning coefficient", arXiv:2308.12108) and, for the paired minibatch
baseline L_B(w*), the per-example losses at w*: every loss here is the plain mean of its
per-example losses over the batch, so the mean over a minibatch B of cached per-example losses at
w* *is* L_B(w*).

A :class:`LossSpec` is called as ``spec.mean(outputs, batch)`` and ``spec.per_sample(outputs,
batch)``, where ``outputs`` is the model's output tensor on the batch and ``batch`` is the whole
batch (a tuple ``(inputs, targets)`` or a dict, see :mod:`slt_basins.data`), so that a loss can
read labels, input ids or an attention mask. A bare tensor passed as ``batch`` is taken to be
the targets. All losses are safe inside ``torch.func.vmap`` (no data-dependent Python control
flow, no ``.item()``, no boolean-mask indexing): ignored tokens are handled with ``torch.where``.

Names (:data:`LOSS_NAMES`):

* ``"mse"``: squared error averaged over examples and output dimensions (squared output units).
* ``"cross_entropy"`` (alias ``"ce"``): ``torch.nn.functional.cross_entropy`` on logits, PyTorch's
  convention: classes on axis 1 (nats).
* ``"token_cross_entropy"``: logits ``(..., vocab)`` against integer targets ``(...)``, classes on
  the *last* axis, targets already aligned (no shift), ``IGNORE_INDEX`` = -100 skipped (nats per
  counted token).
* ``"causal_lm"``: the HuggingFace next-token convention: logits ``[:, :-1]`` scored against labels
  ``[:, 1:]``; labels are the batch's target key (``"labels"``) or its ``"input_ids"``; -100 and
  ``attention_mask == 0`` (at the label's position) are skipped (nats per counted token).

Both token losses weight **sequences equally**: the per-example loss is the mean over that
sequence's counted tokens, and the batch loss is the mean over sequences. HuggingFace's built-in
loss (``model(..., labels=...).loss``) is the mean over all counted tokens of the batch instead;
the two agree when every sequence has the same number of counted tokens. A sequence with no
counted token contributes 0 (never NaN); :meth:`LossSpec.prepare` refuses such data at set-up,
because it would count towards n without carrying any information.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX, TARGET_KEYS, TensorData, batch_targets, describe_batch

__all__ = ["LossSpec", "resolve_loss", "batch_loss", "token_nll", "per_sequence_mean", "causal_lm_pairs",
           "LOSS_NAMES", "IGNORE_INDEX"]

LOSS_NAMES = ("mse", "cross_entropy", "token_cross_entropy", "causal_lm")


def _targets(batch: Any, name: str) -> torch.Tensor:
    t = batch_targets(batch)
    if t is None:
        raise ValueError(f"loss {name!r} needs targets, but the batch has none of the keys {TARGET_KEYS}.")
    return t


# -- token losses ------------------------------------------------------------------------------------
def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood (nats) of integer ``targets`` under ``logits``.

    Args:
        logits: ``(..., vocab)``, classes on the last axis.
        targets: ``(...)`` token ids in ``[0, vocab)``, or ``IGNORE_INDEX`` (-100) to skip.

    Returns:
        ``(nll, counted)``, both of shape ``(...)``: ``-log softmax(logits)[target]`` (0 where
        skipped) and the 0/1 weights of the counted tokens, in the logits' dtype. vmap-safe.

    Example:
        >>> nll, counted = token_nll(torch.zeros(1, 2, 4), torch.tensor([[3, -100]]))
        >>> [round(v, 4) for v in nll[0].tolist()], counted.tolist()
        ([1.3863, 0.0], [[1.0, 0.0]])
    """
    keep = targets != IGNORE_INDEX
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(keep, nll, torch.zeros_like(nll)), keep.to(logits.dtype)


def per_sequence_mean(nll: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Mean of ``nll`` over each example's counted tokens: ``(b, ...)`` → ``(b,)``.

    An example without counted tokens gives 0 (the count is clamped at 1), never NaN.

    Example:
        >>> per_sequence_mean(torch.tensor([[1., 3.], [2., 0.]]), torch.tensor([[1., 1.], [1., 0.]])).tolist()
        [2.0, 2.0]
    """
    b = nll.shape[0]
    return nll.reshape(b, -1).sum(dim=1) / counted.reshape(b, -1).sum(dim=1).clamp(min=1)


def _lm_labels(batch: Any) -> torch.Tensor:
    """Labels of ``causal_lm``: the target (key), else ``batch["input_ids"]``."""
    t = batch_targets(batch)
    if t is not None:
        return t
    if isinstance(batch, dict) and "input_ids" in batch:
        return batch["input_ids"]
    raise ValueError(f"loss 'causal_lm' needs labels: a key of {TARGET_KEYS} or 'input_ids' in the batch; "
                     f"got {describe_batch(batch)}.")


def causal_lm_pairs(logits: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift logits and labels for next-token prediction, HuggingFace's causal-LM convention.

    Returns ``(logits[:, :-1], labels[:, 1:])`` where labels are the batch's target, or its
    ``"input_ids"``; a label whose position has ``attention_mask == 0`` is set to ``IGNORE_INDEX``.
    vmap-safe.

    Example:
        >>> b = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1, 0]])}
        >>> causal_lm_pairs(torch.zeros(1, 3, 8), b)[1].tolist()
        [[6, -100]]
    """
    return logits[:, :-1], _shifted_labels(batch)


def _shifted_labels(batch: Any) -> torch.Tensor:
    """``labels[:, 1:]``, set to ``IGNORE_INDEX`` where ``attention_mask[:, 1:] == 0``."""
    labels = _lm_labels(batch)[:, 1:]
    if isinstance(batch, dict) and "attention_mask" in batch:
        attended = batch["attention_mask"][:, 1:] != 0
        labels = torch.where(attended, labels, torch.full_like(labels, IGNORE_INDEX))
    return labels


def _token_ce_per_sample(outputs, batch):
    return per_sequence_mean(*token_nll(outputs, _targets(batch, "token_cross_entropy")))


def _causal_per_sample(outputs, batch):
    return per_sequence_mean(*token_nll(*causal_lm_pairs(outputs, batch)))


# -- mse and cross-entropy -----------------------------------------------------------------------
def _mse_mean(outputs, batch):
    return F.mse_loss(outputs, _targets(batch, "mse"))


def _mse_per_sample(outputs, batch):
    return (outputs - _targets(batch, "mse")).pow(2).reshape(outputs.shape[0], -1).mean(dim=1)


def _ce_mean(outputs, batch):
    return F.cross_entropy(outputs, _targets(batch, "cross_entropy"))


def _ce_per_sample(outputs, batch):
    per = F.cross_entropy(outputs, _targets(batch, "cross_entropy"), reduction="none")
    return per.reshape(outputs.shape[0], -1).mean(dim=1)


def _mean_of(per_sample):
    return lambda outputs, batch: per_sample(outputs, batch).mean()


# -- set-up checks ----------------------------------------------------------------------------------
def _integer(targets: torch.Tensor, name: str) -> torch.Tensor:
    if targets.is_floating_point():
        if not torch.all(targets == targets.round()):
            raise ValueError(f"loss {name!r} needs integer class labels; got non-integer float targets "
                             f"of shape {tuple(targets.shape)}.")
    return targets.long()


def _check_range(targets: torch.Tensor, k: int, name: str, ignore: bool) -> None:
    vals = targets[targets != IGNORE_INDEX] if ignore else targets
    if vals.numel() and (int(vals.min()) < 0 or int(vals.max()) >= k):
        raise ValueError(f"loss {name!r}: class labels must lie in [0, {k - 1}] for a model with {k} output "
                         f"logits{' (or be -100 to skip a token)' if ignore else ''}; got labels in "
                         f"[{int(vals.min())}, {int(vals.max())}].")


def _prepare_mse(outputs: torch.Tensor, targets: torch.Tensor, b: int) -> torch.Tensor:
    if not outputs.is_floating_point():
        raise ValueError(f"loss 'mse' needs floating-point model outputs; got {outputs.dtype}.")
    if outputs.shape[1:] != targets.shape[1:]:
        if outputs[0].numel() != targets[0].numel():
            raise ValueError(
                f"loss 'mse' cannot compare model outputs of shape {tuple(outputs.shape)} with targets of "
                f"shape {tuple(targets[:b].shape)}: each example has {outputs[0].numel()} outputs but "
                f"{targets[0].numel()} target values. Change the model's output layer or the targets so "
                "that they match.")
        targets = targets.reshape((targets.shape[0],) + tuple(outputs.shape[1:]))
    return targets.to(outputs.dtype)


def _prepare_ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if outputs.ndim < 2:
        raise ValueError(f"loss 'cross_entropy' needs logits of shape (batch, classes, ...); the model returned "
                         f"shape {tuple(outputs.shape)}. Use loss='mse' for regression.")
    if targets.is_floating_point() and targets.shape[1:] == outputs.shape[1:]:
        return targets.to(outputs.dtype)  # class probabilities
    targets = _integer(targets, "cross_entropy")
    if outputs.ndim >= 3 and targets.shape[1:] == outputs.shape[1:-1]:
        both = targets.shape[1:] == outputs.shape[2:]
        raise ValueError(
            f"loss 'cross_entropy' follows PyTorch and reads axis 1 of the logits {tuple(outputs.shape)} as the "
            f"class axis, but the targets {tuple(targets.shape)} "
            + ("fit both that reading and classes on the last axis" if both else
               "fit only the reading with classes on the last axis")
            + ". For language-model logits (batch, seq, vocab) use loss='token_cross_entropy' (aligned targets) "
            "or loss='causal_lm' (next-token, HuggingFace shift). If axis 1 really holds the classes, move them "
            "last in the model (logits.movedim(1, -1)) and use 'token_cross_entropy'.")
    if targets.shape[1:] != outputs.shape[2:]:
        raise ValueError(f"loss 'cross_entropy' with logits of shape {tuple(outputs.shape)} needs labels of shape "
                         f"(n{''.join(', ' + str(s) for s in outputs.shape[2:])}); got {tuple(targets.shape)}.")
    _check_range(targets, outputs.shape[1], "cross_entropy", ignore=False)
    return targets


def _prepare_token(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if outputs.ndim < 2 or not outputs.is_floating_point():
        raise ValueError(f"loss 'token_cross_entropy' needs floating-point logits of shape (batch, ..., vocab); "
                         f"the model returned {tuple(outputs.shape)} {outputs.dtype}.")
    targets = _integer(targets, "token_cross_entropy")
    if targets.shape[1:] != outputs.shape[1:-1]:
        raise ValueError(f"loss 'token_cross_entropy' with logits {tuple(outputs.shape)} (classes last) needs "
                         f"targets of shape (n{''.join(', ' + str(s) for s in outputs.shape[1:-1])}), aligned "
                         f"with the logits; got {tuple(targets.shape)}.")
    _check_range(targets, outputs.shape[-1], "token_cross_entropy", ignore=True)
    return targets


def _prepare_causal(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if outputs.ndim != 3 or not outputs.is_floating_point() or outputs.shape[1] < 2:
        raise ValueError(f"loss 'causal_lm' needs floating-point logits of shape (batch, seq, vocab) with seq >= 2; "
                         f"the model returned {tuple(outputs.shape)} {outputs.dtype}.")
    labels = _integer(labels, "causal_lm")
    if labels.shape[1:] != outputs.shape[1:2]:
        raise ValueError(f"loss 'causal_lm' with logits {tuple(outputs.shape)} needs labels (or input_ids) of "
                         f"shape (n, {outputs.shape[1]}), unshifted; got {tuple(labels.shape)}.")
    _check_range(labels, outputs.shape[-1], "causal_lm", ignore=True)
    return labels


def _refuse_empty(counted: torch.Tensor, name: str) -> None:
    """Refuse examples without a counted token (they would count in n but carry no loss)."""
    empty = (counted.reshape(counted.shape[0], -1).sum(dim=1) == 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"loss {name!r}: {empty.numel()} of the {counted.shape[0]} examples have no counted token (every "
            f"target is -100{' or masked' if name == 'causal_lm' else ''}), e.g. examples "
            f"{empty[:10].tolist()}. They would count in n without any loss; drop them from the data.")


@dataclass(frozen=True)
class LossSpec:
    """A mean loss and, where available, its per-example decomposition.

    Attributes:
        name: a name of :data:`LOSS_NAMES`, ``"callable"`` (a user ``(outputs, targets)`` loss) or
            ``"batch_callable"`` (a user ``(outputs, batch)`` loss, see :func:`batch_loss`).
        mean: ``(outputs, batch) -> scalar`` mean loss over the batch's examples.
        per_sample: ``(outputs, batch) -> (b,)`` per-example losses whose mean is ``mean``, or
            ``None`` if the loss cannot be decomposed (then the paired minibatch baseline is
            evaluated by a forward pass at w* instead of read from a cache).

    Example:
        >>> spec = resolve_loss("token_cross_entropy")
        >>> round(float(spec.mean(torch.zeros(2, 3, 4), (None, torch.zeros(2, 3, dtype=torch.long)))), 4)
        1.3863
    """

    name: str
    mean: Callable[[torch.Tensor, Any], torch.Tensor]
    per_sample: Optional[Callable[[torch.Tensor, Any], torch.Tensor]]

    def prepare_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Check that model outputs on a probe batch and the targets of all n examples fit this loss.

        Returns the targets converted for the loss: reshaped for ``"mse"`` when each example has
        as many target values as outputs (e.g. ``(n,)`` for outputs ``(n, 1)``), integer-valued
        floats made ``long`` for the classification losses. ``"causal_lm"`` takes the unshifted
        labels. Callables get their targets unchanged.

        Raises:
            ValueError: when shapes, dtypes or label ranges do not fit; for ``"cross_entropy"``
                when the targets fit the last-axis reading of the logits (the message names
                ``"token_cross_entropy"``).

        Example:
            >>> resolve_loss("mse").prepare_targets(torch.zeros(3, 1), torch.ones(3)).shape
            torch.Size([3, 1])
        """
        b = outputs.shape[0] if outputs.ndim else 0
        if self.name == "mse":
            return _prepare_mse(outputs, targets, b)
        if self.name == "cross_entropy":
            return _prepare_ce(outputs, targets)
        if self.name == "token_cross_entropy":
            return _prepare_token(outputs, targets)
        if self.name == "causal_lm":
            return _prepare_causal(outputs, targets)
        return targets

    def prepare(self, outputs: torch.Tensor, data: TensorData) -> TensorData:
        """:meth:`prepare_targets` for all of ``data``, given the outputs on ``data.head(k)``.

        Returns ``data`` with its targets converted. For the token losses, also refuses examples
        without any counted token. A ``"callable"`` needs data with targets.

        Example:
            >>> data = TensorData((torch.zeros(3, 2), torch.tensor([1., 0., 1.])))
            >>> resolve_loss("ce").prepare(torch.zeros(3, 2), data).targets.dtype
            torch.int64
        """
        if self.name == "causal_lm":
            labels = self.prepare_targets(outputs, _lm_labels(data.batch))
            prepared = data.with_targets(labels) if data.targets is not None else data
            _refuse_empty(_shifted_labels(prepared.batch) != IGNORE_INDEX, self.name)
            return prepared
        if self.name == "batch_callable":
            return data
        if data.targets is None:
            raise ValueError(f"loss {self.name!r} needs targets, but the data ({data.describe()}) has none of the keys "
                             f"{TARGET_KEYS}." + (" Use slt_basins.losses.batch_loss for a loss of the whole batch."
                                                  if self.name == "callable" else ""))
        targets = self.prepare_targets(outputs, data.targets)
        if self.name == "token_cross_entropy":
            _refuse_empty(targets != IGNORE_INDEX, self.name)
        return data.with_targets(targets)

    def check_scalar(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` as a 0-d tensor; raises ``ValueError`` unless it holds exactly one number.

        Example:
            >>> resolve_loss("mse").check_scalar(torch.ones(1)).shape
            torch.Size([])
        """
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"the loss must return a scalar mean loss; got {shape}. "
                "Reduce it with .mean() over the batch."
            )
        return value.reshape(())


def _unsqueeze(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.unsqueeze(0)
    if isinstance(batch, dict):
        return {k: v.unsqueeze(0) for k, v in batch.items()}
    return tuple(v.unsqueeze(0) for v in batch)


def _decompose(mean: Callable, outputs: torch.Tensor, batch: Any) -> Optional[Callable]:
    """Per-example evaluation of a mean loss by vmap over singleton batches, if it reproduces the mean."""

    def per_sample(o, b):
        return torch.vmap(lambda oi, bi: mean(oi.unsqueeze(0), _unsqueeze(bi)).reshape(()))(o, b)

    try:
        with torch.no_grad():
            per = per_sample(outputs, batch)
            whole = mean(outputs, batch)
        if per.shape != (outputs.shape[0],):
            return None
        if not torch.allclose(per.mean(), whole.reshape(()), rtol=1e-5, atol=1e-7):
            return None
    except Exception:  # the callable may not be vmappable; fall back to forward passes
        return None
    return per_sample


def _callable_mean(fn: Callable) -> Callable:
    def mean(outputs, batch):
        targets = batch_targets(batch)
        if targets is None:
            raise ValueError(f"a loss callable (outputs, targets) needs targets, but the batch has none of the "
                             f"keys {TARGET_KEYS}; use slt_basins.losses.batch_loss for a loss of the whole batch.")
        return fn(outputs, targets)

    return mean


def batch_loss(fn: Callable[[torch.Tensor, Any], torch.Tensor],
               per_sample: Optional[Callable[[torch.Tensor, Any], torch.Tensor]] = None) -> LossSpec:
    """A loss that reads the whole batch: ``fn(outputs, batch) -> scalar mean over the examples``.

    ``batch`` is a tuple ``(inputs, targets)`` or the dict of the batch's tensors. ``per_sample``
    (``(outputs, batch) -> (b,)``, with mean ``fn``) enables the cached paired baseline; without
    it, :func:`resolve_loss` given a probe batch tries ``vmap`` over singleton batches. Pass the
    result as ``loss=``.

    Example:
        >>> spec = batch_loss(lambda out, b: (out.squeeze(-1) - b["y"]).pow(2).mean())
        >>> float(spec.mean(torch.zeros(2, 1), {"x": torch.zeros(2, 3), "y": torch.ones(2)}))
        1.0
    """
    if not callable(fn):
        raise TypeError(f"batch_loss needs a callable (outputs, batch) -> mean loss; got {type(fn).__name__}.")
    return LossSpec("batch_callable", fn, per_sample)


def resolve_loss(
    loss: Union[str, LossSpec, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    outputs: Optional[torch.Tensor] = None,
    batch: Any = None,
) -> LossSpec:
    """Resolve a loss name, a :class:`LossSpec` or a callable into a :class:`LossSpec`.

    ``"mse"`` is ``torch.nn.functional.mse_loss`` with mean reduction: the squared error averaged
    over examples *and* output dimensions, the Gaussian negative log-likelihood with variance 1/2
    per output up to a constant (Lau et al. 2023, arXiv:2308.12108), so nβ·L_n is the tempered NLL.
    ``"cross_entropy"`` / ``"ce"`` is ``torch.nn.functional.cross_entropy`` on logits with classes
    on axis 1 (https://pytorch.org/docs/stable/generated/torch.nn.functional.cross_entropy.html).
    ``"token_cross_entropy"`` and ``"causal_lm"`` are described in the module docstring (nats per
    counted token, sequences weighted equally). A callable maps ``(outputs, targets)`` to the
    scalar mean loss over the batch; a :class:`LossSpec` (e.g. from :func:`batch_loss`) is used as
    it is. For those two, ``outputs`` and ``batch`` (a probe batch: a tuple, a dict, or the
    targets tensor) let us test whether the loss decomposes into per-example terms.

    Example:
        >>> spec = resolve_loss("mse")
        >>> float(spec.mean(torch.zeros(2, 1), torch.ones(2, 1)))
        1.0
    """
    if isinstance(loss, LossSpec):
        if loss.per_sample is None and outputs is not None and batch is not None:
            per = _decompose(loss.mean, outputs, batch)
            return replace(loss, per_sample=per) if per is not None else loss
        return loss
    if isinstance(loss, str):
        if loss == "mse":
            return LossSpec("mse", _mse_mean, _mse_per_sample)
        if loss in ("cross_entropy", "ce"):
            return LossSpec("cross_entropy", _ce_mean, _ce_per_sample)
        if loss == "token_cross_entropy":
            return LossSpec(loss, _mean_of(_token_ce_per_sample), _token_ce_per_sample)
        if loss == "causal_lm":
            return LossSpec(loss, _mean_of(_causal_per_sample), _causal_per_sample)
        raise ValueError(f"unknown loss {loss!r}: use one of {LOSS_NAMES} (or 'ce'), a callable "
                         "(outputs, targets) -> mean loss, or slt_basins.losses.batch_loss(fn).")
    if not callable(loss):
        raise TypeError(f"loss must be a name in {LOSS_NAMES}, a callable or a LossSpec; got {type(loss).__name__}.")
    mean = _callable_mean(loss)
    per = _decompose(mean, outputs, batch) if outputs is not None and batch is not None else None
    return LossSpec("callable", mean, per)
