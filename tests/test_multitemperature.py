"""Multi-temperature LLC (the law λ − (m − 1)/log t of Watanabe 2009 and the fit across temperatures,
docs page *Theory*): the fitting core on exact finite-t values,
end to end on the crossing valley, the model path with the WBIC, and bad inputs."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from slt_basins import (LLCWarning, estimate_llc_multitemperature, estimate_llc_multitemperature_potential,
                        estimate_llc_potential, fit_multitemperature)
from slt_basins.toys import crossing_valley, crossing_valley_box_target, finite_temperature_target
from conftest import gaussian_sgld_target

F64 = torch.float64
T_TABLE = [1e2, 1e3, 1e4, 1e5, 1e6]
# exact t·E_t[K] under the uniform prior on [−1, 1]^d (4 d.p.; CV2 = toys.crossing_valley_box_target)
CV2 = [0.3478, 0.3873, 0.4105, 0.4258, 0.4366]  # w1²w2²: λ = 1/2, m = 2
CV3 = [0.2268, 0.2879, 0.3278, 0.3555, 0.3757]  # w1²w2²w3²: λ = 1/2, m = 3
W4 = [0.25] * 5  # w⁴: λ = 1/4, m = 1 (quasi-homogeneous: exact at every t)
SE = 1e-3  # fake standard error: 20× the rounding of the table, so χ² only sees model error


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        return fn(*a, **kw)


# -- the fitting core on exact inputs ----------------------------------------------------------------
def test_exact_box_law_is_recovered_by_the_linear_fit_with_its_offset():
    """For m = 2, t·E_t[K] = λ − 1/(log t + c) exactly; with c given the linear model is exact."""
    c = 0.5772156649 + 2 * math.log(2)
    exact = [crossing_valley_box_target(t) for t in T_TABLE]
    f = fit_multitemperature(T_TABLE, exact, [SE] * 5, "multiplicity", log_offset=c)
    assert f.llc == pytest.approx(0.5, abs=1e-9) and f.multiplicity == pytest.approx(2.0, abs=1e-8)
    f = fit_multitemperature(T_TABLE, CV2, [SE] * 5, "multiplicity", log_offset=c)  # the rounded table
    assert abs(f.llc - 0.5) < 1e-3 and abs(f.multiplicity - 2) < 0.01


@pytest.mark.parametrize("y, m_true, tol_lam, tol_m", [(CV2, 2, 0.01, 0.15), (CV3, 3, 0.02, 0.3)])
def test_auto_fit_on_exact_table_recovers_lambda_and_multiplicity(y, m_true, tol_lam, tol_m):
    """With c unknown (log_offset = 0), the 1/log² t term must be kept.

    Tolerances: the auto fit keeps terms up to 1/log² t, so its error is the neglected O(1/log³ t)
    term. For w1²w2² the closed form 1/2 − 1/(log t + c), c = 1.96, fitted the same way gives
    λ − 1/2 = −0.004 and m − 2 = −0.11 (computed below); the w1²w2²w3² law has two such terms
    ((m − 1) = 2), so twice the room. The constant fit is off by ~0.1–0.2 and the linear one by
    0.02–0.06, both far outside these tolerances.
    """
    closed = fit_multitemperature(T_TABLE, [crossing_valley_box_target(t) for t in T_TABLE], [SE] * 5)
    assert closed.fit == "quadratic" and abs(closed.llc - 0.5) < 0.005 and abs(closed.multiplicity - 2) < 0.12
    f = fit_multitemperature(T_TABLE, y, [SE] * 5)
    assert f.fit == "quadratic"
    assert abs(f.llc - 0.5) < tol_lam, f
    assert abs(f.multiplicity - m_true) < tol_m, f
    assert f.p_value > 0.01  # the quadratic model describes the exact values within 1e-3
    const = quiet(fit_multitemperature, T_TABLE, y, [SE] * 5, "constant")
    lin = quiet(fit_multitemperature, T_TABLE, y, [SE] * 5, "multiplicity")
    assert abs(const.llc - 0.5) > 0.09 and abs(lin.llc - 0.5) > 0.02  # what the extra terms buy
    assert abs(lin.llc - 0.5) > 3 * abs(f.llc - 0.5)
    cand = f.candidates
    assert list(cand.index) == ["constant", "multiplicity", "quadratic"] and cand["chosen"].sum() == 1
    assert cand.loc["constant", "p_value"] < 1e-6  # a constant is rejected outright


def test_homogeneous_case_gives_constant_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("error", LLCWarning)  # nothing to warn about
        f = fit_multitemperature(T_TABLE, W4, [SE] * 5)
    assert f.fit == "constant" and f.multiplicity is None and f.multiplicity_se is None
    assert f.llc == pytest.approx(0.25) and f.llc_se == pytest.approx(SE / math.sqrt(5))
    forced = fit_multitemperature(T_TABLE, W4, [SE] * 5, "multiplicity")
    assert forced.multiplicity == pytest.approx(1.0, abs=1e-9)


def test_error_bars_follow_wls_and_are_inflated_by_reduced_chi2():
    t = np.geomspace(10, 1e4, 6)
    rng = np.random.default_rng(0)
    se = np.full(6, 0.01)
    y = 0.4 + se * rng.standard_normal(6)
    f = fit_multitemperature(t, y, se, "constant")
    assert f.llc == pytest.approx(y.mean()) and f.se_scale >= 1
    assert f.llc_se == pytest.approx(0.01 / math.sqrt(6) * f.se_scale)
    y_bad = 0.4 + 0.1 * (-1.0) ** np.arange(6)  # scatter 10× the claimed errors
    with pytest.warns(LLCWarning, match="poor"):
        g = fit_multitemperature(t, y_bad, se, "constant")
    assert g.se_scale == pytest.approx(math.sqrt(g.chi2 / 5)) and g.llc_se > 0.03


def messages(fn, *a, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*a, **kw)
    return out, " | ".join(str(w.message) for w in caught if issubclass(w.category, LLCWarning))


def test_core_warnings_two_temperatures_and_decreasing_trend():
    _, msg = messages(fit_multitemperature, [100, 1000], [0.4, 0.45], [0.01, 0.01])
    assert "only 2 temperatures" in msg and "no residual degrees of freedom" in msg
    t = np.geomspace(10, 1e3, 5)
    f, msg = messages(fit_multitemperature, t, 0.5 + 1.0 / np.log(t), [1e-3] * 5)
    assert "decreases with nβ" in msg and "poor" in msg and f.fit == "constant"


# -- end to end on the crossing valley ----------------------------------------------------------------
def test_crossing_valley_multitemperature_beats_single_temperature_at_same_budget():
    """w1²w2² on R² with γ = 1 (λ = 1/2, m = 2). ε·nβ = 0.1 at every temperature; the draws give each
    chain ~2 relaxation times of the valley after burn-in. The single-temperature run at the top nβ
    gets the same total number of steps. (Over seeds 0–7 the margin below held every time, by
    0.006–0.043; the linear fit's slope z-score was 3.6–7.1.)"""
    p = crossing_valley(1, 1)
    ts = [10.0, 10 ** 1.5, 100.0]
    draws, burn = [600, 800, 2000], [200, 300, 1000]
    common = dict(num_chains=384, localization=1.0, check_stability=False, progress=False, seed=1)
    r = estimate_llc_multitemperature_potential(p, torch.zeros(2, dtype=F64), nbetas=ts, step_size=0.1 / 10 ** 1.5,
                                                num_draws=draws, num_burnin=burn, fit="multiplicity", **common)
    single = estimate_llc_potential(p, torch.zeros(2, dtype=F64), nbeta=100.0, step_size=1e-3,
                                    num_draws=sum(draws), num_burnin=sum(burn), **common)
    assert r.fit == "multiplicity" and r.multiplicity > 1 + 3 * r.multiplicity_se
    assert r.table["step_size"].to_numpy() * r.table["nbeta"].to_numpy() == pytest.approx([0.1] * 3)
    # the sampler agrees with the exact finite-t values, temperature by temperature, up to the step-size
    # bias of ε·nβ = 0.1 (≈ +3 % at nβ = 100, up to +8 % at nβ = 10, where chains reach |w| ≈ 2 and the
    # curvature 2nβ·w² is largest)
    exact = np.array([finite_temperature_target(p, t, localization=1.0) for t in ts])
    assert np.all(np.abs(r.table["llc_mean"] - exact) < 4 * r.table["mcse"] + 0.08 * exact)
    # ... and the fit agrees with the same fit on the exact values (its own, deterministic, bias)
    on_exact = fit_multitemperature(ts, exact, r.table["mcse"], "multiplicity")
    assert abs(r.llc_mean - on_exact.llc) < 3 * r.mcse
    # closer to 1/2 than the single-temperature estimate, by a margin of 2 combined standard errors
    margin = 2 * math.hypot(r.mcse, single.mcse)
    assert abs(r.llc_mean - 0.5) < abs(single.llc_mean - 0.5) - margin, (r, single)
    assert r.wbic is None and r.n is None
    # presentation
    assert isinstance(r.summary(), pd.DataFrame) and r.summary()["chosen"].sum() == 1
    fig = r.plot()
    assert type(fig).__name__ == "Figure" and len(fig.axes) == 2
    assert "m =" in str(r)
    # the names of LLCResult (llc_mean, mcse); the old llc, llc_se are aliases
    assert (r.llc, r.llc_se) == (r.llc_mean, r.mcse) == (r.details.llc, r.details.llc_se)


def test_failed_temperature_is_reported_and_left_out():
    pot = lambda w: (w ** 2).sum(1)  # noqa: E731
    r, msg = messages(
        estimate_llc_multitemperature_potential, pot, torch.zeros(1, dtype=F64), nbetas=[10.0, 30.0, 1e4],
        step_size=1e-3, step_size_scaling="none", num_chains=4, num_draws=200, num_burnin=50,
        check_stability=False, progress=False, fit="constant")
    assert "at nβ = 1e+04 every chain diverged" in msg and "only 2 temperatures" in msg
    row = r.table.set_index("nbeta").loc[1e4]
    assert not row["used"] and row["diverged"] == 4 and np.isnan(row["llc_mean"])
    assert r.results[-1] is None and math.isfinite(r.llc_mean) and math.isfinite(r.mcse)


# -- the model path ----------------------------------------------------------------------------------
def test_linear_regression_constant_fit_and_wbic():
    """A regular model (d = 4, λ = 2, m = 1): the constant fit is chosen, λ matches the exact SGLD
    expectation Σ ½·(t a_i/(t a_i + γ))/(1 − ε_t(t a_i + γ)/4) averaged over the sweep, and the WBIC
    is n·L_n(w*) + λ̂(n/log n)·log n."""
    g = torch.Generator().manual_seed(0)
    n = 1000
    x = torch.randn(n, 3, generator=g, dtype=F64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=F64) + 0.3 * torch.randn(n, 1, generator=g, dtype=F64)
    xb = torch.cat([x, torch.ones(n, 1, dtype=F64)], 1)
    sol = torch.linalg.lstsq(xb, y).solution
    model = nn.Linear(3, 1).to(F64)
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    curv = torch.linalg.eigvalsh(2 * xb.T @ xb / n).tolist()  # Hessian of the MSE
    gamma, eps_ref = 1.0, 1e-3  # ε·nβ·a/4 ≈ 0.07 at every temperature: λ̂ ≈ 2·1.07
    r = quiet(estimate_llc_multitemperature, model, (x, y), "mse", localization=gamma, step_size=eps_ref,
              num_chains=8, num_draws=400, num_burnin=100, progress=False, check_stability=False)
    assert r.fit == "constant" and r.multiplicity is None
    assert len(r.table) == 5 and r.table["wbic_point"].sum() == 1
    assert r.config["reference_nbeta"] == pytest.approx(n / math.log(n))
    exact = np.array([gaussian_sgld_target(curv, t, gamma, e) for t, e in zip(r.table["nbeta"], r.table["step_size"])])
    w = 1 / r.table["mcse"].to_numpy() ** 2
    assert abs(r.llc_mean - (w * exact).sum() / w.sum()) < 4 * r.mcse
    assert abs(r.llc_mean - 2.0) < 0.25  # the remaining bias is the step size's, +7 % here
    centre = r.results[int(np.flatnonzero(r.table["wbic_point"])[0])]
    assert centre.nbeta == pytest.approx(n / math.log(n)) and r.wbic_nbeta == pytest.approx(n / math.log(n))
    with torch.no_grad():
        ln = float(((model(x) - y) ** 2).mean())
    assert centre.init_loss == pytest.approx(ln, rel=1e-10)
    assert r.wbic == pytest.approx(n * ln + centre.llc_mean * math.log(n), rel=1e-12)
    assert r.wbic_se == pytest.approx(centre.mcse * math.log(n))


# -- bad inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("nbetas, match", [
    ([100.0], "at least 2"),
    ([], "at least 2"),
    (100.0, "sequence"),
    ([10.0, -5.0], "> 0"),
    ([0.0, 10.0], "> 0"),
    ([10.0, float("inf")], "> 0"),
    ([10.0, 100.0, 10.0], "duplicate"),
    ([0.5, 10.0], "exceed"),
])
def test_bad_nbetas_raise_before_sampling(nbetas, match):
    with pytest.raises(ValueError, match=match):
        estimate_llc_multitemperature_potential(lambda w: (w ** 2).sum(1), torch.zeros(1), nbetas=nbetas, progress=False)


