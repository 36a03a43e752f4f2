"""slt_basins.calibrate: the selection rules (pure, exact), the sweep on closed-form potentials, the
error with advice, and step_size="auto" end to end."""
import doctest
import importlib
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from types import SimpleNamespace

from slt_basins import (CalibrationError, CalibrationResult, LLCResult, LLCWarning, calibrate, calibrate_potential,
                        estimate_llc, estimate_llc_potential)
from slt_basins import calibration
from slt_basins.calibration import default_step_sizes, fit_rejection, select_setting
from slt_basins.errors import SamplerDivergedError
from slt_basins.options import POTENTIAL_DEFAULTS
from slt_basins.toys import finite_temperature_target, power
from conftest import gaussian_sgld_target

F64 = torch.float64


# --- the rules on synthetic tables (pure function, exact expectations) ------------------------------

def cell(eps, llc=0.5, mcse=0.01, r_hat=1.0, diverged=0, acc=1.0, s_end=0.01, d=1, gamma=1.0, nbeta=100.0,
         sampler="sgld", ran=True, chains=4):
    return dict(nbeta=nbeta, localization=gamma, step_size=eps, ran=ran, llc=llc, mcse=mcse, r_hat=r_hat,
                diverged=diverged, num_chains=chains, mala_accept=acc, step_stability_end=s_end, sampler=sampler, d=d)


def test_rules_status_and_choice_on_a_synthetic_table():
    rows = [
        cell(1e-1, llc=np.nan, mcse=np.nan, r_hat=np.nan, diverged=4, acc=np.nan, s_end=np.nan),
        cell(3e-2, llc=0.9, s_end=1.5, acc=0.5),  # no divergence yet, but unstable at the chains' ends
        cell(1e-2, llc=0.7, acc=0.99),  # 1-D equivalent acceptance 0.99 < 0.998
        cell(3e-3, llc=0.60),  # accepted; differs from 0.51 by 0.09 > 0.02·0.51 + 2·√2·0.01 = 0.0385
        cell(1e-3, llc=0.51),  # accepted; within 0.02·0.50 + 0.0283 = 0.0383 of 0.50: on the plateau
        cell(3e-4, llc=0.50, r_hat=1.05),  # accepted (R-hat ≤ 1.1); smallest of the grid
    ]
    t, pick, text = select_setting(pd.DataFrame(rows[::-1]))  # input order does not matter
    assert list(t["step_size"]) == [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4]
    assert list(t["stable"]) == [False, False, True, True, True, True]
    assert list(t["accepted"]) == [False, False, False, True, True, True]
    assert list(t["plateau"]) == [False, False, False, False, True, False]
    assert list(t["chosen"]) == [False, False, False, False, True, False]
    assert t.loc[pick, "step_size"] == 1e-3
    st = list(t["status"])
    assert st[0].startswith("diverged: 4 of 4 chains (all)")
    assert st[1].startswith("unstable") and "1.5" in st[1]
    assert st[2].startswith("rejected: MALA acceptance") and "0.9900 < 0.998" in st[2]
    assert st[3].startswith("accepted, off the plateau") and "+0.09" in st[3]
    assert st[4].startswith("CHOSEN")
    assert st[5].startswith("accepted; the smallest step size")
    assert t["delta_next"].iloc[3] == pytest.approx(0.09)
    assert t["tol_next"].iloc[4] == pytest.approx(0.02 * 0.50 + 2 * math.sqrt(2) * 0.01)
    assert "ε = 0.001 is the largest step size on the plateau" in text


