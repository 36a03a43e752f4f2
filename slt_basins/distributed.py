"""Spreading chains over processes with ``torch.distributed`` (one process per GPU, or CPU processes).

With ``distributed=True``, :func:`slt_basins.estimate_llc` and
:func:`slt_basins.estimate_llc_potential` give each rank a contiguous block of the chain ids
0..num_chains−1 (:func:`split_chain_ids`), run the one chain loop on it, and gather every rank's
traces and final states to every rank (:func:`gather_run`), so that all ranks return the same
:class:`~slt_basins.result.LLCResult`. Chain c's random numbers depend only on (seed, c), so the
result does not depend on the number of processes (bitwise on CPU with one intra-op thread per
process; see :class:`slt_basins.chains.GroupedTarget` for several threads and GPUs).

The process group is the caller's: run the script under ``torchrun`` and call
``torch.distributed.init_process_group("gloo")`` (CPU) or ``("nccl")`` (GPUs; first
``torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))`` and move the model to that device).
:func:`init_from_env` does exactly this for the command line.

Example (``torchrun --nproc_per_node=2 script.py``)::

    import torch.distributed as dist
    from slt_basins import estimate_llc_potential
    dist.init_process_group("gloo")
    r = estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(3, dtype=torch.float64), nbeta=100.0,
                               num_chains=8, distributed=True)
    if dist.get_rank() == 0:
        print(r)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from .chains import ChainRun, LocalSync

__all__ = ["DistContext", "split_chain_ids", "context", "RankSync", "gather_run", "init_from_env",
           "quiet_unless_rank0"]

_HOW = ("run the script under torchrun (e.g. `torchrun --nproc_per_node=2 script.py`, or "
        "`python -m torch.distributed.run ...`) and call torch.distributed.init_process_group('gloo') on CPU, or "
        "torch.cuda.set_device(int(os.environ['LOCAL_RANK'])) then init_process_group('nccl') on GPUs, before it")


class DistContext(NamedTuple):
    """This process's place in the run: its rank, the world size, the backend and its chain ids.

    >>> DistContext(rank=1, world_size=2, backend="gloo", chain_ids=[2, 3]).chain_ids
    [2, 3]
    """

    rank: int
    world_size: int
    backend: str
    chain_ids: list


def split_chain_ids(num_chains: int, world_size: int, rank: int, chain_group: Optional[int] = None) -> list[int]:
    """Rank ``rank``'s contiguous block of chain ids 0..num_chains−1 (earlier ranks get the extra ones).

    With ``chain_group`` = G, whole groups {0..G−1}, {G..2G−1}, ... are split instead, so that every chain
    is evaluated in the same group whatever the world size.

    >>> [split_chain_ids(5, 2, r) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    >>> [split_chain_ids(5, 2, r, chain_group=2) for r in range(2)]
    [[0, 1, 2, 3], [4]]
    """
    g = 1 if chain_group is None else int(chain_group)
    units = -(-num_chains // g)
    q, extra = divmod(units, world_size)
    start = rank * q + min(rank, extra)
    stop = start + q + (1 if rank < extra else 0)
    return list(range(start * g, min(stop * g, num_chains)))


def context(num_chains: int, chain_group: Optional[int], device: torch.device) -> DistContext:
    """Check that a usable process group exists for ``num_chains`` chains on ``device``; this rank's place.

    Raises ``ValueError`` (saying how to launch) without an initialised process group, with more
    processes than chains (or chain groups), or with NCCL and ``device`` not this rank's GPU.

    Example (a one-process gloo group; under torchrun the group has one process per launch slot):
    >>> import torch.distributed as dist
    >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # 1 process
    >>> context(3, None, torch.device("cpu"))
    DistContext(rank=0, world_size=1, backend='gloo', chain_ids=[0, 1, 2])
    >>> dist.destroy_process_group()
    >>> context(3, None, torch.device("cpu"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: distributed=True needs an initialised torch.distributed process group: ...
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("distributed=True needs torch.distributed, which this PyTorch build lacks.")
    if not dist.is_initialized():
        raise ValueError(f"distributed=True needs an initialised torch.distributed process group: {_HOW}. "
                         "Without torchrun, use distributed=False.")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = 1 if chain_group is None else int(chain_group)
    units = -(-num_chains // g)
    if world > units:
        if chain_group is None:
            raise ValueError(f"distributed=True over {world} processes but num_chains={num_chains}: every process needs "
                             f"at least one chain. Raise num_chains to at least {world}, or use fewer processes "
                             f"(--nproc_per_node).")
        raise ValueError(f"distributed=True over {world} processes but num_chains={num_chains} in groups of "
                         f"chain_group={g} make only {units} group(s): every process needs at least one group. Raise "
                         f"num_chains to at least {world * g}, lower chain_group, or use fewer processes.")
    backend = str(dist.get_backend())
    if backend == "nccl":
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"the NCCL backend gathers on GPUs, but this rank's w* is on {device}: call "
                             "torch.cuda.set_device(int(os.environ['LOCAL_RANK'])), move the model (or w_star) to "
                             "that GPU, or use the gloo backend for CPU processes.")
        if device.index is not None and device.index != torch.cuda.current_device():
            raise ValueError(f"this rank's w* is on {device} but its current CUDA device is "
                             f"cuda:{torch.cuda.current_device()}; call torch.cuda.set_device({device.index}) (one GPU "
                             "per rank, from LOCAL_RANK) before estimating.")
    return DistContext(rank, world, backend, split_chain_ids(num_chains, world, rank, chain_group))


def _flag_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


class RankSync(LocalSync):
    """Early stop decided by all ranks together: the loop ends when no chain on any rank is alive.

    One all-reduce of a flag per block boundary (there is already one host synchronisation per block).
    When ranks resume from checkpoints of different steps, the ranks behind catch up without
    collectives until they reach the furthest rank's step, so that every rank makes the same
    collective calls.

    Example:
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # 1 process
        >>> sync = RankSync(context(2, None, torch.device("cpu")))
        >>> sync.start(0)
        >>> sync.any_alive(10, torch.tensor([False, True])), sync.any_alive(20, torch.tensor([False, False]))
        (True, False)
        >>> dist.destroy_process_group()
    """

    def __init__(self, ctx: DistContext):
        self.ctx, self.sync_from = ctx, 0

    def _reduce_max(self, value: int) -> int:
        import torch.distributed as dist

        x = torch.tensor([int(value)], dtype=torch.int64, device=_flag_device(self.ctx))
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return int(x.item())

    def start(self, t: int) -> None:
        """Agree on the furthest starting step of all ranks (a collective call on every rank)."""
        self.sync_from = self._reduce_max(t)

    def any_alive(self, t: int, alive: torch.Tensor) -> bool:
        """Whether a chain is alive on any rank at step ``t`` (True, without a collective, while
        this rank catches up with the furthest rank's starting step)."""
        if t < self.sync_from:
            return True
        return bool(self._reduce_max(int(bool(alive.any()))))


def gather_run(run: ChainRun, extra: Any, ctx: DistContext) -> tuple[ChainRun, list]:
    """Every rank's :class:`ChainRun` concatenated in rank (= chain id) order, on every rank, with the
    observed datasets' traces (``observe=``) where every rank has them.

    ``extra`` is any picklable per-rank value; the list of all ranks' values comes back with it.
    Final states return to this rank's device. Traces are cut to the fewest draws any rank kept.

    Example (one process; with W processes the traces of all W ranks come back on each):
    >>> import torch.distributed as dist
    >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # 1 process
    >>> from slt_basins.chains import run_chains
    >>> from slt_basins.samplers import SGLD, Hyper
    >>> from slt_basins.targets import PotentialTarget
    >>> w0 = torch.zeros(1, dtype=torch.float64)
    >>> ctx = context(2, None, w0.device)
    >>> run = run_chains(SGLD, PotentialTarget(lambda w: (w ** 2).sum(1), w0), Hyper(1e-2, 1.0, 10.0, w0),
    ...                  ctx.chain_ids, num_burnin=5, num_draws=10, seed=0, divergence_bound=1e3, progress=False)
    >>> out, extras = gather_run(run, {"wall_s": 0.1}, ctx)
    >>> out.llc.shape, extras
    ((2, 10), [{'wall_s': 0.1}])
    >>> dist.destroy_process_group()
    """
    import torch.distributed as dist

    mine = dict(loss=run.loss, llc=run.llc, diverged_at=run.diverged_at, steps_done=run.steps_done,
                accept=run.accept, state=[f.detach().cpu() for f in run.final_state],
                resumed_from=run.resumed_from, checkpoint_step=run.checkpoint_step, extra=extra,
                probe_w=None if run.probe_w is None else run.probe_w.detach().cpu(), observed=run.observed)
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, mine)
    kept = min(p["llc"].shape[1] for p in parts)
    device = run.final_w.device
    state = type(run.final_state)(*[torch.cat([p["state"][i] for p in parts]).to(device)
                                    for i in range(len(run.final_state))])
    resumed = [p["resumed_from"] for p in parts if p["resumed_from"] is not None]
    saved = [p["checkpoint_step"] for p in parts if p["checkpoint_step"] is not None]
    probes = [p["probe_w"] for p in parts]  # the MALA probe's kept positions, where every rank kept as many
    same = all(q is not None for q in probes) and len({q.shape[0] for q in probes}) == 1
    out = ChainRun(
        loss=np.concatenate([p["loss"][:, :kept] for p in parts]),
        llc=np.concatenate([p["llc"][:, :kept] for p in parts]),
        diverged_at=np.concatenate([p["diverged_at"] for p in parts]),
        steps_done=max(p["steps_done"] for p in parts),
        final_w=state[0], final_state=state, interrupted=False,
        accept=None if any(p["accept"] is None for p in parts) else np.concatenate([p["accept"] for p in parts]),
        resumed_from=min(resumed) if resumed else None,
        checkpoint_path=run.checkpoint_path, checkpoint_step=min(saved) if saved else None,
        probe_w=torch.cat(probes, dim=1).to(device) if same else None,
        observed=None if any(p["observed"] is None for p in parts) else {  # (datasets, chains, draws) each
            k: np.concatenate([p["observed"][k][:, :, :kept] for p in parts], axis=1) for k in ("loss", "llc")},
    )
    return out, [p["extra"] for p in parts]


@contextlib.contextmanager
def quiet_unless_rank0(ctx: Optional[DistContext]):
    """Silence warnings on ranks other than 0 (every rank computes the same result and would repeat them).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     with quiet_unless_rank0(DistContext(1, 2, "gloo", [1])):
    ...         warnings.warn("rank 1 says this too")
    ...     with quiet_unless_rank0(DistContext(0, 2, "gloo", [0])):
    ...         warnings.warn("rank 0 says this")
    >>> [str(w.message) for w in caught]
    ['rank 0 says this']
    """
    if ctx is None or ctx.rank == 0:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def init_from_env() -> tuple[int, int, torch.device]:
    """Initialise the default process group from torchrun's environment: NCCL with one GPU per rank
    (``LOCAL_RANK``) when CUDA is available, gloo on CPU otherwise. Returns (rank, world size, device).
    An already initialised group is used as it is.

    Outside torchrun (no ``RANK``, ``WORLD_SIZE`` in the environment) it says how to launch:

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"PATH": os.environ.get("PATH", "")}, clear=True):
    ...     init_from_env()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --distributed needs the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, ...): ...
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("--distributed needs torch.distributed, which this PyTorch build lacks.")
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ValueError("--distributed needs the environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, ...): "
                             "run e.g. `torchrun --nproc_per_node=2 -m slt_basins.cli reproduce --distributed`.")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if str(dist.get_backend()) == "nccl" else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device
