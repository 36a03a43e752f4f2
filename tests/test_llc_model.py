"""estimate_llc on models: exact closed forms for linear regression, API, data forms, bad input."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slt_basins import (LLCResult, LLCWarning, VmapFallbackWarning, default_nbeta, estimate_llc)
from conftest import gaussian_sgld_target

F64 = torch.float64


def linear_regression(n=400, d_in=3, noise=0.1, seed=0):
    """A linear model at its exact least-squares minimum, and the curvatures of L_n there."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=F64)
    y = x @ torch.linspace(-1, 1, d_in, dtype=F64) + 0.3 + noise * torch.randn(n, generator=g, dtype=F64)
    xt = torch.cat([x, torch.ones(n, 1, dtype=F64)], 1)
    sol = torch.linalg.lstsq(xt, y[:, None]).solution[:, 0]
    model = nn.Linear(d_in, 1).to(F64)
    with torch.no_grad():
        model.weight.copy_(sol[:d_in][None])
        model.bias.copy_(sol[d_in:])
    # L_n(w) = mean (x̃ᵀw − y)² is exactly quadratic with Hessian 2 X̃ᵀX̃ / n.
    curv = torch.linalg.eigvalsh(2 * xt.T @ xt / n).tolist()
    return model, (x, y[:, None]), curv


def run(model, data, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        return estimate_llc(model, data, **kw)


def test_linear_regression_full_batch_matches_exact_sgld_formula():
    model, data, curv = linear_regression()
    n = 400
    eps, gamma = 1e-3, 1.0
    r = run(model, data, step_size=eps, localization=gamma, num_chains=8, num_draws=3000, num_burnin=500)
    t = n / math.log(n)
    assert r.nbeta == pytest.approx(t) and r.config["batch_size"] is None
    exact = gaussian_sgld_target(curv, t, gamma, eps)
    assert abs(r.llc_mean - exact) < 4 * r.mcse, (r.llc_mean, exact, r.mcse)
    assert abs(exact - 2.0) < 0.1  # regular model: λ = d/2 = 2 up to known finite-t corrections
    assert r.init_loss == pytest.approx(F.mse_loss(model(data[0]), data[1]).item())


def test_minibatch_paired_baseline_is_unbiased():
    model, data, curv = linear_regression(noise=0.1)
    eps, gamma = 1e-3, 1.0
    r = run(model, data, step_size=eps, localization=gamma, batch_size=50, num_chains=8,
            num_draws=3000, num_burnin=500)
    # With small label noise the minibatch gradient noise (an upward bias, docs/theory.md)
    # is below the error bar, so the exact full-batch formula applies.
    exact = gaussian_sgld_target(curv, 400 / math.log(400), gamma, eps)
    assert r.config["paired_baseline"] == "per-example cache"
    assert abs(r.llc_mean - exact) < 4 * r.mcse, (r.llc_mean, exact, r.mcse)


def test_paired_baseline_cancels_minibatch_noise_of_the_baseline():
    model, data, _ = linear_regression(noise=1.0)
    r = run(model, data, step_size=1e-3, localization=1.0, batch_size=50, num_chains=4,
            num_draws=500, num_burnin=100)
    # Unpaired draws nβ·(L_B(w_t) − L_n(w*)) carry the baseline's batch noise times nβ.
    unpaired = r.nbeta * (r.loss_trace - r.init_loss)
    assert unpaired.std() > 2.5 * r.llc_trace.std()


def small_mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, 2)]
    return nn.Sequential(*layers).to(F64)


def mlp_data(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_vmap_and_loop_agree(batch_size):
    model, data = small_mlp(), mlp_data()
    kw = dict(step_size=1e-4, localization=10.0, num_chains=3, num_draws=100, num_burnin=20,
              batch_size=batch_size, check_stability=False)
    a = run(model, data, **kw)
    b = run(model, data, vectorize=False, **kw)
    assert a.config["vectorized"] and not b.config["vectorized"]
    np.testing.assert_allclose(a.llc_trace, b.llc_trace, rtol=1e-7, atol=1e-9)


def test_batchnorm_in_train_mode_falls_back_to_loop_with_warning():
    model = small_mlp(bn=True).train()
    with pytest.warns(VmapFallbackWarning, match="loop"):
        r = estimate_llc(model, mlp_data(), step_size=1e-5, localization=100.0, num_chains=2, num_draws=20,
                         num_burnin=0, batch_size=32, check_stability=False, progress=False)
    assert not r.config["vectorized"] and math.isfinite(r.llc_mean)


def test_reproducible_and_chain_streams_depend_only_on_seed_and_index():
    model, data = small_mlp(), mlp_data()
    kw = dict(step_size=1e-4, localization=10.0, num_draws=50, num_burnin=0, batch_size=16, check_stability=False)
    a = run(model, data, num_chains=3, seed=3, **kw)
    b = run(model, data, num_chains=3, seed=3, **kw)
    c = run(model, data, num_chains=1, seed=3, **kw)
    assert np.array_equal(a.llc_trace, b.llc_trace)
    np.testing.assert_allclose(a.llc_trace[:1], c.llc_trace, rtol=1e-9, atol=1e-12)


def test_dataset_dataloader_and_callable_loss_give_the_same_draws():
    model, (x, y) = small_mlp(), mlp_data()
    kw = dict(step_size=1e-4, localization=10.0, num_chains=2, num_draws=30, num_burnin=0, check_stability=False)
    ref = run(model, (x, y), batch_size=25, **kw)
    ds = run(model, TensorDataset(x, y), batch_size=25, **kw)
    dl = run(model, DataLoader(TensorDataset(x, y), batch_size=25, shuffle=True), **kw)
    fn = run(model, (x, y), loss=lambda o, t: F.mse_loss(o, t), batch_size=25, **kw)
    assert dl.config["batch_size"] == 25
    for other in (ds, dl, fn):
        np.testing.assert_allclose(other.llc_trace, ref.llc_trace, rtol=1e-10)


def test_cross_entropy_logistic_regression_is_regular():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=g, dtype=F64)
    labels = (x[:, 0] + 0.5 * x[:, 1] + 0.8 * torch.randn(600, generator=g, dtype=F64) > 0).long()
    model = nn.Linear(2, 2).to(F64)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        return loss

    opt.step(closure)
    r = run(model, (x, labels), loss="cross_entropy", step_size=2e-3, localization=1.0, num_chains=8,
            num_draws=2000, num_burnin=500)
    # Softmax over 2 classes with 2·(2+1) parameters identifies only the logit difference: the
    # model has 3 identifiable directions and 3 flat ones (suppressed by γ), so λ ≈ 3/2.
    assert abs(r.llc_mean - 1.5) < 0.15 + 4 * r.mcse, r