def test_acceptance_is_judged_per_dimension_and_mala_by_its_own_rate():
    base = [cell(1e-2, acc=0.99, d=1), cell(1e-3)]
    t, _, _ = select_setting(pd.DataFrame(base))
    assert not t["accepted"].iloc[0] and t["accept_1d"].iloc[0] == pytest.approx(0.99)
    # the same joint acceptance in d = 100: 1 − 0.01/√100 = 0.999 ≥ 0.998
    t, pick, _ = select_setting(pd.DataFrame([dict(r, d=100) for r in base]))
    assert t["accepted"].iloc[0] and t["accept_1d"].iloc[0] == pytest.approx(0.999)
    assert t.loc[pick, "step_size"] == 1e-2
    # MALA is exact: only its own acceptance rate ≥ 0.5 matters
    t, pick, _ = select_setting(pd.DataFrame([cell(1e-2, acc=0.6, sampler="mala"), cell(1e-3, acc=0.9, sampler="mala")]))
    assert t.loc[pick, "step_size"] == 1e-2
    t, _, _ = select_setting(pd.DataFrame([cell(1e-2, acc=0.4, sampler="mala"), cell(1e-3, sampler="mala")]))
    assert not t["accepted"].iloc[0]
    # the plateau partner must be stable and converged, not accepted: its bias is smaller by construction
    t, pick, _ = select_setting(pd.DataFrame([cell(1e-2), cell(1e-3, acc=0.99)]))
    assert t.loc[pick, "step_size"] == 1e-2 and not t["accepted"].iloc[1] and t["converged"].iloc[1]
    t, pick, _ = select_setting(pd.DataFrame([cell(1e-2), cell(1e-3, r_hat=1.3)]))
    assert pick is None and "not stable and converged" in t["status"].iloc[0]
    # an explicit threshold and R-hat bound
    t, _, _ = select_setting(pd.DataFrame(base), min_accept=0.98)
    assert t["accepted"].iloc[0]
    t, _, _ = select_setting(pd.DataFrame([cell(1e-2, r_hat=1.2), cell(1e-3)]), max_rhat=1.1)
    assert t["status"].iloc[0].startswith("rejected: R-hat 1.200 > 1.1")


def test_preference_largest_nbeta_then_smallest_gamma():
    rows = []
    for nb in (50.0, 100.0):
        for g in (1.0, 10.0):
            rows += [cell(1e-2, gamma=g, nbeta=nb), cell(1e-3, gamma=g, nbeta=nb)]
    rows[4]["diverged"] = 1  # nβ = 100, γ = 1 at ε = 1e-2: its plateau is lost
    t, pick, text = select_setting(pd.DataFrame(rows))
    assert (t.loc[pick, "nbeta"], t.loc[pick, "localization"], t.loc[pick, "step_size"]) == (100.0, 10.0, 1e-2)
    assert t["chosen"].sum() == 1
    assert "largest nβ, then the smallest γ" in text
    assert t["status"].str.startswith("best of its (nβ, γ), not preferred").sum() == 2


def test_without_an_acceptance_measure_the_stability_stands_in():
    rows = [cell(1e-2, acc=np.nan, s_end=0.05, sampler="sgnht"), cell(1e-3, acc=np.nan, s_end=0.015, sampler="sgnht"),
            cell(1e-4, acc=np.nan, s_end=0.0015, sampler="sgnht")]
    t, pick, _ = select_setting(pd.DataFrame(rows))
    assert t["status"].iloc[0].startswith("rejected: no MALA acceptance") and "0.05 > 0.02" in t["status"].iloc[0]
    assert t.loc[pick, "step_size"] == 1e-3


def test_no_plateau_gives_advice_instead_of_a_choice():
    rows = [cell(1e-2, llc=0.9), cell(1e-3, llc=0.7), cell(1e-4, llc=0.5)]  # still moving with ε
    t, pick, text = select_setting(pd.DataFrame(rows))
    assert pick is None and not t["chosen"].any()
    assert "smaller step sizes than the grid's minimum ε = 0.0001" in text
    assert "more burn-in and draws" in text


def test_chains_drifting_to_the_edge_of_stability_are_named_with_the_curvature_growth():
    # the 10⁴-parameter DLN of the ladder: the ratio at the chains' ends stays near 1 as ε falls 10×
    rows = [cell(3.4e-4, s_end=1.94), cell(1.1e-4, s_end=1.21), cell(3.4e-5, s_end=1.12),
            cell(1.1e-5, s_end=0.4, r_hat=1.556)]
    t, pick, text = select_setting(pd.DataFrame(rows))
    assert pick is None
    assert "drift to the edge of stability" in text and "went from 1.94 to only 1.12 while ε fell 10×" in text
    assert "grew about 5.77×" in text  # 10 × 1.12 / 1.94
    assert "a larger localization γ, which bounds how far the chains can wander" in text
    assert "sampler=\"rmsprop_sgld\"" in text
    # a ratio that falls in step with ε (a fixed stiff region) is not a drift
    calm = [cell(3.4e-4, s_end=1.9), cell(1.1e-4, s_end=0.62, r_hat=1.5), cell(3.4e-5, s_end=0.19, r_hat=1.5)]
    assert "edge of stability" not in select_setting(pd.DataFrame(calm))[2]


