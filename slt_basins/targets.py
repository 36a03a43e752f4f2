"""Adapters that present a model or a potential to the chain loop as ``loss_and_grad``.

Both adapters are thin: they compute ``(L_B(w), ∇L_B(w))`` for a ``(chains, d)`` tensor and the
paired baseline ``L_B(w*)``; everything else (noise, divergence, traces) lives in
:func:`slt_basins.chains.run_chains`.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils.data import DataLoader

from .chains import ChainStream
from .data import TensorData, as_data, describe_batch
from .errors import VmapFallbackWarning
from .functional import FlatModel
from .losses import LossSpec, resolve_loss
from .options import LLCOptions

__all__ = ["PotentialTarget", "ModelTarget", "VmapFallbackWarning", "CHECK_EXAMPLES"]

CHECK_EXAMPLES = 2048  # the checks of a model evaluate the loss on at most this many examples (fewer: checks.check_examples)


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
        """Validate (potential, w*) for a run with ``opts``: w* as a flat tensor on ``opts.device``, in its
        own dtype when given as a floating-point tensor, else in float64."""
        if not isinstance(w_star, torch.Tensor):
            w_star = torch.as_tensor(w_star, dtype=torch.float64)
        if not w_star.is_floating_point():
            w_star = w_star.to(torch.float64)
        _check_cuda(opts.device)
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

    def evaluation(self):
        return contextlib.nullcontext()

    def check_fns(self, seed: int = 0):
        """(w ↦ ∇K(w) for one (d,) point, differentiable by torch.func; (rows, d) ↦ (K, ∇K))."""
        return grad(lambda w: self.potential(w.reshape(1, -1)).sum()), (lambda w: self.loss_and_grad(w, None))

    def describe(self) -> dict:
        """Facts about the target for the result's ``config``."""
        return dict(kind="potential", d=self.d, device=str(self.w_star.device), dtype=str(self.w_star.dtype))


