"""The shared tail of every LLC estimate: checks, the chain loop, and the summary with its warnings.

:func:`sample` takes a built target (:class:`~slt_basins.targets.ModelTarget` or
:class:`~slt_basins.targets.PotentialTarget`) and a validated :class:`~slt_basins.options.LLCOptions`
with a numeric step size, and returns an :class:`~slt_basins.result.LLCResult`. The front doors
(:mod:`slt_basins.llc`) and calibration (:mod:`slt_basins.calibration`) both call it.

The estimate (Lau et al. 2023, arXiv:2308.12108) is

    λ̂ = nβ · (mean over post-burn-in draws and non-diverged chains of L_B(w_t) − L_B(w*)),

with its Monte Carlo standard error from ArviZ (autocorrelation-aware, across chains).

The checks around the chain loop (:mod:`slt_basins.checks`: curvature at w* before it; after it the
curvature at the ends of at most four chains and the MALA probe) evaluate a model's loss on a fixed
subsample sized to cost about :data:`slt_basins.checks.CHECK_SHARE` of the loop; their seconds are
``checks.checks_time_s`` and the subsample size is ``config["check_examples"]``.
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
from .result import Checks, LLCResult, ObservedLLC
from .samplers import Hyper, Kernel
from .targets import CHECK_EXAMPLES

__all__ = ["sample", "Plan", "plan", "BlockInfo"]


class BlockInfo(NamedTuple):
    """What ``callback=`` receives after every block of steps (at most 200 steps).

    Attributes:
        step: steps taken so far per chain, burn-in included.
        total: burn-in plus draws.
        num_burnin: the burn-in steps (draws count from there).
        losses: ``(chains,)`` numpy array, the minibatch loss L_B of each chain at the block's last step
            (loss units; diverged chains keep their last finite value).
        llc: the running λ̂, mean draw nβ·(L_B(w_t) − L_B(w*)) over the draws so far and the chains
            alive; None during burn-in.
        alive: ``(chains,)`` bool numpy array, the chains not stopped for divergence.

    Return True from the callback to stop sampling there: the result then uses the draws taken so far
    (with a warning saying so).
    """

    step: int
    total: int
    num_burnin: int
    losses: np.ndarray
    llc: Optional[float]
    alive: np.ndarray


def _hook(opts: LLCOptions):
    """The chain loop's ``on_block`` for the user's ``callback`` (None without one)."""
    if opts.callback is None:
        return None
    total = opts.num_burnin + opts.num_draws

    def on_block(t, loop):
        losses = loop.last_loss.detach().cpu().numpy() if loop.last_loss is not None else np.full(len(loop.alive), np.nan)
        return bool(opts.callback(BlockInfo(t, total, opts.num_burnin, losses, loop.running_llc(opts.num_burnin),
                                            loop.alive.cpu().numpy())))
    return on_block

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


def _check_examples(target, opts: LLCOptions) -> Optional[int]:
    """The size of the checks' subsample for a model (None for a potential): :func:`checks.check_examples`
    for this run's steps, chains and batch, capped at n and :data:`~slt_basins.targets.CHECK_EXAMPLES`."""
    if target.n is None:
        return None
    m = _checks.check_examples(target.batch_size or target.n, opts.num_chains, opts.num_burnin + opts.num_draws,
                               proposals=_proposals(opts))
    return min(target.n, CHECK_EXAMPLES, m)


def _pre_run(target, p: Plan, opts: LLCOptions, checks: Checks, m: Optional[int]):
    """Gradient at w* and (unpreconditioned kernels) the stability at w*; the check functions or None."""
    fns = None
    if opts.check_stability and p.kernel.stability_divisor is not None:
        fns = _checks.measure(checks, "stability", lambda: target.check_fns(opts.seed) if m is None
                              else target.check_fns(opts.seed, examples=m))
    if fns is not None and p.kernel.preconditioner is None:
        hr = _checks.measure(checks, "stability",
                             lambda: _checks.step_stability(p.kernel, p.hyper, fns[0], p.hyper.w_star))
        if hr is None:
            fns = None
        else:
            checks.hessian_max_abs_eig, checks.step_stability = hr
    if fns is not None and p.hyper.localization > 0:
        _localization(fns[0], p, checks, opts.seed)
    h = checks.hessian_max_abs_eig
    floor = target.rounding_floor(h if h is not None and math.isfinite(h) else 1.0)
    _checks.gradient_checks(checks, target.grad_star, p.hyper.nbeta, p.hyper.localization, floor)
    return fns


