"""Checkpoint and resume of the chain loop: bit-identical continuation, Ctrl-C, refused settings."""
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import slt_basins.sampling as llc_mod
from slt_basins import LLCWarning, estimate_llc, estimate_llc_potential
from slt_basins.checkpoint import CheckpointMismatchError

F64 = torch.float64
CHAINS = 3


class Potential:
    """w1²w2² + 0.1‖w‖²; raises KeyboardInterrupt at the ``stop_at``-th evaluation by the chain loop
    (the loop is the only caller with CHAINS rows)."""

    def __init__(self, stop_at=None):
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, w):
        if w.shape[0] == CHAINS:
            self.calls += 1
            if self.stop_at is not None and self.calls == self.stop_at:
                raise KeyboardInterrupt
        return w[:, 0] ** 2 * w[:, 1] ** 2 + 0.1 * w.square().sum(1)


POT = dict(nbeta=100.0, num_chains=CHAINS, num_draws=400, num_burnin=50, step_size=1e-3, progress=False)


def pot(potential=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        return estimate_llc_potential(potential or Potential(), torch.zeros(2, dtype=F64), **{**POT, **kw})


def same(a, b):
    return (np.array_equal(a.llc_per_chain, b.llc_per_chain) and np.array_equal(a.llc_trace, b.llc_trace)
            and np.array_equal(a.loss_trace, b.loss_trace))


@pytest.mark.filterwarnings("ignore:R-hat")
def test_ctrl_c_mid_block_saves_returns_partial_and_resumes_bit_identically(tmp_path):
    full = pot()
    path = tmp_path / "pot.ckpt"
    # 450 steps in blocks of 200: the interrupt at step 300 falls inside the second block, so the
    # checkpoint written at the interrupt is the state at the boundary, step 200.
    with pytest.warns(LLCWarning, match=r"interrupted after 299 steps.*step 200 is saved in .*pot\.ckpt"):
        part = estimate_llc_potential(Potential(stop_at=300), torch.zeros(2, dtype=F64), checkpoint=path,
                                      **POT)
    assert part.llc_trace.shape == (CHAINS, 249) and np.array_equal(part.llc_trace, full.llc_trace[:, :249])
    assert os.listdir(tmp_path) == ["pot.ckpt"]  # written atomically: no temporary file left
    resumed = pot(checkpoint=path)
    assert same(resumed, full) and resumed.checks["resumed_from_step"] == 200
    assert resumed.checks["mala_accept"] == full.checks["mala_accept"]
    assert resumed.checks["step_stability_end"] == full.checks["step_stability_end"]
    again = pot(checkpoint=path)  # the finished run's file: no sampling, same result
    assert same(again, full) and again.checks["resumed_from_step"] == 450


@pytest.mark.parametrize("sampler", ["mala", "sgnht"])
def test_periodic_checkpoints_resume_other_kernel_states(tmp_path, sampler):
    full = pot(sampler=sampler)
    path = tmp_path / "k.ckpt"
    part = pot(Potential(stop_at=430), sampler=sampler, checkpoint=path, checkpoint_every=150)
    assert part.llc_trace.shape[1] < 400
    resumed = pot(sampler=sampler, checkpoint=path, checkpoint_every=150)
    assert resumed.checks["resumed_from_step"] == 400  # saved at 200 (first boundary after 150) and 400
    assert same(resumed, full)


def mlp_problem(seed=0, n=150):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.tanh(x @ torch.randn(4, 2, generator=g))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model, (x, y)


@pytest.mark.filterwarnings("ignore:R-hat")
def test_model_minibatch_rmsprop_resume_after_interrupt_is_bit_identical(tmp_path, monkeypatch):
    model, data = mlp_problem()
    kw = dict(num_chains=2, num_draws=350, num_burnin=50, step_size=1e-4, localization=10.0, batch_size=20,
              sampler="rmsprop_sgld", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        full = estimate_llc(model, data, **kw)
    real = llc_mod.run_chains

    def interrupted(*a, **k):  # Ctrl-C right after the first block (steps 0–199) ends
        def on_block(t, *_):
            raise KeyboardInterrupt
        return real(*a, **{**k, "on_block": on_block})

    monkeypatch.setattr(llc_mod, "run_chains", interrupted)
    path = tmp_path / "mlp.ckpt"
    with pytest.warns(LLCWarning, match="interrupted after 200 steps; the result uses the 150 draws"):
        part = estimate_llc(model, data, checkpoint=path, **kw)
    assert np.array_equal(part.llc_trace, full.llc_trace[:, :150])
    monkeypatch.setattr(llc_mod, "run_chains", real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        resumed = estimate_llc(model, data, checkpoint=path, **kw)
    assert same(resumed, full) and resumed.checks["resumed_from_step"] == 200
    with pytest.raises(CheckpointMismatchError, match=r"batch_size: 20 in the file, 30 now"):
        estimate_llc(model, data, checkpoint=path, **{**kw, "batch_size": 30})


def test_other_settings_are_refused_naming_the_differences(tmp_path):
    path = tmp_path / "p.ckpt"
    pot(checkpoint=path, num_draws=40, num_burnin=10)
    with pytest.raises(CheckpointMismatchError, match=r"step_size: 0\.001 in the file, 0\.002 now.*delete the file"):
        pot(checkpoint=path, num_draws=40, num_burnin=10, step_size=2e-3)
    with pytest.raises(ValueError, match=r"seed: 0 in the file, 1 now"):
        pot(checkpoint=path, num_draws=40, num_burnin=10, seed=1)
    with pytest.raises(ValueError, match=r"w_star_sha256"):
        estimate_llc_potential(Potential(), torch.full((2,), 1e-3, dtype=F64), checkpoint=path,
                               **{**POT, "num_draws": 40, "num_burnin": 10})


def test_checkpoint_bad_input(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every was given without checkpoint"):
        pot(checkpoint_every=10)
    with pytest.raises(ValueError, match="does not exist"):
        pot(checkpoint=tmp_path / "missing" / "p.ckpt")
    with pytest.raises(ValueError, match="checkpoint_every must be an integer"):
        pot(checkpoint=tmp_path / "p.ckpt", checkpoint_every=0)
    (tmp_path / "q.ckpt.rank0of2").write_bytes(b"")
    with pytest.raises(CheckpointMismatchError, match="--nproc_per_node=2"):
        pot(checkpoint=tmp_path / "q.ckpt")
    (tmp_path / "r.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="could not read"):
        pot(checkpoint=tmp_path / "r.ckpt")
