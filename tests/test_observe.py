"""Data-refined LLC (observe=): the loss of another dataset at every draw of the same chains.

Closed form: for a linear model at the least-squares minimum w* of the main data, the localized
posterior is Gaussian with precision P = nβ·H + γI (H = 2XᵀX/n), and full-batch SGLD with step ε has
the exact stationary covariance [P(I − εP/4)]⁻¹. An observed dataset with y_obs = X_obs·w* has
L_obs(w) − L_obs(w*) = ½(w − w*)ᵀH_obs(w − w*), so λ̂_obs → ½·nβ·tr(H_obs[P(I − εP/4)]⁻¹) exactly."""
import numpy as np
import pytest
import torch
from torch import nn

from slt_basins import LLCResult, estimate_llc

D, N = 4, 300


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64) + 0.3 * torch.randn(N, generator=g,
                                                                                          dtype=torch.float64)
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y[:, None]).solution.T)
    x_obs = torch.randn(200, D, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.0, 0.0],
                                                                                  dtype=torch.float64)
    y_obs = (x_obs @ model.weight.detach().T).squeeze(1)  # the observed loss is minimal (zero) at w*
    return model, (x, y), (x_obs, y_obs)


@pytest.mark.filterwarnings("ignore:λ̂ = .* exceeds d/2:slt_basins.LLCWarning")  # ε's exact upward bias, included below
def test_observed_llc_matches_the_exact_sgld_gaussian():
    model, data, obs = problem()
    eps, gamma = 2e-3, 1.0
    r = estimate_llc(model, data, step_size=eps, localization=gamma, num_chains=8, num_draws=4000,
                     num_burnin=500, observe={"obs": obs, "train": data}, progress=False)
    nbeta = r.nbeta
    x, x_obs = data[0], obs[0]
    H, H_obs = 2 * x.T @ x / N, 2 * x_obs.T @ x_obs / len(x_obs)
    P = nbeta * H + gamma * torch.eye(D, dtype=torch.float64)
    cov = torch.linalg.inv(P @ (torch.eye(D, dtype=torch.float64) - eps * P / 4))
    exact = float(0.5 * nbeta * torch.trace(H_obs @ cov))
    o = r.observed["obs"]
    assert abs(o.llc_mean - exact) < 4 * o.mcse, (o.llc_mean, o.mcse, exact)
    assert o.n == 200 and o.init_loss == pytest.approx(0.0, abs=1e-20)
    assert o.llc_trace.shape == r.llc_trace.shape
    # observing the training data itself reproduces the main draws exactly (full batch: same points)
    np.testing.assert_allclose(r.observed["train"].llc_trace, r.llc_trace, rtol=1e-10, atol=1e-10)


def test_observe_does_not_change_the_chains_and_survives_save_load(tmp_path):
    model, data, obs = problem()
    kw = dict(step_size=2e-3, localization=1.0, num_chains=2, num_draws=100, num_burnin=20, batch_size=50,
              progress=False)
    plain = estimate_llc(model, data, **kw)
    seen = estimate_llc(model, data, observe={"obs": obs}, **kw)
    np.testing.assert_array_equal(plain.llc_trace, seen.llc_trace)  # the chains ignore the observed data
    path = tmp_path / "r.npz"
    seen.save(path)
    back = LLCResult.load(path)
    np.testing.assert_array_equal(back.observed["obs"].llc_trace, seen.observed["obs"].llc_trace)
    assert back.observed["obs"].llc_mean == seen.observed["obs"].llc_mean


def test_bad_observe_is_refused_before_sampling():
    model, data, obs = problem()
    with pytest.raises(TypeError, match="observe must be a non-empty dict"):
        estimate_llc(model, data, observe=[obs], progress=False)
    with pytest.raises(ValueError, match=r"observe\['bad'\]"):
        estimate_llc(model, data, observe={"bad": (torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5))},
                     progress=False)
