"""Worker for tests/test_distributed.py, run under torchrun: the cases of ``CASES`` with
``distributed=True`` on every rank, saved to ``<out>.rank<r>.npz``.

    python -m torch.distributed.run --nproc_per_node=2 --master_port=29512 tests/dist_worker.py /tmp/out

The test runs the same cases in one process and compares bit for bit.
"""
import glob
import json
import sys
import warnings

import numpy as np
import torch
from torch import nn

from slt_basins import LLCWarning, estimate_llc, estimate_llc_potential

CHECKS = ("hessian_max_abs_eig", "step_stability", "hessian_max_abs_eig_end", "step_stability_end", "mala_accept",
          "r_hat", "ess_bulk", "diverged_at_step")


def _mlp_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = torch.sin(x[:, :2]) + 0.1 * torch.randn(120, 2, generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), (x, y)


def _potential(w):
    return w[:, 0] ** 2 * w[:, 1] ** 2 + 0.1 * w.square().sum(1)


MODEL = dict(num_chains=5, num_draws=60, num_burnin=20, step_size=1e-4, localization=10.0, batch_size=16)
POT = dict(nbeta=100.0, num_chains=5, num_draws=80, num_burnin=20, step_size=1e-3)
CASES = {
    "model": MODEL,
    "model_group": dict(MODEL, chain_group=2),
    "model_observe": dict(MODEL),  # with observe= (run_case adds the held-out data)
    "pot_sgld": dict(POT),
    "pot_mala": dict(POT, sampler="mala"),
    "pot_rmsprop": dict(POT, sampler="rmsprop_sgld"),
}


def run_case(name, **kw):
    """The LLCResult of case ``name`` (``kw`` overrides its settings) and the LLCWarnings it emitted."""
    settings = dict(CASES[name], progress=False, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name.startswith("model"):
            model, data = _mlp_problem()
            if name == "model_observe":  # a data-refined LLC of two slices of the data, gathered across ranks
                settings["observe"] = {"head": (data[0][:40], data[1][:40]), "tail": (data[0][80:], data[1][80:])}
            r = estimate_llc(model, data, "mse", **settings)
        else:
            r = estimate_llc_potential(_potential, torch.zeros(3, dtype=torch.float64), **settings)
    return r, [str(w.message) for w in caught if issubclass(w.category, LLCWarning)]


def summary(r, caught) -> dict:
    out = {"llc_per_chain": r.llc_per_chain, "llc_trace": r.llc_trace, "loss_trace": r.loss_trace,
           "checks": json.dumps({k: r.checks.get(k) for k in CHECKS}, sort_keys=True, default=str),
           "warnings": len(caught)}
    for name, o in (r.observed or {}).items():
        out[f"observed_{name}"] = o.llc_trace
    return out


def reproduce_case():
    """A small case of the ``slt-basins reproduce`` suite."""
    from slt_basins.reproduce import Case
    from slt_basins.toys import crossing_valley

    return Case("w1^2 w2^2", "potential", crossing_valley(1, 1), 1e-4, num_chains=4, num_draws=60, num_burnin=20)


def main(out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res = {}
    for name in CASES:
        for k, v in summary(*run_case(name, distributed=True)).items():
            res[f"{name}/{k}"] = v
    # Each rank checkpoints its own chains to <path>.rank<r>of<W>; a rerun resumes from the files.
    ck = out + ".ckpt"
    a, _ = run_case("pot_sgld", distributed=True, checkpoint=ck, checkpoint_every=30)
    b, _ = run_case("pot_sgld", distributed=True, checkpoint=ck)
    res["ckpt_files"] = json.dumps(sorted(p[len(ck):] for p in glob.glob(ck + "*")))
    res["ckpt_resumed_same"] = bool(np.array_equal(a.llc_trace, b.llc_trace) and b.checks["resumed_from_step"] == 100)
    # Ctrl-C on every rank at step 200: each rank keeps its own chains' partial result and checkpoint.
    # Then resume with rank 0's file at the end (step 420) and rank 1's at step 200: rank 1 catches up.
    import shutil

    import slt_basins.sampling as llc_mod

    real = llc_mod.run_chains

    def interrupted(*a, **k):
        def on_block(t, *_):
            if t >= 200:
                raise KeyboardInterrupt
        return real(*a, **{**k, "on_block": on_block})

    long = dict(num_draws=400)
    full, _ = run_case("pot_sgld", distributed=True, checkpoint=out + ".full", **long)
    llc_mod.run_chains = interrupted
    part, caught = run_case("pot_sgld", distributed=True, checkpoint=out + ".early", **long)
    llc_mod.run_chains = real
    res["interrupt_chain_ids"] = json.dumps(part.chain_ids)
    res["interrupt_warned"] = sum("this process's chains" in w and "step 200 is saved" in w for w in caught)
    if rank == 1:
        shutil.copyfile(f"{out}.early.rank1of2", f"{out}.full.rank1of2")
    dist.barrier()
    early, _ = run_case("pot_sgld", distributed=True, checkpoint=out + ".early", **long)
    uneven, _ = run_case("pot_sgld", distributed=True, checkpoint=out + ".full", **long)
    res["resume_early_same"] = bool(np.array_equal(early.llc_trace, full.llc_trace))
    res["resume_uneven_same"] = bool(np.array_equal(uneven.llc_trace, full.llc_trace)
                                     and uneven.checks["resumed_from_step"] == 200)

    from slt_basins.reproduce import run_case as reproduce_row

    res["reproduce_llc"] = reproduce_row(reproduce_case(), distributed=True)["llc"]
    try:
        run_case("pot_sgld", distributed=True, num_chains=1)
        res["too_many_ranks"] = ""
    except ValueError as e:
        res["too_many_ranks"] = str(e)
    np.savez(f"{out}.rank{rank}.npz", **res)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
