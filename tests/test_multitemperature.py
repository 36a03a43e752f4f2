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

from scipy.signal import lfilter
from slt_basins import (LLCWarning, estimate_llc_multitemperature, estimate_llc_multitemperature_potential,
                        estimate_llc_potential, fit_multitemperature)
from slt_basins.multitemperature import reweight_llc
from slt_basins.toys import Polynomial, crossing_valley, crossing_valley_box_target, finite_temperature_target
from conftest import gaussian_sgld_target

F64 = torch.float64
T_TABLE = [1e2, 1e3, 1e4, 1e5, 1e6]
# exact t·E_t[K] under the uniform prior on [−1, 1]^d (4 d.p.; CV2 = toys.crossing_valley_box_target)
CV2 = [0.3478, 0.3873, 0.4105, 0.4258, 0.4366]  # w1²w2²: λ = 1/2, m = 2
CV3 = [0.2268, 0.2879, 0.3278, 0.3555, 0.3757]  # w1²w2²w3²: λ = 1/2, m = 3
W4 = [0.25] * 5  # w⁴: λ = 1/4, m = 1 (quasi-homogeneous: exact at every t)
SE = 1e-3  # fake standard error: 20× the rounding of the table, so χ² only sees model error


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the 2 shared cores are oversubscribed otherwise (a 9-s test took 56 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
                                                num_draws=draws, num_burnin=burn, fit="multiplicity",
                                                step_size_scaling="inverse", **common)  # the rule of earlier releases
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
    n = 1000
    model, (x, y), a, _, _ = _regression(n, noise=0.3)
    curv = a.tolist()  # the Hessian eigenvalues of the MSE
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
    (dict(step_size="fast"), TypeError, "step_size must be a number, 'auto'"),
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


# -- the step size across the sweep ------------------------------------------------------------------
def test_stability_scaling_keeps_the_ratio_where_inverse_scaling_diverges():
    """K = w² (h = 2) with γ = 100, which dominates nβ·h at small nβ. ε = 5e-3 at t_ref = 50 gives
    ρ = ε·(50·2 + 100)/4 = 0.25. The stability rule ε_t = ε·200/(2t + 100) keeps ρ = 0.25 at every nβ
    and scales the burn-in by ε/ε_t (×5.5 at nβ = 500); each λ̂(t) matches the exact SGLD expectation
    ½·(2t/(2t + γ))/(1 − ρ) within 4 MCSE. The 1/nβ rule gives nβ = 5 the step 0.05, ρ = 1.375 > 1:
    every chain diverges there."""
    common = dict(nbetas=[5.0, 50.0, 500.0], step_size=5e-3, localization=100.0, num_chains=16, num_draws=1000,
                  num_burnin=100, check_stability=False, progress=False, fit="constant", seed=3)
    pot = lambda w: (w ** 2).sum(1)  # noqa: E731
    r = quiet(estimate_llc_multitemperature_potential, pot, torch.zeros(1, dtype=F64), **common)
    tab = r.table
    assert r.config["step_size_scaling_used"] == "stability"
    assert r.config["stability_curvature"] == pytest.approx(2.0, rel=1e-9)
    assert r.config["stability_target"] == pytest.approx(0.25, rel=1e-9)
    assert (tab["step_size"] * (2 * tab["nbeta"] + 100) / 4).tolist() == pytest.approx([0.25] * 3, rel=1e-12)
    assert tab["num_burnin"].tolist() == [100, 100, 550]
    assert tab.loc[1, "step_stability"] == pytest.approx(0.25, rel=1e-6)  # the reference run's own check
    exact = [gaussian_sgld_target([2.0], t, 100.0, e) for t, e in zip(tab["nbeta"], tab["step_size"])]
    assert np.all(np.abs(tab["llc_mean"] - exact) < 4 * tab["mcse"]), (tab, exact)
    old, msg = messages(estimate_llc_multitemperature_potential, pot, torch.zeros(1, dtype=F64),
                        step_size_scaling="inverse", **common)
    assert old.table["step_size"].tolist() == pytest.approx([0.05, 5e-3, 5e-4])
    assert not old.table.loc[0, "used"] and "at nβ = 5 every chain diverged" in msg


