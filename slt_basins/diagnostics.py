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

__all__ = ["mcse_mean", "ess_bulk", "rhat", "summary_table", "to_inference_data"]


def _as_chain_draw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (chains, draws) array; got shape {x.shape}")
    return x


def mcse_mean(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of a ``(chains, draws)`` array (ArviZ, ESS-based).

    Accounts for autocorrelation within chains and, with several chains, for disagreement
    between them. Needs at least 4 draws per chain.
    """
    x = _as_chain_draw(draws)
    return float(_az().mcse(x, method="mean"))


def ess_bulk(draws: np.ndarray) -> float:
    """Rank-normalised bulk effective sample size (ArviZ)."""
    return float(_az().ess(_as_chain_draw(draws), method="bulk"))


def rhat(draws: np.ndarray) -> float:
    """Rank-normalised split R-hat (ArviZ); meaningful with ≥ 2 chains."""
    return float(_az().rhat(_as_chain_draw(draws)))


def to_inference_data(variables: Mapping[str, np.ndarray], attrs: Mapping | None = None):
    """An ``arviz.InferenceData`` whose posterior group holds the given ``(chains, draws)`` arrays."""
    post = {k: _as_chain_draw(v) for k, v in variables.items()}
    idata = _az().from_dict(posterior=post)
    if attrs:
        idata.posterior.attrs.update({k: str(v) for k, v in attrs.items()})
    return idata


def summary_table(variables: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """ArviZ summary (mean, sd, MCSE, bulk/tail ESS, R-hat) of ``(chains, draws)`` arrays.

    R-hat is NaN when there is a single chain (it compares chains); callers warn about that.
    """
    idata = to_inference_data(variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ warns on 1 chain; reported by caller
        table = _az().summary(idata, kind="all", round_to="none")
    return table[["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]]
