"""Every sampler against closed forms (Gaussian targets: the step-size bias of docs/theory.md) and quadrature.

Kernel-level tests drive ``run_chains`` directly, so that the frozen RMSprop/Adam preconditioner G
of each chain is known and the exact stationary expectation can be computed per chain.
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
from slt_basins.samplers import KERNELS, Hyper, adam_sgld, get_kernel, rmsprop_sgld, sgnht
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


def sgld_in_metric(eps, G):
    """E[λ̂] per chain of SGLD in a frozen diagonal metric G ``(chains, 4)``: coordinate i is SGLD with step ε·G_i."""
    a, ta = A.numpy(), T * A.numpy() + GAMMA
    return (0.5 * (T * a / ta) / (1 - eps * G * ta / 4)).sum(1)


def test_rmsprop_sgld_matches_exact_formula_for_its_frozen_preconditioner():
    """Hitchcock & Hoogland's form (v₀ = 1, bias correction, G = 1/(√v̂ + δ)), G frozen after burn-in."""
    eps = 2e-4
    kernel = KERNELS["rmsprop_sgld"]
    run, mean, mcse = run_kernel(kernel, eps)
    G = kernel.preconditioner(run.final_state).numpy()
    exact = float(sgld_in_metric(eps, G).mean())
    assert abs(mean - exact) < 4 * mcse and mcse < 0.02 * exact, (mean, exact, mcse)
    assert exact - gaussian_sgld_target(A.tolist(), T, GAMMA, 0.0) > 8 * mcse  # the step-size bias is resolved
    # G ≈ 1/RMS(∇L) ≈ √(TA + γ)/A: largest for the flattest direction (a = 0.1), smallest for the stiffest (a = 2)
    assert (G.argmax(1) == 3).all() and (G.argmin(1) == 2).all() and (G.min(1) > 5).all()


def test_normalized_rmsprop_sgld_matches_exact_formula_for_its_frozen_preconditioner():
    eps = 2e-3
    kernel = KERNELS["rmsprop_sgld_normalized"]
    run, mean, mcse = run_kernel(kernel, eps)
    G = kernel.preconditioner(run.final_state).numpy()
    exact = float(sgld_in_metric(eps, G).mean())
    assert abs(mean - exact) < 4 * mcse and mcse < 0.02 * exact, (mean, exact, mcse)
    # The metric is RMSprop's 1/√v normalised to min G = 1 and it speeds up the flat direction.
    assert np.allclose(G.min(1), 1.0)
    assert (G[:, 3] > 2.5).all() and (G[:, 2] < 1.2).all()  # a = 0.1 vs the stiffest a = 2


def test_rmsprop_first_step_v0_bias_correction_frozen_and_without_localization():
    kernel = rmsprop_sgld(decay=0.9, delta=0.5)
    h = Hyper(1e-3, 1e6, 10.0, torch.zeros(2, dtype=F64))  # huge γ: must not enter v
    f = lambda w: (0.5 * (w ** 2).sum(1), w)
    s = kernel.init(torch.tensor([[1.0, -2.0]], dtype=F64), f, h)
    assert torch.allclose(kernel.preconditioner(s), torch.full((1, 2), 1 / 1.5, dtype=F64))  # v̂ = v₀ = 1 at k = 0
    s, _, _ = kernel.step(s, f, torch.zeros(1, 2, dtype=F64), h)
    # by hand: v = 0.9·1 + 0.1·g² with g = ∇L = [1, −2] (no nβ), v̂ = v/(1 − 0.9) = [10, 13], G = 1/(√v̂ + 0.5)
    assert torch.allclose(s.v, torch.tensor([[1.0, 1.3]], dtype=F64)) and s.k.tolist() == [1.0]
    v_hat = torch.tensor([[10.0, 13.0]], dtype=F64)
    assert torch.allclose(kernel.preconditioner(s), 1 / (v_hat.sqrt() + 0.5))
    frozen = h._replace(adapt=False)
    s2, _, _ = kernel.step(s, f, torch.zeros(1, 2, dtype=F64), frozen)
    assert torch.equal(s2.v, s.v) and torch.equal(s2.k, s.k) and not torch.equal(s2.w, s.w)
    # the normalised metric of the same v: min entry 1
    norm = rmsprop_sgld(decay=0.9, delta=0.5, normalize=True)
    assert torch.allclose(norm.preconditioner(s), (13 ** 0.5 + 0.5) / (v_hat.sqrt() + 0.5))


def adam_gaussian_llc(eps, G, beta1):
    """Exact E[λ̂] per chain of Adam-SGLD with frozen metric G on K = ½Σa_i w_i², from the stationary covariance
    of the linear recursion of (w_i, m_i): m' = β₁m + (1 − β₁)a·w, w' = w − s(nβ·m' + γw) + √(2s)ξ, s = εG_i/2."""
    out = np.zeros(G.shape[0])
    for c in range(G.shape[0]):
        for i, a in enumerate(A.tolist()):
            s = 0.5 * eps * G[c, i]
            M = np.array([[1 - s * GAMMA - s * T * (1 - beta1) * a, -s * T * beta1], [(1 - beta1) * a, beta1]])
            cov = np.linalg.solve(np.eye(4) - np.kron(M, M), np.array([2 * s, 0.0, 0.0, 0.0]))
            out[c] += 0.5 * T * a * cov[0]
    return out