def test_stability_scaling_reads_the_curvature_where_the_chains_went():
    """w1²w2² at w* = 0 has a zero Hessian there, so h(w*) alone would keep ε constant while the
    valley's stiffness 2nβ·w1² grows with nβ. The rule takes h from the reference chains' final
    positions instead (the larger of the two)."""
    r = quiet(estimate_llc_multitemperature_potential, crossing_valley(1, 1), torch.zeros(2, dtype=F64),
              nbetas=[10.0, 30.0, 100.0], step_size=1e-3, num_chains=8, num_draws=50, num_burnin=200,
              check_stability=False, progress=False, fit="constant", seed=0)
    ref = r.results[1]  # nβ = 30, nearest to the geometric mean 31.1
    assert r.config["reference_nbeta"] == 30.0 and ref.checks.hessian_max_abs_eig == pytest.approx(0.0, abs=1e-12)
    h = ref.checks.hessian_max_abs_eig_end
    assert h > 0.1 and r.config["stability_curvature"] == h
    assert r.table["step_size"].tolist() == pytest.approx([1e-3 * (30 * h + 1) / (t * h + 1) for t in (10, 30, 100)])
    assert r.results[0].checks.hessian_max_abs_eig is None  # check_stability=False holds for the others


def test_auto_step_size_is_calibrated_once_at_the_reference_temperature():
    r = quiet(estimate_llc_multitemperature_potential, lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=F64),
              nbetas=[10.0, 100.0, 1000.0], step_size="auto", num_chains=4, num_draws=500, num_burnin=100,
              progress=False, fit="constant", seed=0)
    cal = [res.checks.calibration for res in r.results]
    assert cal[0] is None and cal[2] is None and cal[1]["step_size"] == r.config["reference_step_size"]
    eps = cal[1]["step_size"]
    assert r.table["step_size"].tolist() == pytest.approx([eps * 201 / 21, eps, eps * 201 / 2001], rel=1e-9)
    assert abs(r.llc_mean - 0.5) < 5 * r.mcse + 0.05  # w²: λ = 1/2 (γ = 1 lowers nβ = 10 by 2 %)


def test_stability_scaling_falls_back_and_refuses_a_reference_outside_the_sweep():
    pot = lambda w: (w ** 2).sum(1)  # noqa: E731
    r, msg = messages(estimate_llc_multitemperature_potential, pot, torch.zeros(1, dtype=F64), nbetas=[10.0, 100.0],
                      sampler="mala", step_size=1e-2, num_chains=2, num_draws=20, num_burnin=0, progress=False,
                      fit="constant")
    assert "fell back to 'inverse'" in msg and "'mala'" in msg and r.config["step_size_scaling_used"] == "inverse"
    assert r.table["step_size"].tolist() == pytest.approx([1e-2, 1e-3])
    with pytest.raises(ValueError, match="is not one of the temperatures"):
        estimate_llc_multitemperature_potential(_never_sampled, torch.zeros(1, dtype=F64), nbetas=[10.0, 100.0],
                                                reference_nbeta=30.0, progress=False)
    with pytest.raises(ValueError, match="is not one of the temperatures"):  # 'auto' needs it too
        estimate_llc_multitemperature_potential(_never_sampled, torch.zeros(1, dtype=F64), nbetas=[10.0, 100.0],
                                                step_size="auto", step_size_scaling="inverse", reference_nbeta=30.0,
                                                progress=False)


# -- the reweighting estimator -----------------------------------------------------------------------
def _ar1_squares(rng, reps, chains, draws, k, phi):
    """Half the sum of k squared stationary AR(1) Gaussian series: Gamma(k/2, 1) marginals, with
    autocorrelation φ² per draw."""
    z = rng.standard_normal((reps, k, chains, draws))
    x = z.copy()
    x[..., 1:] = lfilter([math.sqrt(1 - phi ** 2)], [1, -phi], z[..., 1:], axis=-1, zi=phi * z[..., :1])[0]
    return 0.5 * (x ** 2).sum(1)


