"""estimate_llc_trajectory: every checkpoint gets exactly the run estimate_llc gives it with the same
settings; state dicts, files and (step, checkpoint) pairs; step_size="auto" calibrates once; a folder
resumes the finished checkpoints; λ̂ = d/2 at least-squares minima (exact for a regular model)."""
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import least_squares_linear

import slt_basins.calibration as calibration
import slt_basins.trajectory as trajectory
from slt_basins import LLCWarning, estimate_llc
from slt_basins.trajectory import TrajectoryResult, estimate_llc_trajectory

KW = dict(step_size=1e-3, localization=1.0, num_chains=4, num_draws=300, num_burnin=100)


def regression_minima():
    """nn.Linear(3, 1) at the exact least-squares minimum, saved as three checkpoints: a regular model
    at its minimum, so λ = d/2 = 2 at each."""
    model, (x, y) = least_squares_linear(noise=0.3)
    states = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(3)]
    return model, (x, y), states


def test_each_checkpoint_equals_its_own_estimate_and_lambda_is_d_over_2(tmp_path):
    model, data, states = regression_minima()
    paths = []
    for i, sd in enumerate(states):
        paths.append(tmp_path / f"c{i}.pt")
        torch.save(sd, paths[-1])
    traj = estimate_llc_trajectory([(10, paths[0]), (20, states[1]), (30, paths[2])], data, model=model,
                                   progress=False, **KW)
    assert traj.steps == [10, 20, 30]
    model.load_state_dict(states[1])
    direct = estimate_llc(model, data, progress=False, **KW)
    np.testing.assert_array_equal(traj.results[1].llc_trace, direct.llc_trace)
    df = traj.to_dataframe()
    assert list(df.columns[:4]) == ["step", "llc_mean", "mcse", "r_hat"]
    for r in traj.results:  # regular model at its minimum: λ = d/2 = 2 (finite-ε bias ≈ 0.1 %)
        assert abs(r.llc_mean - 2.0) < 4 * r.mcse + 0.05
    fig = traj.plot()
    assert len(fig.axes) == 2


def test_auto_calibrates_once_and_uses_one_step_size(monkeypatch):
    model, data, states = regression_minima()
    calls = []
    real = calibration.run_auto
    monkeypatch.setattr(calibration, "run_auto", lambda *a, **k: calls.append(1) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        traj = estimate_llc_trajectory(states, data, model=model, progress=False,
                                       **dict(KW, step_size="auto", num_draws=500))
    assert len(calls) == 1
    eps = {r.config["step_size"] for r in traj.results}
    assert len(eps) == 1 and traj.calibration["step_size"] in eps and traj.calibration["checkpoint_index"] == 2


def test_a_folder_resumes_the_finished_checkpoints(tmp_path, monkeypatch):
    model, data, states = regression_minima()
    full = estimate_llc_trajectory(states, data, model=model, progress=False, **KW)
    real, seen = trajectory._one, []

    def crash_on_third(*a, **k):
        seen.append(a[-1])
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trajectory, "_one", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        estimate_llc_trajectory(states, data, model=model, checkpoint=tmp_path, progress=False, **KW)
    seen.clear()
    monkeypatch.setattr(trajectory, "_one", lambda *a, **k: seen.append(a[-1]) or real(*a, **k))
    resumed = estimate_llc_trajectory(states, data, model=model, checkpoint=tmp_path, progress=False, **KW)
    assert seen == [2]  # only the unfinished checkpoint ran again
    for a, b in zip(resumed.results, full.results):
        np.testing.assert_array_equal(a.llc_trace, b.llc_trace)
    again = TrajectoryResult.load(tmp_path)
    assert again.steps == [0, 1, 2] and np.allclose(again.llc_mean, full.llc_mean)
    with pytest.raises(ValueError, match=r"localization: 1\.0 in the folder, 2\.0 now"):
        estimate_llc_trajectory(states, data, model=model, checkpoint=tmp_path, progress=False,
                                **dict(KW, localization=2.0))


def test_bad_checkpoints_get_clear_errors(tmp_path):
    model, data, states = regression_minima()
    with pytest.raises(ValueError, match="pass model="):
        estimate_llc_trajectory(states, data, progress=False, **KW)
    with pytest.raises(ValueError, match="increase strictly"):
        estimate_llc_trajectory([(5, states[0]), (5, states[1])], data, model=model, progress=False, **KW)
    with pytest.raises(FileNotFoundError, match="no file"):
        estimate_llc_trajectory([os.fspath(tmp_path / "missing.pt")], data, model=model, progress=False, **KW)
    with pytest.raises(ValueError, match="does not fit model="):
        estimate_llc_trajectory([{"weight": torch.zeros(2, 2)}], data, model=model, progress=False, **KW)
    with pytest.raises(TypeError, match="sequence"):
        estimate_llc_trajectory(model, data, progress=False, **KW)


def test_callback_sees_every_block_and_can_stop_early():
    from slt_basins.sampling import BlockInfo

    model, data, _ = regression_minima()
    seen = []

    def log(info: BlockInfo):
        seen.append(info)
        return info.step >= 400  # stop after the second block of draws

    with pytest.warns(LLCWarning, match="callback stopped sampling after 400 steps; the result uses the 300 draws"):
        r = estimate_llc(model, data, callback=log, progress=False, **dict(KW, num_draws=1000))
    assert [i.step for i in seen] == [200, 400]  # blocks of 200 steps; burn-in is 100
    np.testing.assert_allclose(seen[0].llc, r.llc_trace[:, :100].mean(), rtol=1e-6)
    assert seen[0].losses.shape == (4,) and seen[1].alive.all()
    assert r.num_draws == 300
    np.testing.assert_allclose(seen[1].llc, r.llc_trace.mean(), rtol=1e-6)
    full = estimate_llc(model, data, progress=False, **dict(KW, num_draws=1000))
    np.testing.assert_array_equal(r.llc_trace, full.llc_trace[:, :300])
    with pytest.raises(TypeError, match="callback must be a function"):
        estimate_llc(model, data, callback=3, progress=False)
