"""The LLC side by side with the classic flatness measures, on one model at one minimum."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Union

import pandas as pd
import torch
from torch import nn

from . import curvature
from .data import as_tensors
from .functional import FlatModel
from .llc import estimate_llc

__all__ = ["compare_measures"]


def _g_inputs(x: torch.Tensor, k: int, d: int, budget: int = 20_000_000) -> tuple[torch.Tensor, str]:
    """Inputs for G (n·k × d float64 entries at most ``budget``), with a note when subsampled."""
    m = max(1, min(x.shape[0], budget // max(1, k * d)))
    if m < x.shape[0]:
        return x[:m], f"first {m} of {x.shape[0]} inputs (G limited to {budget:.0e} entries)"
    return x, f"all {x.shape[0]} inputs"


def _gap(r) -> str:
    return "no gap (nothing dropped or nothing kept)" if r.gap_decades is None else f"gap {r.gap_decades:.1f} decades"


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
      cross-entropy, whose Gauss–Newton rank it equals);
    * ``d/2``: the LLC of a regular model with this many parameters;
    * ``trace(H)``, ``λ_max(H)`` and ``log det(H + δI)``;
    * ``sandwich(λ̂)`` and ``sandwich(true λ)``: whether rank(H)/2 ≤ λ ≤ rank(H)/2 + (d − rank H)/4
      holds (rlct-truth.md §5.1; for λ̂ within 2 standard errors). It holds at any minimum of an
      analytic K ≥ 0 with a prior positive at w*; equality on the left exactly at Morse–Bott points.

    Assumes w* is a local minimum of L_n. rank H = rank G only at zero-residual minima.

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

    lam_hat = None
    if llc:
        r = estimate_llc(model, (x, y), loss, **llc_kwargs)
        lam_hat = r
        add("LLC λ̂", r.llc_mean, r.mcse, f"SGLD, {r.num_chains} chains × {r.num_draws} draws, nβ = {r.nbeta:.4g}, "
            f"γ = {r.config['localization']:g}, ε = {r.config['step_size']:g}"
            + (f", R-hat {r.checks['r_hat']:.3f}" if r.checks.get("r_hat") is not None else ""))
    truth = true_rlct if true_rlct is not None else getattr(model, "true_rlct", None)
    if truth is not None:
        add("true λ", float(truth.value), None,
            f"{truth.value} (m = {truth.multiplicity}{'' if truth.certified else ', uncertified'})")
    dense = d <= curvature.EXACT_MAX_D
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", curvature.RankWarning)
        if dense:  # one float64 Hessian serves the rank, trace, λ_max and log-det
            ev = torch.linalg.eigvalsh(curvature.hessian(model, (x, y), loss))
            rh = curvature.rank_from_values(ev.cpu().numpy(), d, tol, method="exact")
        else:
            rh = curvature.hessian_rank(model, (x, y), loss, tol=tol)
        add("rank(H)/2", rh.rank / 2, None, f"{rh.method}, tol {rh.tol:.2e}, {_gap(rh)}")
        k = int(torch.tensor(fm.forward(fm.w_star, x[:1]).shape[1:]).prod()) if x.ndim else 1
        xg, gnote = _g_inputs(x, k, d)
        output = "probs" if loss in ("cross_entropy", "ce") else "raw"
        rg = curvature.g_rank(model, xg, output=output, tol=tol)
        add("rank(G)/2", rg.rank / 2, None, f"svd of G ({output} outputs), {gnote}, {_gap(rg)}")
    add("d/2", d / 2, None, "regular model")
    if dense:
        add("trace(H)", float(ev.sum()), None, "exact")
        add("λ_max(H)", float(ev[-1]), None, "exact")
        if float(ev[0]) + delta <= 0:
            add("log det(H + δI)", None, None, f"undefined: H has eigenvalue {float(ev[0]):.3g} < −δ = {-delta:g}")
        else:
            add("log det(H + δI)", float(torch.log(ev + delta).sum()), None, f"exact, δ = {delta:g}")
    else:
        tr = curvature.hessian_trace(model, (x, y), loss)
        add("trace(H)", tr.estimate, tr.stderr, f"Hutchinson, {tr.num_samples} probes")
        add("λ_max(H)", float(curvature.top_eigenvalues(model, (x, y), loss, k=1)[0]), None, "Lanczos")
        ld = curvature.damped_logdet(model, (x, y), loss, delta=delta)
        add("log det(H + δI)", ld.value, ld.stderr, f"stochastic Lanczos quadrature, δ = {delta:g}")
    lo, hi = rh.rank / 2, rh.rank / 2 + (d - rh.rank) / 4
    if lam_hat is not None:
        ok = lo - 2 * lam_hat.mcse <= lam_hat.llc_mean <= hi + 2 * lam_hat.mcse
        add("sandwich(λ̂)", ok, None, f"{lo:g} ≤ λ̂ ≤ {hi:g} (within 2 se)")
    if truth is not None:
        v = float(truth.value)
        add("sandwich(true λ)", lo <= v <= hi, None, f"{lo:g} ≤ λ ≤ {hi:g}")
    df = pd.DataFrame(rows)
    if caught:
        df.attrs["warnings"] = [str(w.message) for w in caught]
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
    return df