@pytest.mark.parametrize("phi", [0.0, 0.9])
def test_reweight_core_is_exact_on_gamma_draws_and_its_error_bar_is_calibrated(phi):
    """t·K ~ Gamma(λ, 1) for a quasi-homogeneous K under a flat prior: t·E_t[K] = λ at every t, so
    S_δ = λ for every δ (and S₀ = Var = λ, slope 0). Over 100 data sets of 4 × 1000 draws (i.i.d., or
    autocorrelated with φ² = 0.81 per draw) the scatter of S_δ matches its mean MCSE within 20 % (the
    s.d. of 100 values is itself uncertain by ~7 %)."""
    rng = np.random.default_rng(0)
    u = _ar1_squares(rng, 100, 4, 1000, 4, phi)  # λ = 2
    rs = [reweight_llc(x, 100.0, span=0.25) for x in u]
    est, se = np.array([r.llc_mean for r in rs]), np.array([r.mcse for r in rs])
    assert abs(est.mean() - 2.0) < 4 * est.std() / 10
    assert 0.8 < est.std() / se.mean() < 1.2, (est.std(), se.mean())
    var, var_se = np.array([r.variance_llc for r in rs]), np.array([r.variance_llc_se for r in rs])
    assert abs(var.mean() - 2.0) < 4 * var.std() / 10 and 0.8 < var.std() / var_se.mean() < 1.2
    slope = np.array([r.slope for r in rs])
    assert abs(slope.mean()) < 4 * slope.std() / 10
    assert list(rs[0].table["nbeta"]) == pytest.approx([75.0, 100.0, 125.0]) and rs[0].nbetas == pytest.approx((75, 125))


def test_reweight_core_removes_minibatch_noise_with_a_second_evaluation():
    """U₁, U₂ = U + independent noise of variance 3·U/λ (like minibatch noise, larger where K is):
    Var(U₁) = λ + 3, while the cross-covariance estimates Var(U) = λ. Importance weights of noisy U are
    refused."""
    rng = np.random.default_rng(1)
    u = rng.gamma(2.0, 1.0, size=(4, 5000))
    u1, u2 = (u + np.sqrt(1.5 * u) * rng.standard_normal(u.shape) for _ in range(2))
    r = reweight_llc(u1, 50.0, copy=u2)
    assert abs(r.llc_mean - 2.0) < 4 * r.mcse and r.llc_mean == r.variance_llc and r.span == 0
    assert abs(r.noise_variance - 3.0) < 0.1 and u1.var() - 2.0 > 20 * r.mcse
    assert abs(r.llc_at_nbeta - 2.0) < 4 * r.llc_at_nbeta_se
    with pytest.raises(ValueError, match="biased for noisy"):
        reweight_llc(u1, 50.0, span=0.2, copy=u2)


def test_reweight_gaussian_potential_is_exact_without_localisation():
    """K = w1² + 4w2² (a = 2, 8), γ = 0: a perfect sampler gives t·E_t[K] = d/2 = 1 at every t. SGLD's
    stationary law is N(0, 1/(ta(1 − ρ))), ρ = εta/4, so with r = 1/(1 − ρ) per direction, exactly:
    λ̂(t₀) = Σ ½r, S₀ = Σ ½r², and reweighting each Gaussian to t₀(1 ± δ) gives S_δ = (1 − δ²)·Σ ½r²/(1 − δ²r²)."""
    eps, t0 = 2e-4, 100.0
    r = estimate_llc_multitemperature_potential(
        lambda w: w[:, 0] ** 2 + 4 * w[:, 1] ** 2, torch.zeros(2, dtype=F64), method="reweight", reference_nbeta=t0,
        localization=0.0, step_size=eps, num_chains=48, num_draws=3000, num_burnin=300, progress=False, seed=0)
    rr = 1 / (1 - eps * t0 * np.array([2.0, 8.0]) / 4)
    d = r.span
    assert d == pytest.approx(1 / math.sqrt(2 * math.log(646.6)), rel=1e-3)  # n with n/log n = 100
    assert abs(r.llc_mean - (1 - d ** 2) * np.sum(0.5 * rr ** 2 / (1 - d ** 2 * rr ** 2))) < 4 * r.mcse
    assert abs(r.variance_llc - np.sum(0.5 * rr ** 2)) < 4 * r.variance_llc_se
    assert abs(r.llc_at_nbeta - np.sum(0.5 * rr)) < 4 * r.llc_at_nbeta_se
    assert r.mcse < 0.05 and r.fit == "reweight"  # the tolerances above are ≤ 0.2 = 20 % of λ and r.multiplicity is None and r.results == [r.result]
    assert r.wbic is None and "reweight" in str(r)


