"""The one chain loop, and per-chain random streams.

:func:`run_chains` drives any :class:`~slt_basins.samplers.Kernel` over any target (a model
adapter or a potential adapter, see :mod:`slt_basins.targets`). All chains advance together as
one ``(chains, d)`` tensor; traces are written into preallocated device tensors, and the host
synchronises only once per block of steps (to update the progress bar and stop early when every
chain has diverged), never per step.

Reproducibility: chain ``c`` draws its Gaussian noise and its minibatch indices from generators
seeded by ``numpy.random.SeedSequence([seed, c])``, in blocks whose size depends only on d and
the number of steps. A chain's trajectory therefore depends only on ``(seed, c)`` and the
settings, not on how many chains run beside it or on which process. (Bitwise, that also needs the
evaluation of a chain's loss and gradient not to depend on how many chains are evaluated with it:
true on CPU with one intra-op thread; otherwise use ``chain_group``, see :class:`GroupedTarget`.)

Long runs: ``checkpoint=path`` saves the loop's whole state at block boundaries (see
:mod:`slt_basins.checkpoint`) and resumes from it, bit-identically, when the file exists.
"""
from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .samplers import Hyper, Kernel

__all__ = ["ChainStream", "ChainRun", "LoopState", "Target", "GroupedTarget", "LocalSync", "run_chains", "block_size"]


def _seed_pair(seed: int, chain: int) -> tuple[int, int]:
    words = np.random.SeedSequence([int(seed), int(chain)]).generate_state(4, dtype=np.uint32)
    a = (int(words[0]) << 31) ^ int(words[1])
    b = (int(words[2]) << 31) ^ int(words[3])
    return a, b


class ChainStream:
    """Random numbers of one chain: Gaussian noise and minibatch indices.

    Minibatches are drawn without replacement within an epoch (a fresh permutation of the n
    examples per epoch, consumed ``batch_size`` at a time). The numbers depend only on
    ``(seed, chain)``.

    Example:
        >>> s = ChainStream(seed=0, chain=3, device="cpu", dtype=torch.float64)
        >>> s.normal(2, 3).shape, s.batch_indices(2, 4, n=10).shape
        (torch.Size([2, 3]), torch.Size([2, 4]))
        >>> saved = s.state_dict(); a = s.normal(1, 2)
        >>> s.load_state_dict(saved); torch.equal(a, s.normal(1, 2))  # resumed: the same numbers
        True
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

    def state_dict(self) -> dict:
        """Generator states (CPU byte tensors, copies) and the leftover permutation, to resume later."""
        return {"noise": self.noise_gen.get_state(), "batch": self.batch_gen.get_state(), "perm": self._perm}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` output: the next numbers are those the saved stream would give."""
        self.noise_gen.set_state(state["noise"])
        self.batch_gen.set_state(state["batch"])
        self._perm = state["perm"].to(device=self.device, dtype=torch.long)


class Target(Protocol):
    """What the chain loop needs from a model or potential adapter.

    ``d`` is the number of sampled parameters; losses are mean losses (loss units), gradients are
    per parameter unit. :class:`slt_basins.targets.ModelTarget` and
    :class:`slt_basins.targets.PotentialTarget` implement it.

    Example (a full-batch target for K(w) = ‖w‖², written by hand):
        >>> class Quadratic:
        ...     d = 2
        ...     def draw_batches(self, streams, k):
        ...         return None
        ...     def loss_and_grad(self, w, batch):
        ...         return (w ** 2).sum(1), 2 * w
        ...     def baseline(self, batch):
        ...         return torch.zeros(())
        >>> from slt_basins.samplers import SGLD
        >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(2))
        >>> run_chains(SGLD, Quadratic(), h, [0, 1], num_burnin=5, num_draws=10, seed=0,
        ...            divergence_bound=1e3, progress=False).llc.shape
        (2, 10)
    """

    d: int

    def draw_batches(self, streams: Sequence[ChainStream], k: int) -> Optional[torch.Tensor]:
        """Minibatch indices ``(k, chains, batch)`` for the next k steps, or None (full batch)."""

    def loss_and_grad(self, w: torch.Tensor, batch: Optional[torch.Tensor]):
        """``(L_B(w), ∇L_B(w))`` with shapes ``(chains,)`` and ``(chains, d)``."""

    def baseline(self, batch: Optional[torch.Tensor]) -> torch.Tensor:
        """``L_B(w*)`` on the same batch, shape ``(chains,)`` or a scalar."""


