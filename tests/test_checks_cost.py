"""The checks around a run cost a small, bounded share of the sampling, whatever n is.

Counted, not timed (the machine may be shared): on a small MLP with minibatches, every loss-and-gradient
evaluation of the chain loop and of the checks is counted in per-example gradient evaluations (a
Hessian-vector product on m examples counts ``checks.HVP_COST``·m), and the checks must stay below
10 % of the sampling. The caps are checked directly: the subsample size, the Lanczos iterations per
point, the number of chains whose end is checked and the rows per MALA-probe evaluation.
"""
from __future__ import annotations

import math
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from slt_basins import LLCWarning, estimate_llc, estimate_llc_potential
from slt_basins import checks as C
from slt_basins import sampling
from slt_basins.options import LLCOptions
from slt_basins.samplers import SGLD, Hyper
from slt_basins.targets import CHECK_EXAMPLES, ModelTarget

N, BATCH, CHAINS, STEPS = 3000, 16, 6, 1000


def mlp_problem(n=N):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = torch.tanh(x[:, :2]).sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 1)), (x, y)


class Counter:
    """Per-example gradient evaluations of the chain loop and of the checks, and what the checks were given."""

    def __init__(self):
        self.sampling = self.checks = 0.0
        self.density_calls = 0
        self.examples, self.lanczos_iters, self.probe_rows = [], [], []


@pytest.fixture
def counted(monkeypatch):
    c = Counter()
    loss_and_grad, check_fns, lanczos = ModelTarget.loss_and_grad, ModelTarget.check_fns, C.lanczos_top
    density = C.curvature_density

    def counted_loss_and_grad(self, w, batch):
        c.sampling += w.shape[0] * (self.n if batch is None else batch.shape[1])
        return loss_and_grad(self, w, batch)

    def counted_check_fns(self, seed=0, examples=None):
        grad_fn, probe = check_fns(self, seed, examples=examples)
        m = min(self.n, CHECK_EXAMPLES, examples or CHECK_EXAMPLES)
        c.examples.append(m)

        def counted_probe(w):
            c.probe_rows.append(w.shape[0])
            c.checks += w.shape[0] * m
            c.sampling -= w.shape[0] * m  # it went through loss_and_grad: not the chain loop's
            return probe(w)
        return grad_fn, counted_probe

    def counted_lanczos(hvp, v0, iters=C.CURVATURE_ITERATIONS, rtol=C.CURVATURE_RTOL):
        out = lanczos(hvp, v0, iters, rtol)
        c.lanczos_iters.append(out.iterations)
        c.checks += C.HVP_COST * out.iterations * c.examples[-1]
        return out

    def counted_density(grad_fn, w, *args, **kw):  # the localization check: at most probes × steps products
        c.density_calls += 1
        c.checks += C.HVP_COST * C.LOCALIZATION_PROBES * C.LOCALIZATION_STEPS * c.examples[-1]
        return density(grad_fn, w, *args, **kw)

    monkeypatch.setattr(ModelTarget, "loss_and_grad", counted_loss_and_grad)
    monkeypatch.setattr(C, "curvature_density", counted_density)
    monkeypatch.setattr(ModelTarget, "check_fns", counted_check_fns)
    monkeypatch.setattr(C, "lanczos_top", counted_lanczos)
    return c


def test_checks_cost_a_small_counted_share_of_sampling_and_respect_their_caps(counted):
    model, data = mlp_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        r = estimate_llc(model, data, "mse", num_chains=CHAINS, batch_size=BATCH, num_burnin=200,
                         num_draws=STEPS - 200, step_size=1e-4, localization=100.0, progress=False)
    c = r.checks
    m = r.config["check_examples"]
    assert m == C.check_examples(BATCH, CHAINS, STEPS) and BATCH <= m < N  # tied to the sampling, not to n
    assert counted.examples == [m]  # one fixed subsample for every check
    assert counted.density_calls == 1  # the curvature density at w* (localization check), on the same subsample
    assert len(counted.lanczos_iters) == 1 + C.END_CHAINS  # w*, then at most END_CHAINS of the 6 chains' ends
    assert all(1 <= k <= C.CURVATURE_ITERATIONS for k in counted.lanczos_iters)
    assert len(c.stability_end_chains) == C.END_CHAINS and set(c.stability_end_chains) <= set(range(CHAINS))
    assert sum(counted.probe_rows) == 2 * C.MALA_PROPOSALS * CHAINS  # two evaluations per proposal
    assert max(counted.probe_rows) <= CHAINS * BATCH // m  # no more examples at once than a sampling step
    assert counted.sampling == STEPS * CHAINS * BATCH + CHAINS * BATCH  # the loop, and the vmap probe before it
    assert counted.checks <= 0.10 * counted.sampling, (counted.checks, counted.sampling)
    assert c.checks_time_s is not None and 0 < c.checks_time_s < c.wall_time_s  # generous: timing is recorded
    assert c.mala_accept is not None and math.isfinite(c.step_stability) and math.isfinite(c.step_stability_end)