def _localization(grad_fn, p: Plan, checks: Checks, seed: int) -> None:
    """The quadratic model's λ̂ and the share of it that γ sets, from the Hessian density at w*."""
    dens = _checks.measure(checks, "localization", lambda: _checks.curvature_density(grad_fn, p.hyper.w_star,
                                                                                       seed=seed))
    if dens is None or not np.isfinite(dens[0]).all():
        return
    d, nb, g = p.hyper.w_star.numel(), p.hyper.nbeta, p.hyper.localization
    checks.quadratic_llc, checks.localization_share = _checks.localization_share(*dens, d, nb, g)
    if math.isfinite(checks.localization_share):
        checks.localization_half = _checks.gamma_for_share(*dens, nb, g)


def _end_stability(p: Plan, run: ChainRun, grad_fn, checks: Checks, chain_ids: list) -> None:
    """(h, ratio) at the final positions of at most :data:`checks.END_CHAINS` non-diverged chains
    (:func:`checks.end_chains`); the largest ratio is recorded, with the chains checked."""
    alive = np.flatnonzero(run.diverged_at < 0)
    if grad_fn is None or not len(alive):
        return
    rows = _checks.end_chains(run.llc[:, -1] if run.llc.shape[1] else None, alive)
    pre = p.kernel.preconditioner(run.final_state) if p.kernel.preconditioner is not None else None
    ends = _checks.measure(checks, "stability", lambda: [
        _checks.step_stability(p.kernel, p.hyper, grad_fn, run.final_w[i], None if pre is None else pre[i])
        for i in rows])
    if ends:
        checks.hessian_max_abs_eig_end, checks.step_stability_end = max(ends, key=lambda e: e[1])
        checks.stability_end_chains = [int(chain_ids[i]) for i in rows]


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
    t0 = time.perf_counter()
    m = _check_examples(target, opts)
    fns = _pre_run(target, p, opts, checks, m)
    t1 = time.perf_counter()
    run = run_chains(p.kernel, target, p.hyper, p.chain_ids, num_burnin=opts.num_burnin, num_draws=opts.num_draws,
                     seed=opts.seed, divergence_bound=p.divergence_bound,
                     progress=opts.progress and (p.dist is None or p.dist.rank == 0), desc=p.kernel.name.upper(),
                     chain_group=opts.chain_group, checkpoint=p.checkpoint, checkpoint_every=opts.every,
                     fingerprint={k: v for k, v in target.describe().items() if k in _FINGERPRINT_KEYS},
                     sync=None if p.dist is None else _dist.RankSync(p.dist),
                     observe=getattr(target, "observers", None) or None, on_block=_hook(opts))
    t2 = time.perf_counter()
    wall, chain_ids = t2 - t1, p.chain_ids
    if p.dist is not None and not run.interrupted:
        run, extras = _dist.gather_run(run, (list(checks.failures), wall), p.dist)
        checks.failures = list({f: None for x in extras for f in x[0]})
        wall, chain_ids = max(x[1] for x in extras), list(range(opts.num_chains))
    t3 = time.perf_counter()
    checks.wall_time_s, checks.resumed_from_step = wall, run.resumed_from
    _end_stability(p, run, None if fns is None else fns[0], checks, chain_ids)
    # the probe evaluates at most as many examples at once as one sampling step does
    rows = None if m is None else max(1, opts.num_chains * (target.batch_size or target.n) // m)
    _acceptance(p, run, fns, checks, opts, rows)
    checks.checks_time_s = (t1 - t0) + (time.perf_counter() - t3)
    config = dict(opts.as_dict(), **target.describe(), nbeta=p.hyper.nbeta, chain_ids=chain_ids,
                  divergence_bound=p.divergence_bound, check_examples=m)
    if p.dist is not None:
        config["world_size"] = p.dist.world_size
    with _dist.quiet_unless_rank0(p.dist):
        result = summarize(run, p, config, checks, target.init_loss)
    result.observed = _observed(run, getattr(target, "observers", None) or {})
    return result


def _observed(run: ChainRun, observers: dict) -> dict:
    """The data-refined LLC of each observed dataset, over the chains kept in the main estimate."""
    ok = run.diverged_at < 0
    out = {}
    for i, (name, t) in enumerate(observers.items()):
        llc_tr, loss_tr = run.observed["llc"][i][ok], run.observed["loss"][i][ok]
        mean, mcse = float(llc_tr.mean()), diagnostics.llc_mcse(llc_tr)
        if not (math.isfinite(mean) and math.isfinite(mcse)):
            warn(f"the observed dataset {name!r} gave a non-finite loss at some draws, so its λ̂_obs is not finite: "
                 "check that the model's loss on it is finite near w*.", LLCWarning)
        out[name] = ObservedLLC(mean, mcse, llc_tr, loss_tr, t.init_loss, t.n)
    return out


def _proposals(opts: LLCOptions) -> int:
    """The MALA probe's proposals per chain: ``opts.probe_proposals``, or :data:`checks.MALA_PROPOSALS`."""
    return _checks.MALA_PROPOSALS if opts.probe_proposals is None else opts.probe_proposals


def _acceptance(p: Plan, run: ChainRun, fns, checks: Checks, opts: LLCOptions, max_rows: Optional[int]) -> None:
    """MALA's own acceptance, or the MALA probe of a Langevin kernel (``max_rows`` proposals per evaluation)
    from the chains' final positions and those the loop kept during the draws (``run.probe_w``)."""
    alive = np.flatnonzero(run.diverged_at < 0)
    if run.accept is not None:
        checks.mala_accept = float(run.accept[alive].mean()) if len(alive) else None
    elif fns is not None and p.kernel.langevin:
        checks.mala_accept = _checks.measure(checks, "mala_probe", lambda: _checks.mala_probe(
            p.kernel, run.final_w, run.final_state, alive, p.hyper, fns[1], proposals=_proposals(opts),
            seed=opts.seed, max_rows=max_rows, earlier=run.probe_w))


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
    if run.stopped_early:
        warn(f"the callback stopped sampling after {run.steps_done} steps; the result uses the {run.llc.shape[1]} "
             "draws taken so far.", LLCWarning)
    m, n = config.get("check_examples"), config.get("n")
    ev = _checks.Evidence(math.nan, math.nan, int(config["d"]), checks, p.kernel, p.hyper, bad, int(ok.sum()),
                          p.divergence_bound, None if m is None or n is None else (int(m), int(n)))
    if not ok.any():
        raise SamplerDivergedError(
            f"all {len(chain_ids)} chains diverged (loss non-finite or |nβ·(L(w_t) − L(w*))| > "
            f"{p.divergence_bound:g}) at steps {checks.diverged_at_step}. To fix it: {ev.settings_hint}. The traces "
            "sampled before divergence are in the exception's .partial attribute.", partial=run)
    if run.llc.shape[1] < 4:
        raise SamplerDivergedError(f"only {run.llc.shape[1]} post-burn-in draws were taken (need ≥ 4 for an error "
                                   "bar); the run stopped before burn-in ended.", partial=run)
    config["grad_evals"] = int(len(chain_ids) * run.steps_done * p.kernel.grads_per_step)
    llc_tr, loss_tr = run.llc[ok], run.loss[ok]
    per_chain = llc_tr.mean(axis=1)
    mean, mcse = float(per_chain.mean()), diagnostics.llc_mcse(llc_tr)
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
