"""The checks around a run: measured before and after sampling, and the warning rules that read them.

Measurements (each stored in the :class:`~slt_basins.result.Checks` record, a failure as a
:class:`~slt_basins.result.CheckFailure`):

* **gradient at w*** — ‖∇L_n(w*)‖ and the bound nβ²‖∇L_n‖²/γ on the shift of λ̂ that a linear term
  can cause (w* should be a local minimum);
* **top curvature and step stability** — the largest |eigenvalue| h of the Hessian (Lanczos on
  Hessian-vector products, :func:`top_curvature`), at w* and at the final positions of at most
  :data:`END_CHAINS` chains (:func:`end_chains`), turned into the kernel's stability ratio
  ε·(nβ·h + γ·max G)/c (c = :attr:`Kernel.stability_divisor`, G the diagonal preconditioner).
  On a Gaussian, a Langevin step inflates the stationary variance of that direction by
  1/(1 − ratio) and is unstable at ratio ≥ 1;
* **MALA probe** — the Metropolis acceptance probability of fresh Langevin proposals of the kernel
  from the chains' final positions (:func:`mala_probe`): near 1 means a small discretisation bias
  (Lau et al. 2023, arXiv:2308.12108, log it).

Cost. The checks of a model evaluate the loss on one fixed subsample of :func:`check_examples`
examples, sized so that their nominal cost is :data:`CHECK_SHARE` of the sampling's (counted in
per-example gradient evaluations), but never fewer than one minibatch; the curvature stops early
once the Lanczos residual bound is below :data:`CURVATURE_RTOL`. The seconds the checks take are
``Checks.checks_time_s``; the subsample size is the result's ``config["check_examples"]``.

Stated error of a minibatch-sized subsample: it measures the Hessian of the subsample's loss, not
of L_n. Its top eigenvalue is on average at least the full-data one (λ_max is convex in H), but
where a few examples dominate the curvature a single subsample can be far off either way: on the
tiny GPT-2 of ``benchmarks/lm_speed.py`` (32 of 4,096 sequences) h at w* had a median of 0.52×
and a mean of 1.37× the full-data value over 20 subsamples, single values ranging from 0.38× to
11× (``benchmarks/results/lm_speed.md``). The stability ratios are then order-of-magnitude
checks, and the ratio at the chains' ends can exceed the warning threshold where a large
subsample's does not. For a sharper check at a proportional cost, raise :data:`CHECK_SHARE`
(``slt_basins.checks.CHECK_SHARE = 1.0`` checks on up to 20× more examples, at most
:data:`~slt_basins.targets.CHECK_EXAMPLES`), or switch the checks off with ``check_stability=False``.

Warning rules: one small function per rule, each reading an :class:`Evidence` record and returning
the message or None; :func:`warn_all` issues them as :class:`~slt_basins.errors.LLCWarning`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch.func import vjp

from .curvature import gauss_nodes, lanczos_tridiagonal
from .errors import LLCWarning, LocalizationWarning, warn
from .result import CheckFailure, Checks
from .samplers import Hyper, Kernel, langevin_log_accept, langevin_proposal

__all__ = ["top_curvature", "lanczos_top", "Curvature", "check_examples", "end_chains", "gradient_checks",
           "step_stability", "mala_probe", "above_half_d", "Evidence", "RULES", "warn_all"]

CURVATURE_ITERATIONS = 10  # at most this many Hessian-vector products per point (Lanczos steps)
CURVATURE_RTOL = 0.03  # ... fewer once the residual bound on the top Ritz value is below this fraction of it
END_CHAINS = 4  # the curvature at the end of the run is measured at most at this many chains' final positions
MALA_PROPOSALS = 8  # fresh Langevin proposals per chain in the MALA probe ...
ANTITHETIC = True  # ... in antithetic pairs (z, −z) from the same position (:func:`antithetic_normal`)
CHECK_SHARE = 0.05  # the checks' nominal cost as a fraction of the sampling's (per-example gradient evaluations)
HVP_COST = 2.0  # a Hessian-vector product costs about this many gradient evaluations (reverse over reverse)


class Curvature(NamedTuple):
    """A top-|eigenvalue| estimate: ``value`` (the largest |Ritz value|), the ``iterations`` (Hessian-vector
    products) it took, and ``residual``, the Lanczos bound β_k·|s_k| such that some eigenvalue of the
    operator lies within ``residual`` of ±``value``."""

    value: float
    iterations: int
    residual: float


def lanczos_top(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, iters: int = CURVATURE_ITERATIONS,
                rtol: float = CURVATURE_RTOL) -> Curvature:
    """Largest |eigenvalue| of the symmetric operator ``hvp`` by at most ``iters`` Lanczos steps from ``v0``.

    Lanczos (Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1) builds the tridiagonal T_k of
    the operator on the Krylov space of ``v0``; its eigenvalues (Ritz values) lie between the
    operator's extreme eigenvalues, so the returned max |θ| never exceeds the true max |λ| (a lower
    bound, up to rounding). It stops early once the residual bound β_k·|s_k| of that Ritz value is at
    most ``rtol``·|θ| (then an eigenvalue lies within that distance of θ; the error of θ itself is
    usually of order residual²/gap), or when the Krylov space is exhausted (β_k = 0: exact). Without
    reorthogonalisation, memory is three vectors; a lost orthogonality only repeats converged values.
    Returns NaN for a non-finite product and 0.0 when the first product is exactly zero.

    >>> A = torch.diag(torch.tensor([5.0, -9.0, 1.0, 2.0]))
    >>> c = lanczos_top(lambda v: A @ v, torch.ones(4))
    >>> round(c.value, 3), c.iterations, c.value <= 9.0, 9.0 - c.value <= c.residual <= 0.03 * c.value
    (8.997, 3, True, True)
    >>> round(lanczos_top(lambda v: A @ v, torch.ones(4), rtol=0.0).value, 4)  # 4 steps span the space: exact
    9.0
    """
    v, v_prev, beta = v0 / v0.norm(), torch.zeros_like(v0), 0.0
    alphas: list = []
    betas: list = []
    for k in range(1, iters + 1):
        w = hvp(v).detach()
        if not bool(torch.isfinite(w).all()):
            return Curvature(math.nan, k, math.nan)
        if k == 1 and not bool(w.any()):
            return Curvature(0.0, 1, 0.0)
        alpha = float(torch.dot(w.reshape(-1), v.reshape(-1)))
        w = w - alpha * v - beta * v_prev
        alphas.append(alpha)
        beta_new = float(w.norm())
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, S = np.linalg.eigh(T)
        j = int(np.argmax(np.abs(theta)))
        value, residual = float(abs(theta[j])), beta_new * float(abs(S[-1, j]))
        if residual <= rtol * value or beta_new <= 64 * torch.finfo(w.dtype).eps * value:
            break
        betas.append(beta_new)
        v_prev, v, beta = v, w / beta_new, beta_new
    return Curvature(value, k, residual)


def top_curvature(grad_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, iters: int = CURVATURE_ITERATIONS,
                  scale: Optional[torch.Tensor] = None, rtol: float = CURVATURE_RTOL) -> float:
    """Largest |eigenvalue| of the Hessian H of the loss at ``w`` (of S·H·S with S = diag(``scale``) when
    given), by :func:`lanczos_top` on reverse-over-reverse Hessian-vector products of ``grad_fn``
    (at most ``iters`` of them; a fixed start vector, so the result is deterministic).

    Units: loss per squared parameter unit. A lower bound of the true value, within about ``rtol``
    of an eigenvalue (see :func:`lanczos_top`). Returns NaN when a product is not finite (the caller
    reports it), 0.0 for a loss that is flat to second order.

    >>> round(top_curvature(lambda w: 2 * torch.tensor([3.0, 1.0]) * w, torch.zeros(2)), 4)
    6.0
    """
    _, vjp_fn = vjp(grad_fn, w)

    def hvp(v):
        hv = vjp_fn(v if scale is None else v * scale)[0]
        return hv if scale is None else hv * scale

    g = torch.Generator(device=w.device).manual_seed(0)
    v0 = torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype)
    return lanczos_top(hvp, v0, iters, rtol).value


def check_examples(batch: int, chains: int, steps: int, share: Optional[float] = None,
                   proposals: int = MALA_PROPOSALS) -> int:
    """Examples for the checks of a model: the most whose nominal cost is ``share`` (default: the module's
    :data:`CHECK_SHARE`, read at each call) of the sampling's, and at least one minibatch (``batch``).
    The caller caps it at n and at the target's maximum (:data:`~slt_basins.targets.CHECK_EXAMPLES`).

    Costs are counted in per-example gradient evaluations: sampling takes steps·chains·batch; the
    checks take, per example of their subsample, HVP_COST times the Hessian-vector products
    (CURVATURE_ITERATIONS at each of 1 + min(END_CHAINS, chains) points, and the
    LOCALIZATION_PROBES·LOCALIZATION_STEPS of the curvature density at w*) and 2·``proposals``·chains
    gradient evaluations of the MALA probe. Early stopping makes the actual share smaller; at the
    one-minibatch floor (short runs) it is larger.

    >>> check_examples(batch=32, chains=4, steps=1000), check_examples(batch=32, chains=4, steps=100_000)
    (32, 2191)
    """
    share = CHECK_SHARE if share is None else share
    hvps = CURVATURE_ITERATIONS * (1 + min(END_CHAINS, chains)) + LOCALIZATION_PROBES * LOCALIZATION_STEPS
    per_example = HVP_COST * hvps + 2 * int(proposals) * chains
    return max(int(batch), int(share * steps * chains * batch / per_example))


def end_chains(last_draw: Optional[np.ndarray], alive: np.ndarray, k: int = END_CHAINS) -> np.ndarray:
    """The (at most ``k``) rows among ``alive`` whose curvature is measured at the end of the run: those
    with the largest last draw nβ·(L_B(w_t) − L_B(w*)), the chains highest up the loss, where an
    excursion into a stiffer region shows first (ties and a missing ``last_draw``: the lowest rows).
    A stiff excursion of an unchecked chain can be missed; ``Checks.stability_end_chains`` lists the
    checked chains.

    >>> end_chains(np.array([0.1, 3.0, 2.0, 5.0, 4.0, 9.0]), np.array([0, 1, 2, 3, 4]), k=2)
    array([3, 4])
    """
    alive = np.asarray(alive)
    if last_draw is None or len(alive) <= k:
        return alive[:k]
    order = np.argsort(-np.asarray(last_draw)[alive], kind="stable")
    return np.sort(alive[order[:k]])


def gradient_checks(checks: Checks, g: torch.Tensor, nbeta: float, gamma: float, floor: float = 0.0) -> None:
    """Fill ``grad_norm`` and ``grad_bias_bound`` = nβ²·‖g‖²/γ. A gradient at or below ``floor`` (its
    rounding level in the model's dtype) counts as zero: at γ = 0 the bound is then 0, not inf.

    >>> c = Checks(); gradient_checks(c, torch.tensor([3.0, 4.0]), nbeta=10.0, gamma=100.0)
    >>> c.grad_norm, c.grad_bias_bound
    (5.0, 25.0)
    """
    gn = float(g.norm())
    checks.grad_norm = gn
    signal = gn if gn > floor else 0.0
    checks.grad_bias_bound = (nbeta * signal) ** 2 / gamma if gamma > 0 else (math.inf if signal > 0 else 0.0)


def stability_ratio(kernel: Kernel, hyper: Hyper, h: float, gmax: float = 1.0) -> float:
    """ε·(nβ·h + γ·gmax)/c, the kernel's stability ratio in a direction of curvature h (dimensionless).

    >>> from slt_basins.samplers import SGLD
    >>> round(stability_ratio(SGLD, Hyper(1e-2, 1.0, 100.0, torch.zeros(1)), h=3.0), 6)
    0.7525
    """
    return hyper.step_size * (hyper.nbeta * h + hyper.localization * gmax) / kernel.stability_divisor


def step_stability(kernel: Kernel, hyper: Hyper, grad_fn, w: torch.Tensor,
                   precond: Optional[torch.Tensor] = None) -> tuple[float, float]:
    """(h, ratio): h the largest |eigenvalue| of G^½·H·G^½ at ``w`` (G the diagonal preconditioner,
    1 without one; :func:`top_curvature`, a lower bound within about :data:`CURVATURE_RTOL`) and the
    stability ratio :func:`stability_ratio` with max G.

    >>> from slt_basins.samplers import SGLD
    >>> h, r = step_stability(SGLD, Hyper(1e-2, 1.0, 100.0, torch.zeros(2)), lambda w: 6 * w, torch.zeros(2))
    >>> round(h, 4), round(r, 4)
    (6.0, 1.5025)
    """
    h = top_curvature(grad_fn, w, scale=None if precond is None else precond.sqrt())
    gmax = 1.0 if precond is None else float(precond.max())
    return h, stability_ratio(kernel, hyper, h, gmax)


def antithetic_normal(shape, seed: int, device, dtype) -> torch.Tensor:
    """Standard normal rows in antithetic pairs (Hammersley & Morton 1956, Proc. Camb. Phil. Soc. 52): rows
    2k and 2k + 1 are z and −z (an odd last row is unpaired). Every row is marginally N(0, I), so a mean
    over rows stays unbiased; terms odd in z cancel within a pair, which is what makes the MALA probe's
    acceptance less noisy (:func:`mala_probe`).

    >>> z = antithetic_normal((5, 3), 0, "cpu", torch.float64)
    >>> bool((z[0] == -z[1]).all()), bool((z[2] == -z[3]).all()), bool((z[4] != 0).all())
    (True, True, True)
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    half = torch.randn(((shape[0] + 1) // 2, *shape[1:]), generator=gen, device=device, dtype=dtype)
    return torch.stack([half, -half], dim=1).flatten(0, 1)[: shape[0]]


def mala_probe(kernel: Kernel, final_w: torch.Tensor, final_state, alive: np.ndarray, hyper: Hyper,
               loss_and_grad, proposals: int = MALA_PROPOSALS, seed: int = 0,
               max_rows: Optional[int] = None, earlier: Optional[torch.Tensor] = None) -> Optional[float]:
    """Mean Metropolis acceptance probability (0–1) of ``proposals`` fresh Langevin proposals of the
    kernel per chain, of the ``alive`` chains, with the loss given by ``loss_and_grad`` ((rows, d) →
    (L, ∇L)), evaluated ``max_rows`` rows at a time (None: all at once). The proposals start from the
    chains' final positions and, where given, from ``earlier`` positions of the same chains
    (``(positions, chains, d)``, :attr:`slt_basins.chains.ChainRun.probe_w`), spread evenly
    (proposals // positions from each, at least one); the preconditioner of a preconditioned kernel is
    the final one at every position (frozen after burn-in for ``rmsprop_sgld``). For an unadjusted
    kernel a value near 1 means its discretisation bias is small. None when no chain is alive.

    Statistical error: the mean of R = proposals·chains acceptance probabilities a_i ∈ [0, 1] has a
    standard error sd(a)/√R ≤ 0.5/√R over the proposal noise (0.09 for 4 chains × 8; much less near
    acceptance 1, where sd(a) is small), given the positions. The proposals come in antithetic pairs
    (z, −z) from the same position (:data:`ANTITHETIC`, :func:`antithetic_normal`), which cancels the
    terms of the acceptance odd in z within a pair: on the MLP of the docs page *Benchmarks*
    ("step_size='auto' across seeds") this cut the seed-to-seed spread of 1 − a at one ε from 0.156 to
    0.086 (relative), at no extra cost. Positions spread over the draws make the
    mean less dependent on where the chains happen to end (a snapshot at the final positions alone
    varied by up to 3× between seeds on the MLP of the docs page *Benchmarks*, "step_size='auto'
    across seeds"). For a model, ``loss_and_grad`` is the loss on the checks' fixed subsample
    (:func:`check_examples` examples): the probe then tests the step against that loss's own
    posterior, whose curvature is that of a minibatch loss.

    >>> from slt_basins.samplers import SGLD
    >>> f = lambda w: (0.5 * (w ** 2).sum(1), w)
    >>> hy = Hyper(1e-4, 0.0, 10.0, torch.zeros(3))
    >>> a = mala_probe(SGLD, torch.zeros(2, 3), (torch.zeros(2, 3),), np.array([0, 1]), hy, f, max_rows=5,
    ...                earlier=torch.ones(3, 2, 3))
    >>> 0.99 < a <= 1.0
    True
    """
    if len(alive) == 0 or final_state is None:
        return None
    rows = torch.as_tensor(alive, device=final_w.device)
    points = [final_w] + ([] if earlier is None else list(earlier))
    per = max(1, int(proposals) // len(points))
    w = torch.cat([p[rows].repeat_interleave(per, dim=0) for p in points])
    G = None
    if kernel.preconditioner is not None:
        G = kernel.preconditioner(final_state)[rows].repeat_interleave(per, dim=0).repeat(len(points), 1)
    h = hyper._replace(adapt=False)
    if ANTITHETIC:
        z = antithetic_normal(w.shape, seed, w.device, w.dtype)
    else:
        z = torch.randn(w.shape, generator=torch.Generator(device=w.device).manual_seed(seed), device=w.device,
                        dtype=w.dtype)
    step = len(w) if max_rows is None else max(1, int(max_rows))
    acc = []
    with torch.no_grad():
        for i in range(0, len(w), step):
            sl = slice(i, i + step)
            Gi = None if G is None else G[sl]
            loss, grad_ = loss_and_grad(w[sl])
            w_new = langevin_proposal(w[sl], grad_, z[sl], h, Gi)
            loss_new, grad_new = loss_and_grad(w_new)
            acc.append(langevin_log_accept(w[sl], loss, grad_, w_new, loss_new, grad_new, h, Gi).clamp(max=0.0).exp())
    return float(torch.cat(acc).mean())


def measure(checks: Checks, name: str, fn: Callable):
    """``fn()``, or None with a :class:`CheckFailure` recorded in ``checks`` when it raises."""
    try:
        return fn()
    except Exception as e:  # a check must never cost the run: record the failure instead
        checks.failures.append(CheckFailure.from_exception(name, e))
        return None


# --- the localization share ----------------------------------------------------------------------

LOCALIZATION_PROBES, LOCALIZATION_STEPS = 4, 16


def curvature_density(grad_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor,
                      probes: int = LOCALIZATION_PROBES, steps: int = LOCALIZATION_STEPS,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian's spectral density at ``w`` by stochastic Lanczos quadrature (Ubaru, Chen & Saad
    2017, SIAM J. Matrix Anal. Appl. 38): Ritz values θ_j and weights τ_j (Σ τ_j = 1) such that
    tr f(H) ≈ d·Σ_j τ_j·f(θ_j) for smooth f. ``probes`` Rademacher probes × ``steps`` Lanczos steps
    (fully reorthogonalised), i.e. probes·steps Hessian-vector products.

    >>> theta, tau = curvature_density(lambda w: torch.tensor([4.0, 1.0, 0.0]) * w, torch.zeros(3))
    >>> round(float(3 * (tau * theta).sum()), 6)   # tr H = 5
    5.0
    """
    _, hvp = vjp(grad_fn, w)
    d = w.numel()
    m = max(1, min(int(steps), d))
    gen = torch.Generator(device=w.device).manual_seed(seed)
    nodes = []
    for _ in range(probes):  # one probe at a time: the basis holds m vectors of d numbers
        q = (torch.randint(0, 2, (1, d), generator=gen, device=w.device).to(w.dtype) * 2 - 1) / math.sqrt(d)
        alphas, betas, length = lanczos_tridiagonal(lambda r: hvp(r.view_as(w))[0].detach().reshape(1, -1), q, m)
        nodes.append(gauss_nodes(alphas[0, : int(length[0])], betas[0, : int(length[0]) - 1]))
    return (np.concatenate([t.numpy() for t, _ in nodes]),
            np.concatenate([tau.numpy() / probes for _, tau in nodes]))


def localization_share(theta: np.ndarray, tau: np.ndarray, d: int, nbeta: float, gamma: float) -> tuple[float, float]:
    """(λ_quad, share) of the quadratic model of the loss at w*: λ_quad = Σ_i ½·nβh_i/(nβh_i + γ) over
    the Hessian eigenvalues h_i ≥ 0 (from the density θ, τ of :func:`curvature_density`), and
    share = −d log λ_quad / d log γ = Σ c_i·γ/(nβh_i + γ) / Σ c_i with c_i = ½·nβh_i/(nβh_i + γ): 1 when
    λ_quad ∝ 1/γ (γ sets the number), 0 when γ plays no part. NaN share when the loss is flat
    to second order (λ_quad = 0).

    >>> localization_share(np.array([1.0]), np.array([1.0]), d=1, nbeta=100.0, gamma=1.0)  # nβh = 100 ≫ γ
    (0.49504950495049505, 0.009900990099009901)
    """
    h = np.clip(np.asarray(theta, float), 0.0, None)
    c = 0.5 * nbeta * h / (nbeta * h + gamma) if gamma > 0 else np.where(h > 0, 0.5, 0.0)
    total = float(np.sum(tau * c))
    share = float(np.sum(tau * c * gamma / np.maximum(nbeta * h + gamma, 1e-300)) / total) if total > 0 else math.nan
    return d * total, share


def gamma_for_share(theta: np.ndarray, tau: np.ndarray, nbeta: float, gamma: float,
                    target: float = 0.5) -> Optional[float]:
    """The γ nearest to ``gamma`` (on a log scale) at which :func:`localization_share` crosses ``target``:
    searching down from ``gamma`` when its share is above ``target`` (how far γ must be lowered for the
    loss to set most of λ̂), up from it otherwise (how far γ can rise before γ sets it). The share is not
    monotone in γ (it rises again near each cluster of small eigenvalues), so a global bisection can
    land on a far crossing; this scans a log grid of 20 points per decade over 12 decades from ``gamma``
    and refines the first crossing by bisection. None when there is no crossing within 12 decades.

    >>> round(gamma_for_share(np.array([1.0]), np.array([1.0]), nbeta=100.0, gamma=1e3), 3)   # nβh = γ
    100.0
    >>> # a stiff and a very flat direction: lowering γ from 1e3 crosses 0.5 near 100, not near 1e-4
    >>> round(gamma_for_share(np.array([1.0, 1e-6]), np.array([0.5, 0.5]), nbeta=100.0, gamma=1e3), 1)
    100.0
    """
    share = lambda g: localization_share(theta, tau, 1, nbeta, g)[1]  # noqa: E731
    above = share(gamma) > target
    step = -0.05 if above else 0.05
    prev = np.log10(gamma)
    for k in range(1, 241):
        cur = np.log10(gamma) + step * k
        s = share(10.0 ** cur)
        if math.isnan(s):
            return None
        if (s <= target) if above else (s > target):
            lo, hi = sorted((prev, cur))
            for _ in range(40):  # the share is monotone within one grid cell of the scan
                mid = 0.5 * (lo + hi)
                if share(10.0 ** mid) < target:
                    lo = mid
                else:
                    hi = mid
            return float(10.0 ** (0.5 * (lo + hi)))
        prev = cur
    return None


# --- warning rules -------------------------------------------------------------------------------

class Evidence(NamedTuple):
    """What the warning rules read: the estimate, its error bar, the checks and the settings."""

    llc: float
    mcse: float
    d: int
    checks: Checks
    kernel: Kernel
    hyper: Hyper
    diverged: list
    kept_chains: int
    divergence_bound: float
    subsample: Optional[tuple] = None  # (examples the checks used, n) for a model; None for a potential

    @property
    def settings_hint(self) -> str:
        h = self.hyper
        return (f"lower step_size (now {h.step_size:g}), raise localization (now {h.localization:g}) "
                f"or lower nbeta (now {h.nbeta:.4g})")

    @property
    def stability_formula(self) -> str:
        if self.kernel.preconditioner is not None:
            return (f"ε·(nβ·h_max + γ·max G)/{self.kernel.stability_divisor or 4.0:.3g} (h_max of the preconditioned "
                    "Hessian G^½HG^½)")
        return f"ε·(nβ·h_max + γ)/{self.kernel.stability_divisor:g}"


def rule_diverged(e: Evidence) -> Optional[str]:
    """Some (not all) chains diverged and were left out."""
    if not e.diverged:
        return None
    steps = [e.checks.diverged_at_step[c] for c in e.diverged]
    return (f"chains {e.diverged} diverged at steps {steps} and are excluded from the estimate (the remaining "
            f"{e.kept_chains} chains are used). A chain diverges when its loss becomes non-finite or "
            f"|nβ·(L(w_t) − L(w*))| exceeds {e.divergence_bound:g}: {e.settings_hint}. A large negative excursion "
            "instead means w* is not a local minimum.")


def rule_rhat(e: Evidence) -> Optional[str]:
    """The chains disagree (R-hat > 1.05)."""
    r = e.checks.r_hat
    if r is None or r <= 1.05:
        return None
    return (f"R-hat = {r:.3f} > 1.05: the chains disagree, so the error bar is not reliable. Increase num_burnin "
            "and num_draws, or the step size if mixing is slow.")


def rule_negative(e: Evidence) -> Optional[str]:
    """λ̂ < 0 beyond 3 MCSE: w* is not a local minimum."""
    if e.llc >= -3 * e.mcse - 1e-12:
        return None
    return (f"λ̂ = {e.llc:.4g} is negative (beyond 3 MCSE): the chains found lower loss than at w*, so w* is not a "
            "local minimum of L_n (the LLC assumes one). Train further, or raise localization.")


def above_half_d(llc: float, se: float, d: int) -> bool:
    """λ̂ exceeds d/2 (d sampled parameters) by more than 3 standard errors: impossible for the LLC of a
    local minimum, which is at most d/2, so the estimate is an artefact of its settings.

    >>> above_half_d(5.0, 0.5, d=4), above_half_d(2.5, 0.5, d=4)
    (True, False)
    """
    return llc - 3 * se > d / 2


def rule_above_half_d(e: Evidence) -> Optional[str]:
    """λ̂ > d/2 beyond 3 MCSE: impossible for the LLC of a minimum, so the estimate is biased."""
    if not above_half_d(e.llc, e.mcse, e.d):
        return None
    return (f"λ̂ = {e.llc:.4g} ± {e.mcse:.2g} exceeds d/2 = {e.d / 2:g} by more than 3 MCSE, but the LLC of a local "
            "minimum is at most d/2 (half the number of sampled parameters). The number is an artefact of the "
            f"settings: usually a step size too large for the curvature the chains meet ({e.settings_hint}), or a "
            "w* that is not a minimum.")


def rule_gradient(e: Evidence) -> Optional[str]:
    """w* is not a critical point: the linear term can shift λ̂ by nβ²‖∇L‖²/γ."""
    bias = e.checks.grad_bias_bound
    if bias is None or bias <= max(0.1, 0.05 * abs(e.llc)):
        return None
    return (f"the gradient norm at w* is {e.checks.grad_norm:.3g}: w* is not a critical point of L_n. The linear "
            f"term can shift λ̂ by up to nβ²‖∇L‖²/γ = {bias:.3g} (against λ̂ = {e.llc:.3g}). Train to a local "
            "minimum first, or raise localization.")


def _stability_effect(e: Evidence, ratio: float) -> str:
    if ratio >= 1:
        return "the sampler is unstable in the stiffest direction (a ratio ≥ 1 has no stationary law)"
    if e.kernel.langevin:  # a direction of the quadratic model adds ½·nβh/(nβh + γ)·s/(1 − s) ≤ ½·s/(1 − s)
        now = f" (λ̂ = {e.llc:.4g})" if math.isfinite(e.llc) else ""
        return (f"the stationary variance in the stiffest direction is inflated by about 1/(1−{ratio:.2g}) = "
                f"{1 / (1 - ratio):.3g}, biasing λ̂ upward by up to {0.5 * ratio / (1 - ratio):.2g} for each "
                f"direction this stiff{now}")
    return "the stiffest direction is under-resolved, which biases λ̂"


def _subsample_note(e: Evidence) -> str:
    """How the checks' curvature was measured, when it was on a subsample of the data (empty otherwise)."""
    if e.subsample is None or e.subsample[0] >= e.subsample[1]:
        return ""
    m, n = e.subsample
    return (f" (h_max was measured on {m} of the {n} examples; a small subsample's top eigenvalue can differ from "
            "the full data's several-fold, so confirm with slt_basins.checks.CHECK_SHARE = 1.0 before acting on it)")


def rule_stability_start(e: Evidence) -> Optional[str]:
    """The step size is too large for the curvature at w*."""
    s = e.checks.step_stability
    if s is None or not s > 0.1:
        return None
    return (f"{e.stability_formula} = {s:.3g} at w* (h_max = {e.checks.hessian_max_abs_eig:.3g} is the largest "
            f"Hessian eigenvalue): {_stability_effect(e, s)}. Lower step_size to ≤ "
            f"{0.1 * e.hyper.step_size / s:.2g} for a bias under about 11 %{_subsample_note(e)}.")


def rule_stability_end(e: Evidence) -> Optional[str]:
    """The chains moved into regions stiffer than w*, where the step size is too large."""
    end, start = e.checks.step_stability_end, e.checks.step_stability
    if end is None or not end > 0.1 or not end > 2 * (start or 0.0):
        return None
    where = (", larger than at w*: the chains moved into stiffer regions. There " if start is not None else ": there ")
    return (f"at the chains' final positions {e.stability_formula} = {end:.3g} (h_max = "
            f"{e.checks.hessian_max_abs_eig_end:.3g}){where}{_stability_effect(e, end)}. Lower step_size to ≤ "
            f"{0.1 * e.hyper.step_size / end:.2g} or raise localization{_subsample_note(e)}.")


def rule_curvature_nan(e: Evidence) -> Optional[str]:
    """The Hessian-vector products were not finite, so no stability was measured."""
    c = e.checks
    if not any(v is not None and math.isnan(v) for v in (c.hessian_max_abs_eig, c.hessian_max_abs_eig_end)):
        return None
    return ("the top Hessian eigenvalue is NaN (a Hessian-vector product was not finite, e.g. a w**0 factor or a "
            "non-smooth loss at w*), so the step size could not be checked against the curvature. Check that the "
            "loss is twice differentiable near w*, and validate ε by halving it.")


def rule_mala(e: Evidence) -> Optional[str]:
    """Low acceptance: MALA barely moves, or an unadjusted kernel's step has a visible bias."""
    acc, eps = e.checks.mala_accept, e.hyper.step_size
    if acc is None:
        return None
    if e.kernel.full_batch and acc < 0.2:
        return (f"MALA accepted {acc:.1%} of its proposals on average: the chains barely move, so the draws are "
                f"strongly correlated. Lower step_size (now {eps:g}); an acceptance of 0.5–0.8 mixes best.")
    if e.kernel.langevin and acc < 0.7:
        return (f"MALA would accept only {acc:.1%} of this sampler's proposals from the chains' positions during the "
                f"draws and at their ends: the step size (now {eps:g}) is large enough for a visible discretisation "
                "bias in λ̂. Lower step_size, "
                "or check with sampler='mala' on a small problem.")
    return None


LOCALIZATION_SHARE_MAX = 0.5


def rule_localization(e: Evidence) -> Optional[str]:
    """γ, not the loss, sets λ̂: in the quadratic model at w*, more than half of λ̂'s dependence is on γ."""
    share, quad = e.checks.localization_share, e.checks.quadratic_llc
    if share is None or not share > LOCALIZATION_SHARE_MAX:
        return None
    g50, where = e.checks.localization_half, ""
    if g50:
        fragile = ("; with the share this close to 0.5, a small change in the curvature can move that γ by decades"
                   if share < LOCALIZATION_SHARE_MAX + 0.1 else "")
        where = f" (the share first falls below {LOCALIZATION_SHARE_MAX:g} at γ ≈ {g50:.3g}{fragile})"
    return (f"the localization γ = {e.hyper.localization:g} sets this λ̂ rather than the loss: in the quadratic model "
            f"of the loss at w*, λ_quad = Σ ½·nβh_i/(nβh_i + γ) = {quad:.3g} falls like γ^−{share:.2f} (share "
            f"{share:.2f} > {LOCALIZATION_SHARE_MAX:g}; 1 means λ̂ ∝ 1/γ), because nβ·h ≲ γ in most of the curvature "
            f"(nβ·h_max = {e.hyper.nbeta * (e.checks.hessian_max_abs_eig or math.nan):.3g}). λ̂ then measures the "
            f"loss's curvature divided by γ as much as the basin's degeneracy. Lower γ{where}"
            " with a step size small enough for it, or report λ̂ as a function of γ "
            "(slt_basins.llc_vs_localization).")


RULES = (rule_diverged, rule_rhat, rule_negative, rule_above_half_d, rule_gradient, rule_stability_start,
         rule_stability_end, rule_curvature_nan, rule_mala, rule_localization)
CATEGORY = {rule_localization: LocalizationWarning}  # rules whose warning is a subclass of LLCWarning


def warn_all(e: Evidence) -> list[str]:
    """Issue every rule's message as an :class:`~slt_basins.errors.LLCWarning` (or the subclass in
    :data:`CATEGORY`); return the messages."""
    out = []
    for rule in RULES:
        m = rule(e)
        if m:
            warn(m, CATEGORY.get(rule, LLCWarning))
            out.append(m)
    return out