def test_subsample_does_not_grow_with_n_and_is_capped():
    t = lambda n, b: types.SimpleNamespace(n=n, batch_size=b)  # noqa: E731
    o = LLCOptions(num_chains=4, num_burnin=200, num_draws=9800)
    m = C.check_examples(32, 4, 10_000)
    assert 32 < m < 10_000
    assert sampling._check_examples(t(10_000, 32), o) == sampling._check_examples(t(10 ** 6, 32), o) == m
    assert sampling._check_examples(t(10 ** 6, 32), o.replace(num_draws=100)) == 32  # short runs: one minibatch
    assert sampling._check_examples(t(20, 32), o) == 20  # never more than n
    assert sampling._check_examples(t(10 ** 6, None), o) == CHECK_EXAMPLES  # full batch: the cap
    assert sampling._check_examples(t(10 ** 6, 64), o.replace(num_draws=10 ** 6)) == CHECK_EXAMPLES
    assert sampling._check_examples(types.SimpleNamespace(n=None, batch_size=None), o) is None  # a potential


def test_potential_runs_record_the_checks_without_a_subsample():
    r = estimate_llc_potential(lambda w: (w ** 2).sum(1), torch.zeros(3, dtype=torch.float64), nbeta=100.0,
                               step_size=1e-3, num_chains=6, num_draws=100, num_burnin=20, progress=False)
    assert r.config["check_examples"] is None
    assert r.checks.hessian_max_abs_eig == pytest.approx(2.0, rel=1e-6)  # 2·I: Lanczos is exact at once
    assert len(r.checks.stability_end_chains) == C.END_CHAINS and r.checks.checks_time_s > 0


def test_lanczos_stops_early_within_its_tolerance_and_never_exceeds_the_cap():
    calls = []
    a = torch.linspace(0.0, 10.0, 2000, dtype=torch.float64)  # a dense spectrum: no early convergence

    def hvp(v):
        calls.append(1)
        return a * v
    out = C.lanczos_top(hvp, torch.ones(2000, dtype=torch.float64), iters=7)
    assert len(calls) == out.iterations == 7 and out.value <= 10.0
    spiked = torch.cat([torch.rand(2000, dtype=torch.float64), torch.tensor([50.0], dtype=torch.float64)])
    out = C.lanczos_top(lambda v: spiked * v, torch.ones(2001, dtype=torch.float64))
    assert out.iterations < C.CURVATURE_ITERATIONS and out.residual <= C.CURVATURE_RTOL * out.value
    assert 50.0 * (1 - C.CURVATURE_RTOL) <= out.value <= 50.0
    assert C.lanczos_top(lambda v: 0 * v, torch.ones(3)) == (0.0, 1, 0.0)
    assert math.isnan(C.lanczos_top(lambda v: v * math.inf, torch.ones(3)).value)


def test_end_chains_take_the_highest_last_draws_among_the_alive():
    last = np.array([5.0, 1.0, 7.0, 3.0, 9.0, 2.0])
    assert C.end_chains(last, np.array([0, 1, 2, 3, 5]), k=3).tolist() == [0, 2, 3]  # chain 4 diverged
    assert C.end_chains(last, np.array([1, 5]), k=4).tolist() == [1, 5]
    assert C.end_chains(None, np.arange(6), k=2).tolist() == [0, 1]


def test_mala_probe_in_chunks_equals_all_at_once():
    lg = lambda w: (0.5 * (w ** 2).sum(1) + 0.1 * (w ** 4).sum(1), w + 0.4 * w ** 3)  # noqa: E731
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hy = Hyper(0.2, 1.0, 10.0, torch.zeros(3, dtype=torch.float64))
    alive = np.array([0, 2, 3, 4])
    whole = C.mala_probe(SGLD, w, (w,), alive, hy, lg, seed=3)
    parts = C.mala_probe(SGLD, w, (w,), alive, hy, lg, seed=3, max_rows=3)
    assert parts == pytest.approx(whole, rel=1e-12) and 0 < whole < 1
