"""Checkpoint files of the chain loop: pure helpers to fingerprint, write, read and name them.

:func:`slt_basins.chains.run_chains` (``checkpoint=path``) saves at block boundaries everything
it needs to continue bit-identically: the kernel state, every chain's random streams (generator
states and the leftover minibatch permutation), the traces so far, the step counter, which chains
are alive and when the others diverged, and the acceptance sums. This module holds the file side:

* :func:`fingerprint` describes the settings a checkpoint belongs to (seed, chain ids, sampler,
  ε, nβ, γ, draws, burn-in, d, a SHA-256 of w*, ...); :func:`load` refuses a file whose
  fingerprint differs, naming each differing setting;
* :func:`save` writes atomically (a temporary file in the same folder, then ``os.replace``), so an
  interruption or a crash while writing leaves the previous checkpoint intact;
* :func:`rank_path` names the file of one rank in a distributed run (``path.rank{r}of{W}``), and
  :func:`check_layout` refuses to start fresh next to files written with another world size.

Files are read with ``torch.load(..., weights_only=True)``: they hold only tensors, numbers,
strings, lists and dicts.

Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> save(p, {"fingerprint": {"seed": 0}, "t": 200})
    >>> load(p, {"seed": 0})["t"]
    200
    >>> try:
    ...     load(p, {"seed": 1})
    ... except CheckpointMismatchError as e:
    ...     print("seed: 0 in the file, 1 now" in str(e))
    True
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from typing import Any, Optional

import torch

from .errors import CheckpointMismatchError

__all__ = ["CheckpointMismatchError", "fingerprint", "differences", "tensor_digest", "save", "load", "rank_path",
           "check_layout", "VERSION"]

VERSION = 1




def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and values (on the CPU), as hex.

    >>> tensor_digest(torch.zeros(2)) == tensor_digest(torch.zeros(2)), len(tensor_digest(torch.zeros(2)))
    (True, 64)
    >>> tensor_digest(torch.zeros(2)) == tensor_digest(torch.zeros(2, dtype=torch.float64))
    False
    """
    a = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{a.dtype}{tuple(a.shape)}".encode())
    h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(*, sampler: str, seed: int, chain_ids, step_size: float, nbeta: float, localization: float,
                num_draws: int, num_burnin: int, d: int, w_star: torch.Tensor, divergence_bound: float,
                chain_group: Optional[int] = None, extra: Optional[dict] = None) -> dict:
    """The settings a checkpoint belongs to, as a dict of plain values; resuming requires equality.

    ``extra`` adds caller-side settings (e.g. the batch size, loss and data size of a model run).

    >>> fp = fingerprint(sampler="sgld", seed=0, chain_ids=[0, 1], step_size=1e-3, nbeta=100.0,
    ...                  localization=1.0, num_draws=200, num_burnin=100, d=2, w_star=torch.zeros(2),
    ...                  divergence_bound=120.0, extra={"batch_size": 50})
    >>> fp["chain_ids"], fp["dtype"], fp["batch_size"]
    ([0, 1], 'torch.float32', 50)
    """
    fp = dict(sampler=str(sampler), seed=int(seed), chain_ids=[int(c) for c in chain_ids],
              step_size=float(step_size), nbeta=float(nbeta), localization=float(localization),
              num_draws=int(num_draws), num_burnin=int(num_burnin), d=int(d), dtype=str(w_star.dtype),
              w_star_sha256=tensor_digest(w_star), divergence_bound=float(divergence_bound),
              chain_group=None if chain_group is None else int(chain_group))
    for k, v in (extra or {}).items():
        fp.setdefault(k, v)
    return fp


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def differences(saved: dict, now: dict) -> list[str]:
    """``"key: A in the file, B now"`` for every setting that differs.

    >>> differences({"seed": 0, "d": 3}, {"seed": 1, "d": 3, "batch_size": 50})
    ["batch_size: '<absent>' in the file, 50 now", 'seed: 0 in the file, 1 now']
    """
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k, "<absent>"), now.get(k, "<absent>")
        if a != b:
            out.append(f"{k}: {_short(a)} in the file, {_short(b)} now")
    return out


