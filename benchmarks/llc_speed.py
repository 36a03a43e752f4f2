"""Speed of the vectorised SGLD LLC estimator (issue #2 targets).

Cases:
  toy: y = w1·w2²·x + noise, n = 10⁴, full batch, 4 chains × 2,000 draws (true λ = 1/4).
  mlp: an MLP of about 10⁴ parameters, n = 10⁴, batch 500, 4 chains × 1,000 draws.

For each case it reports the wall time of ``estimate_llc``; the ratio of the SGLD step time per
chain to one plain training step (forward + backward + SGD update of the model on a batch of the
same size), measured in the same run; and the time of the 4 vectorised chains against 4 single-chain
runs one after another. Targets: toy ≤ 2 s with 4 vectorised chains costing ≤ 0.3 × four single
runs; MLP SGLD step ≤ 1.3 × a plain training step per chain. These runs switch the checks off; one more
4-chain run with the default checks gives ``checks_share`` = ``checks.checks_time_s`` / ``checks.wall_time_s``
(the checks' time over the chain loop's in that run; target ≤ 0.10).

Usage: python benchmarks/llc_speed.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from slt_basins import estimate_llc
from _machine import git_state, machine

OUT = Path(__file__).parent / "results"


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.w[0] * self.w[1] ** 2 * x


def toy_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 1, generator=g)
    y = 0.5 * torch.randn(10_000, 1, generator=g)
    return Toy(), (x, y), dict(step_size=3e-4, localization=1.0, num_draws=2000, num_burnin=0, batch_size=None)


def mlp_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 100), nn.ReLU(), nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 20, generator=g)
    with torch.no_grad():
        y = model(x) + 0.1 * torch.randn(10_000, 1, generator=g)
    return model, (x, y), dict(step_size=1e-5, localization=100.0, num_draws=1000, num_burnin=0, batch_size=500)


def plain_step_time(model, data, batch_size, steps=300):
    x, y = data
    b = batch_size or x.shape[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    idx = torch.randint(x.shape[0], (steps, b)) if batch_size else None
    for i in range(steps + 20):
        xb, yb = (x[idx[i % steps]], y[idx[i % steps]]) if batch_size else (x, y)
        if i == 20:
            t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def timed_llc(model, data, chains, settings, check_stability=False):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = estimate_llc(model, data, num_chains=chains, progress=False, check_stability=check_stability, **settings)
    return time.perf_counter() - t0, r


def run_case(name, make, repeats):
    model, data, settings = make()
    d = sum(p.numel() for p in model.parameters())
    steps = settings["num_draws"] + settings["num_burnin"]
    rows = []
    for rep in range(repeats):
        plain = plain_step_time(model, data, settings["batch_size"])
        wall4, r4 = timed_llc(model, data, 4, settings)
        singles = [timed_llc(model, data, 1, dict(settings, seed=s))[0] for s in range(4)]
        checked = timed_llc(model, data, 4, settings, check_stability=True)[1].checks
        step_per_chain = r4.checks["wall_time_s"] / steps / 4
        rows.append(dict(
            case=name, d=d, n=data[0].shape[0], batch=settings["batch_size"] or "full", chains=4, draws=steps,
            wall_s=wall4, llc=r4.llc_mean, mcse=r4.mcse,
            sgld_step_per_chain_ms=1e3 * step_per_chain, plain_step_ms=1e3 * plain,
            step_ratio=step_per_chain / plain, four_single_runs_s=sum(singles),
            vectorized_over_singles=wall4 / sum(singles), checks_s=checked.checks_time_s,
            checks_share=checked.checks_time_s / checked.wall_time_s, repeat=rep,
        ))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    load0 = os.getloadavg()[0]
    rows = run_case("toy w1*w2^2*x", toy_case, args.repeats) + run_case("mlp", mlp_case, args.repeats)
    df = pd.DataFrame(rows)
    med = df.groupby("case", sort=False).median(numeric_only=True).drop(columns="repeat")
    med.insert(0, "targets", ["wall ≤ 2 s, vectorised/singles ≤ 0.3, checks_share ≤ 0.1",
                              "step_ratio ≤ 1.3, checks_share ≤ 0.1"])
    info = machine()
    load = (f"1-min load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end on "
            f"{os.cpu_count()} cores")
    load += ": the machine was shared with other jobs" if load0 > 1.0 else ""
    print(f"machine: {info}\nmedian of {args.repeats} repeats:\n")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(med.round(4).to_string())
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / "llc_speed.csv", index=False)
    (OUT / "llc_speed.md").write_text(
        f"# llc_speed\n\nmachine: {info}; {load}\n\n"
        f"median of {args.repeats} repeats (all repeats in llc_speed.csv); code {git_state()}:\n\n"
        + "```\n" + med.round(4).to_string() + "\n```\n\n"
        "checks_share is the checks' seconds (checks_time_s: gradient, curvature at w* and at the chains' ends, "
        "the localization check and the MALA probe) over the chain loop's (wall_time_s).\n")


if __name__ == "__main__":
    main()
