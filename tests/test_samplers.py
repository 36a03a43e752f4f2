"""Every sampler against closed forms (Gaussian targets: the step-size bias of docs/theory.md) and quadrature.

Kernel-level tests drive ``run_chains`` directly, so that the frozen RMSprop preconditioner G of
each chain is known and the exact stationary expectation can be computed per chain.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from slt_basins import LLCWarning, estimate_llc, estimate_llc_potential
from slt_basins import diagnostics
from slt_basins.chains import run_chains
from slt_basins.samplers import KERNELS, Hyper, get_kernel, rmsprop_sgld, sgnht
from slt_basins.targets import PotentialTarget
from slt_basins.toys import Polynomial, finite_temperature_target
from conftest import gaussian_sgld_target

F64 = torch.float64
A = torch.tensor([1.0, 0.5, 2.0, 0.1], dtype=F64)  # curvatures of K = ½ Σ a_i w_i²
T, GAMMA = 200.0, 5.0


def gaussian(w):
    return 0.5 * (A * w ** 2).sum(1)


def quiet_potential(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        return estimate_llc_potential(progress=False, **kw)


def run_kernel(kernel, eps, chains=16, draws=4000, burnin=1000, seed=0):
    w_star = torch.zeros(len(A), dtype=F64)
    target = PotentialTarget(gaussian, w_star)
    run = run_chains(get_kernel(kernel), target, Hyper(eps, GAMMA, T, w_star), list(range(chains)),
                     num_burnin=burnin, num_draws=draws, seed=seed, divergence_bound=1e6, progress=False)
    assert (run.diverged_at < 0).all()
    return run, float(run.llc.mean()), diagnostics.mcse_mean(run.llc)


def test_sgld_kernel_matches_exact_formula_with_step_size_bias():
    eps = 2e-3
    _, mean, mcse = run_kernel("sgld", eps)
    exact = gaussian_sgld_target(A.tolist(), T, GAMMA, eps)
    assert abs(mean - exact) < 4 * mcse and mcse < 0.02 * exact, (mean, exact, mcse)


def test_rmsprop_sgld_matches_exact_formula_for_its_frozen_preconditioner():
    """With G frozen after burn-in, coordinate i is SGLD with step ε·G_i: exact per chain."""
    eps = 2e-3
    kernel = KERNELS["rmsprop_sgld"]
    run, mean, mcse = run_kernel(kernel, eps)
    G = kernel.preconditioner(run.final_state).numpy()
    a, ta = A.numpy(), T * A.numpy() + GAMMA
    per_chain = (0.5 * (T * a / ta) / (1 - eps * G * ta / 4)).sum(1)
    exact = float(per_chain.mean())
    assert abs(mean - exact) < 4 * mcse and mcse < 0.02 * exact, (mean, exact, mcse)
    # The metric is RMSprop's 1/√v normalised to min G = 1 and it speeds up the flat direction.
    assert np.allclose(G.min(1), 1.0)
    assert (G[:, 3] > 2.5).all() and (G[:, 2] < 1.2).all()  # a = 0.1 vs the stiffest a = 2


def test_rmsprop_preconditioner_is_frozen_after_burn_in_and_excludes_localization():
    kernel = rmsprop_sgld(decay=0.9)
    h = Hyper(1e-3, 1e6, 10.0, torch.zeros(2, dtype=F64))  # huge γ: must not enter v
    f = lambda w: (0.5 * (w ** 2).sum(1), w)
    s = kernel.init(torch.tensor([[1.0, -2.0]], dtype=F64), f, h)
    s, _, _ = kernel.step(s, f, torch.zeros(1, 2, dtype=F64), h)
    # one adapted step: v = 0.1·(nβ g)², bias-corrected to (nβ g)² = (10·[1, −2])²
    assert torch.allclose(s.v / 0.1, torch.tensor([[100.0, 400.0]], dtype=F64))
    assert torch.allclose(kernel.preconditioner(s), torch.tensor([[2.0, 1.0]], dtype=F64))
    frozen = h._replace(adapt=False)
    s2, _, _ = kernel.step(s, f, torch.zeros(1, 2, dtype=F64), frozen)
    assert torch.equal(s2.v, s.v) and torch.equal(s2.k, s.k)


def test_sgnht_matches_gaussian_value_at_small_step():
    eps = 2e-4  # ε(ta+γ) ≤ 0.08: discretisation bias ≲ 1 %
    run, mean, mcse = run_kernel("sgnht", eps, draws=6000)
    exact = gaussian_sgld_target(A.tolist(), T, GAMMA, 0.0)
    assert abs(mean - exact) < 4 * mcse + 0.015 * exact, (mean, exact, mcse)
    assert mcse < 0.03 * exact
    # the thermostat settles where the kinetic energy per coordinate is η = ε/2
    alpha = run.final_state.alpha
    assert torch.isfinite(alpha).all() and (alpha > 0).all()


def test_mala_is_exact_where_sgld_is_biased():
    eps = 8e-3  # ε(t·2 + γ)/4 ≈ 0.81 in the stiffest direction: SGLD's variance there is ×5
    run, mean, mcse = run_kernel("mala", eps)
    exact = gaussian_sgld_target(A.tolist(), T, GAMMA, 0.0)
    sgld_value = gaussian_sgld_target(A.tolist(), T, GAMMA, eps)
    assert abs(mean - exact) < 4 * mcse, (mean, exact, mcse)
    assert abs(sgld_value - exact) > 15 * mcse
    assert 0.3 < run.accept.mean() < 0.95


@pytest.mark.parametrize("spec, t, gamma, eps", [("w1**4", 1e3, 100.0, 2e-3),
                                                 ("w1**2*w2**2", 1e3, 1.0, 2e-3),
                                                 ("w1**2 + w2**4", 1e3, 100.0, 1e-3)])
def test_mala_matches_quadrature_on_toy_potentials(spec, t, gamma, eps):
    K = Polynomial(spec)
    target = finite_temperature_target(K, t, localization=gamma)
    r = quiet_potential(potential=K, w_star=torch.zeros(K.d, dtype=F64), nbeta=t, localization=gamma,
                        step_size=eps, sampler="mala", num_chains=64, num_draws=2000, num_burnin=500)
    assert abs(r.llc_mean - target) < 4 * r.mcse, (spec, r.llc_mean, target, r.mcse)
    assert r.mcse < 0.05 * target
    assert r.config["sampler"] == "mala" and 0.3 < r.checks["mala_accept"] <= 1.0


def test_sgld_reports_mala_acceptance_of_its_proposals():
    a = torch.linspace(0.1, 2.0, 50, dtype=F64)
    kw = dict(potential=lambda w: 0.5 * (a * w ** 2).sum(1), w_star=torch.zeros(50, dtype=F64), nbeta=T,
              localization=GAMMA, num_chains=8, num_draws=300, num_burnin=200)
    small = quiet_potential(step_size=1e-4, **kw)
    assert small.checks["mala_accept"] > 0.95
    with pytest.warns(LLCWarning, match="MALA would accept only"):
        big = estimate_llc_potential(step_size=8e-3, progress=False, **kw)
    assert big.checks["mala_accept"] < 0.7


def blocks_model_and_data(n=600, seed=0):
    """y = a·x_a + b·x_b with exactly orthogonal input blocks, at the least-squares minimum:
    L_n(a, b) = L_a(a) + L_b(b) + const, so the two blocks are independent."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 5, generator=g, dtype=F64))
    x = q * math.sqrt(n) * torch.tensor([1.0, 0.7, 1.3, 0.5, 1.1], dtype=F64)
    y = x @ torch.tensor([1.0, -1.0, 0.5, 2.0, 0.3], dtype=F64) + 0.1 * torch.randn(n, generator=g, dtype=F64)

    class Blocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.zeros(2, dtype=F64))
            self.b = nn.Parameter(torch.zeros(3, dtype=F64))

        def forward(self, x):
            return x[:, :2] @ self.a + x[:, 2:] @ self.b

    m = Blocks()
    sol = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    with torch.no_grad():
        m.a.copy_(sol[:2]); m.b.copy_(sol[2:])
    return m, (x, y), (2 * x.T @ x / n).diagonal()