def test_result_api_roundtrip(tmp_path):
    model, data = small_mlp(), mlp_data()
    r = run(model, data, step_size=1e-4, localization=10.0, num_chains=2, num_draws=40, num_burnin=5)
    df = r.to_dataframe()
    assert list(df.columns) == ["chain", "draw", "loss", "llc"] and len(df) == 80
    assert df.groupby("chain")["llc"].mean().to_numpy() == pytest.approx(r.llc_per_chain)
    idata = r.to_inference_data()
    assert idata.posterior["llc"].shape == (2, 40)
    table = r.summary()
    assert table.loc["llc", "mean"] == pytest.approx(r.llc_mean)
    assert {"ess_bulk", "ess_tail", "r_hat", "mcse_mean"} <= set(table.columns)
    from matplotlib.figure import Figure
    assert isinstance(r.plot_trace(), Figure)
    r.save(tmp_path / "r.npz")
    back = LLCResult.load(tmp_path / "r.npz")
    assert back.llc_mean == r.llc_mean and np.array_equal(back.llc_trace, r.llc_trace)
    assert back.config == r.config and back.diverged == r.diverged
    assert "LLC =" in str(r)


def test_gradient_at_non_minimum_is_reported():
    model, data, _ = linear_regression()
    with torch.no_grad():
        model.bias += 0.5
    with pytest.warns(LLCWarning, match="gradient norm"):
        r = estimate_llc(model, data, step_size=1e-3, localization=1.0, num_chains=2, num_draws=50,
                         num_burnin=0, progress=False)
    assert r.checks["grad_norm"] == pytest.approx(1.0, rel=0.1)  # d/db mean (r + 0.5)² = 1


@pytest.mark.parametrize("data, loss, match", [
    ((torch.zeros(0, 4), torch.zeros(0, 2)), "mse", "empty"),
    ((torch.zeros(5, 4), torch.zeros(6, 2)), "mse", "different lengths"),
    ((torch.zeros(5, 4), torch.zeros(5, 3)), "mse", "cannot compare"),
    ((torch.zeros(5, 4), torch.zeros(5, 2)), "hinge", "unknown loss"),
    ((torch.zeros(5, 4), torch.zeros(5, 2)), lambda o, t: (o - t) ** 2, "scalar"),
    ((torch.zeros(5, 4), torch.tensor([0, 1, 2, 0, 1])), "cross_entropy", r"\[0, 1\]"),
    ((torch.zeros(5, 3), torch.zeros(5, 2)), "mse", "model failed"),
])
def test_bad_data_and_loss_raise_clear_errors(data, loss, match):
    model = small_mlp().float()
    with pytest.raises(ValueError, match=match):
        estimate_llc(model, data, loss=loss, progress=False)


def test_bad_model_and_settings_raise_clear_errors():
    data = (torch.zeros(5, 4), torch.zeros(5, 2))
    bad = small_mlp().float()
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        estimate_llc(bad, data, progress=False)
    frozen = small_mlp().float().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimate_llc(frozen, data, progress=False)
    for kw, match in [(dict(step_size=0), "step_size"), (dict(nbeta=-1.0), "nbeta"),
                      (dict(num_chains=0), "num_chains"), (dict(batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            estimate_llc(small_mlp().float(), data, progress=False, **kw)
    with pytest.raises(ValueError, match="n ≥ 2"):
        estimate_llc(small_mlp().float(), (torch.zeros(1, 4), torch.zeros(1, 2)), progress=False)


def test_default_nbeta():
    assert default_nbeta(10_000) == pytest.approx(10_000 / math.log(10_000))
