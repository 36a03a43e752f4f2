"""The two front doors of LLC estimation: :func:`estimate_llc` (a model and its data) and
:func:`estimate_llc_potential` (a loss K(w) given directly).

The estimator (Lau et al. 2023, arXiv:2308.12108) is

    λ̂(w*) = nβ · ( E_w[L_n(w)] − L_n(w*) ),   p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²),

with the expectation replaced by the average of the post-burn-in draws over all chains. Each front
door validates its settings into one :class:`~slt_basins.options.LLCOptions`, builds its target
(:class:`~slt_basins.targets.ModelTarget` or :class:`~slt_basins.targets.PotentialTarget`), resolves
``step_size="auto"`` by calibration (:mod:`slt_basins.calibration`), and hands both to the shared
sampling tail :func:`slt_basins.sampling.sample`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from . import calibration
from .errors import LLCWarning, SamplerDivergedError
from .options import MODEL_DEFAULTS as _M
from .options import POTENTIAL_DEFAULTS as _P
from .options import LLCOptions, default_nbeta
from .result import LLCResult
from .sampling import sample
from .samplers import Kernel
from .targets import ModelTarget, PotentialTarget

__all__ = ["estimate_llc", "estimate_llc_potential", "default_nbeta", "SamplerDivergedError", "LLCWarning"]


def _run(target, opts: LLCOptions) -> LLCResult:
    """Sample ``target`` with ``opts``; ``step_size="auto"`` calibrates ε first on the same target."""
    if opts.step_size == "auto":
        return calibration.run_auto(lambda o: sample(target, o), opts)
    return sample(target, opts)


def estimate_llc(
    model: nn.Module,
    data: Any,
    loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "mse",
    *,
    num_chains: int = _M.num_chains,
    num_draws: int = _M.num_draws,
    num_burnin: int = _M.num_burnin,
    step_size: Union[float, str] = _M.step_size,
    localization: float = _M.localization,
    nbeta: Optional[float] = None,
    batch_size: Optional[int] = None,
    sampler: Union[str, Kernel] = _M.sampler,
    params=None,
    seed: int = _M.seed,
    device=None,
    divergence_bound: Optional[float] = None,
    check_stability: bool = _M.check_stability,
    vectorize: bool = _M.vectorize,
    progress: bool = _M.progress,
    distributed: bool = _M.distributed,
    chain_group: Optional[int] = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: Optional[int] = None,
    callback: Optional[Callable] = None,
    evaluate: Optional[Callable[[Callable, Any], torch.Tensor]] = None,
    observe: Optional[dict] = None,
) -> LLCResult:
    """Estimate the local learning coefficient λ(w*) of ``model`` at its current parameters w*.

    λ̂ = nβ·(mean over post-burn-in draws and chains of L_B(w_t) − L_B(w*)), where the draws come
    from SGLD on p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) (Lau et al. 2023). Assumes w* is a local
    minimum of the mean training loss L_n (a warning reports the gradient norm when it is not).

    Args:
        model: the trained ``nn.Module``; all parameters with ``requires_grad`` are sampled. It is
            not modified. Its mode (train/eval) is respected, but dropout (or any layer drawing random
            numbers) in train mode is refused: call ``model.eval()`` first. BatchNorm in train mode
            samples the batch-statistics loss (and falls back to a per-chain loop, with a warning).
        data: the training examples, held in memory on the model's device (the package draws its own
            minibatches from them, per chain): a tuple ``(inputs, targets)`` of tensors or arrays; a
            dict of tensors with a common first dimension (e.g. ``input_ids``, ``attention_mask``,
            ``labels``: the model is called as ``model(**inputs)`` with the target keys
            ``labels``/``label``/``targets``/``target``/``y`` left out, and the loss gets the whole
            batch); a ``Dataset`` of tuples or dicts; a ``DataLoader``, whose sampler, batch sampler,
            ``Subset``, ``collate_fn`` and ``drop_last`` are respected (n is the number of examples
            the loader covers); or a HuggingFace ``datasets.Dataset`` in torch format.
        loss: ``"mse"`` (mean squared error over examples and outputs), ``"cross_entropy"`` (logits
            with classes on axis 1, integer labels), ``"token_cross_entropy"`` (logits ``(..., vocab)``
            against aligned integer targets ``(...)``, ``ignore_index=-100``), ``"causal_lm"``
            (HuggingFace convention: logits ``[:, :-1]`` against labels, or input ids, ``[:, 1:]``,
            attention mask respected), or a callable ``(outputs, targets) -> mean loss``. The token
            losses average each sequence's counted tokens, then the sequences (so that the paired
            minibatch baseline is exact), which weights sequences equally. Model outputs may be a
            tensor, a tuple (first item), a dict or a HuggingFace ``ModelOutput`` (``.logits``).
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
            took 1.2–5.8× the time of the run itself (benchmarks/results/calibrate_toys.md): to pay
            it once for many runs, call :func:`slt_basins.calibrate` and reuse its ``settings``.
            The calibration table and the reason for the choice are in
            ``result.checks["calibration"]``; if no ε qualifies,
            :class:`slt_basins.CalibrationError` says what to try.
        localization: γ (default 100, as in Lau et al.'s MNIST experiments): keeps chains near w*,
            at the price of a downward bias in directions where nβ·curvature ≲ γ (the localization bias; see the docs page Theory).
        nbeta: nβ; default n/log n with n the number of training examples (see :func:`default_nbeta`).
        batch_size: minibatch size per chain and step; None uses the full data (a DataLoader's own
            batch size is used when ``data`` is a DataLoader). The baseline L_B(w*) is evaluated on
            the same minibatch as L_B(w_t).
        sampler: ``"sgld"`` (default), ``"rmsprop_sgld"`` (diagonal metric G = 1/(√v̂ + δ), v̂ the
            bias-corrected mean of squared loss gradients from v₀ = 1, adapted during burn-in only, then
            frozen; Hitchcock & Hoogland 2025, arXiv:2507.21449; its ε is not in SGLD's units),
            ``"rmsprop_sgld_normalized"`` (the same metric scaled so that min G = 1, so ε keeps SGLD's
            units), ``"adam_sgld"`` (RMSprop metric plus a bias-corrected first moment of the loss
            gradient in the drift; not a Langevin proposal, larger step-size bias per unit ε),
            ``"sgnht"`` (momentum with a Nosé–Hoover thermostat; η = ε/2), ``"mala"``
            (Metropolis-adjusted, exact at any ε, full batch only), or a
            :class:`~slt_basins.samplers.Kernel` built with options, e.g.
            ``samplers.rmsprop_sgld(delta=1.0)``. The step sizes that suit each kernel differ:
            see :func:`slt_basins.calibrate` and the docs page *Samplers and calibration*.
        params: sample only these parameters and hold the rest at w*: the *weight-refined* (restricted)
            LLC of that block (Wang et al. 2024, arXiv:2410.02984). A list of names or glob patterns on
            ``model.named_parameters()`` names (``"transformer.h.0.*"``), a predicate ``name -> bool``,
            or ``{name: bool mask}`` to sample only the masked entries of a tensor (e.g. one attention
            head: :func:`slt_basins.attention_head_params`). None samples every parameter with
            ``requires_grad``.
        seed: chain c draws its noise and minibatches from ``SeedSequence([seed, c])``: the same seed
            gives identical results, and a chain's draws do not depend on the number of chains.
        device: where to sample (default: the model's device).
        divergence_bound: a chain is stopped and excluded when |nβ·(L_B(w_t) − L_B(w*))| exceeds it
            or its loss is non-finite (default 10·d + 100, far above any honest draw since λ ≤ d/2).
        check_stability: run the checks around sampling: the top Hessian eigenvalue (Lanczos, at most
            10 Hessian-vector products per point, stopping within 3 %) at w* and at the final positions
            of at most 4 non-diverged chains (``checks["stability_end_chains"]``), to warn about unstable
            or biased step sizes; the Hessian's spectral density at w* (64 Hessian-vector products) for
            the localization share (``checks["localization_share"]``, the ``LocalizationWarning``); and
            the MALA acceptance of 8 fresh proposals per chain (``checks["mala_accept"]``, standard error
            ≤ 0.5/√(8·chains); near 1 means a small discretisation bias). For a model they use one
            subsample of ``config["check_examples"]`` examples, sized to cost about 5 % of the sampling
            (at least one minibatch, at most 2048): on a minibatch-sized subsample the curvature is that
            of a minibatch loss, an order-of-magnitude check. Their time is ``checks["checks_time_s"]``.
            Pass False to skip them on large models.
        vectorize: run chains with ``torch.func.vmap`` (falls back to a loop, with a warning, for
            models that cannot be vmapped).
        progress: show a tqdm progress bar over steps.
        distributed: spread the chains over the processes of the initialised ``torch.distributed``
            process group (run under ``torchrun``; the docs page *Scale*). Rank r samples a contiguous block of the chain ids; traces and final states
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
        callback: a function called after every block of (at most 200) steps with a
            :class:`slt_basins.sampling.BlockInfo` (step, per-chain losses, running λ̂, alive chains), e.g. to
            log to an experiment tracker; returning True stops sampling there (the result keeps the draws so
            far, with a warning). The progress bar shows the running λ̂ too.
        evaluate: instead of ``loss``, a callable ``(model, batch) -> mean loss`` for anything else
            (devinterp's convention): ``model`` is called like your module (at the chain's parameters,
            inside ``torch.func.vmap``), ``batch`` is what the data holds (a tuple or dict of tensors,
            for a minibatch: those examples). It must be a mean over the batch's examples, and obey one
            rule: no in-place state and no global random numbers (both break vmap and
            reproducibility). Its minibatch baseline is paired by a forward pass at w*.
        observe: ``{"name": data, ...}``: extra datasets (any form ``data`` takes) whose loss is
            evaluated at every draw of the same chains, paired against its own baseline at w* and
            minibatched like the main data (with its own streams). Sampling uses only ``data``. Each
            gives a data-refined LLC λ̂_obs = nβ·(E_w[L_obs(w)] − L_obs(w*)) with the main run's nβ
            (the posterior's temperature), in ``result.observed["name"]`` (mean, MCSE, trace): the
            sensitivity of that dataset's loss to the basin the training data defines (Wang et al.
            2024, arXiv:2410.02984). Costs one forward pass per observed dataset and draw.

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
    opts = LLCOptions(
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
        localization=localization, nbeta=nbeta, batch_size=batch_size, sampler=sampler, params=params, seed=seed,
        device=device, divergence_bound=divergence_bound, check_stability=check_stability, vectorize=vectorize,
        progress=progress, distributed=distributed, chain_group=chain_group, checkpoint=checkpoint,
        checkpoint_every=checkpoint_every, callback=callback)
    target = ModelTarget.build(model, data, loss, opts, evaluate=evaluate)
    target.observers = _observers(target, observe, loss)
    return _run(target, opts)


def _observers(target: ModelTarget, observe, loss) -> dict:
    """``{name: target}`` of the observed datasets, validated before any sampling."""
    if observe is None:
        return {}
    if not isinstance(observe, dict) or not observe:
        raise TypeError("observe must be a non-empty dict {name: data}, e.g. observe={'test': (x_test, y_test)}.")
    bad = [k for k in observe if not isinstance(k, str)]
    if bad:
        raise TypeError(f"observe's keys must be names (str); got {bad!r}.")
    out = {}
    for name, obs in observe.items():
        try:
            out[name] = target.with_data(obs, loss)
        except (TypeError, ValueError) as e:
            raise type(e)(f"observe[{name!r}]: {e}") from e
    return out


def estimate_llc_potential(
    potential: Callable[[torch.Tensor], torch.Tensor],
    w_star,
    *,
    nbeta: float,
    num_chains: int = _P.num_chains,
    num_draws: int = _P.num_draws,
    num_burnin: int = _P.num_burnin,
    step_size: Union[float, str] = _P.step_size,
    localization: float = _P.localization,
    sampler: Union[str, Kernel] = _P.sampler,
    seed: int = _P.seed,
    device=None,
    divergence_bound: Optional[float] = None,
    check_stability: bool = _P.check_stability,
    progress: bool = _P.progress,
    distributed: bool = _P.distributed,
    chain_group: Optional[int] = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: Optional[int] = None,
    callback: Optional[Callable] = None,
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
            (the localization bias; see the docs page Theory).
            ``step_size="auto"`` calibrates ε first, as in :func:`estimate_llc`.
        divergence_bound: a chain stops when |nβ·(K(w_t) − K(w*))| exceeds it; default 10·d + 100
            (λ ≤ d/2, so honest draws stay far below it).
        distributed, chain_group, checkpoint, checkpoint_every, callback: as in :func:`estimate_llc` (the
            potential must run on each rank's device).

    Example:
        >>> r = estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64),
        ...                            nbeta=100.0, num_draws=2000, step_size=1e-3, progress=False)
        >>> abs(r.llc_mean - 0.5) < 5 * r.mcse + 0.01
        True
    """
    opts = LLCOptions(
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, step_size=step_size,
        localization=localization, nbeta=nbeta, sampler=sampler, seed=seed, device=device,
        divergence_bound=divergence_bound, check_stability=check_stability, progress=progress,
        distributed=distributed, chain_group=chain_group, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        callback=callback)
    return _run(PotentialTarget.build(potential, w_star, opts), opts)
