"""The one chain loop, and per-chain random streams.

:func:`run_chains` drives any :class:`~slt_basins.samplers.Kernel` over any target (a model
adapter or a potential adapter, see :mod:`slt_basins.targets`). All chains advance together as
one ``(chains, d)`` tensor; traces are written into preallocated device tensors, and the host
synchronises only once per block of steps (to update the progress bar and stop early when every
chain has diverged), never per step.

Reproducibility: chain ``c`` draws its Gaussian noise and its minibatch indices from generators
seeded by ``numpy.random.SeedSequence([seed, c])``, in blocks whose size depends only on d and
the number of steps. A chain's trajectory therefore depends only on ``(seed, c)`` and the
settings, not on how many chains run beside it or on which process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .samplers import Hyper, Kernel

__all__ = ["ChainStream", "ChainRun", "Target", "run_chains", "block_size"]


def _seed_pair(seed: int, chain: int) -> tuple[int, int]:
    words = np.random.SeedSequence([int(seed), int(chain)]).generate_state(4, dtype=np.uint32)
    a = (int(words[0]) << 31) ^ int(words[1])
    b = (int(words[2]) << 31) ^ int(words[3])
    return a, b


class ChainStream:
    """Random numbers of one chain: Gaussian noise and minibatch indices.

    Minibatches are drawn without replacement within an epoch (a fresh permutation of the n
    examples per epoch, consumed ``batch_size`` at a time).
    """

    def __init__(self, seed: int, chain: int, device, dtype: torch.dtype):
        device = torch.device(device)
        s_noise, s_batch = _seed_pair(seed, chain)
        self.noise_gen = torch.Generator(device=device).manual_seed(s_noise)
        self.batch_gen = torch.Generator(device=device).manual_seed(s_batch)
        self.device, self.dtype = device, dtype
        self._perm = torch.empty(0, dtype=torch.long, device=device)

    def normal(self, k: int, d: int) -> torch.Tensor:
        """``(k, d)`` standard normals."""
        return torch.randn(k, d, generator=self.noise_gen, device=self.device, dtype=self.dtype)

    def batch_indices(self, k: int, batch_size: int, n: int) -> torch.Tensor:
        """``(k, batch_size)`` example indices for the next k steps."""
        need = k * batch_size
        parts = [self._perm]
        have = self._perm.numel()
        while have < need:
            p = torch.randperm(n, generator=self.batch_gen, device=self.device)
            parts.append(p)
            have += n
        buf = torch.cat(parts)
        self._perm = buf[need:]
        return buf[:need].view(k, batch_size)


class Target(Protocol):
    """What the chain loop needs from a model or potential adapter."""

    d: int

    def draw_batches(self, streams: Sequence[ChainStream], k: int) -> Optional[torch.Tensor]:
        """Minibatch indices ``(k, chains, batch)`` for the next k steps, or None (full batch)."""

    def loss_and_grad(self, w: torch.Tensor, batch: Optional[torch.Tensor]):
        """``(L_B(w), ∇L_B(w))`` with shapes ``(chains,)`` and ``(chains, d)``."""

    def baseline(self, batch: Optional[torch.Tensor]) -> torch.Tensor:
        """``L_B(w*)`` on the same batch, shape ``(chains,)`` or a scalar."""


def block_size(d: int, total_steps: int) -> int:
    """Steps per block of pre-drawn noise: bounded memory, independent of the chain count."""
    return int(max(1, min(total_steps, 200, (1 << 21) // max(d, 1))))


@dataclass
class ChainRun:
    """Raw output of :func:`run_chains` (device tensors moved to numpy).

    ``loss`` and ``llc`` are ``(chains, num_draws)``: the minibatch loss L_B(w_t) and the draw
    nβ·(L_B(w_t) − L_B(w*)) for every post-burn-in step. ``diverged_at`` is the step (counting
    burn-in) at which a chain was stopped, or −1. ``steps_done`` < the requested total when the run
    stopped early (all chains diverged, or interrupted). ``accept`` is the per-chain mean
    Metropolis acceptance probability over the draws (kernels that report one, e.g. MALA), else None.
    """

    loss: np.ndarray
    llc: np.ndarray
    diverged_at: np.ndarray
    steps_done: int
    final_w: torch.Tensor
    interrupted: bool = False
    accept: Optional[np.ndarray] = None
    final_state: Optional[tuple] = None


def _where(mask: torch.Tensor, new, old):
    fields = []
    for a, b in zip(new, old):
        m = mask.view((-1,) + (1,) * (a.ndim - 1))
        fields.append(torch.where(m, a, b))
    return type(new)(*fields)


def run_chains(
    kernel: Kernel,
    target: Target,
    hyper: Hyper,
    chain_ids: Sequence[int],
    *,
    num_burnin: int,
    num_draws: int,
    seed: int,
    divergence_bound: float,
    progress: bool = True,
    desc: str = "sampling",
    on_block: Optional[Callable[[int], None]] = None,
) -> ChainRun:
    """Run ``len(chain_ids)`` chains of ``kernel`` on ``target`` from w*, vectorised.

    A chain is stopped (frozen at its last finite state and reported in ``diverged_at``) as soon as
    its draw nβ·(L_B(w_t) − L_B(w*)) is NaN/inf or exceeds ``divergence_bound`` in absolute value,
    or its parameters become non-finite. KeyboardInterrupt stops the loop and returns what was
    sampled so far with ``interrupted=True``.
    """
    w_star = hyper.w_star
    chains, d = len(chain_ids), w_star.numel()
    device, dtype = w_star.device, w_star.dtype
    streams = [ChainStream(seed, c, device, dtype) for c in chain_ids]
    total = num_burnin + num_draws
    state = kernel.init(w_star.expand(chains, d).clone(), lambda w: target.loss_and_grad(w, None), hyper)
    hyper_draw = hyper._replace(adapt=False)
    acc_sum = torch.zeros(chains, device=device, dtype=dtype)
    has_acc = False
    loss_tr = torch.zeros(chains, num_draws, device=device, dtype=dtype)
    llc_tr = torch.zeros(chains, num_draws, device=device, dtype=dtype)
    alive = torch.ones(chains, dtype=torch.bool, device=device)
    diverged_at = torch.full((chains,), -1, dtype=torch.long, device=device)
    blk = block_size(d, total)
    t, interrupted = 0, False
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        while t < total:
            k = min(blk, total - t)
            noise = torch.stack([s.normal(k, d + kernel.extra_noise) for s in streams], dim=1)
            batches = target.draw_batches(streams, k)
            for j in range(k):
                batch = None if batches is None else batches[j]
                new_state, loss, acc = kernel.step(
                    state, lambda w, b=batch: target.loss_and_grad(w, b), noise[j],
                    hyper if t < num_burnin else hyper_draw,
                )
                draw = (loss - target.baseline(batch)) * hyper.nbeta
                ok = torch.isfinite(draw) & (draw.abs() <= divergence_bound)
                ok &= torch.isfinite(new_state[0]).all(dim=1)
                diverged_at = torch.where(alive & ~ok, t, diverged_at)
                alive = alive & ok
                state = _where(alive, new_state, state)
                if t >= num_burnin:
                    loss_tr[:, t - num_burnin] = loss
                    llc_tr[:, t - num_burnin] = draw
                    if acc is not None:
                        acc_sum += torch.where(alive, acc, 0.0)
                        has_acc = True
                t += 1
            bar.update(k)
            if on_block is not None:
                on_block(t)
            if not bool(alive.any()):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    kept = max(0, min(num_draws, t - num_burnin))
    return ChainRun(
        loss=loss_tr[:, :kept].cpu().numpy(),
        llc=llc_tr[:, :kept].cpu().numpy(),
        diverged_at=diverged_at.cpu().numpy(),
        steps_done=t,
        final_w=state[0].detach(),
        final_state=state,
        interrupted=interrupted,
        accept=(acc_sum / max(kept, 1)).cpu().numpy() if has_acc else None,
    )
