"""The result of an LLC estimate: estimate, error bars, traces and diagnostics."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import diagnostics

__all__ = ["LLCResult"]


@dataclass
class LLCResult:
    """Outcome of :func:`slt_basins.estimate_llc` or :func:`slt_basins.estimate_llc_potential`.

    Units: λ̂ is dimensionless (a learning coefficient, e.g. d/2 for a regular model); losses are in
    the units of the mean training loss L_n.

    Attributes:
        llc_mean: λ̂ = nβ·(mean of post-burn-in L(w_t) − L(w*)), averaged over non-diverged chains.
        llc_std: standard deviation of the per-chain estimates (ddof=1); None with one chain.
        llc_per_chain: per-chain λ̂, one per row of the traces (``chain_ids`` gives the chain index).
        mcse: Monte Carlo standard error of ``llc_mean`` from ArviZ (autocorrelation-aware). This is
            the error bar of the sampler; it does not include the asymptotic biases of the estimator
            (localisation, step size, finite nβ; see the README).
        loss_trace: ``(chains, draws)`` minibatch losses L_B(w_t) after burn-in.
        llc_trace: ``(chains, draws)`` per-draw values nβ·(L_B(w_t) − L_B(w*)) (paired baseline).
        init_loss: L_n(w*) on the full data (K(w*) for a potential).
        nbeta: nβ used.
        diverged: indices of chains stopped for divergence and excluded from the estimate.
        chain_ids: chain index of each row of the traces.
        config: the settings of the run (sampler, ε, γ, n, d, batch size, seed, ...).
        checks: measured diagnostics (gradient norm at w*, divergence steps, R-hat, ESS, ...).
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
    checks: dict = field(default_factory=dict)

    # -- presentation ------------------------------------------------------------------------------
    @property
    def llc_se(self) -> float:
        """The error bar reported with ``llc_mean`` (the ArviZ MCSE)."""
        return self.mcse

    @property
    def num_chains(self) -> int:
        return int(self.llc_trace.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.llc_trace.shape[1])

    def __str__(self) -> str:
        s = (f"LLC = {self.llc_mean:.4g} ± {self.mcse:.2g} (MCSE; {self.num_chains} chains × "
             f"{self.num_draws} draws, nβ = {self.nbeta:.4g}")
        if "r_hat" in self.checks and self.checks["r_hat"] is not None:
            s += f", R-hat {self.checks['r_hat']:.3f}, ESS {self.checks['ess_bulk']:.0f}"
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

    def summary(self) -> pd.DataFrame:
        """ArviZ diagnostics of the per-draw LLC and loss: mean, sd, MCSE, bulk/tail ESS, R-hat.

        R-hat needs at least two chains (NaN otherwise); values above 1.01 mean the chains disagree
        (``estimate_llc`` warns only above 1.05, where the error bar is clearly unreliable)
        and the error bar is not trustworthy. The row ``llc`` mean equals ``llc_mean``.
        """
        return diagnostics.summary_table({"llc": self.llc_trace, "loss": self.loss_trace})

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
            "chain_ids": list(map(int, self.chain_ids)), "config": self.config, "checks": self.checks,
        }
        np.savez(path, llc_per_chain=self.llc_per_chain, loss_trace=self.loss_trace,
                 llc_trace=self.llc_trace, meta=np.array(json.dumps(meta, default=_json_default)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LLCResult":
        """Load a result written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
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