def test_default_grid_is_scale_free():
    a = default_step_sizes(2.0, 1000.0, 1.0)
    assert a[0] == pytest.approx(4 / 2001) and len(a) == 11
    assert np.allclose(np.diff(np.log10(a)), -0.5)
    # rescaling the loss by c and nβ by 1/c leaves the grid unchanged
    assert np.allclose(default_step_sizes(20.0, 100.0, 1.0), a)
    assert default_step_sizes(2.0, 1000.0, 1.0, sampler="sgnht")[0] == pytest.approx(8 / 2001)
    with pytest.raises(ValueError, match="step_sizes"):
        default_step_sizes(0.0, 100.0, 0.0)


def test_pooled_acceptance_fit_decides_rule_2():
    """Rule 2 reads the fit of log((1 − a)/√d) against log ε over the scan's cells, not each cell's snapshot:
    a cell whose own snapshot passes by luck is rejected when the fit through its neighbours says its ε is
    above the crossing, and the crossing is reported."""
    eps = [4e-3, 2e-3, 1e-3, 5e-4]
    law = [2e-3 * (e / 1.5e-3) ** 1.5 for e in eps]  # 1 − a₁ of a Gaussian-like kernel; crosses 0.002 at 1.5e-3
    own = [law[0], 1.8e-3, law[2], law[3]]  # the snapshot at 2e-3 is lucky: 1 − 0.0018 passes on its own
    rows = [cell(e, acc=1 - r) for e, r in zip(eps, own)]
    t, pick, text = select_setting(pd.DataFrame(rows))
    a, p, n = fit_rejection(eps, [1 - r for r in own], d=1)
    crossing = math.exp((math.log(0.002) - a) / p)
    assert n == 4 and 1e-3 < crossing < 2e-3
    assert t["eps_accept"].iloc[0] == pytest.approx(crossing)
    assert t["accept_1d"].iloc[1] == pytest.approx(0.9982) and t["accept_1d_fit"].iloc[1] < 0.998
    assert list(t["accepted"]) == [False, False, True, True]
    assert t["status"].iloc[1].startswith("rejected: MALA acceptance of the pooled fit over the scan")
    assert t.loc[pick, "step_size"] == 1e-3 and "pooled fit" in text
    # one measured cell: no fit, the snapshot decides (as before)
    assert fit_rejection([1e-3], [0.99], d=1) is None
    t, _, _ = select_setting(pd.DataFrame([cell(1e-2, acc=0.99), cell(1e-3, acc=1.0)]))
    assert np.isnan(t["accept_1d_fit"]).all() and not t["accepted"].iloc[0]


def noisy_gaussian_run(seed: int, curvature=8.0, d=3, log_noise=0.5):
    """A stand-in for one fixed target's estimator (the ``run`` of calibration.Run): SGLD on a Gaussian with
    top curvature ``curvature``, whose MALA rejection follows 0.64·√d·s^{3/2} (s = ε(nβA + γ)/4, module
    docstring) times a log-normal snapshot noise drawn per (seed, ε), and whose λ̂ = (d/2)/(1 − s)."""
    def run(o):
        s = o.step_size * (o.nbeta * curvature + o.localization) / 4
        if s >= 1:
            raise SamplerDivergedError("all chains diverged")
        rng = np.random.default_rng([seed, int(round(-1e4 * math.log10(o.step_size)))])
        rej = min(0.99, 0.64 * math.sqrt(d) * s ** 1.5 * math.exp(log_noise * rng.standard_normal()))
        checks = SimpleNamespace(r_hat=1.0, ess_bulk=1000.0, mala_accept=1 - rej, step_stability=s,
                                 step_stability_end=s, hessian_max_abs_eig=curvature)
        return SimpleNamespace(llc_mean=d / 2 / (1 - s) + 0.01 * rng.standard_normal(), mcse=0.01, checks=checks,
                               diverged=[], config={"d": d}, nbeta=o.nbeta)
    return run


def choose(seed, monkeypatch=None):
    base = POTENTIAL_DEFAULTS.replace(num_chains=4, num_draws=200, num_burnin=100, progress=False)
    return calibration._calibrate(noisy_gaussian_run(seed), base, step_sizes=None, localizations=1.0, nbetas=100.0,
                                  min_accept=None, max_rhat=1.1, plateau_tol=0.02, stop_early=True, progress=False)


