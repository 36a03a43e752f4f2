"""estimate_llc_potential against closed forms and quadrature (localisation and finite-temperature biases, docs/theory.md)."""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate

from slt_basins import LLCWarning, SamplerDivergedError, estimate_llc_potential
from conftest import gaussian_sgld_target

F64 = torch.float64


def quad_target_power(k, t, gamma):
    """t·E[w^2k] under exp(−t w^2k − γ w²/2) by quadrature."""
    f = lambda w, p: (t * w ** (2 * k)) ** p * math.exp(-t * w ** (2 * k) - gamma * w * w / 2)
    num = integrate.quad(f, -np.inf, np.inf, args=(1,), limit=200)[0]
    den = integrate.quad(f, -np.inf, np.inf, args=(0,), limit=200)[0]
    return num / den


def quiet(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        return estimate_llc_potential(progress=False, **kw)


def test_quadratic_matches_exact_sgld_formula():
    a = torch.tensor([1.0, 0.5, 2.0, 0.1, 0.0], dtype=F64)  # includes a flat direction
    t, g, eps = 200.0, 5.0, 2e-3
    r = quiet(potential=lambda w: 0.5 * (a * w ** 2).sum(1), w_star=torch.zeros(5, dtype=F64),
              nbeta=t, localization=g, step_size=eps, num_chains=16, num_draws=4000, num_burnin=1000)
    exact = gaussian_sgld_target(a.tolist(), t, g, eps)
    assert abs(r.llc_mean - exact) < 4 * r.mcse, (r.llc_mean, exact, r.mcse)
    assert r.mcse < 0.02 * exact  # the test has power: the error bar is small


def test_quadratic_step_size_bias_is_detected():
    """The ε-correction is visible: the ε = 0 value lies many MCSE away at a large step."""
    a = [4.0]
    t, g, eps = 100.0, 1.0, 5e-3  # ε(ta+γ)/4 ≈ 0.5: variance doubled
    r = quiet(potential=lambda w: 2.0 * w[:, 0] ** 2, w_star=torch.zeros(1, dtype=F64), nbeta=t,
              localization=g, step_size=eps, num_chains=32, num_draws=3000, num_burnin=500)
    exact = gaussian_sgld_target(a, t, g, eps)
    no_eps = gaussian_sgld_target(a, t, g, 0.0)
    assert abs(r.llc_mean - exact) < 4 * r.mcse
    assert abs(r.llc_mean - no_eps) > 10 * r.mcse


def test_w4_matches_localized_finite_t_value():
    t, g = 1e3, 100.0
    target = quad_target_power(2, t, g)
    assert abs(target - 0.0961) < 1e-4  # tests/data/cases.json, id 3 (gauss gamma=100, t=1e3)
    r = quiet(potential=lambda w: w[:, 0] ** 4, w_star=torch.zeros(1, dtype=F64), nbeta=t,
              localization=g, step_size=3e-4, num_chains=256, num_draws=2000, num_burnin=1000)
    assert abs(r.llc_mean - target) < 4 * r.mcse, (r.llc_mean, target, r.mcse)
    assert r.mcse < 0.03 * target


def test_w1sq_plus_w2_quartic_matches_finite_t_value():
    t, g, eps = 1e3, 100.0, 1e-4
    quartic = quad_target_power(2, t, g)
    assert abs(quad_target_power(1, t, g) + quartic - 0.5723) < 1e-4  # exact: w1² in closed form, w2⁴ by quadrature
    # The quadratic block is Gaussian, so its SGLD expectation (step-size bias included) is exact.
    target = gaussian_sgld_target([2.0], t, g, eps) + quartic
    r = quiet(potential=lambda w: w[:, 0] ** 2 + w[:, 1] ** 4, w_star=torch.zeros(2, dtype=F64),
              nbeta=t, localization=g, step_size=eps, num_chains=256, num_draws=2500, num_burnin=1000)
    assert abs(r.llc_mean - target) < 4 * r.mcse, (r.llc_mean, target, r.mcse)


def test_same_seed_same_bits_and_chains_independent_of_chain_count():
    kw = dict(potential=lambda w: (w ** 4).sum(1), w_star=torch.zeros(3, dtype=F64), nbeta=500.0,
              localization=10.0, step_size=1e-3, num_draws=200, num_burnin=50)
    a = quiet(num_chains=4, seed=7, **kw)
    b = quiet(num_chains=4, seed=7, **kw)
    c = quiet(num_chains=2, seed=7, **kw)
    d = quiet(num_chains=4, seed=8, **kw)
    assert np.array_equal(a.llc_trace, b.llc_trace)
    assert np.array_equal(a.llc_trace[:2], c.llc_trace)  # chain c's stream depends only on (seed, c)
    assert not np.array_equal(a.llc_trace, d.llc_trace)


def test_divergent_chains_are_excluded_and_reported():
    # K = w² with a NaN wall at |w| > 0.7: chains that wander out diverge, the rest do not.
    def pot(w):
        k = w[:, 0] ** 2
        return torch.where(w[:, 0].abs() > 0.7, torch.full_like(k, float("nan")), k)

    with pytest.warns(LLCWarning, match="step_size"):
        r = estimate_llc_potential(pot, torch.zeros(1, dtype=F64), nbeta=10.0, localization=1.0,
                                   step_size=1e-2, num_chains=8, num_draws=300, num_burnin=10,
                                   check_stability=False, progress=False)
    assert 0 < len(r.diverged) < 8
    assert set(r.diverged).isdisjoint(r.chain_ids) and len(r.chain_ids) == 8 - len(r.diverged)
    assert np.isfinite(r.llc_trace).all() and math.isfinite(r.llc_mean) and math.isfinite(r.mcse)
    assert r.llc_mean == pytest.approx(r.llc_per_chain.mean())
    assert all(step >= 0 for step in r.checks["diverged_at_step"].values())


def test_all_chains_diverging_raises_with_settings_and_keeps_partial_traces():
    with pytest.raises(SamplerDivergedError, match="lower step_size") as info:
        estimate_llc_potential(lambda w: (w ** 2).sum(1) * 1e3, torch.zeros(2, dtype=F64), nbeta=100.0,
                               step_size=1.0, num_chains=3, num_draws=50, num_burnin=0,
                               check_stability=False, progress=False)
    assert info.value.partial is not None and (info.value.partial.diverged_at >= 0).all()


def test_unstable_step_size_warns_before_it_bites():
    with pytest.warns(LLCWarning, match="Lower step_size"):
        estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=F64), nbeta=100.0,
                               step_size=5e-3, num_chains=2, num_draws=50, num_burnin=0, progress=False)


