"""The LLC along training: :func:`estimate_llc_trajectory` over a sequence of checkpoints.

Developmental interpretability reads how λ̂ changes over training (Hoogland, Wang, Farrugia-Roberts,
Carroll, Wei, Murfet 2024, "The developmental landscape of in-context learning",
arXiv:2402.02364): stages show up as plateaus and jumps of the LLC curve. Curves are comparable
across checkpoints only when every checkpoint is sampled with the same settings (the same nβ, γ, ε,
chains, draws and seed), which is what this module enforces: ``step_size="auto"`` calibrates once,
at one checkpoint, and the chosen ε is reused for all.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(200, 2); y = x @ torch.tensor([1.0, -1.0]) + 0.1 * torch.randn(200)
    >>> model = nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1); states = []
    >>> for step in range(30):
    ...     opt.zero_grad(); nn.functional.mse_loss(model(x).squeeze(1), y).backward(); opt.step()
    ...     if step % 10 == 9: states.append((step + 1, {k: v.clone() for k, v in model.state_dict().items()}))
    >>> traj = estimate_llc_trajectory(states, (x, y), model=model, step_size=1e-3, localization=10.0,
    ...                                num_draws=200, num_burnin=100, progress=False)
    >>> traj.to_dataframe()[["step", "llc_mean"]].shape
    (3, 2)
"""
from __future__ import annotations

import copy
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import warn
from .llc import estimate_llc
from .result import LLCResult

__all__ = ["estimate_llc_trajectory", "TrajectoryResult"]

_MANIFEST = "trajectory.json"


@dataclass
class TrajectoryResult:
    """λ̂ at each checkpoint of a training run, all sampled with the same settings.

    Attributes:
        steps: the training step of each checkpoint (as given, or 0, 1, 2, … by position).
        results: the :class:`~slt_basins.result.LLCResult` of each checkpoint (same order).
        warnings: the warning messages each checkpoint's run raised (same order).
        settings: the settings every checkpoint was run with (ε the calibrated one under ``"auto"``).
        calibration: the calibration summary (chosen ε, reason, table) when ``step_size="auto"``.
    """

    steps: list
    results: list
    warnings: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    calibration: Optional[dict] = None

    @property
    def llc_mean(self) -> np.ndarray:
        """λ̂ per checkpoint."""
        return np.array([r.llc_mean for r in self.results])

    @property
    def mcse(self) -> np.ndarray:
        """The MCSE of λ̂ per checkpoint."""
        return np.array([r.mcse for r in self.results])

    def to_dataframe(self) -> pd.DataFrame:
        """One row per checkpoint: step, λ̂, MCSE, R-hat, bulk ESS, the loss at w* (``init_loss``), the
        gradient norm at w*, the number of warnings and their messages (joined by " | ")."""
        rows = []
        for step, r, msgs in zip(self.steps, self.results, self.warnings or [[]] * len(self.results)):
            rows.append(dict(step=step, llc_mean=r.llc_mean, mcse=r.mcse, r_hat=r.checks.r_hat,
                             ess_bulk=r.checks.ess_bulk, init_loss=r.init_loss, grad_norm=r.checks.grad_norm,
                             num_warnings=len(msgs), warnings=" | ".join(msgs)))
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        lo, hi = (float(np.min(self.llc_mean)), float(np.max(self.llc_mean))) if self.results else (math.nan,) * 2
        flagged = sum(1 for m in self.warnings if m)
        return (f"LLC trajectory over {len(self.results)} checkpoints (steps {self.steps[0]}–{self.steps[-1]}): "
                f"λ̂ from {lo:.4g} to {hi:.4g}; {flagged} checkpoint(s) with warnings")

    def __repr__(self) -> str:
        return f"TrajectoryResult({self})"

    def plot(self, figsize=(7, 3.5)):
        """A matplotlib Figure (not shown): λ̂ ± MCSE against step, the loss at w* on a second axis;
        checkpoints whose run warned are drawn hollow."""
        from matplotlib.figure import Figure

        df = self.to_dataframe()
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.subplots()
        ax.errorbar(df["step"], df["llc_mean"], yerr=df["mcse"], fmt="-", color="C0", capsize=2, lw=1.2)
        ok, bad = df[df["num_warnings"] == 0], df[df["num_warnings"] > 0]
        ax.plot(ok["step"], ok["llc_mean"], "o", color="C0", label="λ̂ ± MCSE")
        ax.plot(bad["step"], bad["llc_mean"], "o", mfc="white", color="C0", label="λ̂ (run warned)")
        ax.set_xlabel("training step")
        ax.set_ylabel("λ̂", color="C0")
        ax2 = ax.twinx()
        ax2.plot(df["step"], df["init_loss"], "s--", color="C1", ms=3, lw=1, label="L_n(w*)")
        ax2.set_ylabel("training loss L_n(w*)", color="C1")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("LLC over training (same settings at every checkpoint)", fontsize=9)
        return fig

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, folder: Union[str, os.PathLike]) -> None:
        """Write a folder: one ``llc_<i>.npz`` per checkpoint (:meth:`LLCResult.save`) and a manifest."""
        os.makedirs(folder, exist_ok=True)
        for i, r in enumerate(self.results):
            r.save(os.path.join(folder, f"llc_{i:04d}.npz"))
        _write_manifest(folder, self.settings, self.steps, self.warnings, self.calibration)

    @classmethod
    def load(cls, folder: Union[str, os.PathLike]) -> "TrajectoryResult":
        """Read a folder written by :meth:`save` (or by a run with ``checkpoint=folder``)."""
        man = _read_manifest(folder)
        if man is None:
            raise FileNotFoundError(f"no {_MANIFEST} in {folder}: not a saved trajectory.")
        done = man["done"]
        results = [LLCResult.load(os.path.join(folder, f"llc_{i:04d}.npz")) for i in range(len(man["steps"]))
                   if str(i) in done]
        return cls(steps=[man["steps"][int(i)] for i in sorted(done, key=int)], results=results,
                   warnings=[done[i] for i in sorted(done, key=int)], settings=man["settings"],
                   calibration=man.get("calibration"))


