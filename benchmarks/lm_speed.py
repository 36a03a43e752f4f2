"""Speed of the LLC estimator on a tiny language model, and the cost of its checks.

Case: a HuggingFace GPT-2 built from a config (2 layers, 2 heads, width 32, vocabulary 64, context
16: 28,032 parameters; no download), trained 300 Adam steps on a synthetic copy task (4,096
sequences [a b … a b …] of 16 tokens), then ``estimate_llc(loss="causal_lm")`` with SGLD, batch 32,
4 chains × 1,000 steps (200 burn-in) and the default checks.

Per repeat it measures, in the same run:

* ``plain_step_ms``: one plain training step on a batch of 32 (forward with labels, backward, SGD
  update; the model's own attention kernel), the mean of a measurement before and after the run;
* ``chain_step_ms``: one step of the 4 vectorised chains (``checks.wall_time_s`` / steps: the whole
  chain loop, with minibatch draws, noise and traces);
* ``per_step_ratio`` = chain_step_ms / plain_step_ms (4 chains' work against 1 model's) and
  ``per_chain_ratio`` = (chain_step_ms / 4) / plain_step_ms, the cost of one step of one chain. The
  target (≤ 1.5) is on the per-chain ratio;
* ``checks_s`` (``checks.checks_time_s``: top curvature at w*, the curvature density at w* of the
  localization check, the top curvature at the chains' ends, the MALA probe) and ``checks_share`` =
  checks_s / sampling_s (target ≤ 0.10); ``localization_s`` is the curvature density's part of it;
  ``other_s`` is the rest of the wall time (target build with its full-data loss and gradient at w*,
  vmap probe, summary).

The error of the minibatch curvature: the top Hessian eigenvalue at w* on each of 20 subsamples of
the run's ``check_examples`` sequences (seeds 0–19; the run uses seed 0), against the full-data
value (Lanczos to a 0.1 % residual on all 4,096 sequences).

``--old-budget`` adds one run with the check budget of the previous release emulated (20
Hessian-vector products per point with no early stop, every chain's end checked, 2,048 examples, no
localization check): the cost the new defaults replace.

Usage: python benchmarks/lm_speed.py [--repeats 3] [--threads 1] [--old-budget]
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from _machine import machine

OUT = Path(__file__).parent / "results"
VOCAB, T, N, BATCH, CHAINS, BURNIN, DRAWS = 64, 16, 4096, 32, 4, 200, 800
SETTINGS = dict(loss="causal_lm", num_chains=CHAINS, batch_size=BATCH, num_burnin=BURNIN, num_draws=DRAWS,
                step_size=1e-5, localization=100.0, progress=False)


def tiny_gpt2():
    """The trained model and its data (dict of input_ids and attention_mask)."""
    import transformers

    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=T, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    first = torch.randint(1, VOCAB, (N, T // 2), generator=g)
    ids = torch.cat([first, first], 1)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(300):
        b = ids[torch.randint(N, (64,), generator=g)]
        loss = model(input_ids=b, labels=b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def plain_step_ms(model, data, steps=100) -> float:
    """Milliseconds of one training step (forward with labels, backward, SGD step with lr 0) on a batch."""
    ids = data["input_ids"]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    idx = torch.randint(ids.shape[0], (steps + 10, BATCH), generator=torch.Generator().manual_seed(1))
    for i in range(steps + 10):
        if i == 10:
            t0 = time.perf_counter()
        b = ids[idx[i]]
        out = model(input_ids=b, attention_mask=torch.ones_like(b), labels=b)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return 1e3 * (time.perf_counter() - t0) / steps


def timed_llc(model, data, **kw):
    from slt_basins import estimate_llc

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = estimate_llc(model, data, **{**SETTINGS, **kw})
    return time.perf_counter() - t0, r


def row(model, data, label: str, rep: int) -> dict:
    from slt_basins import checks

    before = plain_step_ms(model, data)
    density, spent = checks.curvature_density, []

    def timed_density(*a, **kw):
        t0 = time.perf_counter()
        out = density(*a, **kw)
        spent.append(time.perf_counter() - t0)
        return out
    checks.curvature_density = timed_density
    try:
        wall, r = timed_llc(model, data)
    finally:
        checks.curvature_density = density
    plain = 0.5 * (before + plain_step_ms(model, data))
    c, steps = r.checks, BURNIN + DRAWS
    step = 1e3 * c.wall_time_s / steps
    return dict(case=label, d=r.config["d"], n=r.config["n"], batch=BATCH, chains=CHAINS, steps=steps, wall_s=wall,
                sampling_s=c.wall_time_s, checks_s=c.checks_time_s, other_s=wall - c.wall_time_s - c.checks_time_s,
                checks_share=c.checks_time_s / c.wall_time_s, localization_s=sum(spent),
                checks_share_without_localization=(c.checks_time_s - sum(spent)) / c.wall_time_s,
                plain_step_ms=plain, chain_step_ms=step,
                per_step_ratio=step / plain, per_chain_ratio=step / CHAINS / plain,
                check_examples=r.config["check_examples"], end_chains_checked=len(c.stability_end_chains or []),
                h_star=c.hessian_max_abs_eig, step_stability_end=c.step_stability_end, mala_accept=c.mala_accept,
                llc=r.llc_mean, mcse=r.mcse, load_1min=os.getloadavg()[0], repeat=rep)


def curvature_spread(model, data, m: int, subsamples: int = 20) -> dict:
    """h at w* on ``subsamples`` subsamples of ``m`` sequences, as ratios to the full-data h."""
    import numpy as np
    from torch.func import grad, vjp

    from slt_basins import checks
    from slt_basins.options import LLCOptions
    from slt_basins.targets import ModelTarget

    t = ModelTarget.build(model, data, "causal_lm", LLCOptions(batch_size=BATCH, num_chains=CHAINS))
    with t.evaluation():
        chunks = [t.data.take(torch.arange(i, min(i + 1024, t.n))) for i in range(0, t.n, 1024)]
        hvps = [vjp(grad(lambda w, c=c: t._loss_one(w, c)), t.w_star)[1] for c in chunks]
        sizes = [c["input_ids"].shape[0] for c in chunks]
        full_hvp = lambda v: sum(f(v)[0] * k for f, k in zip(hvps, sizes)) / t.n  # noqa: E731
        v0 = torch.randn(t.d, generator=torch.Generator().manual_seed(0))
        full = checks.lanczos_top(full_hvp, v0, iters=40, rtol=1e-3).value
        sub = np.array([checks.top_curvature(t.check_fns(seed, examples=m)[0], t.w_star)
                        for seed in range(subsamples)]) / full
    return dict(examples=m, subsamples=subsamples, h_full=full, median_ratio=float(np.median(sub)),
                mean_ratio=float(sub.mean()), min_ratio=float(sub.min()), max_ratio=float(sub.max()),
                seed0_ratio=float(sub[0]))


def old_budget_row(model, data) -> dict:
    """One run with the previous release's check budget emulated (see the module docstring)."""
    from slt_basins import checks, sampling

    lanczos, examples, localization = checks.lanczos_top, sampling._check_examples, sampling._localization
    try:  # 4 chains: every chain's end is checked anyway (END_CHAINS = 4); no localization check then
        checks.lanczos_top = lambda hvp, v0, iters, rtol: lanczos(hvp, v0, 20, -1.0)
        sampling._check_examples = lambda target, opts: min(target.n, 2048)
        sampling._localization = lambda *args: None
        r = row(model, data, "tiny GPT-2, old check budget (1 run)", 0)
    finally:
        checks.lanczos_top, sampling._check_examples, sampling._localization = lanczos, examples, localization
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared machine OpenMP threads that wait for each "
                        "other under load make every step many times slower; 0 keeps torch's default)")
    p.add_argument("--old-budget", action="store_true", help="add one run with the previous check budget")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model, data = tiny_gpt2()
    rows = [row(model, data, "tiny GPT-2", rep) for rep in range(args.repeats)]
    if args.old_budget:
        rows.append(old_budget_row(model, data))
    spread = curvature_spread(model, data, int(rows[0]["check_examples"]))
    write(pd.DataFrame(rows), spread, args, load0)