def test_curvature_growing_away_from_w_star_is_reported():
    """K = w⁴ has zero curvature at w* = 0 but 12·t·w² ≈ 400 where the chains go (t = 10³)."""
    with pytest.warns(LLCWarning, match="final positions"):
        r = estimate_llc_potential(lambda w: w[:, 0] ** 4, torch.zeros(1, dtype=F64), nbeta=1e3,
                                   step_size=3e-3, num_chains=4, num_draws=500, num_burnin=100, progress=False)
    assert r.checks["step_stability"] < 1e-2 < 0.1 < r.checks["step_stability_end"]


@pytest.mark.parametrize("kw, match", [
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1e-3), "step_size"),
    (dict(nbeta=0.0), "nbeta"),
    (dict(nbeta=float("inf")), "nbeta"),
    (dict(num_chains=0), "num_chains"),
    (dict(localization=-1.0), "localization"),
    (dict(num_draws=2), "num_draws"),
    (dict(sampler="hmc"), "unknown sampler"),
])
def test_bad_settings_raise_clear_errors(kw, match):
    args = dict(potential=lambda w: (w ** 2).sum(1), w_star=torch.zeros(1), nbeta=10.0, progress=False)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        estimate_llc_potential(**args)


def test_potential_with_wrong_output_shape_and_nonfinite_w_star():
    with pytest.raises(ValueError, match="shape"):
        estimate_llc_potential(lambda w: w ** 2, torch.zeros(2), nbeta=10.0, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.tensor([float("nan")]), nbeta=10.0, progress=False)