def _exact_slopes(p, t0, gamma, span):
    """(S_δ, S₀, λ̂(t₀)) from quadrature: S_δ from t·E_t[K] at t₀(1 ∓ δ), S₀ = g − t·g'(t) at t₀ by a
    central difference of step 10⁻³ (error ~10⁻⁶·g''' ≪ the MCSEs)."""
    g = lambda t: finite_temperature_target(p, t, localization=gamma, rtol=1e-10)  # noqa: E731
    t1, t2 = t0 * (1 - span), t0 * (1 + span)
    s_delta = (g(t1) / t1 - g(t2) / t2) / (1 / t1 - 1 / t2)
    g0 = g(t0)
    return s_delta, g0 - (g(t0 * 1.001) - g(t0 * 0.999)) / 0.002, g0


@pytest.mark.parametrize("name, p, d, eps, seed", [
    ("w⁴", Polynomial("w1**4"), 1, 1.5e-2, 0),
    ("w1²w2²", crossing_valley(1, 1), 2, 1e-2, 2),
])
def test_reweight_matches_the_exact_finite_temperature_slopes(name, p, d, eps, seed):
    """MALA (no step-size bias) at nβ = 100, γ = 1; the three estimates against quadrature, within 4 MCSE.
    For w1²w2² (λ = 1/2, m = 2) the reweighting keeps the multiplicity bias: its exact S_δ = 0.332 is
    below λ̂(100) = 0.354, as S₀ = λ̂ − dλ̂/dlog t says. Over seeds 0–11 (these settings) |z| of S_δ
    stayed below 3 (largest 2.9 for w1²w2², 2.4 for w⁴); the MCSE of S_δ for w1²w2² ranged over
    0.006–0.039 between seeds (rare long excursions along the valley), 0.009 for seed 2."""
    t0 = 100.0
    r = quiet(estimate_llc_multitemperature_potential, p, torch.zeros(d, dtype=F64), method="reweight",
              reference_nbeta=t0, sampler="mala", step_size=eps, num_chains=64, num_draws=2000, num_burnin=200,
              localization=1.0, progress=False, seed=seed)
    s_delta, s0, g0 = _exact_slopes(p, t0, 1.0, r.span)
    assert abs(r.llc_mean - s_delta) < 4 * r.mcse, (r, s_delta)
    assert abs(r.variance_llc - s0) < 4 * r.variance_llc_se
    assert abs(r.llc_at_nbeta - g0) < 4 * r.llc_at_nbeta_se
    assert abs(r.slope - (g0 - s0)) < 4 * r.slope_se
    if name == "w1²w2²":
        assert s_delta < g0 - 0.02 and s0 < g0 - 0.02
        assert 0.5 - r.llc_mean > 5 * r.mcse  # not an estimate of λ = 1/2


