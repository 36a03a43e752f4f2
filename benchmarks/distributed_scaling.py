"""Scaling of estimate_llc(..., distributed=True) over torch.distributed processes on one machine.

Case: the teacher MLP of ``llc_speed.py`` (10,261 parameters, n = 10⁴, batch 500), 8 chains × 1,000
draws after 500 burn-in steps. It runs the estimate in one process, then under
``python -m torch.distributed.run --nproc_per_node=K`` (gloo on CPU, NCCL with one GPU per process
when CUDA is available) for each K in --procs, and reports the sampling wall time of rank 0, the
speed-up over one process, and whether ``llc_per_chain`` is bit-identical to the one-process run.

Usage: python benchmarks/distributed_scaling.py [--procs 2] [--threads 1]
       (the script re-launches itself as the worker; it writes benchmarks/results/distributed_scaling.csv)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

OUT = Path(__file__).parent / "results"
SETTINGS = dict(num_chains=8, num_draws=1000, num_burnin=500, step_size=1e-5, localization=100.0, batch_size=500,
                seed=0, progress=False)


def problem(device):
    from llc_speed import mlp_case  # the teacher MLP of the speed benchmark, at its true parameter

    model, (x, y), _ = mlp_case()
    return model.to(device), (x.to(device), y.to(device))


def worker(out: str, distributed: bool) -> None:
    from slt_basins import estimate_llc

    device = "cpu"
    if distributed:
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group("nccl")
            device = "cuda"
        else:
            dist.init_process_group("gloo")
    elif torch.cuda.is_available():
        device = "cuda"
    model, data = problem(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the benchmark times sampling; warnings are the tests' business
        t0 = time.perf_counter()
        r = estimate_llc(model, data, distributed=distributed, **SETTINGS)
        wall = time.perf_counter() - t0
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        json.dump(dict(wall_s=wall, sampling_s=r.checks["wall_time_s"], llc=r.llc_mean, mcse=r.mcse,
                       llc_per_chain=[float(v) for v in r.llc_per_chain]), open(out, "w"))
    if distributed:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, nargs="+", default=[2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--worker", nargs=2, metavar=("OUT", "DISTRIBUTED"))
    args = ap.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        worker(args.worker[0], args.worker[1] == "1")
        return
    from _machine import machine

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in [1] + args.procs:
            out = os.path.join(tmp, f"k{k}.json")
            if k == 1:
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker", out, "0"]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={k}",
                       f"--master_port={_free_port()}", __file__, "--threads", str(args.threads), "--worker", out, "1"]
            subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).parent)
            res = json.load(open(out))
            rows.append(dict(processes=k, threads_per_process=args.threads, wall_s=res["wall_s"],
                             sampling_s=res["sampling_s"], llc=res["llc"], mcse=res["mcse"],
                             per_chain=res["llc_per_chain"]))
            print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["speedup_vs_1"] = base["wall_s"] / r["wall_s"]
        r["bit_identical_to_1"] = bool(np.array_equal(np.array(r["per_chain"]), np.array(base["per_chain"])))
    df = pd.DataFrame(rows).drop(columns=["per_chain"])
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / "distributed_scaling.csv", index=False)
    m = machine()
    with open(OUT / "distributed_scaling.md", "w") as f:
        f.write(f"# distributed=True scaling (8 chains, MLP, batch 500)\n\nMachine: {m}\n\n```\n"
                + df.to_string(index=False) + "\n```\n")
    print(df.to_string(index=False))
    print(m)


if __name__ == "__main__":
    main()