def save(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: to ``path + '.tmp<pid>'`` first, then ``os.replace``.

    The file holds ``payload`` plus ``version`` (:data:`VERSION`).

    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> save(p, {"fingerprint": {"seed": 0}, "t": 200})
    >>> sorted(torch.load(p, weights_only=True)), os.listdir(os.path.dirname(p))
    (['fingerprint', 't', 'version'], ['run.ckpt'])
    """
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    payload = dict(payload, version=VERSION)
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str, expected: dict) -> Optional[dict]:
    """The checkpoint at ``path``, or None when there is none; refuses other settings or versions.

    Raises :class:`CheckpointMismatchError` for an unreadable file, another format version, or a
    fingerprint that differs from ``expected`` (each differing setting named).

    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> load(p, {"seed": 0}) is None  # no file yet: start afresh
    True
    >>> save(p, {"fingerprint": {"seed": 0}, "t": 200})
    >>> load(p, {"seed": 0})["t"]
    200
    >>> load(p, {"seed": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slt_basins.errors.CheckpointMismatchError: the checkpoint ... other settings, so it cannot be resumed: seed: 0 in the file, 1 now. ...
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointMismatchError(
            f"could not read the checkpoint {path} ({type(e).__name__}: {e}); delete it, or pass another "
            "checkpoint path, to start afresh.") from e
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        got = payload.get("version") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointMismatchError(
            f"{path} is not a slt_basins chain checkpoint of version {VERSION} (found {got!r}); delete it, or "
            "pass another checkpoint path, to start afresh.")
    diff = differences(payload.get("fingerprint", {}), expected)
    if diff:
        raise CheckpointMismatchError(
            f"the checkpoint {path} was written by a run with other settings, so it cannot be resumed: "
            + "; ".join(diff) + ". Rerun with the settings in the file to resume it, or delete the file (or pass "
            "another checkpoint path) to start afresh.")
    return payload


def rank_path(path: str, rank: int, world_size: int) -> str:
    """The checkpoint file of ``rank`` in a run over ``world_size`` processes: ``path.rank{r}of{W}``.

    >>> rank_path("run.ckpt", 1, 4)
    'run.ckpt.rank1of4'
    """
    return f"{os.fspath(path)}.rank{int(rank)}of{int(world_size)}"


def check_layout(path: str, world_size: Optional[int]) -> None:
    """Refuse to start next to checkpoint files of the same path written with another world size.

    ``world_size=None`` is a single-process run (the file is ``path`` itself); otherwise the files are
    ``path.rank{r}of{world_size}``. Files for another layout would otherwise be silently ignored and the
    run would start from step 0.

    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> save(rank_path(p, 0, 2), {"t": 0}); save(rank_path(p, 1, 2), {"t": 0})
    >>> check_layout(p, 2)  # the same layout: fine
    >>> check_layout(p, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slt_basins.errors.CheckpointMismatchError: checkpoint files ...run.ckpt.rank*of2 from a run over 2 processes exist, but this run is not distributed. ...
    """
    path = os.fspath(path)
    pat = re.compile(re.escape(os.path.basename(path)) + r"\.rank(\d+)of(\d+)$")
    found = set()
    for f in glob.glob(glob.escape(path) + ".rank*of*"):
        m = pat.match(os.path.basename(f))
        if m:
            found.add(int(m.group(2)))
    found.discard(world_size)
    single = os.path.exists(path)
    if world_size is None and found:
        raise CheckpointMismatchError(
            f"checkpoint files {path}.rank*of{sorted(found)[0]} from a run over {sorted(found)[0]} processes exist, "
            f"but this run is not distributed. Resume under torchrun with --nproc_per_node={sorted(found)[0]} and "
            "distributed=True, or delete those files (or pass another checkpoint path) to start afresh.")
    if world_size is not None and (found or single):
        what = f"{path} from a single-process run" if single else \
            f"{path}.rank*of{sorted(found)[0]} from a run over {sorted(found)[0]} processes"
        how = "without torchrun and distributed=False" if single else f"with --nproc_per_node={sorted(found)[0]}"
        raise CheckpointMismatchError(
            f"checkpoint files {what} exist, but this run has {world_size} processes. Resume {how}, or delete those "
            "files (or pass another checkpoint path) to start afresh.")
