"""The shared tail of every LLC estimate: checks, the chain loop, and the summary with its warnings.

:func:`sample` takes a built target (:class:`~slt_basins.targets.ModelTarget` or
:class:`~slt_basins.targets.PotentialTarget`) and a validated :class:`~slt_basins.options.LLCOptions`
with a numeric step size, and returns an :class:`~slt_basins.result.LLCResult`. The front doors
(:mod:`slt_basins.llc`) and calibration (:mod:`slt_basins.calibration`) both call it.

The estimate (Lau et al. 2023, arXiv:2308.12108) is

    λ̂ = nβ · (mean over post-burn-in draws and non-diverged chains of L_B(w_t) − L_B(w*)),

with its Monte Carlo standard error from ArviZ (autocorrelation-aware, across chains).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple, Optional

import numpy as np

from . import checkpoint as _ckpt
from . import checks as _checks
from . import diagnostics
from . import distributed as _dist
from .chains import ChainRun, run_chains
from .errors import LLCWarning, SamplerDivergedError, warn
from .options import LLCOptions, default_divergence_bound, default_nbeta
from .result import Checks, LLCResult
from .samplers import Hyper, Kernel

__all__ = ["sample", "Plan", "plan"]

# Facts about the target (from ``describe()``) that a resumed checkpoint must match, beyond those the loop adds.
_FINGERPRINT_KEYS = ("kind", "loss", "n", "batch_size", "params", "vectorized")


class Plan(NamedTuple):
    """The resolved run: kernel, hyperparameters, divergence bound, and how the chains are spread
    over processes (``dist``), grouped and checkpointed (the checkpoint path is this rank's file)."""

    kernel: Kernel
    hyper: Hyper
    divergence_bound: float
    dist: Optional[_dist.DistContext]
    chain_ids: list
    checkpoint: Optional[str]


def plan(target, opts: LLCOptions) -> Plan:
    """Resolve nβ (n/log n by default), the divergence bound and the process layout of a run."""
    if isinstance(opts.step_size, str):
        raise ValueError("sample() needs a numeric step_size; step_size='auto' is resolved by the front doors.")
    if opts.nbeta is None and target.n is None:
        raise ValueError("nbeta is required for a potential (there is no sample size n to derive it from).")
    nbeta = default_nbeta(target.n) if opts.nbeta is None else opts.nbeta
    bound = default_divergence_bound(target.d) if opts.divergence_bound is None else opts.divergence_bound
    ctx = _dist.context(opts.num_chains, opts.chain_group, target.w_star.device) if opts.distributed else None
    path = opts.checkpoint
    if path is not None:
        _ckpt.check_layout(path, None if ctx is None else ctx.world_size)
        if ctx is not None:
            path = _ckpt.rank_path(path, ctx.rank, ctx.world_size)
    ids = list(range(opts.num_chains)) if ctx is None else list(ctx.chain_ids)
    hyper = Hyper(opts.step_size, opts.localization, nbeta, target.w_star)
    return Plan(opts.kernel, hyper, bound, ctx, ids, path)


def _pre_run(target, p: Plan, opts: LLCOptions, checks: Checks):
    """Gradient at w* and (unpreconditioned kernels) the stability at w*; the check functions or None."""
    fns = None
    if opts.check_stability and p.kernel.stability_divisor is not None:
        fns = _checks.measure(checks, "stability", lambda: target.check_fns(opts.seed))
    if fns is not None and p.kernel.preconditioner is None:
        hr = _checks.measure(checks, "stability",
                             lambda: _checks.step_stability(p.kernel, p.hyper, fns[0], p.hyper.w_star))
        if hr is None:
            fns = None
        else:
            checks.hessian_max_abs_eig, checks.step_stability = hr
    h = checks.hessian_max_abs_eig
    floor = target.rounding_floor(h if h is not None and math.isfinite(h) else 1.0)
    _checks.gradient_checks(checks, target.grad_star, p.hyper.nbeta, p.hyper.localization, floor)
    return fns


def _end_stability(p: Plan, run: ChainRun, grad_fn, checks: Checks) -> list:
    """(h, ratio) at every non-diverged chain's final position (this rank's chains)."""
    alive = np.flatnonzero(run.diverged_at < 0)
    if grad_fn is None or not len(alive):
        return []
    pre = p.kernel.preconditioner(run.final_state) if p.kernel.preconditioner is not None else None
    ends = _checks.measure(checks, "stability", lambda: [
        _checks.step_stability(p.kernel, p.hyper, grad_fn, run.final_w[i], None if pre is None else pre[i])
        for i in alive])
    return ends or []


def sample(target, opts: LLCOptions) -> LLCResult:
    """Run the checks and the chains of ``opts`` on ``target`` and summarise them (with warnings).

    Raises:
        SamplerDivergedError: every chain diverged, or too few draws were taken for an error bar.

    Example:
        >>> import torch
        >>> from slt_basins.targets import PotentialTarget
        >>> o = LLCOptions(nbeta=100.0, step_size=1e-3, localization=1.0, num_draws=2000, progress=False)
        >>> r = sample(PotentialTarget.build(lambda w: (w ** 2).sum(1), [0.0], o), o)
        >>> abs(r.llc_mean - 0.5) < 5 * r.mcse + 0.01   # a regular 1-d minimum: λ = 1/2
        True
    """
    with target.evaluation():
        return _sample(target, opts)


def _sample(target, opts: LLCOptions) -> LLCResult:
    p = plan(target, opts)
    checks = Checks()
    with _dist.quiet_unless_rank0(p.dist):
        if hasattr(target, "check_vectorized"):
            target.check_vectorized(opts.num_chains)
    fns = _pre_run(target, p, opts, checks)
    t0 = time.perf_counter()
    run = run_chains(p.kernel, target, p.hyper, p.chain_ids, num_burnin=opts.num_burnin, num_draws=opts.num_draws,
                     seed=opts.seed, divergence_bound=p.divergence_bound,
                     progress=opts.progress and (p.dist is None or p.dist.rank == 0), desc=p.kernel.name.upper(),
                     chain_group=opts.chain_group, checkpoint=p.checkpoint, checkpoint_every=opts.every,
                     fingerprint={k: v for k, v in target.describe().items() if k in _FINGERPRINT_KEYS},
                     sync=None if p.dist is None else _dist.RankSync(p.dist))
    wall = time.perf_counter() - t0
    ends = _end_stability(p, run, None if fns is None else fns[0], checks)
    chain_ids = p.chain_ids
    if p.dist is not None and not run.interrupted:
        run, extras = _dist.gather_run(run, (ends, list(checks.failures), wall), p.dist)
        ends = [e for x in extras for e in x[0]]
        checks.failures = list({f: None for x in extras for f in x[1]})
        wall, chain_ids = max(x[2] for x in extras), list(range(opts.num_chains))
    checks.wall_time_s, checks.resumed_from_step = wall, run.resumed_from
    if ends:
        checks.hessian_max_abs_eig_end, checks.step_stability_end = max(ends, key=lambda e: e[1])
    _acceptance(p, run, fns, checks, opts.seed)
    config = dict(opts.as_dict(), **target.describe(), nbeta=p.hyper.nbeta, chain_ids=chain_ids,
                  divergence_bound=p.divergence_bound)
    if p.dist is not None:
        config["world_size"] = p.dist.world_size
    with _dist.quiet_unless_rank0(p.dist):
        return summarize(run, p, config, checks, target.init_loss)


def _acceptance(p: Plan, run: ChainRun, fns, checks: Checks, seed: int) -> None:
    alive = np.flatnonzero(run.diverged_at < 0)
    if run.accept is not None:
        checks.mala_accept = float(run.accept[alive].mean()) if len(alive) else None
    elif fns is not None and p.kernel.langevin:
        checks.mala_accept = _checks.measure(checks, "mala_probe", lambda: _checks.mala_probe(
            p.kernel, run.final_w, run.final_state, alive, p.hyper, fns[1], seed=seed))


def _interrupted_note(run: ChainRun, config: dict) -> str:
    ids = config["chain_ids"]
    note = ""
    if config.get("world_size"):
        note = (f" It holds this process's chains {ids[0]}–{ids[-1]} only: nothing is gathered after an interrupt, "
                "since the processes stop at different steps.")
    if run.checkpoint_path is not None and run.checkpoint_step is not None:
        note += (f" The chains' state at step {run.checkpoint_step} is saved in {run.checkpoint_path}: run again "
                 "with the same settings to resume from there.")
    return (f"sampling was interrupted after {run.steps_done} steps; the result uses the {run.llc.shape[1]} draws "
            f"taken so far.{note}")


def summarize(run: ChainRun, p: Plan, config: dict, checks: Checks, init_loss: float) -> LLCResult:
    """Turn raw traces into an :class:`LLCResult`, excluding diverged chains, and issue the warnings
    of :data:`slt_basins.checks.RULES`."""
    chain_ids = list(config["chain_ids"])
    ok = run.diverged_at < 0
    bad = [chain_ids[i] for i in np.flatnonzero(~ok)]
    checks.diverged_at_step = {chain_ids[i]: int(run.diverged_at[i]) for i in np.flatnonzero(~ok)}
    if run.interrupted:
        warn(_interrupted_note(run, config), LLCWarning)
    ev = _checks.Evidence(math.nan, math.nan, int(config["d"]), checks, p.kernel, p.hyper, bad, int(ok.sum()),
                          p.divergence_bound)
    if not ok.any():
        raise SamplerDivergedError(
            f"all {len(chain_ids)} chains diverged (loss non-finite or |nβ·(L(w_t) − L(w*))| > "
            f"{p.divergence_bound:g}) at steps {checks.diverged_at_step}. To fix it: {ev.settings_hint}. The traces "
            "sampled before divergence are in the exception's .partial attribute.", partial=run)
    if run.llc.shape[1] < 4:
        raise SamplerDivergedError(f"only {run.llc.shape[1]} post-burn-in draws were taken (need ≥ 4 for an error "
                                   "bar); the run stopped before burn-in ended.", partial=run)
    llc_tr, loss_tr = run.llc[ok], run.loss[ok]
    per_chain = llc_tr.mean(axis=1)
    mean, mcse = float(per_chain.mean()), diagnostics.mcse_mean(llc_tr)
    if not (math.isfinite(mean) and math.isfinite(mcse)):  # finite traces cannot give this; guard anyway
        raise SamplerDivergedError("the LLC estimate is not finite; " + ev.settings_hint, partial=run)
    checks.r_hat = diagnostics.rhat(llc_tr) if len(per_chain) > 1 else None
    checks.ess_bulk = diagnostics.ess_bulk(llc_tr)
    _checks.warn_all(ev._replace(llc=mean, mcse=mcse))
    return LLCResult(
        llc_mean=mean, llc_std=float(per_chain.std(ddof=1)) if len(per_chain) > 1 else None,
        llc_per_chain=per_chain, mcse=mcse, loss_trace=loss_tr, llc_trace=llc_tr, init_loss=float(init_loss),
        nbeta=p.hyper.nbeta, diverged=bad, chain_ids=[c for c, good in zip(chain_ids, ok) if good], config=config,
        checks=checks)