class GroupedTarget:
    """Evaluate a target in fixed groups of ``group`` chains, so every evaluation has the same shapes.

    The loss and gradient of a chain are mathematically independent of the other chains, but not
    always bitwise: BLAS and reduction kernels choose how to split work over threads (CPU) or thread
    blocks (GPU) from the tensor shapes, and a split of a long sum (e.g. the gradient's sum over
    examples) changes its rounding. On CPU with several intra-op threads, one chain evaluated alone
    (a single multi-threaded GEMM) differs in the last bits from the same chain evaluated among
    others (one single-threaded GEMM per chain), and 5 chains can differ from 8. Evaluating rows
    ``[0, G), [G, 2G), ...`` of the ``(chains, d)`` tensor as separate calls of exactly G rows (the last
    group padded with copies of its last row, whose outputs are dropped) makes each chain's
    arithmetic depend only on its group. With groups aligned to chain ids (chain c in group c // G,
    as :func:`slt_basins.distributed.split_chain_ids` arranges over ranks), a chain's results are then
    the same whatever the number of chains or processes, given the same device type and thread count.

    Example:
        >>> from slt_basins.targets import PotentialTarget
        >>> t = GroupedTarget(PotentialTarget(lambda w: (w ** 2).sum(1), torch.zeros(2)), group=2)
        >>> t.loss_and_grad(torch.ones(3, 2), None)[0]
        tensor([2., 2., 2.])
    """

    def __init__(self, target: "Target", group: int):
        self.target, self.group, self.d = target, int(group), target.d

    def __getattr__(self, name):  # init_loss, fm, ... of the wrapped target
        if name == "target":
            raise AttributeError(name)
        return getattr(self.target, name)

    def draw_batches(self, streams, k):
        """The wrapped target's minibatch indices (the streams are per chain, so groups do not matter)."""
        return self.target.draw_batches(streams, k)

    def _groups(self, *rows):
        c, g = rows[0].shape[0], self.group
        for i in range(0, c, g):
            m = min(g, c - i)
            parts = []
            for r in rows:
                if r is None:
                    parts.append(None)
                    continue
                x = r[i:i + m]
                if m < g:
                    x = torch.cat([x, x[-1:].expand((g - m,) + tuple(x.shape[1:]))])
                parts.append(x)
            yield m, parts

    def loss_and_grad(self, w: torch.Tensor, batch: Optional[torch.Tensor]):
        """``(L_B(w), ∇L_B(w))`` of the wrapped target, evaluated group by group."""
        losses, grads = [], []
        for m, (wg, bg) in self._groups(w, batch):
            loss, grad = self.target.loss_and_grad(wg, bg)
            losses.append(loss[:m])
            grads.append(grad[:m])
        return torch.cat(losses), torch.cat(grads)

    def baseline(self, batch: Optional[torch.Tensor]) -> torch.Tensor:
        """``L_B(w*)`` of the wrapped target on each chain's batch, group by group."""
        if batch is None:
            return self.target.baseline(None)
        return torch.cat([self.target.baseline(bg)[:m] for m, (bg,) in self._groups(batch)])


class LocalSync:
    """When the chain loop may stop early: here, as soon as every chain of this process diverged.

    The loop calls ``start(t)`` once with the step it starts (or resumes) from, and
    ``any_alive(t, alive)`` at every block boundary; it stops when that returns False.
    :class:`slt_basins.distributed.RankSync` decides the same for all ranks together.

    Example:
        >>> sync = LocalSync()
        >>> sync.start(0)
        >>> sync.any_alive(200, torch.tensor([False, True])), sync.any_alive(400, torch.tensor([False, False]))
        (True, False)
    """

    def start(self, t: int) -> None:
        """The loop starts (or resumes) at step ``t``; nothing to agree on in one process."""
        pass

    def any_alive(self, t: int, alive: torch.Tensor) -> bool:
        """Whether any chain of ``alive`` (a ``(chains,)`` bool tensor) is still running."""
        return bool(alive.any())


PROBE_POSITIONS = 4  # positions per chain for the MALA probe: 3 during the draws and the final one ...
PROBE_MEMORY = 1 << 24  # ... when the 3 extra copies of the chains' parameters hold at most 2²⁴ numbers


