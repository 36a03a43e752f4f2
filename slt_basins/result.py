"""The result of an LLC estimate (estimate, error bars, traces) and its typed diagnostics record.

:class:`Checks` names every diagnostic a run measures, with its unit; a check that failed to run
is recorded as a :class:`CheckFailure`, not as a string. :class:`LLCResult` holds the estimate and
both, and saves to / loads from ``.npz`` files (files written by release 0.1.0, whose checks were a
plain dict, still load).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import numpy as np
import pandas as pd

from . import diagnostics

__all__ = ["LLCResult", "Checks", "CheckFailure", "ObservedLLC"]


class CheckFailure(NamedTuple):
    """A diagnostic that could not be computed: which ``check``, the exception type and its message.

    >>> CheckFailure("stability", "RuntimeError", "no vmap rule")
    CheckFailure(check='stability', error='RuntimeError', message='no vmap rule')
    """

    check: str
    error: str
    message: str

    @classmethod
    def from_exception(cls, check: str, e: BaseException) -> "CheckFailure":
        """The failure of ``check`` that raised ``e``.

        >>> print(CheckFailure.from_exception("mala_probe", ValueError("loss is nan")))
        mala_probe: ValueError: loss is nan
        """
        return cls(check, type(e).__name__, str(e))

    def __str__(self) -> str:
        return f"{self.check}: {self.error}: {self.message}"


_LEGACY_FAILURES = {"stability_check_error": "stability", "mala_probe_error": "mala_probe"}


@dataclass
class Checks:
    """Diagnostics measured by one LLC run. ``None`` means "not measured" (switched off, or the check
    does not apply to the sampler); a check that raised is listed in ``failures``.

    Attributes:
        grad_norm: ‖∇L_n(w*)‖ at the centre (loss units per parameter unit).
        grad_bias_bound: nβ²·‖∇L_n(w*)‖²/γ, the largest shift of λ̂ the linear term can cause
            (dimensionless, λ units; inf at γ = 0 with a non-zero gradient).
        hessian_max_abs_eig: h_max, the largest |eigenvalue| of the Hessian of L_n at w* (loss units
            per squared parameter unit), by Lanczos on a subsample of the data (a lower bound, stopped
            once an eigenvalue lies within 3 % of it; :func:`slt_basins.checks.top_curvature`).
        step_stability: the kernel's stability ratio ε·(nβ·h_max + γ)/c at w* (dimensionless; ≥ 1
            is unstable, c = ``Kernel.stability_divisor``).
        hessian_max_abs_eig_end, step_stability_end: the same at the final positions of the
            chains in ``stability_end_chains`` (the largest over them).
        stability_end_chains: the ids of the (at most 4, non-diverged) chains whose final position
            was checked (:func:`slt_basins.checks.end_chains`); a stiff excursion of another chain
            can be missed.
        mala_accept: mean Metropolis acceptance probability (0–1): MALA's own, or that of fresh
            Langevin proposals of an unadjusted kernel (in antithetic pairs) from four positions per
            chain: three kept during the draws and the final one
            (:func:`slt_basins.checks.mala_probe`).
        r_hat: rank-normalised split R-hat of the per-draw LLC (≥ 2 chains).
        ess_bulk: bulk effective sample size of the per-draw LLC (draws).
        wall_time_s: seconds spent in the chain loop (the checks excluded).
        checks_time_s: seconds spent in the checks around it (curvature at w* and at the chains' ends,
            MALA probe; the gradient at w* comes from the target's full-data pass at build, not counted).
        quadratic_llc: Σ ½·nβh_i/(nβh_i + γ) over the Hessian spectrum at w* (stochastic Lanczos
            quadrature): λ̂ of the quadratic model of the loss at this γ (dimensionless).
        localization_share: −d log(quadratic_llc)/d log γ, from 0 (the loss sets λ̂) to 1 (λ̂ ∝ 1/γ, γ
            sets it); above 0.5 a :class:`~slt_basins.errors.LocalizationWarning` is issued.
        localization_half: the γ nearest to the run's (log scale) at which that share crosses 0.5:
            below the run's γ when the share is above 0.5, above it otherwise (same units as γ).
        diverged_at_step: chain id → step (burn-in included) at which that chain was stopped.
        resumed_from_step: the step a checkpoint was resumed from, or None.
        calibration: for ``step_size="auto"``, the calibration summary (chosen ε, reason, rules, table).
        failures: the checks that raised, as :class:`CheckFailure` values.

    Read a field as an attribute (``r.checks.r_hat``) or by name (``r.checks["r_hat"]``); an unknown
    name raises ``KeyError`` listing the valid ones, so a typo never reads as None.

    >>> c = Checks(r_hat=1.01)
    >>> c["r_hat"], c.get("mala_accept")
    (1.01, None)
    >>> c["rhat"]
    Traceback (most recent call last):
    ...
    KeyError: "no check named 'rhat'; the checks are grad_norm, grad_bias_bound, hessian_max_abs_eig, step_stability, hessian_max_abs_eig_end, step_stability_end, stability_end_chains, mala_accept, r_hat, ess_bulk, wall_time_s, checks_time_s, quadratic_llc, localization_share, localization_half, diverged_at_step, resumed_from_step, calibration, failures"
    """

    grad_norm: Optional[float] = None
    grad_bias_bound: Optional[float] = None
    hessian_max_abs_eig: Optional[float] = None
    step_stability: Optional[float] = None
    hessian_max_abs_eig_end: Optional[float] = None
    step_stability_end: Optional[float] = None
    stability_end_chains: Optional[list] = None
    mala_accept: Optional[float] = None
    r_hat: Optional[float] = None
    ess_bulk: Optional[float] = None
    wall_time_s: Optional[float] = None
    checks_time_s: Optional[float] = None
    quadratic_llc: Optional[float] = None
    localization_share: Optional[float] = None
    localization_half: Optional[float] = None
    diverged_at_step: dict = field(default_factory=dict)
    resumed_from_step: Optional[int] = None
    calibration: Optional[dict] = None
    failures: list = field(default_factory=list)

    @classmethod
    def names(cls) -> list[str]:
        """The names of all checks, in the order of the fields.

        >>> Checks.names()[:3]
        ['grad_norm', 'grad_bias_bound', 'hessian_max_abs_eig']
        """
        return [f.name for f in dataclasses.fields(cls)]

    def _name(self, key: str) -> str:
        if key not in self.names():
            raise KeyError(f"no check named {key!r}; the checks are {', '.join(self.names())}")
        return key

    def __getitem__(self, key: str):
        return getattr(self, self._name(key))

    def get(self, key: str, default=None):
        """The value of check ``key`` (``default`` where it is None); unknown names raise KeyError."""
        v = self[key]
        return default if v is None else v

    def __contains__(self, key) -> bool:
        return key in self.names() and getattr(self, key) is not None

    def items(self):
        """(name, value) of the measured checks (those that are not None or empty)."""
        return [(k, v) for k, v in self.as_dict().items()]

    def failure(self, check: str) -> Optional[CheckFailure]:
        """The failure of ``check``, or None."""
        return next((f for f in self.failures if f.check == check), None)

    def as_dict(self) -> dict:
        """The measured checks as a JSON-ready dict (failures as lists [check, error, message])."""
        out = {}
        for k in self.names():
            v = getattr(self, k)
            if v is None or (k in ("failures", "diverged_at_step") and not v):
                continue
            out[k] = [list(f) for f in v] if k == "failures" else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Checks":
        """Read :meth:`as_dict` output, or the plain dict of release 0.1.0 (its ``*_error`` strings
        become :class:`CheckFailure` values)."""
        d = dict(d)
        failures = [CheckFailure(*f) for f in d.pop("failures", [])]
        for key, check in _LEGACY_FAILURES.items():
            if key in d:
                err, _, msg = str(d.pop(key)).partition(": ")
                failures.append(CheckFailure(check, err, msg))
        unknown = set(d) - set(cls.names())
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)} in a saved result; it was written by a newer "
                             "release of slt_basins: upgrade to read it.")
        div = {int(k): int(v) for k, v in d.pop("diverged_at_step", {}).items()}
        return cls(**d, diverged_at_step=div, failures=failures)


@dataclass
class ObservedLLC:
    """The data-refined LLC of one observed dataset, from the same chains as the main estimate.

    λ̂_obs = nβ·(E_w[L_obs(w)] − L_obs(w*)), where the expectation is over the posterior sampled with
    the *main* data, and nβ is the main run's (the chains' temperature); L_obs is the same loss on the
    observed dataset, evaluated on its own minibatches and paired with its own baseline at w*
    (Wang, Farrugia-Roberts, Hoogland, Carroll, Wei, Murfet 2024, arXiv:2410.02984).

    Attributes:
        llc_mean, mcse: λ̂_obs and its MCSE (dimensionless; :func:`slt_basins.diagnostics.llc_mcse`).
        llc_trace, loss_trace: ``(chains, draws)`` per-draw values nβ·(L_obs,B(w_t) − L_obs,B(w*)) and
            L_obs,B(w_t) (loss units), for the chains kept in the main estimate.
        init_loss: L_obs(w*) on the whole observed dataset.
        n: its number of examples.

    >>> o = ObservedLLC(1.5, 0.1, np.ones((2, 4)), np.zeros((2, 4)), 0.0, 10)
    >>> str(o)
    'λ̂_obs = 1.5 ± 0.1 (MCSE; n_obs = 10)'
    """

    llc_mean: float
    mcse: float
    llc_trace: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    n: int

    def __str__(self) -> str:
        return f"λ̂_obs = {self.llc_mean:.4g} ± {self.mcse:.2g} (MCSE; n_obs = {self.n})"


@dataclass
class LLCResult:
    """Outcome of :func:`slt_basins.estimate_llc` or :func:`slt_basins.estimate_llc_potential`.

    Units: λ̂ is dimensionless (a learning coefficient, e.g. d/2 for a regular model); losses are in
    the units of the mean training loss L_n.

    Attributes:
        llc_mean: λ̂ = nβ·(mean of post-burn-in L(w_t) − L(w*)), averaged over non-diverged chains.
        llc_std: standard deviation of the per-chain estimates (ddof=1); None with one chain.
        llc_per_chain: per-chain λ̂, one per row of the traces (``chain_ids`` gives the chain index).
        mcse: Monte Carlo standard error of ``llc_mean``: the larger of ArviZ's autocorrelation-aware
            MCSE and the between-chain standard error (:func:`slt_basins.diagnostics.llc_mcse`). This is
            the error bar of the sampler; it does not include the asymptotic biases of the estimator
            (localisation, step size, finite nβ; see "When not to trust a number" on the docs page
            Estimating the LLC).
        loss_trace: ``(chains, draws)`` minibatch losses L_B(w_t) after burn-in.
        llc_trace: ``(chains, draws)`` per-draw values nβ·(L_B(w_t) − L_B(w*)) (paired baseline).
        init_loss: L_n(w*) on the full data (K(w*) for a potential).
        nbeta: nβ used.
        diverged: indices of chains stopped for divergence and excluded from the estimate.
        chain_ids: chain index of each row of the traces.
        config: the settings of the run (sampler, ε, γ, n, d, batch size, seed, ...).
        checks: the measured diagnostics, a :class:`Checks` record.
        observed: name → :class:`ObservedLLC` of each dataset passed as ``observe=`` (data-refined
            LLCs from the same chains); empty without ``observe``.

    Example (a result built by hand; the estimators build it from their chains):
        >>> import os, tempfile
        >>> draws = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])  # nβ·(L(w_t) − L(w*)) per chain and draw
        >>> r = LLCResult(llc_mean=2.0, llc_std=0.0, llc_per_chain=draws.mean(1), mcse=0.3,
        ...               loss_trace=draws / 100, llc_trace=draws, init_loss=0.0, nbeta=100.0,
        ...               diverged=[], chain_ids=[0, 1], checks=Checks(r_hat=1.01, ess_bulk=5.0))
        >>> print(r)
        LLC = 2 ± 0.3 (MCSE; 2 chains × 3 draws, nβ = 100, R-hat 1.010, ESS 5)
        >>> r.to_dataframe().shape  # one row per (chain, draw)
        (6, 4)
        >>> path = os.path.join(tempfile.mkdtemp(), "llc.npz")
        >>> r.save(path)
        >>> r2 = LLCResult.load(path)
        >>> r2.checks.r_hat, bool((r2.llc_trace == r.llc_trace).all())
        (1.01, True)
    """

    llc_mean: float
    llc_std: Optional[float]
    llc_per_chain: np.ndarray
    mcse: float
    loss_trace: np.ndarray
    llc_trace: np.ndarray
    init_loss: float
    nbeta: float
    diverged: list
    chain_ids: list
    config: dict = field(default_factory=dict)
    checks: Checks = field(default_factory=Checks)
    observed: dict = field(default_factory=dict)

    # -- presentation ------------------------------------------------------------------------------
    @property
    def llc_se(self) -> float:
        """The error bar reported with ``llc_mean`` (the ArviZ MCSE)."""
        return self.mcse

    @property
    def num_chains(self) -> int:
        """Chains kept in the estimate (rows of the traces; diverged chains excluded)."""
        return int(self.llc_trace.shape[0])

    @property
    def num_draws(self) -> int:
        """Post-burn-in draws per chain (columns of the traces)."""
        return int(self.llc_trace.shape[1])

    def __str__(self) -> str:
        s = (f"LLC = {self.llc_mean:.4g} ± {self.mcse:.2g} (MCSE; {self.num_chains} chains × "
             f"{self.num_draws} draws, nβ = {self.nbeta:.4g}")
        if self.checks.r_hat is not None:
            s += f", R-hat {self.checks.r_hat:.3f}, ESS {self.checks.ess_bulk:.0f}"
        if self.diverged:
            s += f"; chains {self.diverged} diverged and are excluded"
        return s + ")"

    def __repr__(self) -> str:
        return f"LLCResult({self})"

    def to_dataframe(self) -> pd.DataFrame:
        """Long-format table: one row per (chain, draw) with ``loss`` and ``llc`` columns."""
        c, t = self.llc_trace.shape
        return pd.DataFrame({
            "chain": np.repeat(np.asarray(self.chain_ids, dtype=int), t),
            "draw": np.tile(np.arange(t), c),
            "loss": self.loss_trace.reshape(-1),
            "llc": self.llc_trace.reshape(-1),
        })

    def to_inference_data(self):
        """An ``arviz.InferenceData`` with variables ``llc`` and ``loss`` per (chain, draw)."""
        return diagnostics.to_inference_data(
            {"llc": self.llc_trace, "loss": self.loss_trace},
            attrs={"nbeta": self.nbeta, "init_loss": self.init_loss, **self.config},
        )

    @property
    def grad_evals(self) -> Optional[int]:
        """Loss-and-gradient evaluations the chains made (chains × steps × the kernel's evaluations per
        step; one evaluation = one chain's gradient on one minibatch, of ``config["batch_size"]`` examples
        or the full data). The checks' evaluations are not counted. None when unknown (old files)."""
        c = self.config
        if "grad_evals" in c:
            return int(c["grad_evals"])
        if all(k in c for k in ("num_chains", "num_burnin", "num_draws")):
            return int(c["num_chains"]) * (int(c["num_burnin"]) + int(c["num_draws"]))
        return None

    def summary(self) -> pd.DataFrame:
        """ArviZ diagnostics of the per-draw LLC and loss: mean, sd, MCSE, bulk/tail ESS, R-hat, and the
        bulk ESS per 1,000 gradient evaluations (``ess_bulk_per_1k_grad``: the efficiency by work, so that
        samplers and settings compare by cost, not by steps; see :attr:`grad_evals`).

        R-hat needs at least two chains (NaN otherwise); values above 1.01 mean the chains disagree
        (``estimate_llc`` warns only above 1.05, where the error bar is clearly unreliable)
        and the error bar is not trustworthy. The row ``llc`` mean equals ``llc_mean``.
        """
        table = diagnostics.summary_table({"llc": self.llc_trace, "loss": self.loss_trace})
        work = self.grad_evals
        table["ess_bulk_per_1k_grad"] = table["ess_bulk"] / (work / 1000) if work else float("nan")
        return table

    def plot_trace(self, figsize=(9, 3.5)):
        """A matplotlib Figure: per-draw LLC values per chain with running means (not shown)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 1])
        steps = np.arange(self.num_draws)
        for row, cid in enumerate(self.chain_ids):
            x = self.llc_trace[row]
            line, = ax1.plot(steps, x, lw=0.5, alpha=0.5)
            ax1.plot(steps, np.cumsum(x) / (steps + 1), lw=1.5, color=line.get_color(), label=f"chain {cid}")
            ax2.hist(x, bins=40, orientation="horizontal", histtype="step", color=line.get_color())
        ax1.axhline(self.llc_mean, color="k", ls="--", lw=1, label=f"λ̂ = {self.llc_mean:.3g} ± {self.mcse:.2g}")
        ax1.set_xlabel("draw (after burn-in)")
        ax1.set_ylabel("nβ·(L(w_t) − L(w*))")
        ax1.set_title("per-draw LLC and running mean per chain")
        ax1.legend(fontsize=7, loc="best")
        ax2.set_xlabel("count")
        ax2.set_title("per-draw distribution")
        return fig

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save to a NumPy ``.npz`` file (arrays plus JSON metadata); reload with :meth:`load`."""
        meta = {
            "llc_mean": self.llc_mean, "llc_std": self.llc_std, "mcse": self.mcse,
            "init_loss": self.init_loss, "nbeta": self.nbeta, "diverged": list(map(int, self.diverged)),
            "chain_ids": list(map(int, self.chain_ids)), "config": self.config, "checks": self.checks.as_dict(),
            "observed": {k: dict(llc_mean=o.llc_mean, mcse=o.mcse, init_loss=o.init_loss, n=o.n)
                         for k, o in self.observed.items()},
        }
        arrays = {f"observed_{kind}_{i}": getattr(o, f"{kind}_trace") for i, o in enumerate(self.observed.values())
                  for kind in ("llc", "loss")}
        np.savez(path, llc_per_chain=self.llc_per_chain, loss_trace=self.loss_trace,
                 llc_trace=self.llc_trace, meta=np.array(json.dumps(meta, default=_json_default)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LLCResult":
        """Load a result written by :meth:`save` (this release or 0.1.0)."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            meta["checks"] = Checks.from_dict(meta.get("checks", {}))
            meta["observed"] = {k: ObservedLLC(llc_trace=f[f"observed_llc_{i}"], loss_trace=f[f"observed_loss_{i}"], **o)
                                for i, (k, o) in enumerate(meta.get("observed", {}).items())}
            return cls(llc_per_chain=f["llc_per_chain"], loss_trace=f["loss_trace"],
                       llc_trace=f["llc_trace"], **meta)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
