"""The warning rules of slt_basins.checks (one function per rule) and the bad-input messages around
them: each rule against a hand-built Evidence record (exact), and end to end where a run can show it."""
import math
import warnings

import pytest
import torch
from torch import nn

from conftest import least_squares_linear

from slt_basins import LLCWarning, estimate_llc, estimate_llc_potential
from slt_basins import checks as C
from slt_basins.result import Checks
from slt_basins.samplers import SGLD, Hyper, get_kernel


def evidence(llc=1.0, mcse=0.1, d=10, kernel=SGLD, **check_values):
    return C.Evidence(llc, mcse, d, Checks(**check_values), kernel, Hyper(1e-3, 1.0, 100.0, torch.zeros(d)), [],
                      4, 200.0)


def test_unstable_ratio_is_called_unstable_not_a_variance_inflation():
    for rule, field in ((C.rule_stability_start, "step_stability"), (C.rule_stability_end, "step_stability_end")):
        msg = rule(evidence(**{field: 19.5, "hessian_max_abs_eig": 7.0, "hessian_max_abs_eig_end": 7.0}))
        assert "unstable" in msg and "1/(1−" not in msg, msg
        mild = rule(evidence(**{field: 0.5, "hessian_max_abs_eig": 7.0, "hessian_max_abs_eig_end": 7.0}))
        assert "inflated by about 1/(1−0.5) = 2" in mild, mild
        # in the quadratic model a direction adds ½·nβh/(nβh + γ)·s/(1 − s) ≤ ½·0.5/0.5 = 0.5 to λ̂
        assert "by up to 0.5 for each direction this stiff (λ̂ = 1)" in mild, mild


def test_stability_warnings_say_when_the_curvature_came_from_a_subsample():
    for rule, start in ((C.rule_stability_start, 0.27), (C.rule_stability_end, 0.05)):
        vals = {"step_stability": start, "step_stability_end": 0.27, "hessian_max_abs_eig": 7.0,
                "hessian_max_abs_eig_end": 7.0}
        whole = rule(evidence(**vals)._replace(subsample=(2048, 2048)))
        part = rule(evidence(**vals)._replace(subsample=(32, 2048)))
        assert "measured on" not in whole
        assert "measured on 32 of the 2048 examples" in part and "CHECK_SHARE = 1.0" in part, part


def test_estimate_above_half_d_warns_only_beyond_three_mcse():
    assert C.rule_above_half_d(evidence(llc=5.2, mcse=0.1, d=10)) is None  # 5.2 − 0.3 ≤ 5
    assert "exceeds d/2 = 5" in C.rule_above_half_d(evidence(llc=5.4, mcse=0.1, d=10))


@pytest.mark.filterwarnings("ignore:ε·:slt_basins.LLCWarning", "ignore:MALA:slt_basins.LLCWarning")
def test_above_half_d_end_to_end_on_a_gaussian_with_a_large_step():
    # K = w²/2·2: precision A = nβ·2 = 200, ε·A/4 = 0.8 inflates the variance (and λ̂) by 1/(1 − 0.8) = 5
    with pytest.warns(LLCWarning, match=r"exceeds d/2 = 0\.5"):
        r = estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(1, dtype=torch.float64), nbeta=100.0,
                                   step_size=1.6e-2, localization=0.0, num_chains=8, num_draws=2000, progress=False)
    assert abs(r.llc_mean - 0.5 / (1 - 0.8)) < 4 * r.mcse  # SGLD's exact stationary variance 1/(A(1 − εA/4))


def test_nan_curvature_is_measured_as_nan_and_reported():
    assert math.isnan(C.top_curvature(lambda w: w * float("nan"), torch.ones(2)))
    assert C.top_curvature(lambda w: 0 * w, torch.ones(2)) == 0.0
    msg = C.rule_curvature_nan(evidence(hessian_max_abs_eig=float("nan")))
    assert "NaN" in msg and "halving" in msg
    assert C.rule_curvature_nan(evidence(hessian_max_abs_eig=3.0)) is None


def test_gradient_rule_thresholds():
    c = Checks()
    C.gradient_checks(c, torch.tensor([1e-9]), nbeta=1e3, gamma=0.0, floor=1e-6)  # below rounding: zero
    assert c.grad_bias_bound == 0.0
    C.gradient_checks(c, torch.tensor([1e-3]), nbeta=1e3, gamma=0.0, floor=1e-6)
    assert c.grad_bias_bound == math.inf
    assert "not a critical point" in C.rule_gradient(evidence(grad_norm=1e-3, grad_bias_bound=math.inf))


def least_squares(dtype):
    return least_squares_linear(noise=0.1, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_gradient_warning_at_zero_localization_at_an_exact_minimum(dtype):
    model, data = least_squares(dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(model, data, step_size=1e-3, localization=0.0, num_draws=200, num_burnin=100,
                         progress=False)
    assert not [w for w in caught if "critical point" in str(w.message)], [str(w.message) for w in caught]
    assert r.checks.grad_bias_bound == 0.0 and r.checks.grad_norm < 1e-4


def test_cuda_request_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model, data = least_squares(torch.float32)
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimate_llc(model, data, device="cuda", progress=False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        estimate_llc_potential(lambda w: (w ** 2).sum(1), [0.0], nbeta=10.0, device="cuda", progress=False)


@pytest.mark.filterwarnings("ignore:R-hat:slt_basins.LLCWarning")
def test_a_kernel_built_by_hand_keeps_the_stability_checks():
    plain = get_kernel("sgld")
    mine = plain._replace(name="my_sgld")
    assert mine.stability_divisor == 4.0 and mine.langevin
    r = estimate_llc_potential(lambda w: (w ** 2).sum(1), [0.0], nbeta=100.0, step_size=1e-3, sampler=mine,
                               num_draws=200, progress=False)
    assert r.checks.step_stability == pytest.approx(1e-3 * (100 * 2 + 1) / 4, rel=1e-3)
    assert r.checks.mala_accept is not None


def test_localization_warning_says_when_the_half_share_gamma_is_ill_determined():
    """A share just above 0.5 over a wide range of γ makes the crossing γ jump by decades with small changes of
    the curvature (seen in notebook 04: 106 on one machine, 0.33 on another); the warning says so."""
    near = C.rule_localization(evidence(localization_share=0.56, quadratic_llc=3.0, localization_half=0.33,
                                        hessian_max_abs_eig=1.0))
    far = C.rule_localization(evidence(localization_share=0.9, quadratic_llc=3.0, localization_half=0.33,
                                       hessian_max_abs_eig=1.0))
    assert "γ ≈ 0.33" in near and "can move that γ by decades" in near
    assert "γ ≈ 0.33" in far and "by decades" not in far