def probe_steps(num_burnin: int, num_draws: int, chains: int, d: int) -> frozenset:
    """The steps after which the loop keeps a copy of the chains' positions for the MALA probe
    (:func:`slt_basins.checks.mala_probe`): k/:data:`PROBE_POSITIONS` of the way through the draws for
    k = 1 … PROBE_POSITIONS − 1 (the final positions are the last); none when those copies would hold
    more than :data:`PROBE_MEMORY` numbers (large models: the probe then uses the final positions only).

    >>> sorted(probe_steps(100, 200, chains=4, d=10)), probe_steps(100, 200, chains=4, d=10 ** 7)
    ([150, 200, 250], frozenset())
    """
    extra = PROBE_POSITIONS - 1
    if extra * chains * d > PROBE_MEMORY:
        return frozenset()
    return frozenset(num_burnin + (k * num_draws) // PROBE_POSITIONS for k in range(1, PROBE_POSITIONS)) - {
        num_burnin, num_burnin + num_draws}


def block_size(d: int, total_steps: int) -> int:
    """Steps per block of pre-drawn noise: bounded memory, independent of the chain count.

    At most 200 steps, at most 2²¹/d (about 2M noise numbers per chain and block) and at most the
    run's ``total_steps``; at least 1.

    >>> block_size(10, 1000), block_size(10, 50), block_size(10 ** 6, 1000), block_size(10 ** 7, 1000)
    (200, 50, 2, 1)
    """
    return int(max(1, min(total_steps, 200, (1 << 21) // max(d, 1))))


@dataclass
class ChainRun:
    """Raw output of :func:`run_chains` (device tensors moved to numpy).

    ``loss`` and ``llc`` are ``(chains, num_draws)``: the minibatch loss L_B(w_t) and the draw
    nβ·(L_B(w_t) − L_B(w*)) for every post-burn-in step. ``diverged_at`` is the step (counting
    burn-in) at which a chain was stopped, or −1. ``steps_done`` < the requested total when the run
    stopped early (all chains diverged, or interrupted). ``accept`` is the per-chain mean
    Metropolis acceptance probability over the draws (kernels that report one, e.g. MALA), else None.
    ``resumed_from`` is the step a checkpoint was resumed from (None: started at step 0);
    ``checkpoint_step`` is the step that the checkpoint file ``checkpoint_path`` holds (None: none).
    ``probe_w`` holds the chains' positions at the steps of :func:`probe_steps` that the loop passed
    (None when there are none, e.g. for large models; a checkpoint keeps them).

    Example:
        >>> from slt_basins.samplers import SGLD
        >>> from slt_basins.targets import PotentialTarget
        >>> w0 = torch.zeros(1, dtype=torch.float64)
        >>> run = run_chains(SGLD, PotentialTarget(lambda w: (w ** 2).sum(1), w0), Hyper(1e-2, 1.0, 10.0, w0),
        ...                  [0, 1, 2], num_burnin=10, num_draws=20, seed=0, divergence_bound=1e3, progress=False)
        >>> run.loss.shape, run.diverged_at.tolist(), run.steps_done, run.accept, run.interrupted
        ((3, 20), [-1, -1, -1], 30, None, False)
    """

    loss: np.ndarray
    llc: np.ndarray
    diverged_at: np.ndarray
    steps_done: int
    final_w: torch.Tensor
    interrupted: bool = False
    stopped_early: bool = False
    accept: Optional[np.ndarray] = None
    final_state: Optional[tuple] = None
    resumed_from: Optional[int] = None
    checkpoint_path: Optional[str] = None
    checkpoint_step: Optional[int] = None
    observed: Optional[dict] = None
    probe_w: Optional[torch.Tensor] = None  # (positions, chains, d): earlier positions for the MALA probe


def _observer_seed(seed: int, index: int) -> int:
    """The seed of observed dataset ``index``'s minibatch streams: independent of the main streams."""
    return int(np.random.SeedSequence([int(seed), 0x0B5E, int(index)]).generate_state(1, dtype=np.uint32)[0])


class Observed:
    """Extra datasets whose loss is recorded at every draw, with no influence on the chains (the
    data-refined LLC). Each has its own per-chain minibatch streams, seeded from (seed, dataset index,
    chain), so adding an observed dataset changes neither the chains nor the other datasets' draws.

    ``targets`` maps a name to a target with ``draw_batches``, ``losses`` (no gradient) and
    ``baseline``, like :class:`Target`.
    """

    def __init__(self, targets: dict, seed: int, chain_ids: Sequence[int], device, dtype):
        self.names, self.targets = list(targets), list(targets.values())
        self.streams = [[ChainStream(_observer_seed(seed, i), c, device, dtype) for c in chain_ids]
                        for i in range(len(self.targets))]

    def __len__(self) -> int:
        return len(self.targets)

    def draw(self, k: int) -> list:
        """Each dataset's minibatch indices for the next k steps (or None: full batch)."""
        return [t.draw_batches(s, k) for t, s in zip(self.targets, self.streams)]

    def measure(self, w: torch.Tensor, batches: list, j: int, nbeta: float):
        """(losses, draws), each ``(datasets, chains)``: L_obs,B(w) and nβ·(L_obs,B(w) − L_obs,B(w*))."""
        with torch.no_grad():
            losses, draws = [], []
            for t, b in zip(self.targets, batches):
                batch = None if b is None else b[j]
                loss = t.losses(w, batch)
                losses.append(loss)
                draws.append((loss - t.baseline(batch)) * nbeta)
        return torch.stack(losses), torch.stack(draws)

    def state_dict(self) -> list:
        return [[{**st, "perm": st["perm"].cpu()} for st in (s.state_dict() for s in ss)] for ss in self.streams]

    def load_state_dict(self, states: list) -> None:
        for ss, sts in zip(self.streams, states):
            for s, st in zip(ss, sts):
                s.load_state_dict(st)


def _where(mask: torch.Tensor, new, old):
    fields = []
    for a, b in zip(new, old):
        m = mask.view((-1,) + (1,) * (a.ndim - 1))
        fields.append(torch.where(m, a, b))
    return type(new)(*fields)


@dataclass
class LoopState:
    """What the chain loop carries from step to step (device tensors, chains first).

    ``t`` counts steps from 0 (burn-in included); ``state`` is the kernel's state; ``alive`` marks
    the chains not stopped for divergence and ``diverged_at`` the step each stopped chain was stopped
    at (−1 if alive); ``acc_sum`` sums the kernel's acceptance probabilities over the draws (only when
    ``has_acc``); ``loss_tr`` and ``llc_tr`` are the ``(chains, num_draws)`` traces of L_B(w_t) and of
    the draws nβ·(L_B(w_t) − L_B(w*)).

    Example (the loop of :func:`run_chains`, one block by hand):
        >>> from slt_basins.samplers import SGLD
        >>> from slt_basins.targets import PotentialTarget
        >>> w0 = torch.zeros(1, dtype=torch.float64)
        >>> t, h = PotentialTarget(lambda w: (w ** 2).sum(1), w0), Hyper(1e-2, 1.0, 10.0, w0)
        >>> streams = [ChainStream(0, c, "cpu", torch.float64) for c in (0, 1)]
        >>> loop = LoopState.start(SGLD, t, h, chains=2, num_draws=20)
        >>> loop.advance(SGLD, t, h, streams, k=30, num_burnin=10, divergence_bound=1e3)
        >>> loop.t, loop.kept(num_burnin=10), loop.result(num_burnin=10).llc.shape
        (30, 20, (2, 20))
    """

    t: int
    state: tuple
    alive: torch.Tensor
    diverged_at: torch.Tensor
    acc_sum: torch.Tensor
    has_acc: bool
    loss_tr: torch.Tensor
    llc_tr: torch.Tensor
    streams: Optional[list] = None  # the streams' states, in a snapshot only
    obs_loss_tr: Optional[torch.Tensor] = None  # (datasets, chains, num_draws): observed losses ...
    obs_llc_tr: Optional[torch.Tensor] = None  # ... and their draws nβ·(L_obs(w_t) − L_obs(w*))
    obs_streams: Optional[list] = None  # the observed datasets' stream states, in a snapshot only
    last_loss: Optional[torch.Tensor] = None  # (chains,) L_B at the last step's starting point
    probe_at: frozenset = frozenset()  # steps after which the positions are kept for the MALA probe ...
    probes: list = dataclasses.field(default_factory=list)  # ... and those copies

    @classmethod
    def start(cls, kernel: Kernel, target: "Target", hyper: Hyper, chains: int, num_draws: int) -> "LoopState":
        """Step 0: ``chains`` chains at w*, all alive, empty ``(chains, num_draws)`` traces."""
        w_star = hyper.w_star
        device, dtype, d = w_star.device, w_star.dtype, w_star.numel()
        state = kernel.init(w_star.expand(chains, d).clone(), lambda w: target.loss_and_grad(w, None), hyper)
        zeros = lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)  # noqa: E731
        return cls(0, state, torch.ones(chains, dtype=torch.bool, device=device),
                   torch.full((chains,), -1, dtype=torch.long, device=device), zeros(chains), False,
                   zeros(chains, num_draws), zeros(chains, num_draws))

    def kept(self, num_burnin: int) -> int:
        """Post-burn-in draws taken so far."""
        return max(0, min(self.loss_tr.shape[1], self.t - num_burnin))

    def running_llc(self, num_burnin: int) -> Optional[float]:
        """λ̂ so far: the mean draw over the post-burn-in steps taken and the chains alive (None before)."""
        kept = self.kept(num_burnin)
        if kept == 0 or not bool(self.alive.any()):
            return None
        return float(self.llc_tr[self.alive, :kept].mean())

    def observe(self, observed: "Observed", num_draws: int) -> None:
        """Allocate the traces of ``observed`` datasets (call once, before the first step)."""
        if len(observed):
            shape = (len(observed), self.loss_tr.shape[0], num_draws)
            self.obs_loss_tr = torch.zeros(shape, device=self.loss_tr.device, dtype=self.loss_tr.dtype)
            self.obs_llc_tr = torch.zeros_like(self.obs_loss_tr)

    def snapshot(self, streams: Sequence["ChainStream"], observed: Optional["Observed"] = None) -> "LoopState":
        """A shallow copy at this block boundary, with the streams' states (the loop never modifies
        a tensor of it in place, except trace columns past its own ``t``), for :meth:`payload`."""
        return dataclasses.replace(self, streams=[s.state_dict() for s in streams], probes=list(self.probes),
                                   obs_streams=observed.state_dict() if observed else None)

    def payload(self, fp: dict, num_burnin: int) -> dict:
        """What a checkpoint file holds (CPU tensors and plain values), from a :meth:`snapshot`."""
        kept = self.kept(num_burnin)
        return dict(
            fingerprint=fp, t=self.t, state_fields=list(self.state._fields),
            state=[f.detach().cpu() for f in self.state], alive=self.alive.cpu(),
            diverged_at=self.diverged_at.cpu(), acc_sum=self.acc_sum.cpu(), has_acc=self.has_acc,
            loss=self.loss_tr[:, :kept].cpu(), llc=self.llc_tr[:, :kept].cpu(),
            streams=[{"noise": st["noise"], "batch": st["batch"], "perm": st["perm"].cpu()} for st in self.streams],
            observed=None if self.obs_llc_tr is None else dict(
                loss=self.obs_loss_tr[:, :, :kept].cpu(), llc=self.obs_llc_tr[:, :, :kept].cpu(),
                streams=self.obs_streams),
            probes=[q.cpu() for q in self.probes],
        )

    def restore(self, saved: dict, streams: Sequence["ChainStream"], kernel: Kernel, path: str,
                observed: Optional["Observed"] = None) -> None:
        """Continue from a checkpoint payload (see :meth:`payload`)."""
        if saved["state_fields"] != list(self.state._fields):
            raise ckpt.CheckpointMismatchError(
                f"the checkpoint {path} holds a {saved['state_fields']} kernel state, but sampler "
                f"{kernel.name!r} has {list(self.state._fields)}; delete the file to start afresh.")
        dev = self.alive.device
        self.state = type(self.state)(*[f.to(dev) for f in saved["state"]])
        self.alive, self.diverged_at = saved["alive"].to(dev), saved["diverged_at"].to(dev)
        self.acc_sum, self.has_acc = saved["acc_sum"].to(dev), bool(saved["has_acc"])
        kept = saved["loss"].shape[1]
        self.loss_tr[:, :kept], self.llc_tr[:, :kept] = saved["loss"].to(dev), saved["llc"].to(dev)
        for s, st in zip(streams, saved["streams"]):
            s.load_state_dict(st)
        if saved.get("observed") is not None and observed:
            obs = saved["observed"]
            self.obs_loss_tr[:, :, :kept], self.obs_llc_tr[:, :, :kept] = obs["loss"].to(dev), obs["llc"].to(dev)
            observed.load_state_dict(obs["streams"])
        self.probes = [q.to(dev) for q in saved.get("probes", [])]
        self.t = int(saved["t"])

    def advance(self, kernel: Kernel, target: "Target", hyper: Hyper, streams: Sequence["ChainStream"], k: int,
                num_burnin: int, divergence_bound: float, observed: Optional["Observed"] = None) -> None:
        """Take the next ``k`` steps of every chain (one block of pre-drawn noise and batches); with
        ``observed``, record the observed datasets' losses at every draw (the point each step starts at)."""
        d = hyper.w_star.numel()
        hyper_draw = hyper._replace(adapt=False)
        noise = torch.stack([s.normal(k, d + kernel.extra_noise) for s in streams], dim=1)
        batches = target.draw_batches(streams, k)
        obs_batches = observed.draw(k) if observed else None
        for j in range(k):
            batch = None if batches is None else batches[j]
            if obs_batches is not None and self.t >= num_burnin:
                i = self.t - num_burnin
                self.obs_loss_tr[:, :, i], self.obs_llc_tr[:, :, i] = observed.measure(
                    self.state[0], obs_batches, j, hyper.nbeta)
            new_state, loss, acc = kernel.step(self.state, lambda w, b=batch: target.loss_and_grad(w, b), noise[j],
                                               hyper if self.t < num_burnin else hyper_draw)
            draw = (loss - target.baseline(batch)) * hyper.nbeta
            self.last_loss = loss
            ok = torch.isfinite(draw) & (draw.abs() <= divergence_bound) & torch.isfinite(new_state[0]).all(dim=1)
            self.diverged_at = torch.where(self.alive & ~ok, self.t, self.diverged_at)
            self.alive = self.alive & ok
            self.state = _where(self.alive, new_state, self.state)
            if self.t >= num_burnin:
                self.loss_tr[:, self.t - num_burnin] = loss
                self.llc_tr[:, self.t - num_burnin] = draw
                if acc is not None:
                    self.acc_sum = self.acc_sum + torch.where(self.alive, acc, 0.0)
                    self.has_acc = True
            self.t += 1
            if self.t in self.probe_at:
                self.probes.append(self.state[0].detach().clone())

    def result(self, num_burnin: int, **extra) -> ChainRun:
        """The raw output, traces cut to the draws taken."""
        kept = self.kept(num_burnin)
        return ChainRun(
            loss=self.loss_tr[:, :kept].cpu().numpy(), llc=self.llc_tr[:, :kept].cpu().numpy(),
            diverged_at=self.diverged_at.cpu().numpy(), steps_done=self.t, final_w=self.state[0].detach(),
            final_state=self.state,
            accept=(self.acc_sum / max(kept, 1)).cpu().numpy() if self.has_acc else None,
            observed=None if self.obs_llc_tr is None else dict(
                loss=self.obs_loss_tr[:, :, :kept].cpu().numpy(), llc=self.obs_llc_tr[:, :, :kept].cpu().numpy()),
            probe_w=torch.stack(self.probes) if self.probes else None, **extra)


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
    on_block: Optional[Callable[[int, "LoopState"], None]] = None,
    chain_group: Optional[int] = None,
    checkpoint: Optional[str] = None,
    checkpoint_every: int = 1000,
    fingerprint: Optional[dict] = None,
    sync: Optional[LocalSync] = None,
    observe: Optional[dict] = None,
) -> ChainRun:
    """Run ``len(chain_ids)`` chains of ``kernel`` on ``target`` from w*, vectorised.

    A chain is stopped (frozen at its last finite state and reported in ``diverged_at``) as soon as
    its draw nβ·(L_B(w_t) − L_B(w*)) is NaN/inf or exceeds ``divergence_bound`` in absolute value,
    or its parameters become non-finite. The loop ends early at a block boundary where no chain is
    alive (``sync.any_alive``). KeyboardInterrupt stops the loop and returns what was sampled so far
    with ``interrupted=True``.

    Args:
        chain_group: evaluate the target in fixed groups of this many chains (see
            :class:`GroupedTarget`); None evaluates all chains of this call at once.
        checkpoint: file to resume from (if it exists) and to save to. It is written, atomically,
            at the first block boundary after every ``checkpoint_every`` steps (burn-in included),
            at the end of the run, and on KeyboardInterrupt (the last block boundary reached): the
            noise of a block is drawn at its start, so only block boundaries can be resumed
            bit-identically. A resumed run's traces, final state and acceptance equal those of an
            uninterrupted run exactly. The file is refused (with the differing settings named) unless
            its fingerprint equals this run's.
        fingerprint: extra settings (e.g. batch size, loss) that a resumed checkpoint must match; the
            loop adds its own (seed, chain ids, sampler, ε, nβ, γ, draws, burn-in, d, hash of w*, ...).
        sync: early-stop policy (default :class:`LocalSync`); distributed runs pass a
            :class:`slt_basins.distributed.RankSync` so that all ranks stop at the same step.
        on_block: called as ``on_block(t, loop)`` after every block (after any checkpoint of that
            block) with the step count and the :class:`LoopState` (read it, don't modify it); a true
            return value stops the loop there (``ChainRun.stopped_early``).
        observe: ``{name: target}`` of extra datasets whose loss is recorded at every draw (see
            :class:`Observed`); their traces come back in ``ChainRun.observed``.

    Example:
        >>> from slt_basins.samplers import SGLD
        >>> from slt_basins.targets import PotentialTarget
        >>> t = PotentialTarget(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64))
        >>> h = Hyper(1e-2, 1.0, 10.0, torch.zeros(1, dtype=torch.float64))
        >>> run = run_chains(SGLD, t, h, [0, 1], num_burnin=10, num_draws=20, seed=0,
        ...                  divergence_bound=1e3, progress=False)
        >>> run.llc.shape, run.steps_done
        ((2, 20), 30)
    """
    chains, d = len(chain_ids), hyper.w_star.numel()
    streams = [ChainStream(seed, c, hyper.w_star.device, hyper.w_star.dtype) for c in chain_ids]
    if chain_group is not None:
        target = GroupedTarget(target, chain_group)
    total = num_burnin + num_draws
    loop = LoopState.start(kernel, target, hyper, chains, num_draws)
    loop.probe_at = probe_steps(num_burnin, num_draws, chains, d)
    observed = Observed(observe or {}, seed, chain_ids, hyper.w_star.device, hyper.w_star.dtype)
    loop.observe(observed, num_draws)
    interrupted, stopped, resumed_from, fp, saved_t = False, False, None, None, None
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        fp = ckpt.fingerprint(sampler=kernel.name, seed=seed, chain_ids=chain_ids, step_size=hyper.step_size,
                              nbeta=hyper.nbeta, localization=hyper.localization, num_draws=num_draws,
                              num_burnin=num_burnin, d=d, w_star=hyper.w_star, divergence_bound=divergence_bound,
                              chain_group=chain_group,
                              extra=dict(fingerprint or {}, observe=observed.names) if observed else fingerprint)
        saved = ckpt.load(checkpoint, fp)
        if saved is not None:
            loop.restore(saved, streams, kernel, checkpoint, observed)
            resumed_from = loop.t
        snap, saved_t = loop.snapshot(streams, observed), loop.t
    sync = LocalSync() if sync is None else sync
    sync.start(loop.t)
    blk = block_size(d, total)
    bar = tqdm(total=total, initial=loop.t, desc=desc, unit="step", disable=not progress, leave=False)
    try:
        while loop.t < total and sync.any_alive(loop.t, loop.alive):
            k = min(blk, total - loop.t)
            loop.advance(kernel, target, hyper, streams, k, num_burnin, divergence_bound, observed)
            if checkpoint is not None:
                snap = loop.snapshot(streams, observed)
                if loop.t - saved_t >= checkpoint_every:
                    ckpt.save(checkpoint, snap.payload(fp, num_burnin))
                    saved_t = loop.t
            bar.update(k)
            if progress:
                running = loop.running_llc(num_burnin)
                bar.set_postfix_str("burn-in" if running is None else f"λ̂ ≈ {running:.4g}")
            if on_block is not None and on_block(loop.t, loop):
                stopped = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if checkpoint is not None and (snap.t > saved_t or not os.path.exists(checkpoint)):
        ckpt.save(checkpoint, snap.payload(fp, num_burnin))
        saved_t = snap.t
    return loop.result(num_burnin, interrupted=interrupted, stopped_early=stopped, resumed_from=resumed_from,
                       checkpoint_path=checkpoint, checkpoint_step=saved_t)
