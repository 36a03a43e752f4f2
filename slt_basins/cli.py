"""Command-line entry point: ``slt-basins demo`` and ``slt-basins reproduce [--distributed]``.

``slt-basins`` (installed with the package) calls :func:`main`; ``python -m slt_basins.cli`` does
the same, which is the form torchrun needs (``torchrun --nproc_per_node=4 -m slt_basins.cli
reproduce --distributed``). The commands are described on the Getting started page.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings


def _train_demo_model(seed: int = 0, n: int = 2000):
    """A 2-16-16-1 tanh MLP fitted to noisy synthetic regression data (no download)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 4 - 2
    y = (torch.sin(2 * x[:, :1]) * torch.cos(x[:, 1:]) + 0.1 * torch.randn(n, 1, generator=g))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(1500):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-9,
                              tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        l = nn.functional.mse_loss(model(x), y)
        l.backward()
        return l

    lbfgs.step(closure)
    return model, (x, y)


def _demo(args) -> int:
    """``slt-basins demo``: train the demo MLP, estimate its LLC with 4 chains, print the estimate,
    d/2, the checks, the ArviZ summary and any warning (about 15 s on 2 CPU cores). Returns 0."""
    import torch
    from . import estimate_llc

    # The demo model is tiny: extra intra-op threads only add synchronisation cost (and stall badly
    # when other processes share the cores), so the demo runs single-threaded.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    print("slt-basins demo: LLC of a small MLP at a trained minimum")
    model, data = _train_demo_model()
    d = sum(p.numel() for p in model.parameters())
    n = data[0].shape[0]
    train_s = time.perf_counter() - t0
    print(f"  model: 2-16-16-1 tanh MLP, d = {d} parameters; data: n = {n} synthetic regression examples")
    print(f"  trained (Adam + L-BFGS) in {train_s:.1f} s to train MSE "
          f"{torch.nn.functional.mse_loss(model(data[0]), data[1]).item():.4g}")
    settings = dict(num_chains=4, num_draws=args.draws, num_burnin=args.draws // 2, step_size=args.step_size,
                    localization=args.localization, batch_size=args.batch_size, seed=args.seed)
    print("  sampling: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ", nβ = n/log n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(model, data, "mse", progress=not args.no_progress, **settings)
    print()
    print(f"  {r}")
    print(f"  d/2 = {d / 2:g} (the LLC of a regular model with this many parameters; singular models lie below)")
    c = r.checks
    print(f"  checks: ‖∇L_n(w*)‖ = {c['grad_norm']:.2e}, top Hessian eigenvalue {c.get('hessian_max_abs_eig', float('nan')):.3g}, "
          f"ε·(nβ·h_max + γ)/4 = {c.get('step_stability', float('nan')):.3g} at w* and "
          f"{c.get('step_stability_end', float('nan')):.3g} where the chains ended (must be ≪ 1),")
    print(f"          MALA acceptance of the SGLD proposals during the draws and at the chains' ends {c.get('mala_accept', float('nan')):.3f} "
          f"(near 1: small step-size bias), diverged chains: {r.diverged or 'none'}")
    print()
    print("  ArviZ diagnostics of the per-draw LLC nβ·(L_B(w_t) − L_B(w*)) and the loss:")
    print(r.summary().to_string(float_format=lambda v: f"{v:.4g}"))
    for w in caught:
        print(f"  WARNING: {w.message}")
    print("\n  The MCSE is the sampler's error bar only. λ̂ also depends on the localisation γ and step size ε")
    print("  (both bias it; see docs/estimating.md, 'When not to trust a number'): rerun with --localization and --step-size to see how much.")
    print(f"\n  total time {time.perf_counter() - t0:.1f} s")
    return 0


def _reproduce_cmd(args) -> int:
    """``slt-basins reproduce``: run :func:`slt_basins.reproduce.reproduce`, print the table on rank 0
    and save it as CSV to ``args.out``. Returns 0, or 2 when ``--distributed`` finds no torchrun
    environment (the message goes to stderr)."""
    import pandas as pd

    from .reproduce import reproduce

    t0 = time.perf_counter()
    rank, world, device = 0, 1, None
    if args.distributed:
        import torch.distributed as dist

        from .distributed import init_from_env

        started_here = not (dist.is_available() and dist.is_initialized())
        try:
            rank, world, device = init_from_env()
        except ValueError as e:
            print(f"slt-basins reproduce: {e}", file=sys.stderr)
            return 2
    if rank == 0:
        print(f"slt-basins reproduce{' --quick' if args.quick else ''}: estimated LLCs against exact learning coefficients"
              + (f" ({world} processes, chains on {device})" if args.distributed else ""))
    try:
        df = reproduce(quick=args.quick, seed=args.seed, progress=not args.no_progress and rank == 0,
                       distributed=args.distributed, device=None if device is None or device.type == "cpu" else device)
    finally:
        if args.distributed and started_here:
            dist.destroy_process_group()
    if rank != 0:  # every rank computed the same table; rank 0 prints and writes it
        return 0
    cols = ["case", "d", "true_lambda", "m", "certified", "finite_t_target", "llc", "se", "rel_err_target",
            "rel_err_lambda", "hessian_rank_half", "g_rank_half", "wall_s", "verdict"]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    df.to_csv(args.out, index=False)
    print(f"\nnβ = {df['nbeta'].iloc[0]:g} for potentials, n/log n for models; γ = {df['gamma'].iloc[0]:g}. "
          f"Full table (settings, R-hat, warnings) saved to {args.out}; total {time.perf_counter() - t0:.0f} s.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``slt-basins`` command: subcommands ``demo`` and ``reproduce`` with their options;
    each parsed namespace carries the function that runs it as ``func``.

    >>> args = build_parser().parse_args(["demo", "--draws", "400", "--localization", "100"])
    >>> args.command, args.draws, args.localization, args.step_size
    ('demo', 400, 100.0, 1e-05)
    >>> args = build_parser().parse_args(["reproduce", "--quick"])
    >>> args.quick, args.distributed, args.out
    (True, False, 'reproduce_results.csv')
    """
    parser = argparse.ArgumentParser(prog="slt-basins", description="Local learning coefficients for PyTorch models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a small MLP and estimate its LLC (about 30 s on 2 CPU cores)")
    p.add_argument("--draws", type=int, default=3000, help="post-burn-in draws per chain (burn-in is half)")
    p.add_argument("--step-size", type=float, default=1e-5)
    p.add_argument("--localization", type=float, default=300.0)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)
    p = sub.add_parser("reproduce", help="estimate the LLC of toys with known RLCT and compare (--quick: about 3 min)")
    p.add_argument("--quick", action="store_true", help="shorter chains and no 10⁴-parameter DLN")
    p.add_argument("--out", default="reproduce_results.csv", help="where to save the table (CSV)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--distributed", action="store_true",
                   help="spread each case's chains over the processes of a torchrun launch (gloo on CPU, NCCL with "
                        "one GPU per process when CUDA is available); rank 0 prints and writes the table, e.g. "
                        "torchrun --nproc_per_node=4 -m slt_basins.cli reproduce --distributed")
    p.set_defaults(func=_reproduce_cmd)
    return parser


def main(argv=None) -> int:
    """Run the ``slt-basins`` command with the arguments ``argv`` (default ``sys.argv[1:]``) and return
    its exit status. Bad arguments print the usage to stderr and exit with status 2 (argparse).

    >>> main(["reproduce", "--quick", "--no-such-option"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