def test_choice_is_stable_across_seeds_under_snapshot_noise(monkeypatch):
    """The acceptance snapshot of each cell is noisy (log-normal with sd 0.5 here; the log of 1 − a at one ε had
    a standard deviation of 0.34–0.44 across five seeds on the digits MLP, benchmarks/results/calibrate_seeds.md):
    with the pooled fit and the refinement cell, 20 seeds choose
    step sizes within a factor 3 of each other, near the crossing of the noise-free law. Without them (each
    cell judged by its own snapshot, choices on the √10 grid) the same seeds spread by more than 3."""
    cals = [choose(seed) for seed in range(20)]
    eps = np.array([c.step_size for c in cals])
    s_cross = (0.002 / 0.64) ** (2 / 3)  # where the noise-free law crosses 1 − a₁ = (1 − a)/√d = 0.002
    eps_cross = 4 * s_cross / (100 * 8 + 1)
    assert eps.max() / eps.min() <= 3.0, eps
    assert 0.3 * eps_cross < np.median(eps) < eps_cross
    assert sum(bool(c.table["refined"].any()) for c in cals) >= 10
    monkeypatch.setattr(calibration, "fit_rejection", lambda *a, **k: None)
    old = np.array([choose(seed).step_size for seed in range(20)])
    assert old.max() / old.min() > 3.0 and not any(choose(0).table["refined"])


# --- sweeps on closed forms ----------------------------------------------------------------------------

def test_gaussian_choice_has_small_exact_step_size_bias():
    """On K = ½Σ a_i w_i² the SGLD expectation is known at every ε (step-size bias, docs/theory.md): the chosen
    ε has an exact relative step-size bias ≤ 2.5 % (the rules target about 2 %), and is not needlessly
    small (the next grid point up has a bias above 2 %)."""
    a = [0.5, 2.0, 8.0]
    t, g = 100.0, 1.0
    curv = torch.tensor(a, dtype=F64)
    cal = calibrate_potential(lambda w: 0.5 * (curv * w ** 2).sum(1), torch.zeros(3, dtype=F64), nbeta=t,
                              localizations=g, num_chains=16, num_draws=1000, num_burnin=300, progress=False)
    assert isinstance(cal, CalibrationResult)
    assert cal.hessian_max_abs_eig == pytest.approx(8.0, rel=1e-3)
    exact0 = gaussian_sgld_target(a, t, g, 0.0)
    bias = gaussian_sgld_target(a, t, g, cal.step_size) / exact0 - 1
    assert 0 < bias <= 0.025, (cal.step_size, bias, cal.table)
    grid = default_step_sizes(8.0, t, g)
    up = grid[grid.index(min(grid, key=lambda e: abs(e - cal.step_size))) - 1]
    assert gaussian_sgld_target(a, t, g, up) / exact0 - 1 > 0.02
    assert cal.table["chosen"].sum() == 1 and cal.table.loc[cal.table["chosen"], "step_size"].item() == cal.step_size


def _cells(eps, llc, mcse):
    return pd.DataFrame(dict(nbeta=100.0, localization=1.0, step_size=eps, ran=True, diverged=0, stable=True,
                             llc=llc, mcse=mcse))


def test_step_trend_measures_the_exact_step_size_bias_of_sgld_on_a_gaussian():
    """Cells at the exact SGLD expectation on K = ½Σ a_i w_i² (no noise): the line through the chosen ε and the
    cells below recovers the exact bias λ̂(ε) − λ̂(0) to second order in ε, and its error is the formula's."""
    a, t, g = [0.5, 2.0, 8.0], 100.0, 1.0
    eps = [2e-3, 6e-4, 2e-4]
    exact = [gaussian_sgld_target(a, t, g, e) for e in eps]
    tr = calibration.step_trend(_cells(eps, exact, 0.01), 6e-4, 100.0, 1.0)  # the chosen 6e-4 and 2e-4 below
    true_bias = exact[1] - gaussian_sgld_target(a, t, g, 0.0)
    assert tr.cells == 2 and tr.step_sizes == (6e-4, 2e-4)
    assert tr.bias == pytest.approx(true_bias, rel=0.05)
    assert tr.se == pytest.approx(6e-4 * math.sqrt(2) * 0.01 / 4e-4, rel=1e-9)  # ε·√(m₁² + m₂²)/|ε₁ − ε₂|
    # a diverged, unstable or other-γ cell does not count; one step size alone gives no trend
    t2 = pd.concat([_cells(eps, exact, 0.01), _cells([1e-4], [0.0], 0.01).assign(stable=False),
                    _cells([1e-4], [0.0], 0.01).assign(localization=10.0)])
    assert calibration.step_trend(t2, 6e-4, 100.0, 1.0).cells == 2
    assert calibration.step_trend(_cells([6e-4], [1.0], 0.01), 6e-4, 100.0, 1.0) is None