@pytest.mark.parametrize("kw, err, match", [
    (dict(fit="linear"), ValueError, "fit must be"),
    (dict(step_size_scaling="sqrt"), ValueError, "step_size_scaling"),
    (dict(num_draws=[100, 200]), ValueError, "one value per nβ"),
    (dict(nbeta=10.0), TypeError, "nbetas"),
    (dict(n=2), ValueError, "n must be"),
    (dict(fit="quadratic", nbetas=[10.0, 100.0]), ValueError, "needs at least"),
])
def test_bad_settings_raise(kw, err, match):
    args = dict(nbetas=[10.0, 30.0, 100.0], num_draws=20, num_burnin=0, check_stability=False, progress=False)
    args.update(kw)
    with pytest.raises(err, match=match):
        quiet(estimate_llc_multitemperature_potential, lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=F64), **args)


def _never_sampled(w):
    raise AssertionError("the sweep sampled before validating its options")


@pytest.mark.parametrize("kw, err, match", [
    (dict(num_chain=4), TypeError, r"unknown option\(s\) num_chain.*valid options are: num_chains"),
    (dict(batch_size=10), TypeError, "unknown option"),  # a model-only option, for a potential
    (dict(sampler="nope"), ValueError, "nope"),
    (dict(num_draws=[100, 2, 100]), ValueError, "num_draws must be an integer"),  # the second temperature
    (dict(step_size="auto"), TypeError, "step_size must be a number"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(localization=-1.0), ValueError, "localization"),
])
def test_bad_options_raise_before_any_sampling(kw, err, match):
    with pytest.raises(err, match=match):
        estimate_llc_multitemperature_potential(_never_sampled, torch.zeros(1, dtype=F64), nbetas=[10.0, 30.0, 100.0],
                                                progress=False, **kw)