def test_restricted_llc_of_an_independent_block_equals_its_own_lambda():
    model, data, curv = blocks_model_and_data()
    kw = dict(loss="mse", step_size=1e-3, localization=1.0, num_chains=8, num_draws=3000, num_burnin=500,
              progress=False)
    t = 600 / math.log(600)
    for params, idx in [(["a"], [0, 1]), (lambda name: name == "b", [2, 3, 4])]:
        r = estimate_llc(model, data, params=params, **kw)
        exact = gaussian_sgld_target(curv[idx].tolist(), t, 1.0, 1e-3)
        assert r.config["d"] == len(idx)
        assert abs(r.llc_mean - exact) < 4 * r.mcse, (idx, r.llc_mean, exact, r.mcse)
    full = estimate_llc(model, data, **kw)
    assert abs(full.llc_mean - gaussian_sgld_target(curv.tolist(), t, 1.0, 1e-3)) < 4 * full.mcse
    # and the block alone, as its own model, gives the same draws up to rounding (same seeds, same d)
    class OnlyA(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(model.a.detach().clone())

        def forward(self, x):
            return x[:, :2] @ self.a + (x[:, 2:] @ model.b).detach()

    alone = estimate_llc(OnlyA(), data, **kw)
    restricted = estimate_llc(model, data, params=["a"], **kw)
    assert np.allclose(alone.llc_per_chain, restricted.llc_per_chain, rtol=1e-6, atol=1e-9)


def test_bad_sampler_and_params_raise_clear_errors():
    model, data, _ = blocks_model_and_data()
    with pytest.raises(ValueError, match=r"unknown sampler 'hmc'.*mala.*rmsprop_sgld.*sgld.*sgnht"):
        estimate_llc(model, data, sampler="hmc", progress=False)
    with pytest.raises(ValueError, match=r"unknown parameter name\(s\) \['c'\].*\['a', 'b'\]"):
        estimate_llc(model, data, params=["a", "c"], progress=False)
    with pytest.raises(ValueError, match="needs the exact full-batch loss.*batch_size=None"):
        estimate_llc(model, data, sampler="mala", batch_size=100, progress=False)
    with pytest.raises(ValueError, match="max_gain"):
        rmsprop_sgld(max_gain=0.5)
    with pytest.raises(ValueError, match="friction"):
        sgnht(friction=0.0)