def test_auto_warns_when_its_cells_show_a_significant_step_size_trend():
    big = calibration.step_trend(_cells([6e-4, 3e-4, 1e-4], [90.7, 87.8, 83.9], 1.6), 6e-4, 100.0, 1.0)
    msg = calibration._trend_warning(big, 89.8, 6e-4)
    assert big.bias > 2 * big.se and "falls as the step shrinks" in msg and "step_size=0.0002" in msg
    assert f"{big.bias:+.3g} ± {big.se:.2g}" in msg
    noisy = calibration.step_trend(_cells([6e-4, 3e-4], [1.03, 0.92], 0.09), 6e-4, 100.0, 1.0)
    assert noisy.bias < 2 * noisy.se and calibration._trend_warning(noisy, 0.85, 6e-4) is None
    tiny = calibration.step_trend(_cells([6e-4, 3e-4], [100.1, 100.0], 0.001), 6e-4, 100.0, 1.0)
    assert tiny.bias > 2 * tiny.se and calibration._trend_warning(tiny, 100.0, 6e-4) is None  # below 2 % of λ̂
    assert "(λ̂ = 0)" in calibration._trend_warning(big, 0.0, 6e-4)  # no percentage of a zero estimate


def test_auto_records_the_trend_of_its_cells_against_the_exact_bias():
    """step_size="auto" on K = ½Σ a_i w_i²: the recorded step_bias is the trend of the recorded cells, and agrees
    with the exact SGLD bias at the chosen ε within 3 of its standard errors. (At this budget the cells resolve
    the bias only coarsely, se ≈ 0.2 against an exact bias of about 0.02; the exact-table test above checks the
    arithmetic.)"""
    a, t, g = [0.5, 2.0, 8.0], 100.0, 1.0
    curv = torch.tensor(a, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        r = estimate_llc_potential(lambda w: 0.5 * (curv * w ** 2).sum(1), torch.zeros(3, dtype=F64), nbeta=t,
                                   localization=g, step_size="auto", num_chains=16, num_draws=5000, num_burnin=1500,
                                   progress=False)
    cal = r.checks["calibration"]
    exact = gaussian_sgld_target(a, t, g, cal["step_size"]) - gaussian_sgld_target(a, t, g, 0.0)
    again = calibration.step_trend(pd.DataFrame(cal["table"]), cal["step_size"], t, g)
    assert (cal["step_bias"], cal["step_bias_se"]) == (again.bias, again.se)
    assert cal["step_bias_se"] > 0 and abs(cal["step_bias"] - exact) <= 3 * cal["step_bias_se"], (cal, exact)


def test_a_grid_where_everything_diverges_raises_with_what_to_try():
    with pytest.raises(CalibrationError) as info:
        calibrate_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=1000.0, localizations=1.0,
                            step_sizes=[1.0, 0.3], num_chains=4, num_draws=50, num_burnin=10, progress=False)
    err = info.value
    assert isinstance(err, ValueError)
    msg = str(err)
    assert "2 diverged" in msg
    assert "smaller step sizes than the grid's minimum ε = 0.3, which was run" in msg
    assert "stopped at" not in msg  # every cell of the grid ran
    assert "larger localization (now γ = 1)" in msg and "smaller nβ (now 1000)" in msg
    assert ".table" in msg
    tab = err.table
    assert len(tab) == 2 and tab["status"].str.startswith("diverged: 4 of 4 chains").all()
    assert list(tab["step_size"]) == [1.0, 0.3]