def test_unknown_model_option_lists_the_valid_ones():
    with pytest.raises(TypeError, match="batch_size.*vectorize"):
        estimate_llc_multitemperature(nn.Linear(1, 1), (torch.zeros(50, 1), torch.zeros(50, 1)), nbetas=[10.0, 30.0],
                                      stepsize=1e-3)


def test_bad_core_inputs():
    t = [10.0, 100.0, 1000.0]
    with pytest.raises(ValueError, match="same length"):
        fit_multitemperature(t, [0.1, 0.2], [0.01] * 3)
    with pytest.raises(ValueError, match="> 0"):
        fit_multitemperature(t, [0.1] * 3, [0.01, 0.0, 0.01])
    with pytest.raises(ValueError, match="finite"):
        fit_multitemperature(t, [0.1, float("nan"), 0.1], [0.01] * 3)
    with pytest.raises(ValueError, match="duplicate"):
        fit_multitemperature([10.0, 10.0, 100.0], [0.1] * 3, [0.01] * 3)
    with pytest.raises(ValueError, match="at least 2"):
        estimate_llc_multitemperature(nn.Linear(1, 1), (torch.zeros(50, 1), torch.zeros(50, 1)), nbetas=[10.0])


def test_checkpoint_gets_one_file_per_temperature_and_a_rerun_resumes_to_the_same_fit(tmp_path):
    kw = dict(nbetas=[50.0, 100.0, 200.0], step_size=2e-3, num_chains=4, num_draws=60, num_burnin=20,
              localization=1.0, check_stability=False, progress=False, checkpoint=tmp_path / "ck")
    p = lambda w: (w ** 2).sum(1)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = estimate_llc_multitemperature_potential(p, torch.zeros(2, dtype=F64), **kw)
        again = estimate_llc_multitemperature_potential(p, torch.zeros(2, dtype=F64), **kw)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ck.nbeta100", "ck.nbeta200", "ck.nbeta50"]
    assert np.array_equal(first.table.llc_mean.to_numpy(), again.table.llc_mean.to_numpy())
    assert first.llc_mean == again.llc_mean