def _write_manifest(folder, settings: dict, steps: list, warnings_: list, calibration, done=None) -> None:
    done = {str(i): w for i, w in enumerate(warnings_)} if done is None else done
    tmp = os.path.join(folder, _MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(dict(settings=settings, steps=steps, done=done, calibration=calibration), f, default=str)
    os.replace(tmp, os.path.join(folder, _MANIFEST))


def _read_manifest(folder) -> Optional[dict]:
    path = os.path.join(folder, _MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# --- checkpoints ---------------------------------------------------------------------------------------

def _pairs(checkpoints: Sequence) -> tuple[list, list]:
    """(steps, checkpoints) from a sequence of checkpoints or of (step, checkpoint) pairs."""
    if isinstance(checkpoints, (str, os.PathLike, nn.Module, dict)) or not hasattr(checkpoints, "__len__"):
        raise TypeError("checkpoints must be a sequence (list or tuple) of modules, state dicts or file paths, "
                        f"optionally as (step, checkpoint) pairs; got {type(checkpoints).__name__}.")
    items = list(checkpoints)
    if not items:
        raise ValueError("checkpoints is empty: pass at least one checkpoint.")
    paired = [isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], (int, np.integer)) for c in items]
    if any(paired) and not all(paired):
        raise ValueError("mix of (step, checkpoint) pairs and bare checkpoints: give all as pairs or none.")
    steps = [int(c[0]) for c in items] if all(paired) else list(range(len(items)))
    ckpts = [c[1] for c in items] if all(paired) else items
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"the steps must increase strictly; got {steps}.")
    return steps, ckpts


def _state_dict_of(obj: Any) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        return obj
    raise TypeError(f"a checkpoint file must hold a state dict (torch.save(model.state_dict(), path)); got "
                    f"{type(obj).__name__}.")