def test_auto_says_what_to_do_when_nothing_qualifies():
    # a divergence bound nothing can satisfy: every cell diverges at its first step
    with pytest.raises(CalibrationError, match='step_size="auto" found no step size') as info:
        estimate_llc_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=1000.0, step_size="auto",
                               divergence_bound=1e-20, num_chains=2, num_draws=20, num_burnin=0, progress=False)
    assert "11 diverged" in str(info.value) and "pass a numeric step_size" in str(info.value)
    assert len(info.value.table) == 11


def test_auto_step_size_lands_within_the_accuracy_target_on_w4():
    t, g = 1000.0, 1.0
    target = finite_temperature_target(power(2), t, localization=g)
    r = estimate_llc_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=t, localization=g,
                               step_size="auto", num_chains=64, num_draws=2000, num_burnin=500, progress=False)
    cal = r.checks["calibration"]
    assert r.config["step_size"] == cal["step_size"] and r.config["step_size_auto"]
    assert any(c["chosen"] for c in cal["table"]) and cal["reason"].startswith("ε = ")
    # the suite's rule is max(2 %, 3 se); the MCSE-based band here also allows the ≈2 % bias the rules permit
    assert abs(r.llc_mean - target) <= 3 * r.mcse + 0.02 * target, (r.llc_mean, r.mcse, target, cal["step_size"])
    assert r.mcse < 0.04 * target


def test_auto_at_zero_localization_with_a_zero_hessian_uses_a_curvature_pilot():
    """K = w⁴ at γ = 0: the Hessian at w* = 0 is 0, so nβ·h* + γ = 0 sets no grid; the curvature pilot does.
    exp(−t·w⁴) is integrable on R, so the target is t·E[w⁴] = 1/4 exactly (t·K ~ Gamma(1/4, 1)); the
    quadrature on [−3, 3] (where e^{−t·w⁴} < e^{−8000} outside) agrees."""
    t = 100.0
    exact = finite_temperature_target(power(2), t, box=3.0)
    assert exact == pytest.approx(0.25, abs=1e-6)
    r = estimate_llc_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=t, localization=0.0,
                               step_size="auto", num_chains=16, num_draws=4000, num_burnin=1000, progress=False)
    cal = r.checks["calibration"]
    assert cal["hessian_max_abs_eig"] == 0.0 and "pilot rounds of 100 SGLD steps" in cal["grid_origin"]
    assert r.config["localization"] == 0.0 and r.checks.step_stability_end < 0.5
    assert abs(r.llc_mean - exact) <= 3 * r.mcse + 0.02 * exact, (r.llc_mean, r.mcse, cal["step_size"])


def test_auto_at_zero_localization_on_the_crossing_valleys():
    """K = w1²w2² at γ = 0: exp(−t·w1²w2²) is not integrable on R² (∫dw1 = √(π/t)/|w2| diverges in w2 at 0
    and ∞), so there is no finite-t value to compare with. What is defined: given w2 ≠ 0, w1 is Gaussian
    and t·E[K | w2] = 1/2 exactly, approached from below by chains started at w* = 0 (w1's conditional
    variance grows to its stationary value). So: it runs, the grid comes from the pilot, and
    0 < λ̂ ≤ 1/2 within 3 MCSE and the 2 % bias the rules allow."""
    r = estimate_llc_potential(lambda w: w[:, 0] ** 2 * w[:, 1] ** 2, torch.zeros(2, dtype=F64), nbeta=100.0,
                               localization=0.0, step_size="auto", num_chains=16, num_draws=4000, num_burnin=1000,
                               progress=False)
    assert "pilot rounds" in r.checks["calibration"]["grid_origin"]
    assert 0 < r.llc_mean <= 0.5 * 1.02 + 3 * r.mcse, (r.llc_mean, r.mcse)


