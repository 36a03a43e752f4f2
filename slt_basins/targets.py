"""Adapters that present a model or a potential to the chain loop as ``loss_and_grad``.

Both adapters are thin: they compute ``(L_B(w), ∇L_B(w))`` for a ``(chains, d)`` tensor and the
paired baseline ``L_B(w*)``; everything else (noise, divergence, traces) lives in
:func:`slt_basins.chains.run_chains`.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils.data import DataLoader

from .chains import ChainStream
from .data import as_tensors
from .errors import VmapFallbackWarning
from .functional import FlatModel
from .losses import LossSpec, resolve_loss
from .options import LLCOptions

__all__ = ["PotentialTarget", "ModelTarget", "VmapFallbackWarning", "CHECK_EXAMPLES"]

CHECK_EXAMPLES = 2048  # the pre- and post-run checks of a model evaluate the loss on at most this many examples


def _rounding_floor(w: torch.Tensor, h: float = 1.0) -> float:
    """A gradient norm indistinguishable from 0 in w's dtype: the minimum sits within a rounding
    unit u·|w_i| of the representable w*, where the gradient can be h·u·‖w*‖ (h a curvature scale)."""
    u = torch.finfo(w.dtype).eps
    return 8.0 * u * max(1.0, h) * max(1.0, float(w.norm()))




class PotentialTarget:
    """K(w) given directly: ``potential`` maps ``(chains, d)`` to ``(chains,)``.

    There is no data and no minibatch noise: the draw is nβ·(K(w_t) − K(w*)).

    Example:
        >>> t = PotentialTarget.build(lambda w: (w ** 4).sum(1), [0.0], LLCOptions())
        >>> t.d, t.init_loss, t.w_star.dtype
        (1, 0.0, torch.float64)
    """

    kind = "potential"
    n = None
    batch_size = None
    vectorized = True

    @classmethod
    def build(cls, potential: Callable[[torch.Tensor], torch.Tensor], w_star, opts: LLCOptions) -> "PotentialTarget":
        """Validate (potential, w*) for a run with ``opts``: w* as a flat float tensor (float64 unless
        given as floating point) on ``opts.device``."""
        w_star = torch.as_tensor(w_star)
        if not w_star.is_floating_point():
            w_star = w_star.to(torch.float64)
        if opts.device is not None:
            w_star = w_star.to(opts.device)
        w_star = w_star.reshape(-1).detach().clone()
        if not torch.isfinite(w_star).all():
            raise ValueError("w_star has non-finite entries; the LLC needs a finite local minimum.")
        return cls(potential, w_star)

    def __init__(self, potential: Callable[[torch.Tensor], torch.Tensor], w_star: torch.Tensor):
        self.potential = potential
        self.w_star = w_star
        self.d = int(w_star.numel())
        probe = w_star.reshape(1, -1).expand(2, -1)
        try:
            val = potential(probe)
        except Exception as e:
            raise ValueError(
                f"the potential failed on a (chains, d) = (2, {self.d}) tensor: {e}. It must map a "
                "(chains, d) tensor to a (chains,) tensor of K(w) values."
            ) from e
        if not isinstance(val, torch.Tensor) or val.shape != (2,):
            shape = tuple(val.shape) if isinstance(val, torch.Tensor) else type(val).__name__
            raise ValueError(
                f"the potential must map a (chains, d) tensor to shape (chains,); for input "
                f"(2, {self.d}) it returned {shape}."
            )
        self._base = val[0].detach()
        if not torch.isfinite(self._base):
            raise ValueError(f"the potential is not finite at w* (K(w*) = {float(self._base)}).")

    def draw_batches(self, streams: Sequence[ChainStream], k: int):
        return None

    def loss_and_grad(self, w: torch.Tensor, batch=None):
        # Chains are independent rows, so the gradient of the sum is the per-chain gradient.
        with torch.enable_grad():
            w = w.detach().requires_grad_(True)
            k = self.potential(w)
            (g,) = torch.autograd.grad(k.sum(), w)
        return k.detach(), g

    def baseline(self, batch=None) -> torch.Tensor:
        return self._base

    @property
    def init_loss(self) -> float:
        return float(self._base)

    @property
    def grad_star(self) -> torch.Tensor:
        """∇K(w*)."""
        return self.loss_and_grad(self.w_star.reshape(1, -1))[1][0]

    def rounding_floor(self, h: float = 1.0) -> float:
        return _rounding_floor(self.w_star, h)

    def check_fns(self, seed: int = 0):
        """(w ↦ ∇K(w) for one (d,) point, differentiable by torch.func; (rows, d) ↦ (K, ∇K))."""
        return grad(lambda w: self.potential(w.reshape(1, -1)).sum()), (lambda w: self.loss_and_grad(w, None))

    def describe(self) -> dict:
        """Facts about the target for the result's ``config``."""
        return dict(kind="potential", d=self.d, device=str(self.w_star.device), dtype=str(self.w_star.dtype))


