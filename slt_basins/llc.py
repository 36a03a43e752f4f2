"""Local learning coefficient (LLC) estimation with vectorised, localised SGLD.

The estimator (Lau et al. 2023, arXiv:2308.12108) is

    λ̂(w*) = nβ · ( E_w[L_n(w)] − L_n(w*) ),   p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²),

with the expectation replaced by the average of the post-burn-in SGLD draws over all chains.
See :func:`estimate_llc` (a model and its data) and :func:`estimate_llc_potential` (a loss K(w)
given directly). Both are thin adapters onto the same kernel and chain loop.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.func import grad, vjp
from torch.utils.data import DataLoader

from . import checkpoint as _ckpt
from . import diagnostics
from . import distributed as _dist
from .chains import ChainRun, run_chains
from .data import as_tensors
from .errors import LLCWarning, SamplerDivergedError
from .functional import FlatModel
from .losses import resolve_loss
from .result import LLCResult
from .samplers import Hyper, Kernel, get_kernel, langevin_log_accept, langevin_proposal
from .targets import ModelTarget, PotentialTarget

__all__ = ["estimate_llc", "estimate_llc_potential", "default_nbeta", "SamplerDivergedError", "LLCWarning"]




def default_nbeta(n: int) -> float:
    """nβ = n / log n, the WBIC temperature β* = 1/log n times the sample size n.

    At this temperature E_w[nβ·(L_n(w) − L_n(w*))] → λ as n → ∞ (Watanabe 2013), which is why it
    is the standard choice for the LLC. n is the number of training examples (not the batch size).

    >>> round(default_nbeta(10_000), 1)
    1085.7
    """
    if n < 2:
        raise ValueError(f"nβ = n/log n needs n ≥ 2 training examples; got n = {n}. Pass nbeta explicitly.")
    return n / math.log(n)


def _positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}.")
    return v


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {value!r}.")
    return int(value)


def _check_common(num_chains, num_draws, num_burnin, step_size, localization, seed):
    return dict(
        num_chains=_count("num_chains", num_chains, 1),
        num_draws=_count("num_draws", num_draws, 4),
        num_burnin=_count("num_burnin", num_burnin, 0),
        step_size=_positive("step_size", step_size),
        localization=_positive("localization", localization, allow_zero=True),
        seed=_count("seed", seed, 0),
    )


# Stability ratio ε·(nβ·h + γ)/c of each kernel whose ratio is defined (see _step_stability).
_STABILITY_DIVISOR = {"sgld": 4.0, "rmsprop_sgld": 4.0, "sgnht": 8.0}
# Unadjusted Langevin kernels: their step is a Langevin proposal, so MALA's test of it measures their bias.
_LANGEVIN = ("sgld", "rmsprop_sgld")


class _Scale(NamedTuple):
    """How the chains run: over which processes, in which evaluation groups, with which checkpoint."""

    dist: Optional[_dist.DistContext] = None
    chain_group: Optional[int] = None
    checkpoint: Optional[str] = None
    checkpoint_every: int = 1000


def _scale_options(num_chains: int, distributed, chain_group, checkpoint, checkpoint_every, device) -> _Scale:
    """Validate ``distributed``, ``chain_group``, ``checkpoint`` and ``checkpoint_every`` (before any sampling)."""
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True or False; got {distributed!r}.")
    if chain_group is not None:
        chain_group = _count("chain_group", chain_group, 1)
        if chain_group > num_chains:
            raise ValueError(f"chain_group={chain_group} is larger than num_chains={num_chains}; use at most "
                             f"num_chains (or None to evaluate all chains of a process at once).")
    if checkpoint is None:
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every was given without checkpoint: pass checkpoint='path/to/file' too.")
        every = 1000
    else:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (str or os.PathLike); got {type(checkpoint).__name__}.")
        checkpoint = os.fspath(checkpoint)
        folder = os.path.dirname(os.path.abspath(checkpoint))
        if not os.path.isdir(folder):
            raise ValueError(f"the folder of checkpoint={checkpoint!r} does not exist ({folder}); create it first.")
        every = 1000 if checkpoint_every is None else _count("checkpoint_every", checkpoint_every, 1)
    ctx = _dist.context(num_chains, chain_group, device) if distributed else None
    if checkpoint is not None:
        _ckpt.check_layout(checkpoint, None if ctx is None else ctx.world_size)
    return _Scale(ctx, chain_group, checkpoint, every)


def _scale_config(scale: _Scale) -> dict:
    out = {}
    if scale.chain_group is not None:
        out["chain_group"] = scale.chain_group
    if scale.dist is not None:
        out["world_size"] = scale.dist.world_size
    return out


def _top_curvature(grad_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, iters: int = 20,
                   scale: Optional[torch.Tensor] = None) -> float:
    """Largest |eigenvalue| of the Hessian H at w (of S·H·S with S = diag(scale) when given) by power
    iteration on reverse-over-reverse HVPs."""
    _, hvp = vjp(grad_fn, w)
    g = torch.Generator(device=w.device).manual_seed(0)
    v = torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v if scale is None else v * scale)[0].detach()
        if scale is not None:
            hv = hv * scale
        lam = float(hv.norm())
        if lam == 0.0 or not math.isfinite(lam):
            break
        v = hv / lam
    return lam


def _finish(run: ChainRun, hyper: Hyper, config: dict, checks: dict, init_loss: float) -> LLCResult:
    """Turn raw traces into an :class:`LLCResult`, excluding diverged chains, with warnings."""
    chain_ids = list(config["chain_ids"])
    eps = hyper.step_size
    bad = [chain_ids[i] for i in np.flatnonzero(run.diverged_at >= 0)]
    ok = run.diverged_at < 0
    checks["diverged_at_step"] = {chain_ids[i]: int(run.diverged_at[i]) for i in np.flatnonzero(~ok)}
    settings_hint = (f"lower step_size (now {eps:g}), raise localization (now {hyper.localization:g}) "
                     f"or lower nbeta (now {hyper.nbeta:.4g})")
    if run.interrupted:
        note = ""
        if config.get("world_size"):
            note = (f" It holds this process's chains {chain_ids[0]}–{chain_ids[-1]} only: nothing is "
                    "gathered after an interrupt, since the processes stop at different steps.")
        if run.checkpoint_path is not None and run.checkpoint_step is not None:
            note += (f" The chains' state at step {run.checkpoint_step} is saved in {run.checkpoint_path}: run again "
                     "with the same settings to resume from there.")
        warnings.warn(f"sampling was interrupted after {run.steps_done} steps; the result uses the "
                      f"{run.llc.shape[1]} draws taken so far.{note}", LLCWarning, stacklevel=3)
    if not ok.any():
        raise SamplerDivergedError(
            f"all {len(chain_ids)} chains diverged (loss non-finite or |nβ·(L(w_t) − L(w*))| > "
            f"{config['divergence_bound']:g}) at steps {checks['diverged_at_step']}. "
            f"To fix it: {settings_hint}. The traces sampled before divergence are in the "
            "exception's .partial attribute.", partial=run)
    if run.llc.shape[1] < 4:
        raise SamplerDivergedError(
            f"only {run.llc.shape[1]} post-burn-in draws were taken (need ≥ 4 for an error bar); "
            "the run stopped before burn-in ended.", partial=run)
    llc_tr, loss_tr = run.llc[ok], run.loss[ok]
    per_chain = llc_tr.mean(axis=1)
    mean = float(per_chain.mean())
    mcse = diagnostics.mcse_mean(llc_tr)
    std = float(per_chain.std(ddof=1)) if len(per_chain) > 1 else None
    if len(per_chain) > 1:
        checks["r_hat"] = diagnostics.rhat(llc_tr)
    else:
        checks["r_hat"] = None
    checks["ess_bulk"] = diagnostics.ess_bulk(llc_tr)
    if bad:
        warnings.warn(
            f"chains {bad} diverged at steps {[checks['diverged_at_step'][c] for c in bad]} and are excluded "
            f"from the estimate (the remaining {int(ok.sum())} chains are used). A chain diverges when its "
            f"loss becomes non-finite or |nβ·(L(w_t) − L(w*))| exceeds {config['divergence_bound']:g}: "
            f"{settings_hint}. A large negative excursion instead means w* is not a local minimum.",
            LLCWarning, stacklevel=3)
    if not (math.isfinite(mean) and math.isfinite(mcse)):  # cannot happen for finite traces; guard anyway
        raise SamplerDivergedError("the LLC estimate is not finite; " + settings_hint, partial=run)
    if checks["r_hat"] is not None and checks["r_hat"] > 1.05:
        warnings.warn(f"R-hat = {checks['r_hat']:.3f} > 1.05: the chains disagree, so the error bar is not "
                      "reliable. Increase num_burnin and num_draws, or the step size if mixing is slow.",
                      LLCWarning, stacklevel=3)
    if mean < -3 * mcse - 1e-12:
        warnings.warn(f"λ̂ = {mean:.4g} is negative (beyond 3 MCSE): the chains found lower loss than at "
                      "w*, so w* is not a local minimum of L_n (the LLC assumes one). Train further, or "
                      "raise localization.", LLCWarning, stacklevel=3)
    bias = checks.get("grad_bias_bound")
    if bias is not None and bias > max(0.1, 0.05 * abs(mean)):
        warnings.warn(
            f"the gradient norm at w* is {checks['grad_norm']:.3g}: w* is not a critical point of L_n. The "
            f"linear term can shift λ̂ by up to nβ²‖∇L‖²/γ = {bias:.3g} (against λ̂ = {mean:.3g}). "
            "Train to a local minimum first, or raise localization.", LLCWarning, stacklevel=3)
    name = config["sampler"]
    what = f"ε·(nβ·h_max + γ)/{_STABILITY_DIVISOR.get(name, 4.0):g}" if name != "rmsprop_sgld" else \
        "ε·(nβ·h_max + γ·max G)/4 (h_max of the preconditioned Hessian G^½HG^½)"
    langevin = name in _LANGEVIN
    stab = checks.get("step_stability")
    if stab is not None and stab > 0.1:
        warnings.warn(
            f"{what} = {stab:.3g} at w* (h_max = {checks['hessian_max_abs_eig']:.3g} is the largest "
            f"Hessian eigenvalue): " + ("the sampler is unstable in the stiffest direction." if stab >= 1 else
            f"the stationary variance in the stiffest direction is inflated by about 1/(1−{stab:.2g}) = "
            f"{1 / (1 - stab):.3g}, biasing λ̂ upward." if langevin else
            "the stiffest direction is under-resolved, which biases λ̂.")
            + f" Lower step_size to ≤ {0.1 * eps / stab:.2g} for a bias under about 11 %.",
            LLCWarning, stacklevel=3)
    end = checks.get("step_stability_end")
    if end is not None and end > 0.1 and end > 2 * (stab or 0.0):
        warnings.warn(
            f"at the chains' final positions {what} = {end:.3g} (h_max = "
            f"{checks['hessian_max_abs_eig_end']:.3g})" + (", larger than at w*: the chains moved into stiffer regions, "
            if stab is not None else ": ") +
            f"where the step size inflates the variance (by up to 1/(1−{min(end, 0.99):.2g}) for Langevin kernels), "
            f"biasing λ̂ upward. Lower step_size to ≤ {0.1 * eps / end:.2g} or raise localization.",
            LLCWarning, stacklevel=3)
    acc = checks.get("mala_accept")
    if acc is not None and name == "mala" and acc < 0.2:
        warnings.warn(f"MALA accepted {acc:.1%} of its proposals on average: the chains barely move, so "
                      f"the draws are strongly correlated. Lower step_size (now {eps:g}); an acceptance "
                      "of 0.5–0.8 mixes best.", LLCWarning, stacklevel=3)
    elif acc is not None and langevin and acc < 0.7:
        warnings.warn(f"MALA would accept only {acc:.1%} of this sampler's proposals at the chains' final "
                      f"positions: the step size (now {eps:g}) is large enough for a visible discretisation "
                      "bias in λ̂. Lower step_size, or check with sampler='mala' on a small problem.",
                      LLCWarning, stacklevel=3)
    return LLCResult(
        llc_mean=mean, llc_std=std, llc_per_chain=per_chain, mcse=mcse, loss_trace=loss_tr,
        llc_trace=llc_tr, init_loss=float(init_loss), nbeta=hyper.nbeta, diverged=bad,
        chain_ids=[c for c, good in zip(chain_ids, ok) if good], config=config, checks=checks,
    )


def _auto(fn, args: dict) -> LLCResult:
    """``step_size="auto"``: calibrate ε first (:func:`slt_basins.calibration.run_auto`), then run."""
    from .calibration import run_auto

    return run_auto(fn, dict(args))


def _default_bound(d: int) -> float:
    return 10.0 * d + 100.0


def estimate_llc_potential(
    potential: Callable[[torch.Tensor], torch.Tensor],
    w_star,
    *,
    nbeta: float,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    step_size: Union[float, str] = 1e-4,
    localization: float = 1.0,
    sampler: Union[str, Kernel] = "sgld",
    seed: int = 0,
    device=None,
    divergence_bound: Optional[float] = None,
    check_stability: bool = True,
    progress: bool = True,
    distributed: bool = False,
    chain_group: Optional[int] = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: Optional[int] = None,
) -> LLCResult:
    """Estimate the LLC of a loss K(w) given directly, at w*: λ̂ = nβ·(E[K(w)] − K(w*)).

    This samples p(w) ∝ exp(−nβ·K(w) − (γ/2)‖w − w*‖²) exactly (no data, no minibatch noise), so
    the only errors are the sampler's (step size, mixing) and the finite-nβ and localisation
    biases, which :func:`slt_basins.toys.finite_temperature_target` computes by quadrature.

    Args:
        potential: maps a ``(chains, d)`` tensor to ``(chains,)`` values of K, differentiably.
            K must have a local minimum at ``w_star``.
        w_star: the centre, shape ``(d,)``; its dtype (float64 recommended) is used throughout.
        nbeta: nβ > 0 (there is no dataset size to derive it from).
        num_chains, num_draws, num_burnin, step_size, localization, seed, progress: as in
            :func:`estimate_llc`. The defaults ε = 1e-4 and γ = 1 suit toy potentials of order one
            at nβ ≈ 10³: γ = 1 keeps the localisation bias of singular directions small
            (rlct-truth.md §1.7).
            ``step_size="auto"`` calibrates ε first, as in :func:`estimate_llc`.
        divergence_bound: a chain stops when |nβ·(K(w_t) − K(w*))| exceeds it; default 10·d + 100
            (λ ≤ d/2, so honest draws stay far below it).
        distributed, chain_group, checkpoint, checkpoint_every: as in :func:`estimate_llc` (the
            potential must run on each rank's device).

    Example:
        >>> r = estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64),
        ...                            nbeta=100.0, num_draws=2000, step_size=1e-3, progress=False)
        >>> abs(r.llc_mean - 0.5) < 5 * r.mcse + 0.01
        True
    """
    if isinstance(step_size, str):
        return _auto(estimate_llc_potential, locals())
    s = _check_common(num_chains, num_draws, num_burnin, step_size, localization, seed)
    nbeta = _positive("nbeta", nbeta)
    kernel = get_kernel(sampler)
    w_star = torch.as_tensor(w_star)
    if not w_star.is_floating_point():
        w_star = w_star.to(torch.float64)
    if device is not None:
        w_star = w_star.to(device)
    w_star = w_star.reshape(-1).detach().clone()
    if not torch.isfinite(w_star).all():
        raise ValueError("w_star has non-finite entries; the LLC needs a finite local minimum.")
    scale = _scale_options(s["num_chains"], distributed, chain_group, checkpoint, checkpoint_every, w_star.device)
    target = PotentialTarget(potential, w_star)
    d = target.d
    bound = _default_bound(d) if divergence_bound is None else _positive("divergence_bound", divergence_bound)
    checks: dict[str, Any] = {}
    g_star = target.loss_and_grad(w_star.reshape(1, -1))[1][0]
    _grad_checks(checks, g_star, nbeta, s["localization"])
    grad_fn = grad(lambda w: potential(w.reshape(1, -1)).sum()) if check_stability else None
    probe = (lambda w: target.loss_and_grad(w, None)) if check_stability else None
    config = dict(kind="potential", sampler=kernel.name, nbeta=nbeta, d=d, chain_ids=list(range(s["num_chains"])),
                  divergence_bound=bound, device=str(w_star.device), dtype=str(w_star.dtype), **s,
                  **_scale_config(scale))
    return _sample(kernel, target, Hyper(s["step_size"], s["localization"], nbeta, w_star), config, checks, progress,
                   grad_fn, probe, scale)


def _grad_checks(checks: dict, g: torch.Tensor, nbeta: float, gamma: float) -> None:
    gn = float(g.norm())
    checks["grad_norm"] = gn
    checks["grad_bias_bound"] = (nbeta * gn) ** 2 / gamma if gamma > 0 else (math.inf if gn > 0 else 0.0)


def _step_stability(grad_fn, w: torch.Tensor, s: dict, nbeta: float, kernel_name: str,
                    precond: Optional[torch.Tensor] = None) -> tuple[float, float]:
    """(h, ε·(nβ·h + γ·max G)/c) with h the largest |eigenvalue| of G^½·H·G^½ (H the Hessian of L
    at w, G the kernel's diagonal preconditioner, 1 without one). c = 4 for the Langevin kernels
    (stable for a ratio < 1, variance inflated by 1/(1 − ratio) on a Gaussian), 8 for SGNHT's
    momentum form with η = ε/2 (stable for a ratio < 1 at small friction)."""
    scale = None if precond is None else precond.sqrt()
    h = _top_curvature(grad_fn, w, scale=scale)
    gmax = 1.0 if precond is None else float(precond.max())
    return h, s["step_size"] * (nbeta * h + s["localization"] * gmax) / _STABILITY_DIVISOR[kernel_name]


def _mala_probe(kernel, run: ChainRun, hyper: Hyper, loss_and_grad, proposals: int = 8, seed: int = 0) -> Optional[float]:
    """Mean Metropolis acceptance probability of the kernel's own Langevin proposals from the chains'
    final positions (``proposals`` fresh proposals per chain), with the exact loss given by
    ``loss_and_grad``. For an unadjusted kernel a value near 1 means its discretisation bias is small
    (Lau et al. 2023 log it; Xu 2024 uses it to choose ε)."""
    alive = np.flatnonzero(run.diverged_at < 0)
    if len(alive) == 0 or run.final_state is None:
        return None
    idx = torch.as_tensor(alive, device=run.final_w.device).repeat_interleave(proposals)
    w = run.final_w[idx]
    G = None if kernel.preconditioner is None else kernel.preconditioner(run.final_state)[idx]
    h = hyper._replace(adapt=False)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    z = torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        loss, grad_ = loss_and_grad(w)
        w_new = langevin_proposal(w, grad_, z, h, G)
        loss_new, grad_new = loss_and_grad(w_new)
        la = langevin_log_accept(w, loss, grad_, w_new, loss_new, grad_new, h, G)
    return float(la.clamp(max=0.0).exp().mean())


# Settings (from config) that a resumed checkpoint must match, beyond those run_chains adds itself.
_FINGERPRINT_KEYS = ("kind", "loss", "n", "batch_size", "params", "vectorized")


def _sample(kernel, target, hyper: Hyper, config: dict, checks: dict, progress: bool, grad_fn=None,
            probe=None, scale: Optional[_Scale] = None) -> LLCResult:
    """Run the chain loop with the validated settings in ``config`` and build the result.

    With ``grad_fn`` (w ↦ ∇L(w), differentiable by torch.func), the step-size stability
    ε·(nβ·h_max + γ)/c is measured at w* before sampling (unpreconditioned kernels) and at the
    chains' final positions after, because the curvature the sampler meets can grow as chains move
    away from w*. With ``probe`` (a ``(rows, d) -> (L, ∇L)`` function on fixed data), the MALA
    acceptance probability of the kernel's proposals is measured at the chains' final positions
    (Langevin kernels); MALA reports its own acceptance rate.

    ``scale`` spreads the chains over processes (each rank samples its block of chain ids, measures
    the stability at its own chains' ends, and everything is gathered to every rank; the MALA probe
    then runs on the gathered states, exactly as in one process), evaluates them in fixed groups,
    and checkpoints the loop.
    """
    scale = scale or _Scale()
    ctx = scale.dist
    nbeta, name = hyper.nbeta, kernel.name
    if name not in _STABILITY_DIVISOR:
        grad_fn = None
    if grad_fn is not None and kernel.preconditioner is None:
        try:
            checks["hessian_max_abs_eig"], checks["step_stability"] = _step_stability(
                grad_fn, hyper.w_star, config, nbeta, name)
        except Exception as e:  # e.g. models that torch.func cannot transform
            checks["stability_check_error"] = f"{type(e).__name__}: {e}"
            grad_fn = None
    ids = config["chain_ids"] if ctx is None else ctx.chain_ids
    path = scale.checkpoint
    if path is not None and ctx is not None:
        path = _ckpt.rank_path(path, ctx.rank, ctx.world_size)
    t0 = time.perf_counter()
    run = run_chains(kernel, target, hyper, ids, num_burnin=config["num_burnin"],
                     num_draws=config["num_draws"], seed=config["seed"],
                     divergence_bound=config["divergence_bound"], progress=progress and (ctx is None or ctx.rank == 0),
                     desc=name.upper(), chain_group=scale.chain_group, checkpoint=path,
                     checkpoint_every=scale.checkpoint_every,
                     fingerprint={k: config[k] for k in _FINGERPRINT_KEYS if k in config},
                     sync=None if ctx is None else _dist.RankSync(ctx))
    wall = time.perf_counter() - t0
    # Stability at every non-diverged chain's end: per chain, so each rank does its own chains.
    ends, end_error = [], None
    alive = np.flatnonzero(run.diverged_at < 0)
    if grad_fn is not None and len(alive):
        pre = kernel.preconditioner(run.final_state) if kernel.preconditioner is not None else None
        try:
            ends = [_step_stability(grad_fn, run.final_w[i], config, nbeta, name, None if pre is None else pre[i])
                    for i in alive]
        except Exception as e:
            end_error = f"{type(e).__name__}: {e}"
    if ctx is not None and not run.interrupted:
        run, extras = _dist.gather_run(run, (ends, end_error, wall), ctx)
        ends = [e for x in extras for e in x[0]]
        end_error = next((x[1] for x in extras if x[1] is not None), None)
        wall = max(x[2] for x in extras)
    elif ctx is not None:  # interrupted: the ranks stopped at different steps, so nothing is gathered
        config = dict(config, chain_ids=list(ids))
    checks["wall_time_s"] = wall
    if run.resumed_from is not None:
        checks["resumed_from_step"] = run.resumed_from
    if end_error is not None:
        checks["stability_check_error"] = end_error
    elif ends:
        checks["hessian_max_abs_eig_end"], checks["step_stability_end"] = max(ends, key=lambda e: e[1])
    alive = np.flatnonzero(run.diverged_at < 0)
    if run.accept is not None:
        checks["mala_accept"] = float(run.accept[alive].mean()) if len(alive) else None
    elif probe is not None and name in _LANGEVIN:
        try:
            checks["mala_accept"] = _mala_probe(kernel, run, hyper, probe, seed=config["seed"])
        except Exception as e:
            checks["mala_probe_error"] = f"{type(e).__name__}: {e}"
    with _dist.quiet_unless_rank0(ctx):
        return _finish(run, hyper, config, checks, target.init_loss)


def estimate_llc(
    model: nn.Module,
    data: Any,
    loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "mse",
    *,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 500,
    step_size: Union[float, str] = 1e-4,
    localization: float = 100.0,
    nbeta: Optional[float] = None,
    batch_size: Optional[int] = None,
    sampler: Union[str, Kernel] = "sgld",
    params=None,
    seed: int = 0,
    device=None,
    divergence_bound: Optional[float] = None,
    check_stability: bool = True,
    vectorize: bool = True,
    progress: bool = True,
    distributed: bool = False,
    chain_group: Optional[int] = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: Optional[int] = None,
) -> LLCResult:
    """Estimate the local learning coefficient λ(w*) of ``model`` at its current parameters w*.

    λ̂ = nβ·(mean over post-burn-in draws and chains of L_B(w_t) − L_B(w*)), where the draws come
    from SGLD on p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) (Lau et al. 2023). Assumes w* is a local
    minimum of the mean training loss L_n (a warning reports the gradient norm when it is not).

    Args:
        model: the trained ``nn.Module``; all parameters with ``requires_grad`` are sampled. It is
            not modified. Its mode (train/eval) is respected: call ``model.eval()`` first unless you
            mean to sample a stochastic (dropout) or batch-statistics (BatchNorm) loss.
        data: ``(inputs, targets)`` tensors, a ``Dataset`` of pairs, or a ``DataLoader`` (iterated
            once and held in memory on ``device``; the package draws its own minibatches).
        loss: ``"mse"`` (mean squared error over examples and outputs), ``"cross_entropy"`` (on
            logits, integer labels), or a callable ``(outputs, targets) -> mean loss``.
        num_chains: independent chains, run together as one vectorised ``(chains, d)`` tensor
            (default 4: enough for R-hat and a between-chain spread at little extra cost).
        num_draws: post-burn-in steps per chain, each one a draw (default 1000).
        num_burnin: steps discarded per chain before the draws (default 500). Burn-in draws never
            enter the estimate.
        step_size: SGLD ε (default 1e-4). Stability needs ε·(nβ·h + γ) < 4 for every Hessian
            eigenvalue h; the run measures the largest one at w* and warns when ε is too large.
            ``"auto"``: first run :func:`slt_basins.calibrate` at this γ, nβ, sampler, batch size and
            number of chains, each cell with 1/5 of num_draws and num_burnin (at least 200 and
            100), scanning ε down from the stability limit at w* until the rules there settle
            (a few cheap diverging cells, then 2–4 full ones, some lengthened up to 8× to
            converge), then run with the chosen ε. On the toy suite's potentials the calibration
            took 1.8–4.6× the time of the run itself (benchmarks/results/calibrate_toys.md): to pay
            it once for many runs, call :func:`slt_basins.calibrate` and reuse its ``settings``.
            The calibration table and the reason for the choice are in
            ``result.checks["calibration"]``; if no ε qualifies,
            :class:`slt_basins.CalibrationError` says what to try.
        localization: γ (default 100, as in Lau et al.'s MNIST experiments): keeps chains near w*,
            at the price of a downward bias in directions where nβ·curvature ≲ γ (rlct-truth §1.7).
        nbeta: nβ; default n/log n with n the number of training examples (see :func:`default_nbeta`).
        batch_size: minibatch size per chain and step; None uses the full data (a DataLoader's own
            batch size is used when ``data`` is a DataLoader). The baseline L_B(w*) is evaluated on
            the same minibatch as L_B(w_t).
        sampler: ``"sgld"`` (default), ``"rmsprop_sgld"`` (diagonal RMSprop preconditioner adapted
            during burn-in from the loss gradients only, then frozen), ``"sgnht"`` (momentum with a
            Nosé–Hoover thermostat; η = ε/2), ``"mala"`` (Metropolis-adjusted, exact at any ε,
            full batch only), or a :class:`~slt_basins.samplers.Kernel` built with options, e.g.
            ``samplers.rmsprop_sgld(delta=1.0)``. The step sizes that suit each kernel differ:
            see :func:`slt_basins.calibrate`.
        params: sample only these parameters (a list of names from ``model.named_parameters()``,
            or a predicate ``name -> bool``) and hold the rest at w*: the *restricted* LLC of that
            block (Wang et al. 2024). None samples every parameter with ``requires_grad``.
        seed: chain c draws its noise and minibatches from ``SeedSequence([seed, c])``: the same seed
            gives identical results, and a chain's draws do not depend on the number of chains.
        device: where to sample (default: the model's device).
        divergence_bound: a chain is stopped and excluded when |nβ·(L_B(w_t) − L_B(w*))| exceeds it
            or its loss is non-finite (default 10·d + 100, far above any honest draw since λ ≤ d/2).
        check_stability: estimate the top Hessian eigenvalue at w* and at the chains' final positions
            (20 Hessian-vector products per point, at w* and at every non-diverged chain's end, on up to
            2048 examples) to warn about unstable or biased
            step sizes, and the MALA acceptance probability of 8 fresh proposals per chain from the
            chains' final positions on the same examples (``checks["mala_accept"]``; near 1 means a
            small discretisation bias).
        vectorize: run chains with ``torch.func.vmap`` (falls back to a loop, with a warning, for
            models that cannot be vmapped).
        progress: show a tqdm progress bar over steps.
        distributed: spread the chains over the processes of the initialised ``torch.distributed``
            process group (run under ``torchrun``; README section "Running on several processes, GPUs
            and nodes"). Rank r samples a contiguous block of the chain ids; traces and final states
            are gathered so that every rank returns the same result (warnings and the progress bar
            on rank 0 only). Chain c's noise and minibatches depend only on (seed, c), so the result
            equals the single-process run's: bitwise on CPU with one intra-op thread per process
            (torchrun's default), and with ``chain_group`` also where kernels depend on shapes (see
            there). Each rank needs the model on its own device: with NCCL call
            ``torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))`` and ``model.to("cuda")`` first.
            Ctrl-C: each rank returns its own chains' partial result (and saves its checkpoint).
        chain_group: evaluate the loss and gradient in fixed groups of this many chains (the last
            group padded with copies, whose results are dropped); with ``distributed=True`` the ranks
            split whole groups. Every evaluation then has the same shapes whatever the number of
            processes, which makes the result bitwise independent of the world size also where the
            BLAS splits sums by shape (several CPU threads per process, GPUs; same device type and
            thread count on both sides). Choose num_chains / (largest world size) to avoid padding,
            e.g. ``num_chains=16, chain_group=4`` for 1, 2 or 4 GPUs. None (default): all chains of a
            process in one evaluation (fastest).
        checkpoint: file to save the chain loop to, and to resume from when it exists, e.g.
            ``estimate_llc(model, data, checkpoint="llc.ckpt", checkpoint_every=5000)``. Written
            atomically at the first block boundary (blocks are ≤ 200 steps) after every
            ``checkpoint_every`` steps, at the end, and on Ctrl-C. A resumed run gives exactly the result
            of an uninterrupted one. A file written with other settings (seed, chains, sampler, ε, nβ,
            γ, draws, burn-in, d, data size, batch size, loss, w*, ...) is refused, naming the
            differences. A finished run's file returns its result without sampling again: delete it
            to start afresh. With ``distributed=True`` rank r of W writes ``checkpoint + ".rank{r}ofW"``:
            rerun with the same number of processes to resume (also after one rank was killed).
        checkpoint_every: steps (burn-in included) between checkpoints; default 1000. Each save
            writes the traces so far: 2 × chains × draws numbers in the model's dtype.

    Returns:
        :class:`~slt_basins.result.LLCResult` with λ̂, its MCSE, traces and diagnostics.

    Raises:
        ValueError / TypeError: bad inputs, with what to change.
        SamplerDivergedError: every chain diverged (partial traces attached).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(500, 3); y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(500)
        >>> model = nn.Linear(3, 1)  # trained by least squares below
        >>> sol = torch.linalg.lstsq(torch.cat([x, torch.ones(500, 1)], 1), y[:, None]).solution
        >>> with torch.no_grad(): _ = model.weight.copy_(sol[:3].T); _ = model.bias.copy_(sol[3])
        >>> r = estimate_llc(model, (x, y), step_size=1e-3, localization=1.0, progress=False)
        >>> 1.0 < r.llc_mean < 3.0  # a regular model with d = 4 parameters has λ = d/2 = 2
        True
    """
    if isinstance(step_size, str):
        return _auto(estimate_llc, locals())
    s = _check_common(num_chains, num_draws, num_burnin, step_size, localization, seed)
    kernel = get_kernel(sampler)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    fm = FlatModel(model, params)
    dev = torch.device(device) if device is not None else fm.device
    if dev != fm.device:
        raise ValueError(f"the model is on {fm.device} but device={dev}; move the model with model.to(device) first.")
    scale = _scale_options(s["num_chains"], distributed, chain_group, checkpoint, checkpoint_every, dev)
    if batch_size is None and isinstance(data, DataLoader):
        batch_size = data.batch_size
    if batch_size is not None:
        batch_size = _count("batch_size", batch_size, 1)
    x, y = as_tensors(data, device=dev, dtype=fm.dtype)
    n = int(x.shape[0])
    if kernel.full_batch and batch_size is not None and batch_size < n:
        raise ValueError(f"sampler={kernel.name!r} is Metropolis-adjusted and needs the exact full-batch loss, but "
                         f"batch_size={batch_size} < n={n}. Pass batch_size=None (for a DataLoader: "
                         f"batch_size={n}), or use sampler='sgld' for minibatches.")
    nbeta = default_nbeta(n) if nbeta is None else _positive("nbeta", nbeta)
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
    target = ModelTarget(fm, x, y, spec, batch_size, vectorize=vectorize)
    with _dist.quiet_unless_rank0(scale.dist):
        target.check_vectorized(s["num_chains"])
    d = fm.d
    bound = _default_bound(d) if divergence_bound is None else _positive("divergence_bound", divergence_bound)
    checks: dict[str, Any] = {}
    _grad_checks(checks, target.grad_star, nbeta, s["localization"])
    grad_fn = None
    if check_stability:
        m = min(n, 2048)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(s["seed"]))[:m].to(dev)
        xs, ys = x[idx], y[idx]
        grad_fn = grad(lambda w: target._loss_one(w, xs, ys))
        probe = lambda w: target.loss_and_grad(w, idx.expand(w.shape[0], -1))  # noqa: E731
    else:
        probe = None
    config = dict(kind="model", sampler=kernel.name, params=None if params is None else list(fm.names),
                  nbeta=nbeta, n=n, d=d, loss=spec.name,
                  batch_size=target.batch_size, vectorized=target.vectorized,
                  chain_ids=list(range(s["num_chains"])), divergence_bound=bound,
                  device=str(dev), dtype=str(fm.dtype),
                  paired_baseline=("per-example cache" if spec.per_sample is not None else "forward pass")
                  if target.batch_size is not None else "full batch", **s, **_scale_config(scale))
    return _sample(kernel, target, Hyper(s["step_size"], s["localization"], nbeta, fm.w_star), config, checks,
                   progress, grad_fn, probe, scale)