def notes(df: pd.DataFrame) -> str:
    """What the minibatch subsample changes in the checks' values, read from the rows (with ``--old-budget``)."""
    new, old = df[df.case == "tiny GPT-2"], df[df.case != "tiny GPT-2"]
    if old.empty:
        return ""
    o = old.iloc[0]
    # h at the ends from the SGLD stability ratio ε·(nβ·h + γ)/4, nβ = n/log n
    eps, gamma, nbeta = SETTINGS["step_size"], SETTINGS["localization"], o.n / math.log(o.n)
    rise = (o.step_stability_end * 4 / eps - gamma) / nbeta / o.h_star
    return (f"The checks' values move with their subsample: h at w* {new.h_star.median():.3g} on "
            f"{int(new.check_examples.median())} sequences against {o.h_star:.3g} on {int(o.check_examples)} "
            f"(the full-data value is in the next paragraph), and the stability ratio at the chains' ends "
            f"{new.step_stability_end.median():.3g} against {o.step_stability_end:.3g}: above 0.1, the new "
            f"default run warns that the chains met stiffer regions where the 2,048-sequence check does not "
            f"(the excursion is real there too: its h rises {rise:.1f}× from w* to the ends, but its ratio stays "
            f"below 0.1). The MALA probe: {new.mala_accept.median():.3f} against {o.mala_accept:.3f}.")