class ModelTarget:
    """The mean loss of ``model`` on ``data`` (a :class:`~slt_basins.data.TensorData`) as a function of
    the flat parameters.

    ``batch_size=None`` (or ≥ n) uses the full data every step. Otherwise each chain draws its own
    minibatches, and the baseline L_B(w*) is evaluated on the *same* minibatch as L_B(w_t) (a
    paired difference, so that the minibatch noise of the baseline cancels). When the loss
    decomposes per example, L_B(w*) is read from a cache of per-example losses at w*; otherwise it
    is recomputed with a forward pass.

    The loss of one chain is ``spec.mean(outputs, batch)`` (a named or user loss), or, with
    ``evaluate``, ``evaluate(model_at_w, batch)`` where ``model_at_w`` is called like the user's
    module. Chains are batched with ``torch.func.vmap`` over the parameters and, for minibatches,
    over each chain's own batch.

    Example:
        >>> x = torch.randn(64, 3); y = x.sum(1, keepdim=True)
        >>> t = ModelTarget.build(nn.Linear(3, 1), (x, y), "mse", LLCOptions(batch_size=16))
        >>> t.n, t.d, t.batch_size, t.describe()["paired_baseline"]
        (64, 4, 16, 'per-example cache')
    """

    kind = "model"

    @classmethod
    def build(cls, model: nn.Module, data: Any, loss, opts: LLCOptions, evaluate: Optional[Callable] = None
              ) -> "ModelTarget":
        """Validate (model, data, loss or ``evaluate``) for a run with ``opts`` and build the target: flatten
        the sampled parameters (``opts.params``), read the data onto the model's device, probe one forward
        pass and resolve the loss against its outputs. Errors say what to change."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        fm = FlatModel(model, opts.params)
        _check_device(opts.device, fm.device)
        _refuse_random_layers(model)
        tdata = as_data(data, device=fm.device, dtype=fm.dtype)
        batch_size = tdata.loader_batch_size if opts.batch_size is None else opts.batch_size
        kernel = opts.kernel
        if kernel.full_batch and batch_size is not None and batch_size < tdata.n:
            raise ValueError(f"sampler={kernel.name!r} is Metropolis-adjusted and needs the exact full-batch loss, "
                             f"but batch_size={batch_size} < n={tdata.n}. Pass batch_size=None (for a DataLoader: "
                             f"batch_size={tdata.n}), or use sampler='sgld' for minibatches.")
        with attention_for_vmap(model):
            spec, tdata = (None, tdata) if evaluate is not None else _probe_loss(fm, tdata, loss)
            target = cls(fm, tdata, spec, batch_size, vectorize=opts.vectorize, evaluate=evaluate)
            _refuse_random_loss(target)
        target.restricted = opts.params is not None
        return target

    def __init__(self, fm: FlatModel, data: TensorData, spec: Optional[LossSpec], batch_size: Optional[int],
                 vectorize: bool = True, chunk: int = 8192, evaluate: Optional[Callable] = None):
        if spec is None and evaluate is None:
            raise ValueError("a ModelTarget needs a loss or an evaluate function.")
        self.fm, self.data, self.spec, self.evaluate = fm, data, spec, evaluate
        self.w_star = fm.w_star
        self.restricted = False  # True when only some parameters are sampled (params=)
        self.n, self.d = data.n, fm.d
        self.batch_size = None if batch_size is None or batch_size >= self.n else int(batch_size)
        self.chunk = chunk
        self._loss_one = self._make_loss_one()
        self._loss_vmap_full = vmap(self._loss_one, in_dims=(0, None))
        self._loss_vmap = vmap(self._loss_one, in_dims=(0, 0))
        self._loss_vmap_star = vmap(self._loss_one, in_dims=(None, 0))
        self.vectorized = vectorize
        with attention_for_vmap(fm.model):
            self._init_stats()

    def _make_loss_one(self):
        fm, spec, evaluate = self.fm, self.spec, self.evaluate
        check = LossSpec.check_scalar
        if evaluate is None:
            return lambda w, batch: spec.check_scalar(spec.mean(fm.outputs(w, batch), batch))

        def loss_one(w, batch):
            def model_at_w(*args, **kwargs):
                return fm.forward(w, *args, **kwargs)
            return check(None, evaluate(model_at_w, batch))
        return loss_one

    @property
    def loss_name(self) -> str:
        return "evaluate" if self.evaluate is not None else self.spec.name

    @property
    def per_sample(self):
        return None if self.spec is None else self.spec.per_sample

    # -- set-up -------------------------------------------------------------------------------
    def _init_stats(self):
        """Full-data loss, gradient and per-example losses at w*, in chunks."""
        w = self.fm.w_star
        loss_sum = torch.zeros((), dtype=w.dtype, device=w.device)
        grad_sum = torch.zeros_like(w)
        per = [] if self.per_sample is not None else None
        for i in range(0, self.n, self.chunk):
            batch = self.data.rows(i, i + self.chunk)
            m = min(self.n, i + self.chunk) - i
            with torch.enable_grad():
                wg = w.detach().requires_grad_(True)
                if per is not None:
                    out = self.fm.outputs(wg, batch)
                    l = self.spec.check_scalar(self.spec.mean(out, batch))
                    per.append(self.per_sample(out.detach(), batch))
                else:
                    l = self._loss_one(wg, batch)
                (g,) = torch.autograd.grad(l, wg)
            loss_sum += l.detach() * m
            grad_sum += g * m
        self.init_loss_t = loss_sum / self.n
        self.grad_star = grad_sum / self.n
        self.per_sample_star = torch.cat(per) if per is not None else None
        if not torch.isfinite(self.init_loss_t):
            raise ValueError(f"the loss at w* is not finite ({float(self.init_loss_t)}); check the model and data.")
        if not torch.isfinite(self.grad_star).all():
            raise ValueError("the gradient of the loss at w* is not finite; the LLC needs a loss that is "
                             "differentiable at w* (check for log(0), sqrt(0) or w**0 terms).")

    def check_vectorized(self, chains: int) -> None:
        """Try one vmapped evaluation; fall back to a per-chain loop with a warning if it fails."""
        if not self.vectorized:
            return
        w = self.fm.w_star.expand(chains, -1).clone()
        batch = None
        if self.batch_size is not None:
            batch = torch.zeros(chains, self.batch_size, dtype=torch.long, device=w.device)
        try:
            with attention_for_vmap(self.fm.model):
                self.loss_and_grad(w, batch)
        except Exception as e:  # e.g. BatchNorm in train mode, data-dependent control flow
            self.vectorized = False
            warnings.warn(
                f"the model could not be vectorised over chains with torch.func.vmap ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); running the chains one after another in a loop instead, "
                "which is slower. Typical causes: BatchNorm in train mode (call model.eval() unless batch "
                "statistics are what you mean to sample), or Python control flow on tensor values in the "
                "model's forward (write it with torch.where, or pass evaluate=).",
                VmapFallbackWarning,
                stacklevel=3,
            )

    @property
    def init_loss(self) -> float:
        return float(self.init_loss_t)

    def rounding_floor(self, h: float = 1.0) -> float:
        return _rounding_floor(self.w_star, h)

    def evaluation(self):
        """A context in which the model's attention runs through vmap-safe kernels (see
        :func:`attention_for_vmap`); the sampling tail runs the chains inside it."""
        return attention_for_vmap(self.fm.model)

    def check_fns(self, seed: int = 0, examples: Optional[int] = None):
        """The functions the checks evaluate, on a fixed subsample of min(n, ``examples``,
        :data:`CHECK_EXAMPLES`) examples drawn without replacement with ``seed`` (``examples=None``:
        the most allowed; the run passes :func:`slt_basins.checks.check_examples`): w ↦ ∇L(w) for one
        (d,) point (differentiable by torch.func), and (rows, d) ↦ (L, ∇L)."""
        m = min(self.n, CHECK_EXAMPLES, CHECK_EXAMPLES if examples is None else max(1, int(examples)))
        idx = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))[:m].to(self.w_star.device)
        sub = self.data.take(idx)
        grad_fn = grad(lambda w: self._loss_one(w, sub))
        return grad_fn, (lambda w: self.loss_and_grad(w, idx.expand(w.shape[0], -1)))

    def describe(self) -> dict:
        """Facts about the target for the result's ``config``."""
        paired = "full batch" if self.batch_size is None else (
            "per-example cache" if self.per_sample is not None else "forward pass")
        return dict(kind="model", params=list(self.fm.selection) if self.restricted else None, n=self.n, d=self.d,
                    loss=self.loss_name, batch_size=self.batch_size, vectorized=self.vectorized,
                    device=str(self.w_star.device), dtype=str(self.w_star.dtype), paired_baseline=paired)

    # -- chain-loop interface --------------------------------------------------------------------
    def draw_batches(self, streams: Sequence[ChainStream], k: int):
        if self.batch_size is None:
            return None
        return torch.stack([s.batch_indices(k, self.batch_size, self.n) for s in streams], dim=1)

    def _losses(self, w: torch.Tensor, batch: Optional[torch.Tensor]) -> torch.Tensor:
        if self.vectorized:
            if batch is None:
                return self._loss_vmap_full(w, self.data.batch)
            return self._loss_vmap(w, self.data.take(batch))
        if batch is None:
            return torch.stack([self._loss_one(w[c], self.data.batch) for c in range(w.shape[0])])
        return torch.stack([self._loss_one(w[c], self.data.take(b)) for c, b in enumerate(batch)])

    def losses(self, w: torch.Tensor, batch: Optional[torch.Tensor]) -> torch.Tensor:
        """L_B(w) per chain, without a gradient (``batch`` as in :meth:`loss_and_grad`)."""
        with torch.no_grad():
            return self._losses(w, batch)

    def with_data(self, data: Any, loss) -> "ModelTarget":
        """The same model, sampled parameters, loss (or ``evaluate``) and minibatch size on other
        ``data``: an observed dataset of a data-refined LLC. ``loss`` is resolved against that data."""
        tdata = as_data(data, device=self.w_star.device, dtype=self.w_star.dtype)
        with attention_for_vmap(self.fm.model):
            spec, tdata = (None, tdata) if self.evaluate is not None else _probe_loss(self.fm, tdata, loss)
            other = ModelTarget(self.fm, tdata, spec, self.batch_size, vectorize=self.vectorized,
                                evaluate=self.evaluate)
        other.restricted = self.restricted
        return other

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
                return self._loss_vmap_star(self.fm.w_star, self.data.take(batch))
            return torch.stack([self._loss_one(self.fm.w_star, self.data.take(b)) for b in batch])


