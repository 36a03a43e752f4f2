"""Saved results keep loading: ``LLCResult.load`` reads the committed files written by release 0.1.0
(``tests/data/legacy/``, checks as a plain dict) and by the typed ``Checks`` record
(``tests/data/typed_checks/``); the READMEs beside them say how each was made. The expected values
below were read from the files once; a change to any of them means the file or the reader changed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from slt_basins.result import CheckFailure, Checks, LLCResult

DATA = Path(__file__).resolve().parent / "data"
MODEL_V010 = DATA / "legacy" / "llc_model_v0.1.0.npz"
POTENTIAL_AUTO_V010 = DATA / "legacy" / "llc_potential_auto_v0.1.0.npz"
TYPED = DATA / "typed_checks" / "llc_potential_failure_diverged.npz"
ALL_FILES = [MODEL_V010, POTENTIAL_AUTO_V010, TYPED]


def same(a, b) -> bool:
    """Equality of nested JSON-like values and arrays where NaN equals NaN (calibration tables hold NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_same_helper():
    assert same({"x": [1.0, math.nan]}, {"x": [1.0, math.nan]})
    assert not same({"x": [1.0, math.nan]}, {"x": [1.0, 2.0]})
    assert not same(np.zeros(2, np.float32), np.zeros(2, np.float64))
    assert not same(CheckFailure("a", "b", "c"), ["a", "b", "c"])


def test_load_model_result_of_release_0_1_0():
    r = LLCResult.load(MODEL_V010)
    assert r.llc_mean == 2.089320659637451
    assert r.llc_std == 0.9770284295082092
    assert r.mcse == 0.4541545088195623
    assert r.init_loss == 0.011381051503121853
    assert r.nbeta == 37.74783316355097
    assert r.diverged == [] and r.chain_ids == [0, 1, 2, 3]
    assert (r.num_chains, r.num_draws) == (4, 50)
    assert r.loss_trace.dtype == r.llc_trace.dtype == r.llc_per_chain.dtype == np.float32
    assert r.loss_trace.shape == r.llc_trace.shape == (4, 50)
    assert r.llc_per_chain.tolist() == [1.96514892578125, 3.506718397140503, 1.4820890426635742,
                                        1.4033259153366089]
    assert r.llc_trace[0, :3].tolist() == [1.4603065252304077, 1.2059050798416138, 1.2156161069869995]
    assert float(r.llc_trace.sum()) == 417.8641357421875
    assert float(r.loss_trace.sum()) == 13.342294692993164
    np.testing.assert_allclose(r.llc_per_chain.mean(), r.llc_mean, rtol=1e-6)
    assert r.config["kind"] == "model" and r.config["loss"] == "mse"
    assert (r.config["n"], r.config["d"], r.config["batch_size"]) == (200, 4, 50)
    assert (r.config["step_size"], r.config["localization"], r.config["seed"]) == (0.001, 1.0, 0)

    c = r.checks
    assert isinstance(c, Checks)
    assert c.grad_norm == 1.0252018682876951e-06
    assert c.grad_bias_bound == 1.4976241397548134e-09
    assert c.hessian_max_abs_eig == c.hessian_max_abs_eig_end == 2.4166958332061768
    assert c.step_stability == c.step_stability_end == 0.023056257779728893
    assert c.mala_accept == 0.9961790442466736
    assert c.r_hat == 1.4301278598919622
    assert c.ess_bulk == 9.058198267298295
    assert c.wall_time_s == 0.0856001269999922
    assert c.diverged_at_step == {} and c.resumed_from_step is None and c.calibration is None
    assert c.failures == [] and isinstance(c.failures, list)
    assert c["mala_accept"] == c.mala_accept and "mala_accept" in c and "calibration" not in c
    assert str(r) == "LLC = 2.089 ± 0.45 (MCSE; 4 chains × 50 draws, nβ = 37.75, R-hat 1.430, ESS 9)"


def test_load_auto_step_size_potential_result_of_release_0_1_0():
    r = LLCResult.load(POTENTIAL_AUTO_V010)
    assert r.llc_mean == 0.5536451364223358
    assert r.llc_std == 0.216935263338656
    assert r.mcse == 0.15707679061318017
    assert r.init_loss == 0.0 and r.nbeta == 100.0
    assert r.diverged == [] and r.chain_ids == [0, 1, 2, 3]
    assert (r.num_chains, r.num_draws) == (4, 40)
    assert r.llc_trace.dtype == np.float64
    assert r.llc_per_chain.tolist() == [0.5264973231080275, 0.7335336543675369, 0.696843658674297,
                                        0.257705909539482]
    assert float(r.llc_trace.sum()) == 88.58322182757374
    assert r.config["kind"] == "potential" and r.config["step_size_auto"] is True
    assert r.config["step_size"] == 0.0001990049751243781

    c = r.checks
    assert c.grad_norm == 0.0 and c.grad_bias_bound == 0.0
    assert c.hessian_max_abs_eig == 2.0 and c.step_stability == 0.01
    assert c.mala_accept == 0.998971038823564
    assert c.r_hat == 1.3560088727929474
    assert c.ess_bulk == 10.845139696168557
    assert c.failures == []

    cal = c.calibration
    assert isinstance(cal, dict) and c["calibration"] is cal
    assert set(cal) == {"step_size", "reason", "wall_time_s", "hessian_max_abs_eig", "rules", "table"}
    assert cal["step_size"] == r.config["step_size"]
    assert cal["reason"].startswith("ε = 0.000199 is the largest step size on the plateau at γ = 1, nβ = 100")
    assert cal["hessian_max_abs_eig"] == 2.0
    assert cal["rules"] == {"min_accept": None, "min_accept_by_sampler": {"sgld": 0.998}, "max_rhat": 1.1,
                            "plateau_tol": 0.02, "stop_early": True, "num_chains": 4, "num_draws": 200,
                            "num_burnin": 100}
    table = cal["table"]
    assert len(table) == 11
    assert [row["chosen"] for row in table] == [False] * 4 + [True] + [False] * 6
    assert [row["ran"] for row in table] == [True] * 6 + [False] * 5
    chosen = table[4]
    assert chosen["step_size"] == cal["step_size"]
    assert chosen["llc"] == 0.9720589622733612 and chosen["mcse"] == 0.09363274628493015
    assert chosen["status"].startswith("CHOSEN: largest step size on the plateau")
    assert table[0]["diverged"] == 4 and math.isnan(table[0]["llc"])
    assert table[0]["status"] == "diverged: 4 of 4 chains (all)"


def test_load_typed_checks_with_a_failure_and_a_diverged_chain():
    r = LLCResult.load(TYPED)
    assert r.llc_mean == 1.0151074617181577
    assert r.llc_std == 0.3796586939735294
    assert r.mcse == 0.29218222640657165
    assert r.diverged == [2] and r.chain_ids == [0, 1, 3]
    assert (r.num_chains, r.num_draws) == (3, 30)
    assert r.llc_per_chain.tolist() == [1.3819156470390117, 1.0396205167293515, 0.6237862213861098]
    assert float(r.llc_trace.sum()) == 91.35967155463419
    assert r.config["divergence_bound"] == 5.0 and r.config["chain_ids"] == [0, 1, 2, 3]

    c = r.checks
    assert c.r_hat == 1.2624333614295074 and c.ess_bulk == 9.901588521918951
    assert c.hessian_max_abs_eig is None and c.step_stability is None and c.mala_accept is None
    assert c.diverged_at_step == {2: 10}  # JSON's string keys back to int
    assert isinstance(c.failures, list) and len(c.failures) == 1
    f = c.failures[0]
    assert isinstance(f, CheckFailure)
    assert (f.check, f.error) == ("stability", "RuntimeError")
    assert f.message.startswith("In order to use an autograd.Function with functorch transforms")
    assert c.failure("stability") is f and c.failure("mala_probe") is None
    assert str(f) == f"stability: RuntimeError: {f.message}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_checks_are_typed_and_unknown_names_raise(path):
    c = LLCResult.load(path).checks
    assert isinstance(c, Checks)
    assert all(isinstance(f, CheckFailure) for f in c.failures)
    assert all(isinstance(k, int) and isinstance(v, int) for k, v in c.diverged_at_step.items())
    for name in ("r_hat", "ess_bulk", "grad_norm", "wall_time_s"):
        assert isinstance(c[name], float)
    with pytest.raises(KeyError, match="no check named 'rhat'"):
        c["rhat"]
    with pytest.raises(KeyError, match="no check named 'mala_error'"):
        c.get("mala_error")


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_round_trip_preserves_everything(path, tmp_path):
    r = LLCResult.load(path)
    r.save(tmp_path / "again.npz")
    r2 = LLCResult.load(tmp_path / "again.npz")
    for field in ("llc_per_chain", "loss_trace", "llc_trace"):  # exact: same dtype, shape and bits
        a, b = getattr(r, field), getattr(r2, field)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    for field in ("llc_mean", "llc_std", "mcse", "init_loss", "nbeta", "diverged", "chain_ids", "config"):
        assert same(getattr(r, field), getattr(r2, field)), field
    assert same(r.checks.as_dict(), r2.checks.as_dict())
    for name in Checks.names():
        assert same(r.checks[name], r2.checks[name]), name
    assert str(r) == str(r2)
    # and the second file is the same bytes of metadata as a third save (the format is stable)
    r2.save(tmp_path / "third.npz")
    with np.load(tmp_path / "again.npz") as f2, np.load(tmp_path / "third.npz") as f3:
        assert json.loads(str(f2["meta"])).keys() == json.loads(str(f3["meta"])).keys()
        assert str(f2["meta"]) == str(f3["meta"])


def test_legacy_error_strings_become_failures():
    # release 0.1.0 recorded a failed check as "<check>_error": "<Type>: <message>"
    c = Checks.from_dict({"r_hat": 1.0, "stability_check_error": "RuntimeError: no vmap rule",
                          "mala_probe_error": "ValueError: nan"})
    assert c.failures == [CheckFailure("stability", "RuntimeError", "no vmap rule"),
                          CheckFailure("mala_probe", "ValueError", "nan")]
    assert Checks.from_dict(c.as_dict()) == c


def test_a_file_from_a_newer_release_is_refused():
    with pytest.raises(ValueError, match="newer release"):
        Checks.from_dict({"r_hat": 1.0, "some_future_check": 3.0})


def test_summary_reports_ess_per_1000_gradient_evaluations():
    from slt_basins import estimate_llc_potential

    r = estimate_llc_potential(lambda w: (w ** 2).sum(1), [0.0], nbeta=100.0, step_size=1e-3, num_chains=4,
                               num_burnin=100, num_draws=400, progress=False)
    assert r.grad_evals == 4 * 500 and r.config["grad_evals"] == 2000
    t = r.summary()
    np.testing.assert_allclose(t["ess_bulk_per_1k_grad"], t["ess_bulk"] / 2.0)
