"""distributed=True: 2 gloo processes on CPU give exactly the single-process result; bad input."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import dist_worker
from slt_basins.distributed import split_chain_ids

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Launch tests/dist_worker.py on 2 gloo processes with torchrun; its per-rank outputs."""
    out = str(tmp_path_factory.mktemp("dist") / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", os.path.join(HERE, "dist_worker.py"), out]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return [dict(np.load(f"{out}.rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def single():
    """The same cases in this process, with one intra-op thread like the torchrun workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: dist_worker.summary(*dist_worker.run_case(name)) for name in dist_worker.CASES}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(dist_worker.CASES))
def test_two_gloo_processes_equal_one_process_bitwise(two_ranks, single, name):
    ref = single[name]
    for r, res in enumerate(two_ranks):
        for key in ("llc_per_chain", "llc_trace", "loss_trace") + tuple(k for k in ref if k.startswith("observed_")):
            assert np.array_equal(res[f"{name}/{key}"], ref[key]), (name, r, key)
        # stability at the chains' ends (per rank, gathered) and the MALA probe (on the gathered states)
        assert str(res[f"{name}/checks"]) == ref["checks"], (name, r)
    assert int(two_ranks[0][f"{name}/warnings"]) == ref["warnings"]  # warnings on rank 0 only
    assert int(two_ranks[1][f"{name}/warnings"]) == 0
    assert (name == "model_observe") == any(k.startswith("observed_") for k in ref)
    checks = json.loads(ref["checks"])
    assert checks["mala_accept"] is not None
    assert (checks["step_stability_end"] is not None) == (name != "pot_mala")  # MALA needs no step-size check


def test_per_rank_checkpoints_resume(two_ranks):
    for res in two_ranks:
        assert json.loads(str(res["ckpt_files"])) == [".rank0of2", ".rank1of2"]
        assert bool(res["ckpt_resumed_same"])


def test_ctrl_c_keeps_each_ranks_chains_and_resumes_from_uneven_checkpoints(two_ranks):
    assert [json.loads(str(res["interrupt_chain_ids"])) for res in two_ranks] == [[0, 1, 2], [3, 4]]
    assert [int(res["interrupt_warned"]) for res in two_ranks] == [1, 0]  # warned on rank 0 only
    for res in two_ranks:
        assert bool(res["resume_early_same"]) and bool(res["resume_uneven_same"])


def test_more_ranks_than_chains_is_refused(two_ranks):
    for res in two_ranks:
        msg = str(res["too_many_ranks"])
        assert "num_chains=1" in msg and "Raise num_chains to at least 2" in msg and "fewer processes" in msg


def test_reproduce_case_distributed_equals_one_process(two_ranks):
    from slt_basins.reproduce import run_case

    ref = run_case(dist_worker.reproduce_case())["llc"]
    assert [float(res["reproduce_llc"]) for res in two_ranks] == [ref, ref]


def test_reproduce_distributed_needs_torchrun(monkeypatch, capsys):
    from slt_basins.cli import main

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["reproduce", "--quick", "--distributed", "--no-progress"]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


def test_distributed_outside_a_process_group_is_refused():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised in this process")
    with pytest.raises(ValueError, match="torchrun.*init_process_group"):
        dist_worker.run_case("pot_sgld", distributed=True)
    with pytest.raises(ValueError, match="torchrun.*init_process_group"):
        dist_worker.run_case("model", distributed=True)


def test_split_is_contiguous_and_group_aligned():
    for n, w, g in [(5, 2, None), (7, 3, None), (5, 2, 2), (16, 4, 4), (10, 3, 3)]:
        parts = [split_chain_ids(n, w, r, g) for r in range(w)]
        assert sum(parts, []) == list(range(n)) and all(parts)
        if g is not None:
            assert all(p[0] % g == 0 for p in parts)