def _materialise(ckpt: Any, template: Optional[nn.Module], where: str) -> nn.Module:
    """The module of one checkpoint: a module as it is; a state dict or file loaded into ``template``."""
    if isinstance(ckpt, nn.Module):
        return ckpt
    if template is None:
        raise ValueError(f"{where} is a {'file' if isinstance(ckpt, (str, os.PathLike)) else 'state dict'}: pass "
                         "model= (a module of the same architecture) as the template to load it into.")
    if isinstance(ckpt, (str, os.PathLike)):
        if not os.path.exists(ckpt):
            raise FileNotFoundError(f"{where}: no file {os.fspath(ckpt)!r}.")
        dev = next(template.parameters()).device
        ckpt = _state_dict_of(torch.load(ckpt, map_location=dev, weights_only=True))
    if not isinstance(ckpt, dict):
        raise TypeError(f"{where} must be a module, a state dict or a file path; got {type(ckpt).__name__}.")
    try:
        template.load_state_dict(ckpt)
    except RuntimeError as e:
        raise ValueError(f"{where} does not fit model=: {str(e).splitlines()[0]}") from e
    return template


# --- the run ---------------------------------------------------------------------------------------------

def _one(module: nn.Module, data, loss, options: dict, step) -> tuple[LLCResult, list]:
    """λ̂ at one checkpoint; its warnings are re-issued naming the step and returned as messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(module, data, loss, **options)
    msgs = []
    for w in caught:
        if issubclass(w.category, UserWarning):
            msgs.append(str(w.message))
            warn(f"at step {step}: {w.message}", w.category)
    return r, msgs


def _calibrate_once(ckpts, steps, template, data, loss, options: dict, at: int):
    """Run ``step_size="auto"`` at checkpoint ``at`` and return (options with ε fixed, calibration summary)."""
    if not -len(ckpts) <= at < len(ckpts):
        raise ValueError(f"calibrate_at={at} is not a checkpoint index (0 … {len(ckpts) - 1}, or negative).")
    module = _materialise(ckpts[at], template, f"checkpoint {at}")
    r, _ = _one(module, data, loss, options, steps[at])
    cal = dict(r.checks.calibration or {}, checkpoint_index=at % len(ckpts), step=steps[at])
    return dict(options, step_size=float(cal["step_size"])), cal, (at % len(ckpts), r)


def estimate_llc_trajectory(
    checkpoints: Sequence,
    data: Any,
    loss: Union[str, Callable] = "mse",
    *,
    model: Optional[nn.Module] = None,
    calibrate_at: int = -1,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    **estimate_llc_options,
) -> TrajectoryResult:
    """Estimate λ̂ at every checkpoint of a training run, with the same settings at each.

    Args:
        checkpoints: a sequence of modules, state dicts or ``torch.save`` files of state dicts
            (for the last two, ``model=`` is the template they are loaded into), optionally as
            ``(step, checkpoint)`` pairs with strictly increasing steps (default steps 0, 1, 2, …).
        data, loss: as in :func:`~slt_basins.estimate_llc`; the same data for every checkpoint.
        model: the template module for state dicts and files. It is overwritten by each checkpoint's
            weights in turn (pass a copy if you need it intact).
        calibrate_at: with ``step_size="auto"``, the index of the checkpoint where ε is calibrated
            (default −1, the last: the trained model, usually the stiffest); the chosen ε is then
            used at every checkpoint, so that the curve compares like with like.
        checkpoint: a folder. Each finished checkpoint's result is written there, with a manifest
            of the settings; a rerun with the same settings skips the finished ones (and refuses
            other settings, naming them). Each unfinished run also checkpoints its chain loop there.
        progress: one progress bar over the checkpoints (the runs themselves are silent).
        **estimate_llc_options: passed to every :func:`~slt_basins.estimate_llc` call (num_chains,
            num_draws, num_burnin, step_size, localization, nbeta, batch_size, seed, …).

    Returns:
        :class:`TrajectoryResult`; each checkpoint's warnings are re-issued prefixed with its step.

    Assumptions: each checkpoint is (near) a local minimum of the loss on ``data``; early
    checkpoints often are not, and the gradient warning says so (its bound is in the table).
    """
    if "progress" in estimate_llc_options:
        raise TypeError("progress is this function's own argument.")
    steps, ckpts = _pairs(checkpoints)
    options = dict(estimate_llc_options, progress=False)
    template = copy.deepcopy(model) if model is not None and any(not isinstance(c, nn.Module) for c in ckpts) \
        else model
    done, calibration, pre = {}, None, None
    if checkpoint is not None:
        done, calibration = _resume(os.fspath(checkpoint), options, steps)
    if options.get("step_size") == "auto":
        options, calibration, pre = _calibrate_once(ckpts, steps, template, data, loss, options, calibrate_at)
    results: dict = {}
    msgs: dict = {}
    bar = tqdm(total=len(ckpts), desc="LLC trajectory", unit="ckpt", disable=not progress)
    for i, (step, ck) in enumerate(zip(steps, ckpts)):
        if str(i) in done:
            results[i], msgs[i] = LLCResult.load(os.path.join(checkpoint, f"llc_{i:04d}.npz")), done[str(i)]
        elif pre is not None and pre[0] == i:
            results[i], msgs[i] = pre[1], []
        else:
            run_opts = options if checkpoint is None else dict(options, checkpoint=os.path.join(checkpoint,
                                                                                               f"llc_{i:04d}.ckpt"))
            results[i], msgs[i] = _one(_materialise(ck, template, f"checkpoint {i}"), data, loss, run_opts, step)
            if checkpoint is not None:
                results[i].save(os.path.join(checkpoint, f"llc_{i:04d}.npz"))
                done[str(i)] = msgs[i]
                _write_manifest(checkpoint, _fingerprint(options), steps, [], calibration, done)
        bar.update(1)
        bar.set_postfix_str(f"step {step}: λ̂ = {results[i].llc_mean:.3g} ± {results[i].mcse:.2g}")
    bar.close()
    return TrajectoryResult(steps=steps, results=[results[i] for i in range(len(ckpts))],
                            warnings=[msgs[i] for i in range(len(ckpts))], settings=_fingerprint(options),
                            calibration=calibration)


def _fingerprint(options: dict) -> dict:
    """The settings that must agree for results to be comparable (and resumable), as plain values."""
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else repr(v))
            for k, v in sorted(options.items()) if k not in ("progress", "checkpoint", "checkpoint_every")}


def _resume(folder: str, options: dict, steps: list) -> tuple[dict, Optional[dict]]:
    """The finished checkpoints recorded in ``folder`` and its calibration (after checking that the
    settings agree); a calibrated ε found there replaces ``step_size="auto"`` in ``options``."""
    os.makedirs(folder, exist_ok=True)
    man = _read_manifest(folder)
    if man is None:
        return {}, None
    want = _fingerprint(options)
    saved = man["settings"]
    if man.get("calibration") is not None and options.get("step_size") == "auto":
        want = dict(want, step_size=saved.get("step_size"))
    diff = sorted(k for k in set(want) | set(saved) if want.get(k) != saved.get(k))
    if diff or man["steps"] != steps:
        what = ", ".join(f"{k}: {saved.get(k)!r} in the folder, {want.get(k)!r} now" for k in diff) or "the steps"
        raise ValueError(f"the trajectory folder {folder} was written with other settings ({what}); use another "
                         "folder or delete it to start afresh.")
    for i in man["done"]:
        if not os.path.exists(os.path.join(folder, f"llc_{int(i):04d}.npz")):
            raise ValueError(f"{folder}: the manifest lists checkpoint {i} as done but its result file is missing.")
    if man.get("calibration") is not None and options.get("step_size") == "auto":
        options["step_size"] = man["calibration"]["step_size"]
    return dict(man["done"]), man.get("calibration")