def _regression(n=1000, noise=0.5):
    """nn.Linear(3, 1) at its least-squares minimum on n Gaussian examples, its data and the Hessian
    eigen-decomposition of the MSE, and the per-example gradients at w*."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=F64) + noise * torch.randn(n, 1, generator=g, dtype=F64)
    xb = torch.cat([x, torch.ones(n, 1, dtype=F64)], 1)
    sol = torch.linalg.lstsq(xb, y).solution
    model = nn.Linear(3, 1).to(F64)
    with torch.no_grad():
        model.weight.copy_(sol[:3].T)
        model.bias.copy_(sol[3])
    a, vecs = torch.linalg.eigh(2 * xb.T @ xb / n)
    grads = 2 * (xb @ sol - y) * xb  # per-example gradients of the squared error at w*
    return model, (x, y), a.numpy(), vecs.numpy(), grads.numpy()


def test_reweight_with_minibatches_removes_the_loss_noise():
    """Linear regression (d = 4, λ = 2) with batches of 50 of n = 1000 at nβ = n/log n, γ = 1. The
    recorded draws are paired minibatch estimates; their variance carries the minibatch noise
    (≈ 4σ²·nβ·λ/B ≈ 6 for noise σ = 0.5), three times Var(t·K). The cross-covariance with the second,
    independent evaluation estimates Var(t·K) itself. Expected: per direction r = (ta/(ta + γ))/(1 − ρ)
    (full-batch SGLD), times 1 + ε·t²·s²/4 from the minibatch gradient noise (s² = the gradient variance
    of a batch of 50 in that direction, without replacement; first order in ε), and S₀ = Σ ½r²."""
    n, batch, gamma = 1000, 50, 1.0
    model, data, a, vecs, grads = _regression(n)
    t = n / math.log(n)
    eps = 4 * 0.02 / (t * a.max() + gamma)
    s2 = np.einsum("ij,ik,kj->j", vecs, np.cov(grads.T, bias=True), vecs) / batch * (n - batch) / (n - 1)
    rr = (t * a / (t * a + gamma)) / (1 - eps * (t * a + gamma) / 4) * (1 + eps * t ** 2 * s2 / 4)
    r = quiet(estimate_llc_multitemperature, model, data, "mse", method="reweight", step_size=eps,
              localization=gamma, batch_size=batch, num_chains=16, num_draws=2000, num_burnin=300, progress=False,
              seed=0)
    assert r.span == 0 and r.config["minibatch_correction"] and r.nbeta == pytest.approx(t)
    assert abs(r.llc_mean - np.sum(0.5 * rr ** 2)) < 4 * r.mcse, (r, np.sum(0.5 * rr ** 2))
    assert abs(r.llc_at_nbeta - np.sum(0.5 * rr)) < 4 * r.llc_at_nbeta_se
    naive = r.result.llc_trace.var()
    assert naive - r.llc_mean > 10 * r.mcse and r.noise_variance > r.llc_mean  # what the correction removes
    assert r.wbic == pytest.approx(n * r.result.init_loss + r.llc_at_nbeta * math.log(n))
    with pytest.raises(ValueError, match="biased for the minibatch"):
        estimate_llc_multitemperature(model, data, method="reweight", span=0.2, batch_size=batch, progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(method="anneal"), "method must be"),
    (dict(method="reweight", nbetas=[10.0, 100.0]), "nbetas belongs"),
    (dict(span=0.2, nbetas=[10.0, 100.0]), "span is the reweighting"),
    (dict(method="reweight", reference_nbeta=100.0, span=1.0), r"span must be in \[0, 1\)"),
    (dict(method="reweight"), "needs the temperature"),
    (dict(method="reweight", reference_nbeta=100.0, num_draws=[10, 20]), "single value"),
    (dict(nbetas=None), "needs nbetas"),
])
def test_bad_reweight_settings_raise_before_sampling(kw, match):
    with pytest.raises(ValueError, match=match):
        estimate_llc_multitemperature_potential(_never_sampled, torch.zeros(1, dtype=F64), progress=False, **kw)


def test_reweighting_an_unstable_run_gives_its_closed_form_and_is_flagged_above_d_over_2():
    # K = w², nβ = 100, γ = 1: SGLD's stationary variance is 1/(A(1 − ρ)) with A = nβ·2 + γ and ρ = εA/4, so
    # the reweighting's Var(U) of U = nβ·w² is 2nβ²/(A²(1 − ρ)²): 49.5 at ρ = 0.9, against λ = 1/2 ≤ d/2.
    nb, g, rho = 100.0, 1.0, 0.9
    a = nb * 2 + g
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc_multitemperature_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64),
                                                    method="reweight", span=0.0, reference_nbeta=nb, localization=g,
                                                    step_size=rho * 4 / a, num_chains=8, num_draws=2000,
                                                    num_burnin=500, seed=0, progress=False)
    exact = 2 * nb ** 2 / (a ** 2 * (1 - rho) ** 2)
    assert abs(r.llc_mean - exact) < 3 * r.mcse
    assert any("the reweighted λ̂" in str(w.message) and "exceeds d/2 = 0.5" in str(w.message) for w in caught)