def test_adam_sgld_matches_exact_formula_of_its_momentum_chain():
    """With G frozen, (w, m) is a linear Gaussian chain: its exact λ̂, not the target's nor SGLD's, is what it samples."""
    eps, beta1 = 2e-5, 0.9
    kernel = adam_sgld(beta1=beta1, beta2=0.99)  # β₂ = 0.99: the metric adapts within the 1,000 burn-in steps
    run, mean, mcse = run_kernel(kernel, eps, chains=32)
    G = kernel.preconditioner(run.final_state).numpy()
    exact = float(adam_gaussian_llc(eps, G, beta1).mean())
    assert abs(mean - exact) < 4 * mcse and mcse < 0.02 * exact, (mean, exact, mcse)
    sgld_value = float(sgld_in_metric(eps, G).mean())  # SGLD in the same metric: 19× less step-size bias
    assert exact - sgld_value > 8 * mcse and sgld_value - gaussian_sgld_target(A.tolist(), T, GAMMA, 0.0) < 2 * mcse
    assert (G.argmax(1) == 3).all() and (G.min(1) > 5).all()


def test_adam_sgld_first_order_bias_and_stability_divisor():
    """The documented first-order variance, 1/k·[1 + εG(γ + nβa(1 + β₁)/(1 − β₁))/4], k = nβa + γ, and the
    stability divisor 4(1 − β₁)/(1 + β₁) that turns it into the checks' ratio."""
    for beta1 in (0.0, 0.5, 0.9):
        eps = 1e-7
        exact = adam_gaussian_llc(eps, np.ones((1, 4)), beta1)[0]
        a = A.numpy()
        first = (0.5 * T * a / (T * a + GAMMA) * (1 + eps * (GAMMA + T * a * (1 + beta1) / (1 - beta1)) / 4)).sum()
        assert abs(exact - first) < 1e-9 * first, (beta1, exact, first)
        assert math.isclose(adam_sgld(beta1=beta1).stability_divisor, 4 * (1 - beta1) / (1 + beta1))
    assert KERNELS["adam_sgld"].langevin is False and KERNELS["rmsprop_sgld"].langevin is True


def test_adam_sgld_steps_by_hand_and_freezes_only_the_metric():
    b1, b2, eps, nb, g = 0.8, 0.9, 1e-2, 10.0, 3.0
    kernel = adam_sgld(beta1=b1, beta2=b2, delta=0.0)
    h = Hyper(eps, g, nb, torch.zeros(1, dtype=F64))
    f = lambda w: (0.5 * (w ** 2).sum(1), w)  # ∇L = w
    s = kernel.init(torch.tensor([[2.0]], dtype=F64), f, h)
    s1, loss, acc = kernel.step(s, f, torch.zeros(1, 1, dtype=F64), h)
    # m = 0.2·2, m̂ = 2; v = 0.9 + 0.1·4 = 1.3, v̂ = 13; w ← 2 + (ε/2)·G·(−nβ·m̂ − γ·2)
    G = 1 / math.sqrt(13.0)
    assert math.isclose(s1.m.item(), 0.4) and math.isclose(s1.v.item(), 1.3) and s1.k.item() == s1.t.item() == 1
    assert math.isclose(s1.w.item(), 2 + 0.5 * eps * G * (-nb * 2 - g * 2)) and loss.item() == 2.0 and acc is None
    frozen = h._replace(adapt=False)
    s2, _, _ = kernel.step(s1, f, torch.zeros(1, 1, dtype=F64), frozen)
    w1 = s1.w.item()
    m2 = b1 * 0.4 + (1 - b1) * w1
    assert torch.equal(s2.v, s1.v) and torch.equal(s2.k, s1.k) and s2.t.item() == 2
    assert math.isclose(s2.m.item(), m2)
    m_hat = m2 / (1 - b1 ** 2)
    assert math.isclose(s2.w.item(), w1 + 0.5 * eps * G * (-nb * m_hat - g * w1))


@pytest.mark.parametrize("name", ["rmsprop_sgld", "adam_sgld"])
def test_new_kernels_evaluate_one_gradient_per_step(name):
    kernel, calls = KERNELS[name], []

    def f(w):
        calls.append(1)
        return 0.5 * (w ** 2).sum(1), w

    h = Hyper(1e-3, 1.0, 10.0, torch.zeros(3, dtype=F64))
    s = kernel.init(torch.ones(2, 3, dtype=F64), f, h)
    calls.clear()
    for _ in range(5):
        s, _, _ = kernel.step(s, f, torch.zeros(2, 3, dtype=F64), h)
    assert len(calls) == 5 * kernel.grads_per_step == 5


def test_new_kernels_run_end_to_end_with_their_checks():
    """Through estimate_llc_potential: RMSprop-SGLD gets the MALA probe in its metric; Adam-SGLD (not a Langevin
    step) only the stability check, with its divisor; grad_evals counts one gradient per step and chain."""
    kw = dict(potential=gaussian, w_star=torch.zeros(4, dtype=F64), nbeta=T, localization=GAMMA, num_chains=4,
              num_draws=200, num_burnin=100)
    rms = quiet_potential(sampler="rmsprop_sgld", step_size=1e-4, **kw)
    adam = quiet_potential(sampler="adam_sgld", step_size=1e-5, **kw)
    assert rms.config["sampler"] == "rmsprop_sgld" and adam.config["sampler"] == "adam_sgld"
    assert 0.9 < rms.checks["mala_accept"] <= 1.0 and adam.checks["mala_accept"] is None
    assert rms.checks["step_stability_end"] > 0 and adam.checks["step_stability_end"] > 0
    assert rms.config["grad_evals"] == adam.config["grad_evals"] == 4 * 300


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
    with pytest.raises(ValueError, match="beta1"):
        adam_sgld(beta1=1.0)
    with pytest.raises(ValueError, match="beta2"):
        adam_sgld(beta2=0.0)
    with pytest.raises(ValueError, match="init_v"):
        rmsprop_sgld(init_v=-1.0)
    with pytest.raises(ValueError, match="infinite"):
        rmsprop_sgld(init_v=0.0, delta=0.0)