class ModelTarget:
    """The mean loss of ``model`` on ``(x, y)`` as a function of the flat parameters.

    ``batch_size=None`` (or ≥ n) uses the full data every step. Otherwise each chain draws its own
    minibatches, and the baseline L_B(w*) is evaluated on the *same* minibatch as L_B(w_t) (a
    paired difference, so that the minibatch noise of the baseline cancels). When the loss
    decomposes per example, L_B(w*) is read from a cache of per-example losses at w*; otherwise it
    is recomputed with a forward pass.

    Example:
        >>> x = torch.randn(64, 3); y = x.sum(1, keepdim=True)
        >>> t = ModelTarget.build(nn.Linear(3, 1), (x, y), "mse", LLCOptions(batch_size=16))
        >>> t.n, t.d, t.batch_size, t.describe()["paired_baseline"]
        (64, 4, 16, 'per-example cache')
    """

    kind = "model"

    @classmethod
    def build(cls, model: nn.Module, data: Any, loss, opts: LLCOptions) -> "ModelTarget":
        """Validate (model, data, loss) for a run with ``opts`` and build the target: flatten the
        sampled parameters (``opts.params``), read the data onto the model's device, probe one forward
        pass and resolve the loss against its outputs. Errors say what to change."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        fm = FlatModel(model, opts.params)
        dev = torch.device(opts.device) if opts.device is not None else fm.device
        if dev != fm.device:
            raise ValueError(f"the model is on {fm.device} but device={dev}; move the model with model.to(device) "
                             "first.")
        batch_size = opts.batch_size
        if batch_size is None and isinstance(data, DataLoader):
            batch_size = data.batch_size
        x, y = as_tensors(data, device=dev, dtype=fm.dtype)
        n = int(x.shape[0])
        kernel = opts.kernel
        if kernel.full_batch and batch_size is not None and batch_size < n:
            raise ValueError(f"sampler={kernel.name!r} is Metropolis-adjusted and needs the exact full-batch loss, "
                             f"but batch_size={batch_size} < n={n}. Pass batch_size=None (for a DataLoader: "
                             f"batch_size={n}), or use sampler='sgld' for minibatches.")
        spec, y = _probe_loss(fm, x, y, loss)
        target = cls(fm, x, y, spec, batch_size, vectorize=opts.vectorize)
        target.restricted = opts.params is not None
        return target

    def __init__(self, fm: FlatModel, x: torch.Tensor, y: torch.Tensor, spec: LossSpec,
                 batch_size: Optional[int], vectorize: bool = True, chunk: int = 8192):
        self.fm, self.x, self.y, self.spec = fm, x, y, spec
        self.w_star = fm.w_star
        self.restricted = False  # True when only some parameters are sampled (params=)
        self.n, self.d = int(x.shape[0]), fm.d
        self.batch_size = None if batch_size is None or batch_size >= self.n else int(batch_size)
        self.chunk = chunk

        def loss_one(w, xb, yb):
            return spec.check_scalar(spec.mean(fm.forward(w, xb), yb))

        self._loss_one = loss_one
        self._loss_vmap_full = vmap(loss_one, in_dims=(0, None, None))
        self._loss_vmap = vmap(loss_one, in_dims=(0, 0, 0))
        self._loss_vmap_star = vmap(loss_one, in_dims=(None, 0, 0))
        self.vectorized = vectorize
        self._init_stats()

    # -- set-up -------------------------------------------------------------------------------
    def _init_stats(self):
        """Full-data loss, gradient and per-example losses at w*, in chunks."""
        w = self.fm.w_star
        loss_sum = torch.zeros((), dtype=w.dtype, device=w.device)
        grad_sum = torch.zeros_like(w)
        per = [] if self.spec.per_sample is not None else None
        for i in range(0, self.n, self.chunk):
            xb, yb = self.x[i:i + self.chunk], self.y[i:i + self.chunk]
            with torch.enable_grad():
                wg = w.detach().requires_grad_(True)
                out = self.fm.forward(wg, xb)
                l = self.spec.check_scalar(self.spec.mean(out, yb))
                (g,) = torch.autograd.grad(l, wg)
            m = xb.shape[0]
            loss_sum += l.detach() * m
            grad_sum += g * m
            if per is not None:
                per.append(self.spec.per_sample(out.detach(), yb))
        self.init_loss_t = loss_sum / self.n
        self.grad_star = grad_sum / self.n
        self.per_sample_star = torch.cat(per) if per is not None else None
        if not torch.isfinite(self.init_loss_t):
            raise ValueError(f"the loss at w* is not finite ({float(self.init_loss_t)}); check the model and data.")

    def check_vectorized(self, chains: int) -> None:
        """Try one vmapped evaluation; fall back to a per-chain loop with a warning if it fails."""
        if not self.vectorized:
            return
        w = self.fm.w_star.expand(chains, -1).clone()
        batch = None
        if self.batch_size is not None:
            batch = torch.zeros(chains, self.batch_size, dtype=torch.long, device=w.device)
        try:
            self.loss_and_grad(w, batch)
        except Exception as e:  # e.g. BatchNorm in train mode, data-dependent control flow
            self.vectorized = False
            warnings.warn(
                f"the model could not be vectorised over chains with torch.func.vmap ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); running the chains one after another in a loop instead, "
                "which is slower. Models in train mode with BatchNorm or dropout cause this: call "
                "model.eval() first if the train-mode behaviour is not what you want to sample.",
                VmapFallbackWarning,
                stacklevel=3,
            )

    @property
    def init_loss(self) -> float:
        return float(self.init_loss_t)

    def rounding_floor(self, h: float = 1.0) -> float:
        return _rounding_floor(self.w_star, h)

    def check_fns(self, seed: int = 0):
        """The functions the checks evaluate, on a fixed subsample of at most :data:`CHECK_EXAMPLES`
        examples drawn with ``seed``: w ↦ ∇L(w) for one (d,) point (differentiable by torch.func), and
        (rows, d) ↦ (L, ∇L)."""
        m = min(self.n, CHECK_EXAMPLES)
        idx = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))[:m].to(self.x.device)
        xs, ys = self.x[idx], self.y[idx]
        grad_fn = grad(lambda w: self._loss_one(w, xs, ys))
        return grad_fn, (lambda w: self.loss_and_grad(w, idx.expand(w.shape[0], -1)))

    def describe(self) -> dict:
        """Facts about the target for the result's ``config``."""
        paired = "full batch" if self.batch_size is None else (
            "per-example cache" if self.spec.per_sample is not None else "forward pass")
        return dict(kind="model", params=list(self.fm.names) if self.restricted else None, n=self.n, d=self.d,
                    loss=self.spec.name, batch_size=self.batch_size, vectorized=self.vectorized,
                    device=str(self.w_star.device), dtype=str(self.w_star.dtype), paired_baseline=paired)

    # -- chain-loop interface --------------------------------------------------------------------
    def draw_batches(self, streams: Sequence[ChainStream], k: int):
        if self.batch_size is None:
            return None
        return torch.stack([s.batch_indices(k, self.batch_size, self.n) for s in streams], dim=1)

    def _losses(self, w: torch.Tensor, batch: Optional[torch.Tensor]) -> torch.Tensor:
        if self.vectorized:
            if batch is None:
                return self._loss_vmap_full(w, self.x, self.y)
            return self._loss_vmap(w, self.x[batch], self.y[batch])
        if batch is None:
            return torch.stack([self._loss_one(w[c], self.x, self.y) for c in range(w.shape[0])])
        return torch.stack([self._loss_one(w[c], self.x[b], self.y[b]) for c, b in enumerate(batch)])

    def loss_and_grad(self, w: torch.Tensor, batch: Optional[torch.Tensor]):
        """``(L_B(w), ∇L_B(w))`` per chain; ``batch`` is ``(chains, b)`` example indices, or None
        for the full data (whatever the target's own batch size)."""
        # The vmapped forward is differentiated by ordinary autograd: chains are independent, so
        # the gradient of the summed losses is each chain's own gradient. This is several times
        # faster than vmap(grad(...)) on small models and equal on large ones.
        with torch.enable_grad():
            w = w.detach().requires_grad_(True)
            losses = self._losses(w, batch)
            (g,) = torch.autograd.grad(losses.sum(), w)
        return losses.detach(), g

    def baseline(self, batch: Optional[torch.Tensor]) -> torch.Tensor:
        if batch is None:
            return self.init_loss_t
        if self.per_sample_star is not None:
            return self.per_sample_star[batch].mean(dim=1)
        with torch.no_grad():
            if self.vectorized:
                return self._loss_vmap_star(self.fm.w_star, self.x[batch], self.y[batch])
            return torch.stack([self._loss_one(self.fm.w_star, self.x[b], self.y[b]) for b in batch])


def _probe_loss(fm: FlatModel, x: torch.Tensor, y: torch.Tensor, loss):
    """Run the model on the first examples and resolve ``loss`` against its outputs: (LossSpec, targets)."""
    n = int(x.shape[0])
    probe_x = x[: min(n, 8)]
    try:
        with torch.no_grad():
            out = fm.forward(fm.w_star, probe_x)
    except Exception as e:
        raise ValueError(f"the model failed on inputs of shape {tuple(probe_x.shape)} (the first examples of "
                         f"data): {type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model must return a tensor of outputs; got {type(out).__name__}. Wrap it so "
                         "that forward returns the outputs the loss takes.")
    spec = resolve_loss(loss) if isinstance(loss, str) else None
    if spec is not None:
        y = spec.prepare_targets(out, y)
    else:
        spec = resolve_loss(loss, out, y[: min(n, 8)])
    try:
        with torch.no_grad():
            spec.check_scalar(spec.mean(out, y[: min(n, 8)]))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"the loss failed on model outputs of shape {tuple(out.shape)} and targets of shape "
                         f"{tuple(y[:8].shape)}: {type(e).__name__}: {e}") from e
    return spec, y