def _check_cuda(requested) -> None:
    """Refuse ``device="cuda"`` where CUDA is not available, saying so."""
    if requested is not None and torch.device(requested).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(requested)!r} was requested, but CUDA is not available here "
                         "(torch.cuda.is_available() is False: no GPU, or a CPU-only PyTorch build). Leave device "
                         "unset to sample where the model is, or pass device='cpu'.")


def _check_device(requested, actual: torch.device) -> None:
    """Refuse a ``device=`` that differs from where the model lives, saying why."""
    _check_cuda(requested)
    if requested is None:
        return
    dev = torch.device(requested)
    if dev.type != actual.type or (dev.index is not None and dev != actual):
        raise ValueError(f"the model is on {actual} but device={dev}; move the model with model.to(device) first.")


_RANDOM_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _refuse_random_layers(model: nn.Module) -> None:
    """Dropout in train mode draws from the global generator: refuse it (same seed must give the same bits)."""
    live = [name or type(model).__name__ for name, m in model.named_modules()
            if isinstance(m, _RANDOM_LAYERS) and m.training and m.p > 0]
    if live:
        raise ValueError(
            f"the model has dropout layers in train mode ({', '.join(live[:5])}{' …' if len(live) > 5 else ''}). "
            "They draw from PyTorch's global random generator, so the loss would be random and the same seed would "
            "not give the same result. Call model.eval() first (the LLC is defined for the deterministic loss).")


