"""The settings of one LLC run as one frozen, validated record: :class:`LLCOptions`.

Every front door (:func:`~slt_basins.estimate_llc`, :func:`~slt_basins.estimate_llc_potential`,
calibration, multi-temperature sweeps) builds an :class:`LLCOptions` and hands it down; nothing
below reads a loose dict of settings or a function signature. Construction validates every field
(with an error that says what to change), so a record that exists is a valid one.

Example:
    >>> o = LLCOptions(num_chains=8, step_size=1e-3)
    >>> o.replace(seed=3).seed, o.num_chains
    (3, 8)
    >>> LLCOptions(num_draws=2)
    Traceback (most recent call last):
    ...
    ValueError: num_draws must be an integer ≥ 4; got 2.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np

from .samplers import Kernel, get_kernel

__all__ = ["LLCOptions", "MODEL_DEFAULTS", "POTENTIAL_DEFAULTS", "default_nbeta", "default_divergence_bound",
           "check_positive", "check_count"]


def default_nbeta(n: int) -> float:
    """nβ = n / log n, the WBIC temperature β* = 1/log n times the sample size n.

    At this temperature E_w[nβ·(L_n(w) − L_n(w*))] → λ as n → ∞ (Watanabe 2013, "A widely
    applicable Bayesian information criterion", JMLR 14), which is why it is the standard choice for
    the LLC. n is the number of training examples (not the batch size).

    >>> round(default_nbeta(10_000), 1)
    1085.7
    """
    if n < 2:
        raise ValueError(f"nβ = n/log n needs n ≥ 2 training examples; got n = {n}. Pass nbeta explicitly.")
    return n / math.log(n)


def default_divergence_bound(d: int) -> float:
    """10·d + 100: far above any honest draw nβ·(L(w_t) − L(w*)), since λ ≤ d/2.

    >>> default_divergence_bound(4)
    140.0
    """
    return 10.0 * d + 100.0


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (≥ 0 with ``allow_zero``), or an error naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}.")
    return v


def check_count(name: str, value, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``, or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class LLCOptions:
    """Settings of one LLC estimate (see :func:`slt_basins.estimate_llc` for what each one means).

    Units: ``step_size`` ε is in squared parameter units (the variance of the injected noise per
    step); ``localization`` γ in inverse squared parameter units; ``nbeta`` is dimensionless (the
    sample size times the inverse temperature). ``step_size="auto"`` asks for calibration and
    ``nbeta=None`` for n/log n; both are resolved before sampling.

    Fields that only models use (``batch_size``, ``params``, ``device``, ``vectorize``) are ignored
    for a potential.
    """

    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int = 500
    step_size: Union[float, str] = 1e-4
    localization: float = 100.0
    nbeta: Optional[float] = None
    sampler: Union[str, Kernel] = "sgld"
    seed: int = 0
    divergence_bound: Optional[float] = None
    check_stability: bool = True
    progress: bool = True
    distributed: bool = False
    chain_group: Optional[int] = None
    checkpoint: Optional[str] = None
    checkpoint_every: Optional[int] = None
    batch_size: Optional[int] = None
    params: Union[None, str, Iterable[str], Callable[[str], bool], dict] = None
    device: Any = None
    vectorize: bool = True
    callback: Optional[Callable] = None
    # internal (not an argument of estimate_llc): MALA-probe proposals per chain, None for
    # checks.MALA_PROPOSALS; calibration cells set more (calibration.CALIBRATION_PROPOSALS)
    probe_proposals: Optional[int] = dataclasses.field(default=None, metadata={"internal": True})

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalise in place once)
        set_("num_chains", check_count("num_chains", self.num_chains, 1))
        set_("num_draws", check_count("num_draws", self.num_draws, 4))
        set_("num_burnin", check_count("num_burnin", self.num_burnin, 0))
        set_("seed", check_count("seed", self.seed, 0))
        if isinstance(self.step_size, str):
            if self.step_size != "auto":
                raise ValueError(f"step_size must be a positive number or 'auto'; got {self.step_size!r}.")
        else:
            set_("step_size", check_positive("step_size", self.step_size))
        set_("localization", check_positive("localization", self.localization, allow_zero=True))
        if self.nbeta is not None:
            set_("nbeta", check_positive("nbeta", self.nbeta))
        if self.divergence_bound is not None:
            set_("divergence_bound", check_positive("divergence_bound", self.divergence_bound))
        get_kernel(self.sampler)  # unknown sampler names fail here, before any work
        for flag in ("check_stability", "progress", "distributed", "vectorize"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False; got {getattr(self, flag)!r}.")
        if self.batch_size is not None:
            set_("batch_size", check_count("batch_size", self.batch_size, 1))
        if self.probe_proposals is not None:
            set_("probe_proposals", check_count("probe_proposals", self.probe_proposals, 1))
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be a function of a slt_basins.sampling.BlockInfo; got {self.callback!r}.")
        if self.callback is not None and self.distributed:
            raise ValueError("callback= is not supported with distributed=True (each process would stop on its "
                             "own); log from one process without it.")
        self._check_scale()

    def _check_scale(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.chain_group is not None:
            set_("chain_group", check_count("chain_group", self.chain_group, 1))
            if self.chain_group > self.num_chains:
                raise ValueError(f"chain_group={self.chain_group} is larger than num_chains={self.num_chains}; use "
                                 "at most num_chains (or None to evaluate all chains of a process at once).")
        if self.checkpoint is None:
            if self.checkpoint_every is not None:
                raise ValueError("checkpoint_every was given without checkpoint: pass checkpoint='path/to/file' too.")
            return
        if not isinstance(self.checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (str or os.PathLike); got "
                            f"{type(self.checkpoint).__name__}.")
        set_("checkpoint", os.fspath(self.checkpoint))
        folder = os.path.dirname(os.path.abspath(self.checkpoint))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder of checkpoint={self.checkpoint!r} does not exist ({folder}); create it first.")
        if self.checkpoint_every is not None:
            set_("checkpoint_every", check_count("checkpoint_every", self.checkpoint_every, 1))

    # -- derived values ---------------------------------------------------------------------------------
    @property
    def kernel(self) -> Kernel:
        """The sampler as a :class:`~slt_basins.samplers.Kernel`."""
        return get_kernel(self.sampler)

    @property
    def every(self) -> int:
        """Steps between checkpoints (1000 unless ``checkpoint_every`` is given)."""
        return 1000 if self.checkpoint_every is None else self.checkpoint_every

    def replace(self, **changes) -> "LLCOptions":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The fields as a plain dict (the kernel by name), e.g. for a result's ``config``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["sampler"] = self.kernel.name
        params = out["params"]
        if isinstance(params, dict):  # masks: record what they select, not the tensors
            out["params"] = {k: f"mask[{int(m.sum())} of {m.numel()}]" for k, m in params.items()}
        elif params is not None and not isinstance(params, (list, tuple, str)):
            out["params"] = repr(params)
        out["device"] = None if self.device is None else str(self.device)
        out["callback"] = None if self.callback is None else getattr(self.callback, "__name__", repr(self.callback))
        return out


def user_options() -> list[str]:
    """The names of the :class:`LLCOptions` fields that :func:`~slt_basins.estimate_llc` takes as
    arguments: all but the internal ones (set by the package itself, e.g. by calibration cells).

    >>> "step_size" in user_options(), "probe_proposals" in user_options()
    (True, False)
    """
    return [f.name for f in dataclasses.fields(LLCOptions) if not f.metadata.get("internal")]


MODEL_DEFAULTS = LLCOptions()
"""Defaults of :func:`~slt_basins.estimate_llc`: γ = 100, as in Lau et al.'s MNIST experiments."""

POTENTIAL_DEFAULTS = LLCOptions(localization=1.0)
"""Defaults of :func:`~slt_basins.estimate_llc_potential`: γ = 1 (the toys are O(1)-scaled)."""
