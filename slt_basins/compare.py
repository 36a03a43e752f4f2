"""The LLC side by side with the classic flatness measures, on one model at one minimum.

One Hessian operator (:func:`slt_basins.operators.hessian_operator`) serves the Hessian rank,
trace, top eigenvalue and log-determinant; one Jacobian operator serves rank G. See the docs page
*Flatness measures*.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Union

import pandas as pd
import torch
from torch import nn

from .curvature import (
    RankWarning,
    damped_logdet,
    g_rank,
    hessian,
    hessian_rank,
    hessian_trace,
    rank_from_values,
    top_eigenvalues,
)
from .data import as_tensors
from .functional import FlatModel
from .llc import estimate_llc
from .operators import EXACT_MAX_D, HessianOperator, g_inputs, hessian_operator

__all__ = ["compare_measures"]


def _gap(r) -> str:
    return "no gap (nothing dropped or nothing kept)" if r.gap_decades is None else f"gap {r.gap_decades:.1f} decades"


def _llc_note(r) -> str:
    return (f"SGLD, {r.num_chains} chains × {r.num_draws} draws, nβ = {r.nbeta:.4g}, "
            f"γ = {r.config['localization']:g}, ε = {r.config['step_size']:g}"
            + (f", R-hat {r.checks['r_hat']:.3f}" if r.checks.get("r_hat") is not None else ""))


def _hessian_spectrum(op: HessianOperator, tol: Optional[float], dense: bool):
    """Rank of H and, on the dense route, all its eigenvalues (ascending; else ``None``)."""
    if dense:  # one float64 eigendecomposition serves the rank, trace, λ_max and log-det
        ev = torch.linalg.eigvalsh(hessian(op=op))
        return rank_from_values(ev.cpu().numpy(), op.d, tol, method="exact"), ev
    return hessian_rank(op=op, tol=tol, method="matrix_free"), None


def _spectrum_rows(op: HessianOperator, ev: Optional[torch.Tensor], delta: float) -> list[tuple]:
    """The trace, λ_max and log det(H + δI) rows: exact from ``ev``, else matrix-free on ``op``."""
    if ev is not None:
        if float(ev[0]) + delta <= 0:
            logdet = (None, None, f"undefined: H has eigenvalue {float(ev[0]):.3g} < −δ = {-delta:g}")
        else:
            logdet = (float(torch.log(ev + delta).sum()), None, f"exact, δ = {delta:g}")
        return [("trace(H)", float(ev.sum()), None, "exact"), ("λ_max(H)", float(ev[-1]), None, "exact"),
                ("log det(H + δI)",) + logdet]
    tr = hessian_trace(op=op)
    lam_max = float(top_eigenvalues(op=op, k=1, method="matrix_free")[0])
    ld = damped_logdet(op=op, delta=delta, method="slq")
    return [("trace(H)", tr.estimate, tr.stderr, f"Hutchinson, {tr.num_samples} probes"),
            ("λ_max(H)", lam_max, None, "Lanczos"),
            ("log det(H + δI)", ld.value, ld.stderr, f"stochastic Lanczos quadrature, δ = {delta:g}")]


def compare_measures(
    model: nn.Module,
    data: Any,
    loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "mse",
    *,
    llc: bool = True,
    delta: float = 1e-3,
    tol: Optional[float] = None,
    true_rlct=None,
    **llc_kwargs,
) -> pd.DataFrame:
    """Flatness measures and the LLC at the model's current parameters w*, one row per measure.

    Rows (column ``value``; ``se`` where the number is an estimate; ``note`` says how it was got):

    * ``LLC λ̂`` (SGLD, :func:`slt_basins.estimate_llc` with ``llc_kwargs``; skipped if ``llc=False``);
    * ``true λ`` when known: ``true_rlct`` if given, else the ``true_rlct`` attribute that
      :mod:`slt_basins.toys` sets on the models it builds (the truth at the point they are built at);
    * ``rank(H)/2``: half the Hessian rank of the mean loss (:func:`slt_basins.hessian_rank`);
    * ``rank(G)/2``: half the rank of the behavioural Jacobian G (``output="probs"`` for
      cross-entropy, whose Gauss–Newton rank it equals), on at most
      :data:`~slt_basins.operators.G_MAX_ENTRIES` entries of G (:func:`~slt_basins.operators.g_inputs`);
    * ``d/2``: the LLC of a regular model with this many parameters;
    * ``trace(H)``, ``λ_max(H)`` and ``log det(H + δI)`` (loss / parameter², and nats);
    * ``sandwich(λ̂)`` and ``sandwich(true λ)``: whether rank(H)/2 ≤ λ ≤ rank(H)/2 + (d − rank H)/4
      holds (docs page *Flatness measures*, section *What the Hessian rank says about λ*; for λ̂
      within 2 standard errors). It holds at any minimum of an analytic K ≥ 0 with a prior positive
      at w*; equality on the left exactly at Morse–Bott points.

    The Hessian rows share one float64 Hessian operator, built once: for d ≤ ``EXACT_MAX_D`` one
    dense eigendecomposition gives all four (exact); above, Lanczos, Hutchinson and stochastic
    Lanczos quadrature run on the same operator. Assumes w* is a local minimum of L_n.
    rank H = rank G only at zero-residual minima.

    Example:
        >>> from slt_basins.toys import DeepLinearNetwork
        >>> dln = DeepLinearNetwork([3, 2, 3], r=1)
        >>> df = compare_measures(dln.model(), dln.dataset(500, seed=0), llc=False)
        >>> df.set_index("measure").loc[["rank(H)/2", "rank(G)/2", "true λ"], "value"].tolist()
        [2.5, 2.5, 3.5]
    """
    fm = FlatModel(model)
    d = fm.d
    x, y = as_tensors(data, device=fm.device, dtype=fm.dtype)
    rows: list[dict] = []

    def add(measure, value, se=None, note=""):
        rows.append(dict(measure=measure, value=value, se=se, note=note))

    lam_hat = estimate_llc(model, (x, y), loss, **llc_kwargs) if llc else None
    if lam_hat is not None:
        add("LLC λ̂", lam_hat.llc_mean, lam_hat.mcse, _llc_note(lam_hat))
    truth = true_rlct if true_rlct is not None else getattr(model, "true_rlct", None)
    if truth is not None:
        add("true λ", float(truth.value), None,
            f"{truth.value} (m = {truth.multiplicity}{'' if truth.certified else ', uncertified'})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankWarning)
        op = hessian_operator(model, (x, y), loss)
        rh, ev = _hessian_spectrum(op, tol, d <= EXACT_MAX_D)
        add("rank(H)/2", rh.rank / 2, None, f"{rh.method}, tol {rh.tol:.2e}, {_gap(rh)}")
        with torch.no_grad():
            k = int(fm.forward(fm.w_star, x[:1])[0].numel()) if x.ndim else 1
        xg, gnote = g_inputs(x, k, d)
        output = "probs" if loss in ("cross_entropy", "ce") else "raw"
        rg = g_rank(model, xg, output=output, tol=tol)
        add("rank(G)/2", rg.rank / 2, None, f"svd of G ({output} outputs), {gnote}, {_gap(rg)}")
    add("d/2", d / 2, None, "regular model")
    for row in _spectrum_rows(op, ev, delta):
        add(*row)
    lo, hi = rh.rank / 2, rh.rank / 2 + (d - rh.rank) / 4
    if lam_hat is not None:
        ok = lo - 2 * lam_hat.mcse <= lam_hat.llc_mean <= hi + 2 * lam_hat.mcse
        add("sandwich(λ̂)", ok, None, f"{lo:g} ≤ λ̂ ≤ {hi:g} (within 2 se)")
    if truth is not None:
        add("sandwich(true λ)", lo <= float(truth.value) <= hi, None, f"{lo:g} ≤ λ ≤ {hi:g}")
    df = pd.DataFrame(rows)
    if caught:
        df.attrs["warnings"] = [str(w.message) for w in caught]
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
    return df
