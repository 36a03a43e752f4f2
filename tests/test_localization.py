"""When γ, not the loss, sets λ̂: the LocalizationWarning rule (quadratic model of the loss at w* from
the Hessian's spectral density) and llc_vs_localization.

Known answers: for a quadratic loss the share −d log λ_quad/d log γ is Σc_i·γ/(nβh_i+γ)/Σc_i with
c_i = ½·nβh_i/(nβh_i+γ), computed here from the exact eigenvalues."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import least_squares_linear

from slt_basins import LLCWarning, LocalizationWarning, estimate_llc, estimate_llc_potential, llc_vs_localization
from slt_basins import checks as C

sklearn = pytest.importorskip("sklearn")


def test_density_reproduces_exact_spectral_sums():
    h = torch.tensor([5.0, 1.0, 0.2, 0.0, 0.0], dtype=torch.float64)
    theta, tau = C.curvature_density(lambda w: h * w, torch.zeros(5, dtype=torch.float64), probes=8, steps=5)
    quad, share = C.localization_share(theta, tau, 5, nbeta=10.0, gamma=3.0)
    c = 0.5 * 10 * h / (10 * h + 3)
    exact_share = float((c * 3 / (10 * h + 3)).sum() / c.sum())
    # Lanczos with d steps is exact per probe; the Rademacher average is unbiased (tol from 8 probes)
    assert quad == pytest.approx(float(c.sum()), rel=0.25)
    assert share == pytest.approx(exact_share, abs=0.1)
    g50 = C.gamma_for_share(theta, tau, nbeta=10.0, gamma=1e3)
    assert C.localization_share(theta, tau, 5, 10.0, g50)[1] == pytest.approx(0.5, abs=1e-6)
    # the share is not monotone in γ: 1 % stiff directions (nβh = 100) and 99 % very flat ones
    # (nβh = 1e-4) give three crossings (near 1e-4, 1e-2 and 100); the nearest one is reported
    two = (np.array([1.0, 1e-6]), np.array([0.01, 0.99]))
    assert C.localization_share(*two, 2, 100.0, 1e-3)[1] > 0.5 > C.localization_share(*two, 2, 100.0, 1.0)[1]
    assert C.gamma_for_share(*two, nbeta=100.0, gamma=1e3) == pytest.approx(100.0, rel=1e-2)  # down from 1e3
    assert C.gamma_for_share(*two, nbeta=100.0, gamma=1.0) == pytest.approx(100.0, rel=1e-2)  # up from 1
    assert C.gamma_for_share(*two, nbeta=100.0, gamma=1e-6) == pytest.approx(1.04e-4, rel=1e-2)


def digits_mlp(steps=600):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-2)
    for _ in range(steps):  # full batch, to training loss ≈ 4e-4 (h_max ≈ 0.15)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


def run(model, data, loss, gamma, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(model, data, loss, localization=gamma, progress=False, **kw)
    return r, [w for w in caught if issubclass(w.category, LocalizationWarning)]


def test_digits_mlp_near_zero_loss_warns_at_gamma_100():
    model, data = digits_mlp()
    r, loc = run(model, data, "cross_entropy", 100.0, step_size=1e-5, num_chains=2, num_draws=30, num_burnin=10,
                 batch_size=256)
    nbh = r.nbeta * r.checks.hessian_max_abs_eig
    assert nbh < 100  # every direction is γ-dominated, so the share is at least γ/(nβ·h_max + γ)
    assert r.checks.localization_share >= 100 / (nbh + 100) - 0.02
    assert len(loc) == 1 and "llc_vs_localization" in str(loc[0].message)
    assert issubclass(loc[0].category, LLCWarning)
    assert r.checks.localization_half < 100


def least_squares():
    return least_squares_linear(noise=0.1)


def test_linear_regression_at_its_minimum_is_silent_at_gamma_1():
    model, data = least_squares()
    r, loc = run(model, data, "mse", 1.0, step_size=1e-3, num_draws=200, num_burnin=50)
    assert not loc
    assert r.checks.localization_share < 0.05
    # the quadratic model is exact here: λ_quad = Σ ½·nβh/(nβh + γ) ≈ d/2 = 2
    assert r.checks.quadratic_llc == pytest.approx(2.0, rel=0.05)


@pytest.mark.filterwarnings("ignore::slt_basins.LLCWarning")  # the large-γ runs warn, as they should
def test_llc_vs_localization_shows_the_one_over_gamma_fall():
    # linear regression: L_n is exactly quadratic, so full-batch SGLD's λ̂ has the closed form
    # ½·nβ·Σ h_i / (P_i(1 − εP_i/4)), P_i = nβh_i + γ (h_i the Hessian eigenvalues)
    model, data = least_squares()
    eps = 1e-5
    scan = llc_vs_localization(model, data, localizations=[0.1, 1.0, 1e4, 1e5], step_size=eps, num_chains=4,
                               num_draws=400, num_burnin=100, progress=False)
    t = scan.table
    assert list(t["localization"]) == [0.1, 1.0, 1e4, 1e5]
    assert t["loss_dominated"].tolist() == [True, True, False, False]
    x1 = torch.cat([data[0], torch.ones(400, 1)], 1).double()
    h = torch.linalg.eigvalsh(2 * x1.T @ x1 / 400)
    nbeta = scan.results[0].nbeta
    for row, r in zip(t.itertuples(), scan.results):
        if row.localization < 1e4:
            continue  # at small γ the stiff direction relaxes in ~4/(ε·nβh) steps: not mixed in this budget
        P = nbeta * h + row.localization
        exact = float(0.5 * nbeta * (h / (P * (1 - eps * P / 4))).sum())
        assert abs(r.llc_mean - exact) < 4 * r.mcse, (row.localization, r.llc_mean, r.mcse, exact)
    assert t["ratio_to_next"].iloc[2] > 5  # about 10: λ̂ ∝ 1/γ where γ dominates
    assert len(scan.results) == 4 and scan.figure.axes
