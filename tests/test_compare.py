"""compare_measures and the reproduce suite: flatness measures next to the LLC on known models."""
import math
import warnings

import pytest
import torch

from slt_basins import LLCWarning, compare_measures, operators
from slt_basins.reproduce import MEASURED_FINITE_T, Case, _verdict, markdown_table, run_case, suite
from slt_basins.toys import DeepLinearNetwork, ReducedRankRegression, power


def table(df):
    return df.set_index("measure")


def test_hessian_and_g_say_flat_where_the_llc_does_not():
    """K = w⁴ (as the regression y = w²·x): H = 0 and G = 0 at 0, yet λ = 1/4 and λ̂ > 0."""
    model, data = power(2).regression(n=2000, noise_std=0.0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        df = compare_measures(model, data, num_chains=16, num_draws=2000, num_burnin=500, step_size=1e-3,
                              localization=1.0, progress=False)
    t = table(df)
    assert t.loc["rank(H)/2", "value"] == 0 and t.loc["rank(G)/2", "value"] == 0
    assert t.loc["trace(H)", "value"] == pytest.approx(0.0, abs=1e-12)
    assert t.loc["true λ", "value"] == 0.25
    lam, se = t.loc["LLC λ̂", "value"], t.loc["LLC λ̂", "se"]
    assert lam > 0.1 and lam > 10 * se  # clearly positive where both ranks say "flat"
    assert bool(t.loc["sandwich(true λ)", "value"]) and bool(t.loc["sandwich(λ̂)", "value"])


def test_dln_teacher_ranks_and_truth():
    dln = DeepLinearNetwork([4, 5, 3, 4], 2)
    df = compare_measures(dln.model(), dln.dataset(300, seed=0), llc=False)
    t = table(df)
    assert t.loc["rank(H)/2", "value"] == t.loc["rank(G)/2", "value"] == dln.hessian_rank() / 2 == 6
    assert t.loc["true λ", "value"] == 7.0 and t.loc["d/2", "value"] == 23.5
    assert bool(t.loc["sandwich(true λ)", "value"])
    assert "LLC λ̂" not in t.index


# Values compare_measures gave before it shared one Hessian operator (DLN [4,5,3,4] r=2 teacher,
# 300 examples, seed 0): the dense route, and the matrix-free route forced by a lower EXACT_MAX_D.
BEFORE_DENSE = {"rank(H)/2": 6.0, "rank(G)/2": 6.0, "trace(H)": 10.196756348223346,
                "λ_max(H)": 3.2025509059800235, "log det(H + δI)": -252.77167533236923}
BEFORE_MATRIX_FREE = {"rank(H)/2": 6.0, "rank(G)/2": 6.0, "trace(H)": 10.106447888338447,
                      "λ_max(H)": 3.2025509059800235, "log det(H + δI)": -254.02895656025055}
BEFORE_SE = {"trace(H)": 0.5428401541633272, "log det(H + δI)": 4.481369323952173}


@pytest.mark.parametrize("route", ["dense", "matrix_free"])
def test_one_hessian_operator_serves_every_hessian_row(route, monkeypatch):
    built, copies = [], []
    init, copy64 = operators.HessianOperator.__init__, operators._float64_model

    def counting_init(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    def counting_copy(model):
        copies.append(1)
        return copy64(model)

    monkeypatch.setattr(operators.HessianOperator, "__init__", counting_init)
    monkeypatch.setattr(operators, "_float64_model", counting_copy)
    if route == "matrix_free":
        monkeypatch.setattr("slt_basins.compare.EXACT_MAX_D", 10)
    dln = DeepLinearNetwork([4, 5, 3, 4], 2)
    t = table(compare_measures(dln.model(), dln.dataset(300, seed=0), llc=False))
    assert len(built) == 1  # one Hessian operator for rank, trace, λ_max and log det
    assert len(copies) == 2  # one float64 copy of the model per operator (H and G)
    before = BEFORE_DENSE if route == "dense" else BEFORE_MATRIX_FREE
    for measure, value in before.items():
        assert t.loc[measure, "value"] == pytest.approx(value, rel=1e-9), measure
    if route == "matrix_free":
        assert t.loc["rank(H)/2", "note"].startswith("matrix_free")
        for measure, se in BEFORE_SE.items():
            assert t.loc[measure, "se"] == pytest.approx(se, rel=1e-9), measure
    else:
        assert t.loc["trace(H)", "note"] == "exact"


def test_cross_entropy_uses_probabilities_for_g():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4).double()
    x = torch.randn(200, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (200,))
    t = table(compare_measures(model, (x, y), "cross_entropy", llc=False))
    assert "probs" in t.loc["rank(G)/2", "note"]
    # softmax removes the all-ones logit direction: 4 classes × (3+1) parameters, rank 3·4 = 12.
    assert t.loc["rank(G)/2", "value"] == 6.0


def test_reproduce_rows_carry_truth_target_and_ranks():
    case = Case("w^2", "potential", power(1), 1e-4, num_chains=32, num_draws=800, num_burnin=200,
                target=lambda: 0.4998)
    row = run_case(case)
    assert row["true_lambda"] == "1/2" and row["m"] == 1 and row["certified"]
    assert row["hessian_rank_half"] == 0.5 and row["g_rank_half"] == 0.5 and row["d"] == 1
    assert abs(row["llc"] - 0.4998) < 5 * row["se"] + 0.02 * 0.4998

    rrr = Case("RRR", "model", ReducedRankRegression(3, 2, 3, 1), 1e-4, num_chains=2, num_draws=50,
               num_burnin=0, n=500, batch_size=100, group="RRR")
    row = run_case(rrr)
    assert row["hessian_rank_half"] == row["g_rank_half"] == 2.5 and row["hessian_rank_source"] == "float64 eigvalsh"
    assert row["true_lambda"] == str(ReducedRankRegression(3, 2, 3, 1).rlct().value)
    assert math.isfinite(row["llc"]) and row["step_size"] <= 1e-4


def test_suite_covers_the_issue_cases():
    names = " ".join(c.name for c in suite(quick=False))
    for needle in ["w^2", "w^4", "w^6", "w^8", "w1^2 w2^2", "w1^2 w2^4", "w1^2 w2^2 w3^2", "w1^2 + w2^4",
                   "d=1000", "case 1a", "case 1b", "case 2", "case 3", "case 4"]:
        assert needle in names
    dims = [c.d for c in suite(quick=False) if c.group == "DLN"]
    assert min(dims) < 100 and max(dims) >= 10_000
    assert all(c.d < 10_000 for c in suite(quick=True))


def test_verdicts_name_the_target_and_the_responsible_bias():
    base = dict(finite_t_target=0.39, se=0.005, d=2, group="polynomial", rel_err_lambda=-0.2,
                step_stability_end=0.01)
    assert _verdict(dict(base, llc=0.395)).startswith("meets")  # within max(2 %, 3 se)
    assert "step-size" in _verdict(dict(base, llc=0.44))
    assert "not mixed" in _verdict(dict(base, llc=0.34))
    net = dict(finite_t_target=float("nan"), se=0.3, d=150, group="DLN", step_stability_end=0.9)
    assert _verdict(dict(net, llc=20.0, rel_err_lambda=-0.07)) == "meets: within 10% of λ"
    miss = _verdict(dict(net, llc=17.9, rel_err_lambda=-0.166))
    assert miss.startswith("MISSES 10%") and "0.9 where the chains ended" in miss
    assert "finite-nβ bias" in miss and "not mixed" in miss  # both candidates named: no target tells them apart
    assert "step-size" in _verdict(dict(net, llc=25.0, rel_err_lambda=0.16))
    assert "minibatch" in _verdict(dict(net, llc=25.0, rel_err_lambda=0.16, step_stability_end=0.01))
    assert "no target above 10⁴" in _verdict(dict(net, d=19800, llc=200.0, rel_err_lambda=-0.86))
    quick = _verdict(dict(net, llc=17.9, rel_err_lambda=-0.166, quick=True))  # the full row's diagnosis, labelled
    assert quick == miss.replace("MISSES 10% of λ", "MISSES 10% of λ (quick: a quarter of the full row's steps; "
                                 "run without --quick)")
    unstable = _verdict(dict(net, llc=25.0, rel_err_lambda=0.16, step_stability_end=1.06, quick=True))
    assert "step-size" in unstable and "1.1 where the chains ended (unstable: ≥ 1)" in unstable
    assert _verdict(dict(net, llc=20.0, rel_err_lambda=-0.07, quick=True)) == "meets: within 10% of λ"


def test_a_measured_finite_t_value_splits_a_dln_miss_into_sampler_and_estimator():
    # [10,5,5,5,10]: λ̂ above g (step-size bias) and g 38 % below λ (the estimator's bias)
    net = dict(finite_t_target=None, group="DLN", d=150, true_lambda="43/2", step_stability_end=0.89, r_hat=1.01,
               finite_t_measured=13.42, finite_t_measured_se=0.20)
    v = _verdict(dict(net, llc=17.93, se=0.55, rel_err_lambda=-0.166))
    assert "above the measured finite-t value g(nβ) = 13.42" in v and "step-size bias" in v and "-38% from λ" in v
    # [10,20,20,20,10]: g within 4 % of λ and λ̂ within 3 se of g: the sampler's error, chains not converged
    big = dict(net, d=1200, true_lambda="50", finite_t_measured=48.08, finite_t_measured_se=0.23, r_hat=1.12)
    v = _verdict(dict(big, llc=43.31, se=1.6, rel_err_lambda=-0.134))
    assert "the miss is the sampler's error" in v and "R-hat 1.12" in v and "not converged" in v
    v = _verdict(dict(big, llc=40.0, se=0.5, rel_err_lambda=-0.2))  # far below g
    assert v.startswith("MISSES 10% of λ: below the measured") and "-4% from λ" in v
    assert MEASURED_FINITE_T["DLN [10,20,20,20,10] r=3"] == (48.08, 0.23)


def test_quick_suite_shortens_dln_rows_only():
    full, quick = {c.name: c for c in suite()}, {c.name: c for c in suite(quick=True)}
    for name, c in quick.items():
        if c.group == "RRR":
            assert (c.num_draws, c.quick) == (full[name].num_draws, False)
        elif c.group == "DLN":
            assert c.quick and c.num_draws == full[name].num_draws // 4


def test_markdown_table_has_one_row_per_case_and_no_stray_pipes():
    import pandas as pd

    row = dict(case="w^2", d=1, true_lambda="1/2", m=1, finite_t_target=0.4998, llc=0.497, se=0.005,
               rel_err_target=-0.005, rel_err_lambda=-0.006, hessian_rank_half=0.5, g_rank_half=0.5,
               step_stability_end=0.005, verdict="meets: within max(2%, 3 se) of the target")
    md = markdown_table(pd.DataFrame([row, dict(row, case="w^4", g_rank_half=None)])).splitlines()
    assert len(md) == 4 and {line.count("|") for line in md} == {12}
    assert "| w^2 | 1 | 1/2 (1) | 0.4998 | 0.497 ± 0.005 | -0.5% | -0.6% | 0.5 | 0.5 |" in md[2]