def write(df: pd.DataFrame, spread: dict, args, load0) -> None:
    cols = ["d", "n", "batch", "chains", "steps", "check_examples", "end_chains_checked", "plain_step_ms",
            "chain_step_ms", "per_step_ratio", "per_chain_ratio", "sampling_s", "checks_s", "checks_share",
            "localization_s", "checks_share_without_localization", "other_s",
            "wall_s", "h_star", "step_stability_end", "mala_accept", "llc", "mcse"]
    new = df[df.case == "tiny GPT-2"]
    med = new.groupby("case", sort=False).median(numeric_only=True)[cols]
    table = pd.concat([med, df[df.case != "tiny GPT-2"].set_index("case")[cols]])
    m = med.iloc[0]
    verdict = (f"per-chain step ratio {m.per_chain_ratio:.2f} (target ≤ 1.5: "
               f"{'met' if m.per_chain_ratio <= 1.5 else 'NOT met'}); per-step ratio of the 4-chain step "
               f"{m.per_step_ratio:.2f} (no target); checks share {m.checks_share:.3f} (target ≤ 0.10: "
               f"{'met' if m.checks_share <= 0.10 else 'NOT met'}).")
    load1 = os.getloadavg()
    info = machine()
    shared = (f"The machine was shared with other jobs: 1-min load average {load0[0]:.1f} at the start, "
              f"{load1[0]:.1f} at the end, on {os.cpu_count()} cores (per-row loads in lm_speed.csv); timings "
              "are medians, ratios are taken within each repeat.")
    text = "\n".join([
        "# lm_speed", "", f"machine: {info}", "", shared, "",
        "GPU: not measured (no GPU machine in this session).", "",
        f"median of {args.repeats} repeats (all rows in lm_speed.csv); {verdict}", "",
        "The step-ratio target is on the per-chain ratio: the cost of one step of one chain = the 4-chain "
        "vectorised step / 4, against a plain forward + backward + optimizer step on the same batch of 32.", "",
        "```", table.round(4).T.to_string(), "```", "", notes(df), "",
        f"Error of the minibatch curvature check: the top Hessian eigenvalue at w* on {spread['subsamples']} "
        f"subsamples of {spread['examples']} sequences, over its full-data value h = {spread['h_full']:.4g} "
        f"(4,096 sequences): median {spread['median_ratio']:.2f}×, mean {spread['mean_ratio']:.2f}×, range "
        f"{spread['min_ratio']:.2f}–{spread['max_ratio']:.2f}× (the run's own subsample, seed 0: "
        f"{spread['seed0_ratio']:.2f}×). The old-budget row's h_star uses 2,048 sequences.", ""])
    print(text)
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / "lm_speed.csv", index=False)
    (OUT / "lm_speed.md").write_text(text)


if __name__ == "__main__":
    main()
