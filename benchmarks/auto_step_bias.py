"""Does step_size="auto" leave a step-size bias, and does the run say so? A tiny GPT-2 and the digits MLP.

``step_size="auto"`` picks the largest ε on a plateau of short calibration cells (docs page *Samplers and
calibration*). The plateau test allows 2 % plus two combined MCSEs between neighbouring cells, which short
cells cannot resolve finely, so the chosen ε can carry a step-size bias of several per cent. After the
choice the run fits a line λ̂(ε') = a + c·ε' through the chosen cell and the cells below it and records the
implied bias c·ε (``checks.calibration["step_bias"]`` ± ``["step_bias_se"]``), with an ``LLCWarning`` when
it exceeds 2 standard errors and 2 % of λ̂.

Per model this script runs:

* ``step_size="auto"`` over a few seeds: the chosen ε, λ̂ ± MCSE, the recorded trend and whether its warning
  (and the end-of-chain stability warning) fired;
* a reference: fixed ε = the median choice, ε/2 and ε/4, with 1×, 2× and 4× the burn-in and draws (the
  same Langevin time), over a few seeds; a weighted line through the three step sizes (weights
  1/MCSE², seeds pooled per ε) gives the measured bias at the median choice, λ̂(ε) − λ̂(0), with its
  standard error, next to the trend the auto runs reported.

Models (built here; no download): a tiny GPT-2 from a config (2 layers, 2 heads, width 32, vocabulary 32,
context 16), trained 400 AdamW steps on 512 copy-task sequences (training loss about 1.57, gradient norm
about 0.27: briefly trained, as a checkpoint early in training is; ``loss="causal_lm"``, batch 32), and the
64-32-10 MLP on scikit-learn's digits of ``benchmarks/calibrate_seeds.py`` (2,410 parameters,
``"cross_entropy"``, batch 256). Both with γ = 100, nβ = n/log n, 4 chains × (500 burn-in + 1,000 draws).
(On the 4,096-sequence GPT-2 of ``benchmarks/lm_speed.py``, trained 300 steps, ``step_size="auto"`` finds
no step size at the default budget: three cells unstable, the next not converged at 8× its budget.)

Usage: python benchmarks/auto_step_bias.py [--models gpt2,mlp] [--auto-seeds 2,5] [--ref-seeds 2,5]
[--threads 1] [--no-save]

Writes ``benchmarks/results/auto_step_bias.csv`` and ``auto_step_bias.md`` (machine, load, git state).
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from slt_basins import calibration, estimate_llc
from slt_basins.errors import LLCWarning
from _machine import git_state, machine

OUT = Path(__file__).parent / "results"
GAMMA = 100.0


def tiny_gpt2(vocab: int = 32, seq: int = 16, n: int = 512, steps: int = 400):
    """A GPT-2 from a config (2 layers, 2 heads, width 32; no dropout) trained ``steps`` AdamW steps (lr 3e-3,
    batch 32) on ``n`` copy-task sequences [a b … a b …]; (model in eval mode, dict data)."""
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=seq, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    half = torch.randint(0, vocab, (n, seq // 2))
    ids = torch.cat([half, half], 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        b = ids[torch.randint(0, n, (32,))]
        loss = model(input_ids=b, labels=b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def models() -> dict:
    """name -> (builder returning (model, data), estimate_llc keywords)."""
    from calibrate_seeds import digits_mlp

    def mlp():
        model, x, y, *_ = digits_mlp()
        return model, (x, y)

    return {"gpt2": (tiny_gpt2, dict(loss="causal_lm", batch_size=32)),
            "mlp": (mlp, dict(loss="cross_entropy", batch_size=256))}


def run(model, data, kw: dict, step_size, seed: int, k: int = 1) -> dict:
    """One estimate with the warnings it raised; ``k`` scales burn-in and draws."""
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(model, data, step_size=step_size, localization=GAMMA, seed=seed, num_burnin=500 * k,
                         num_draws=1000 * k, progress=False, **kw)
    msgs = [str(w.message) for w in caught if issubclass(w.category, LLCWarning)]
    cal = r.checks["calibration"] if step_size == "auto" else {}
    return dict(seed=seed, step_size=r.config["step_size"], scale=k, llc=r.llc_mean, mcse=r.mcse, r_hat=r.checks.r_hat,
                stability_end=r.checks.step_stability_end, mala_accept=r.checks.mala_accept,
                step_bias=cal.get("step_bias", math.nan), step_bias_se=cal.get("step_bias_se", math.nan),
                trend_warning=any("as the step shrinks" in m for m in msgs),
                end_warning=any("at the chains' final positions" in m for m in msgs),
                wall_s=time.perf_counter() - t0)


def line(ref: pd.DataFrame, eps: float) -> tuple[float, float, float]:
    """(bias at eps, its se, λ̂(0)): the package's own trend fit (``calibration.step_trend``, the line
    ``step_size="auto"`` reports) through the per-ε means of the fixed runs, with the standard error of each
    mean as its weight."""
    g = ref.groupby("step_size").agg(llc=("llc", "mean"), mcse=("mcse", lambda m: math.sqrt((m ** 2).sum()) / len(m)))
    cells = g.reset_index().assign(nbeta=0.0, localization=GAMMA, ran=True, diverged=0, stable=True)
    tr = calibration.step_trend(cells, eps, 0.0, GAMMA)
    return tr.bias, tr.se, tr.limit


def one_model(name: str, auto_seeds: int, ref_seeds: int) -> tuple[pd.DataFrame, list[str]]:
    build, kw = models()[name]
    t0 = time.perf_counter()
    model, data = build()
    print(f"{name}: built and trained in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for s in range(auto_seeds):
        rows.append(dict(model=name, run="auto", **run(model, data, kw, "auto", s)))
        r = rows[-1]
        print(f"{name} auto seed {s}: ε = {r['step_size']:.3g}  λ̂ = {r['llc']:.4g} ± {r['mcse']:.2g}  trend "
              f"{r['step_bias']:+.3g} ± {r['step_bias_se']:.2g}  warned {r['trend_warning']}", flush=True)
    eps = float(f"{np.median([r['step_size'] for r in rows]):.2g}")
    for k in (1, 2, 4):
        for s in range(ref_seeds):
            rows.append(dict(model=name, run="fixed", **run(model, data, kw, eps / k, s, k)))
            r = rows[-1]
            print(f"{name} fixed ε = {r['step_size']:.3g} (×{k} steps) seed {s}: λ̂ = {r['llc']:.4g} ± {r['mcse']:.2g}",
                  flush=True)
    df = pd.DataFrame(rows)
    return df, lines(name, df, eps)


def lines(name: str, df: pd.DataFrame, eps: float) -> list[str]:
    auto, ref = df[df["run"] == "auto"], df[df["run"] == "fixed"]
    bias, se, lam0 = line(ref, eps)
    out = [f"## {name}", "", "`step_size=\"auto\"`:", "",
           "| seed | chosen ε | λ̂ ± MCSE | R-hat | recorded trend (bias ± se) | trend warning | end-stability "
           "ratio | end-stability warning | s |", "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {r.seed} | {r.step_size:.3g} | {r.llc:.4g} ± {r.mcse:.2g} | {r.r_hat:.3f} | {r.step_bias:+.3g} ± "
            f"{r.step_bias_se:.2g} | {'yes' if r.trend_warning else 'no'} | {r.stability_end:.3g} | "
            f"{'yes' if r.end_warning else 'no'} | {r.wall_s:.0f} |" for r in auto.itertuples()]
    out += ["", f"Fixed step sizes (the median choice ε = {eps:.3g}, ε/2 and ε/4 with 1×, 2×, 4× the steps):", "",
            "| ε | seed | λ̂ ± MCSE | R-hat | MALA acc. | end-stability ratio | s |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r.step_size:.3g} | {r.seed} | {r.llc:.4g} ± {r.mcse:.2g} | {r.r_hat:.3f} | {r.mala_accept:.3f} | "
            f"{r.stability_end:.3g} | {r.wall_s:.0f} |" for r in ref.itertuples()]
    rel = bias / lam0 if lam0 else math.nan
    warned = int(auto["trend_warning"].sum())
    out += ["", f"- measured step-size bias at ε = {eps:.3g}: **{bias:+.3g} ± {se:.2g}** ({rel:+.1%} of the line's "
            f"λ̂(0) = {lam0:.4g}; weighted line through the per-ε means)",
            f"- trend recorded by the auto runs: {', '.join(f'{b:+.3g} ± {s:.2g}' for b, s in zip(auto['step_bias'], auto['step_bias_se']))}; "
            f"its warning fired in {warned} of {len(auto)} runs"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gpt2,mlp")
    p.add_argument("--auto-seeds", default="2,5", help="auto seeds per model, in the order of --models")
    p.add_argument("--ref-seeds", default="2,5", help="seeds of each fixed step size, per model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    auto_n = [int(v) for v in args.auto_seeds.split(",")]
    ref_n = [int(v) for v in args.ref_seeds.split(",")]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    frames, body = [], []
    for name, a, r in zip(names, auto_n, ref_n):
        df, ls = one_model(name, a, r)
        frames.append(df)
        body += ls + [""]
    total, load1 = time.perf_counter() - t0, os.getloadavg()[0]
    md = "\n".join(["# auto_step_bias: the step-size bias left by step_size=\"auto\", measured and reported", "",
                    f"machine: {machine()}",
                    f"load: 1-minute load average {load0:.1f} at the start and {load1:.1f} at the end on "
                    f"{os.cpu_count()} cores; torch threads {args.threads}; total {total:.0f} s.",
                    f"code: {git_state()}.", "",
                    "γ = 100, nβ = n/log n, 4 chains × (500 burn-in + 1,000 draws) unless scaled. The recorded trend "
                    "is `checks.calibration['step_bias']` ± `['step_bias_se']`; its warning fires above 2 se and "
                    "2 % of λ̂.", ""] + body)
    print(md)
    if not args.no_save:
        OUT.mkdir(exist_ok=True)
        pd.concat(frames).to_csv(OUT / "auto_step_bias.csv", index=False)
        (OUT / "auto_step_bias.md").write_text(md + "\n")
        print(f"wrote {OUT / 'auto_step_bias.csv'} and {OUT / 'auto_step_bias.md'}")


if __name__ == "__main__":
    main()