def _refuse_random_loss(target: "ModelTarget") -> None:
    """The same parameters and batch must give the same loss (catches functional dropout and other noise)."""
    batch = target.data.head(min(target.n, 8))
    with torch.no_grad():
        a, b = (target._loss_one(target.fm.w_star, batch) for _ in range(2))
    if not torch.equal(a, b):
        raise ValueError(
            f"the loss at w* differs between two identical evaluations ({float(a):.6g} vs {float(b):.6g}): the "
            "model or loss draws random numbers (dropout or another random layer in train mode). Call model.eval() "
            "first, or make the randomness a fixed input.")


@contextlib.contextmanager
def attention_for_vmap(model: nn.Module):
    """Run attention through kernels that ``torch.func.vmap`` can batch, restoring the user's settings after.

    * ``nn.TransformerEncoder`` / ``nn.MultiheadAttention``: PyTorch's fused "fast path" (used in eval
      mode) has no batching rule, so it is switched off (``torch.backends.mha.set_fastpath_enabled``).
    * ``F.scaled_dot_product_attention``: only the math kernel has a batching rule, so the flash and
      memory-efficient kernels are disabled (``torch.nn.attention.sdpa_kernel``).
    * HuggingFace models with ``config._attn_implementation`` ``"sdpa"`` or a flash variant are switched to
      ``"eager"`` (their mask code branches on tensor values, which vmap cannot trace).

    The arithmetic is the same attention; only the kernel changes.

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).eval()
        >>> with attention_for_vmap(layer):
        ...     torch.backends.mha.get_fastpath_enabled()
        False
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    configs = [m.config for m in model.modules() if _hf_attn(getattr(m, "config", None)) not in (None, "eager")]
    saved = [c._attn_implementation for c in configs]
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        for c in configs:
            c._attn_implementation = "eager"
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for c, v in zip(configs, saved):
            c._attn_implementation = v


def _hf_attn(config) -> Optional[str]:
    impl = getattr(config, "_attn_implementation", None)
    return impl if isinstance(impl, str) else None


def _probe_loss(fm: FlatModel, data: TensorData, loss):
    """Run the model on the first examples and resolve ``loss`` against its outputs: (LossSpec, data)."""
    probe = data.head(min(data.n, 8))
    try:
        with torch.no_grad():
            out = fm.outputs(fm.w_star, probe)
    except Exception as e:
        if isinstance(e, TypeError) and "output" in str(e).lower():  # output_tensor's own message
            raise
        raise ValueError(f"the model failed on the first examples of data ({describe_batch(probe)}): "
                         f"{type(e).__name__}: {e}") from e
    spec = resolve_loss(loss, out, probe)
    data = spec.prepare(out, data)
    probe = data.head(min(data.n, 8))
    try:
        with torch.no_grad():
            spec.check_scalar(spec.mean(out, probe))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"the loss failed on model outputs of shape {tuple(out.shape)} and the batch "
                         f"{describe_batch(probe)}: {type(e).__name__}: {e}") from e
    return spec, data