def test_auto_with_a_nan_hessian_at_w_star_says_so_and_uses_the_pilot():
    """(w ** e).prod(-1) with e = (4, 0) is w1⁴, but the backward of w2 ** 0 at w2 = 0 is 0·∞ = NaN: the
    Hessian at w* is NaN. Calibration warns and derives the grid from the pilot; the run reports the NaN
    (never replaced); w2 is flat and K depends on w1 alone, so t·E[K] = 1/4 exactly at γ = 0."""
    e = torch.tensor([4.0, 0.0], dtype=F64)
    with pytest.warns(LLCWarning) as rec:
        r = estimate_llc_potential(lambda w: (w ** e).prod(-1), torch.zeros(2, dtype=F64), nbeta=100.0,
                                   localization=0.0, step_size="auto", num_chains=16, num_draws=4000,
                                   num_burnin=1000, progress=False)
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith("calibration: h* = nan") and "pilot rounds" in m for m in msgs), msgs
    assert any("top Hessian eigenvalue is NaN" in m for m in msgs), msgs
    assert math.isnan(r.checks.hessian_max_abs_eig) and math.isnan(r.checks["calibration"]["hessian_max_abs_eig"])
    assert abs(r.llc_mean - 0.25) <= 3 * r.mcse + 0.005, (r.llc_mean, r.mcse)


def test_auto_errors_name_only_what_estimate_llc_takes():
    with pytest.raises(ValueError) as info:
        estimate_llc_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=100.0, step_size="auto",
                               check_stability=False, progress=False)
    msg = str(info.value)
    assert "slt_basins.calibrate(..., step_sizes=[...])" in msg and "pass step_sizes" not in msg
    assert "numeric step_size" in msg


def test_a_scan_that_stops_early_says_where_and_how_far_the_grid_goes():
    """The failure message distinguishes the step size the scan stopped at from the grid's minimum, and does
    not suggest going below a minimum that was never run."""
    with pytest.raises(CalibrationError) as info:
        calibrate_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=F64), nbeta=100.0, localizations=1.0,
                            step_sizes=[1e-7, 1e-8, 1e-9], num_chains=4, num_draws=50, num_burnin=10, progress=False)
    msg = str(info.value)
    assert "The scan stopped at ε = 1e-07 (the 2 smaller step sizes were skipped: ε = 1e-07 did not converge" in msg
    assert "the grid goes down to 1e-09" in msg
    assert "grid's minimum" not in msg and "stop_early=False" in msg
    tab = info.value.table
    assert list(tab["ran"]) == [True, False, False]


# --- models -------------------------------------------------------------------------------------------

def linear_regression(n=500):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    model = nn.Linear(3, 1)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(n, 1)], 1), y[:, None]).solution
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    return model, (x, y)


def test_calibrate_model_over_localizations_with_figure():
    model, data = linear_regression()
    before = [p.detach().clone() for p in model.parameters()]
    cal = calibrate(model, data, localizations=[100.0, 1.0], num_chains=4, num_draws=200, num_burnin=100,
                    progress=False)
    assert cal.localization == 1.0  # the smallest γ with a plateau
    assert cal.nbeta == pytest.approx(500 / math.log(500))
    assert set(cal.table["localization"]) == {1.0, 100.0}
    assert cal.settings == dict(step_size=cal.step_size, localization=1.0, nbeta=cal.nbeta)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    fig = cal.figure()
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    assert "calibrated: step_size=" in str(cal)


def test_auto_on_a_model_records_the_calibration_and_saves(tmp_path):
    model, data = linear_regression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        r = estimate_llc(model, data, step_size="auto", localization=1.0, num_chains=4, num_draws=500,
                         num_burnin=200, progress=False)
    assert 1.6 < r.llc_mean < 2.4  # regular, d = 4: λ = 2
    assert r.checks["calibration"]["step_size"] == r.config["step_size"]
    r.save(tmp_path / "r.npz")
    back = LLCResult.load(tmp_path / "r.npz")
    assert back.checks["calibration"]["step_size"] == r.config["step_size"]
    with pytest.raises(ValueError, match="'auto'"):
        estimate_llc(model, data, step_size="fast", progress=False)


def test_bad_calibration_arguments():
    model, data = linear_regression(50)
    with pytest.raises(TypeError, match="step_sizes"):
        calibrate(model, data, step_size=1e-3, progress=False)
    with pytest.raises(ValueError, match="step sizes must be > 0"):
        calibrate(model, data, step_sizes=[1e-3, 0.0], progress=False)
    with pytest.raises(ValueError, match=r"slt_basins\.calibrate\(\.\.\., step_sizes=\[\.\.\.\]\)"):
        calibrate(model, data, check_stability=False, progress=False)


def test_docstring_examples():
    # the package exports the function calibrate, which shadows the module's attribute name
    res = doctest.testmod(importlib.import_module("slt_basins.calibration"), optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.failed == 0 and res.attempted >= 3
