"""λ̂ as a function of the localization γ: :func:`llc_vs_localization`.

The localized posterior exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) confines every direction twice: by the
loss (curvature nβ·h in a direction of Hessian eigenvalue h) and by γ. In the quadratic model a
direction contributes ½·nβh/(nβh + γ) to λ̂ (Lau et al. 2023, arXiv:2308.12108; the docs page
*Theory*), so where nβh ≪ γ its contribution is ≈ nβh/(2γ): a curvature divided by γ, not a
property of the basin. A λ̂ that falls as 1/γ is therefore set by γ; a λ̂ that stays put as γ
shrinks (a plateau) is set by the loss. This module runs the same estimate over a range of γ so
that the plateau, or its absence, can be seen.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(400, 2); y = x @ torch.tensor([1.0, -1.0]) + 0.1 * torch.randn(400)
    >>> model = nn.Linear(2, 1)
    >>> sol = torch.linalg.lstsq(torch.cat([x, torch.ones(400, 1)], 1), y[:, None]).solution
    >>> with torch.no_grad(): _ = model.weight.copy_(sol[:2].T); _ = model.bias.copy_(sol[2])
    >>> scan = llc_vs_localization(model, (x, y), localizations=[0.1, 1.0, 10.0], step_size=1e-3,
    ...                            num_chains=2, num_draws=100, num_burnin=50, progress=False)
    >>> list(scan.table["localization"]), bool(scan.table["loss_dominated"].all())
    ([0.1, 1.0, 10.0], True)
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd
from torch import nn

from .errors import warn
from .llc import estimate_llc

__all__ = ["llc_vs_localization", "LocalizationSweep"]


class LocalizationSweep(NamedTuple):
    """Outcome of :func:`llc_vs_localization`.

    Attributes:
        table: one row per γ (increasing): ``localization``, ``llc_mean``, ``mcse``, ``r_hat``,
            ``nbeta_h_max`` (nβ times the top Hessian eigenvalue at w*, the largest loss curvature),
            ``loss_dominated`` (nβ·h_max > γ: at least the stiffest direction is set by the loss),
            ``ratio_to_next`` (λ̂ at this γ over λ̂ at the next larger γ: about γ_next/γ where γ sets
            the number, about 1 on a plateau) and ``warnings`` (the run's warning messages).
        figure: a matplotlib Figure (not shown) of λ̂ ± MCSE against γ on log axes, with the
            1/γ slope through the largest-γ point and the region γ ≥ nβ·h_max shaded.
        results: the :class:`~slt_basins.result.LLCResult` of each γ.
    """

    table: pd.DataFrame
    figure: Any
    results: list


def _figure(table: pd.DataFrame):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    g, lam, se = table["localization"].to_numpy(float), table["llc_mean"].to_numpy(float), table["mcse"]
    ax.errorbar(g, lam, yerr=se, fmt="o-", capsize=3, label="λ̂ ± MCSE")
    if len(g) and lam[-1] > 0:
        ax.plot(g, lam[-1] * g[-1] / g, "k:", lw=1, label="∝ 1/γ (γ sets λ̂)")
    h = table["nbeta_h_max"].dropna()
    if len(h):
        ax.axvspan(float(h.iloc[0]), max(g.max(), float(h.iloc[0])) * 10, color="0.9", zorder=0,
                   label="γ ≥ nβ·h_max: γ dominates every direction")
    ax.set_xscale("log")
    if (lam > 0).all():
        ax.set_yscale("log")
    ax.set_xlim(g.min() / 2, g.max() * 2)
    ax.set_xlabel("localization γ")
    ax.set_ylabel("λ̂")
    ax.set_title("LLC against localization: a plateau is set by the loss, a 1/γ fall by γ", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def llc_vs_localization(
    model: nn.Module,
    data: Any,
    loss: Union[str, Callable] = "mse",
    *,
    localizations: Sequence[float],
    progress: bool = True,
    **estimate_llc_options,
) -> LocalizationSweep:
    """Estimate λ̂ at each γ of ``localizations`` with otherwise identical settings.

    Args:
        model, data, loss: as in :func:`~slt_basins.estimate_llc`.
        localizations: the γ values (≥ 2 distinct values ≥ 0), e.g. ``[1, 10, 100]``.
        progress: print one line per γ as it finishes (the runs themselves are silent).
        **estimate_llc_options: passed to every run (step_size, nbeta, num_chains, num_draws, …).
            The same ε is used at every γ: a large γ needs ε·γ/4 ≪ 1, and the stability warning of
            that run says when it is not. ``step_size="auto"`` calibrates at each γ separately.

    Returns:
        :class:`LocalizationSweep` (table, figure, results). Each run's warnings are re-issued,
        prefixed with its γ.

    Reading it: where λ̂ keeps falling as γ grows (``ratio_to_next`` ≈ γ_next/γ) the localization,
    not the loss, sets the number; report λ̂ from the plateau at small γ if there is one (with a step
    size small enough for it), or λ̂ as a function of γ if there is none.
    """
    if "localization" in estimate_llc_options:
        raise TypeError("pass the γ values as localizations=[...], not localization.")
    gammas = sorted({float(g) for g in localizations})
    if len(gammas) < 2 or any(not math.isfinite(g) or g < 0 for g in gammas):
        raise ValueError(f"localizations needs ≥ 2 distinct finite values ≥ 0; got {localizations!r}.")
    rows, results = [], []
    for g in gammas:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = estimate_llc(model, data, loss, localization=g, progress=False, **estimate_llc_options)
        msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        for w in caught:
            warn(f"at γ = {g:g}: {w.message}", w.category)
        h = r.checks.hessian_max_abs_eig
        nbh = None if h is None or not math.isfinite(h) else r.nbeta * h
        rows.append(dict(localization=g, llc_mean=r.llc_mean, mcse=r.mcse, r_hat=r.checks.r_hat,
                         nbeta_h_max=nbh, loss_dominated=None if nbh is None else bool(nbh > g),
                         warnings=" | ".join(msgs)))
        results.append(r)
        if progress:
            print(f"γ = {g:g}: λ̂ = {r.llc_mean:.4g} ± {r.mcse:.2g}")
    table = pd.DataFrame(rows)
    lam = table["llc_mean"].to_numpy(float)
    table.insert(4, "ratio_to_next", np.append(lam[:-1] / lam[1:], np.nan))
    return LocalizationSweep(table, _figure(table), results)
