"""All ArviZ calls of the package live here (ESS, R-hat, MCSE, InferenceData).

The package supports ArviZ 0.x (0.23 is the last release for Python < 3.12). Keeping the calls in
one module confines any future API migration to this file.
"""
from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
import pandas as pd

_AZ = None


def _az():
    """ArviZ, imported on first use (it takes seconds to import, and most runs need it only once)."""
    global _AZ
    if _AZ is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz

        _AZ = arviz
    return _AZ

__all__ = ["mcse_mean", "llc_mcse", "between_chain_se", "ess_bulk", "rhat", "summary_table", "to_inference_data"]


def _as_chain_draw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (chains, draws) array; got shape {x.shape}")
    return x


def mcse_mean(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of a ``(chains, draws)`` array (ArviZ, ESS-based).

    Accounts for autocorrelation within chains and, with several chains, for disagreement
    between them. Needs at least 4 draws per chain. Units: those of the draws.

    >>> x = np.random.default_rng(0).normal(size=(4, 1000))  # independent draws: MCSE ≈ 1/√4000
    >>> round(mcse_mean(x), 3)
    0.016
    """
    x = _as_chain_draw(draws)
    return float(_az().mcse(x, method="mean"))


def llc_mcse(draws: np.ndarray) -> float:
    """The error bar the LLC estimators report: the larger of the ArviZ MCSE and the between-chain
    standard error, for a ``(chains, draws)`` array. Units: those of the draws.

    With C ≥ 2 chains that start at the same point and run independently, the chain means are
    independent, so s/√C (s the standard deviation of the C chain means, ddof = 1) estimates the
    standard error of their average without any model of the autocorrelation. ArviZ's
    :func:`mcse_mean` estimates the same quantity from the autocorrelation of each chain, which
    underestimates it when the chains are short against their slowest mode: on the digits MLP of
    ``benchmarks/calibrate_seeds.py`` (4 chains × 1,000 draws, 20 seeds at one ε) the spread of λ̂
    across seeds was 1.31× the mean ArviZ MCSE and 1.19× after pooling all 80 chain means, while the
    between-chain error averaged 1.10× the ArviZ one (docs page *Estimating the LLC*, "Error bars").
    Taking the larger of the two is conservative: with few chains s/√C is itself noisy (3 degrees
    of freedom for 4 chains), and the maximum errs on the wide side. With one chain it is the ArviZ
    MCSE.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(4, 1000))                 # independent draws: both ≈ 1/√4000
    >>> round(llc_mcse(x), 3) >= round(mcse_mean(x), 3)
    True
    >>> y = x + np.array([[0.3], [-0.3], [0.1], [-0.1]])  # chain means apart: the between-chain error wins
    >>> round(llc_mcse(y), 3), round(float(y.mean(1).std(ddof=1) / 2), 3)
    (0.117, 0.117)
    """
    x = _as_chain_draw(draws)
    az = mcse_mean(x)
    return az if x.shape[0] < 2 else max(az, between_chain_se(x))


def between_chain_se(draws: np.ndarray) -> float:
    """s/√C for a ``(chains, draws)`` array with C ≥ 2 chains: s the standard deviation (ddof = 1) of
    the C chain means. The standard error of their average when the chains are independent, with no
    model of the autocorrelation. Units: those of the draws.

    >>> round(between_chain_se(np.array([[0.0, 2.0], [4.0, 6.0]])), 6)  # chain means 1 and 5: s = 2√2
    2.0
    """
    x = _as_chain_draw(draws)
    if x.shape[0] < 2:
        raise ValueError(f"the between-chain standard error needs at least 2 chains; got {x.shape[0]}.")
    return float(x.mean(axis=1).std(ddof=1) / np.sqrt(x.shape[0]))


def ess_bulk(draws: np.ndarray) -> float:
    """Rank-normalised bulk effective sample size of a ``(chains, draws)`` array (ArviZ; in draws).

    >>> x = np.random.default_rng(0).normal(size=(4, 1000))
    >>> 3000 < ess_bulk(x) < 5000  # independent draws: about chains × draws
    True
    """
    return float(_az().ess(_as_chain_draw(draws), method="bulk"))


def rhat(draws: np.ndarray) -> float:
    """Rank-normalised split R-hat of a ``(chains, draws)`` array (ArviZ); meaningful with ≥ 2 chains.

    Near 1 when the chains agree; above 1.01 they sample different distributions.

    >>> x = np.random.default_rng(0).normal(size=(4, 1000))
    >>> round(rhat(x), 2), rhat(x + np.arange(4)[:, None]) > 1.5  # 4 chains at different means
    (1.0, True)
    """
    return float(_az().rhat(_as_chain_draw(draws)))


def to_inference_data(variables: Mapping[str, np.ndarray], attrs: Mapping | None = None):
    """An ``arviz.InferenceData`` whose posterior group holds the given ``(chains, draws)`` arrays;
    ``attrs`` become string attributes of the posterior group.

    >>> idata = to_inference_data({"llc": np.zeros((2, 5))}, attrs={"nbeta": 100.0})
    >>> dict(idata.posterior.sizes), idata.posterior.attrs["nbeta"]
    ({'chain': 2, 'draw': 5}, '100.0')
    """
    post = {k: _as_chain_draw(v) for k, v in variables.items()}
    idata = _az().from_dict(posterior=post)
    if attrs:
        idata.posterior.attrs.update({k: str(v) for k, v in attrs.items()})
    return idata


def summary_table(variables: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """ArviZ summary (mean, sd, MCSE, bulk/tail ESS, R-hat) of ``(chains, draws)`` arrays.

    R-hat is NaN when there is a single chain (it compares chains); callers warn about that.

    >>> t = summary_table({"llc": np.random.default_rng(0).normal(2.0, 1.0, size=(4, 500))})
    >>> list(t.columns)
    ['mean', 'sd', 'mcse_mean', 'mcse_sd', 'ess_bulk', 'ess_tail', 'r_hat']
    >>> round(float(t.loc["llc", "mean"]), 1)
    2.0
    """
    idata = to_inference_data(variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ warns on 1 chain; reported by caller
        table = _az().summary(idata, kind="all", round_to="none")
    return table[["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]]
