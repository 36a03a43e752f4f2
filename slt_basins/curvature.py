"""Classic curvature ("flatness") measures of the training loss, next to which the LLC is compared.

Everything here is computed in **float64** on a *copy* of the model (the user's module is never
modified or cast), at the model's current parameters ``w``, for the **mean** training loss

    L_n(w) = (1/n) Σ_i ℓ(f(x_i, w), y_i)

with the loss conventions of :func:`slt_basins.losses.resolve_loss` (``"mse"`` is
``F.mse_loss`` with mean reduction over examples *and* outputs; ``"cross_entropy"`` is
``F.cross_entropy`` on logits). Curvature values are in units of loss per parameter²
(eigenvalues, trace) or are dimensionless (ranks, log-determinants of ``H + δI`` are in nats of
loss-curvature volume, i.e. ``log`` of a product of eigenvalues).

Two routes share one Hessian-vector product (HVP) implementation, :class:`HessianOperator`:

* **exact** (d ≤ :data:`EXACT_MAX_D`): the dense Hessian is assembled from batched HVPs against
  basis blocks (``vmap`` of the reverse-mode VJP of ``torch.func.grad``, i.e. ``jacrev(grad)``),
  then ``torch.linalg.eigvalsh``. Memory d²·8 bytes.
* **matrix-free** (any d): reverse-over-reverse HVPs wrapped in a
  ``scipy.sparse.linalg.LinearOperator``; Lanczos (``eigsh``) for ranks and top eigenvalues,
  Hutchinson for the trace, stochastic Lanczos quadrature (SLQ) for ``log det(H + δI)``.
  Memory O(d) per probe vector plus the activations of one data chunk.

Data are processed in chunks of at most ``chunk_size`` examples; the Hessian of a mean is the
chunk-size-weighted sum of chunk Hessians, so results do not depend on the chunking (for the
built-in losses and for callable losses that are per-example means).

The behavioural Jacobian ``G`` (one row per training output, rlct-truth.md §5.2) and its rank are
provided too: at a zero-residual minimum of a regression loss rank H = rank G; away from such
minima (noisy labels, softmax + cross-entropy on logits) they differ.

Rank conventions follow ``numpy.linalg.matrix_rank``: a value counts if ``|value| > tol`` and the
default tolerance is ``max|value| · size · eps(float64)``. Every rank comes with the size of the
spectral gap at the cut (in decades) and the ranks at nearby tolerances, so an ill-determined rank
is visible (and a :class:`RankWarning` is issued when the gap is under 2 decades).
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from .data import as_tensors
from .errors import RankWarning
from .functional import FlatModel
from .losses import LossSpec, resolve_loss

__all__ = [
    "EXACT_MAX_D",
    "DEFAULT_CHUNK_SIZE",
    "RankWarning",
    "RankResult",
    "TraceResult",
    "LogDetResult",
    "HessianOperator",
    "hessian_operator",
    "rank_from_values",
    "matrix_rank",
    "hessian",
    "hessian_rank",
    "behaviour_jacobian",
    "g_rank",
    "ntk",
    "hessian_trace",
    "top_eigenvalues",
    "damped_logdet",
]

#: Largest parameter count for which the dense d×d Hessian is built (d²·8 bytes = 288 MB at 6000;
#: ``eigvalsh`` then takes about 10-20 s on 2 CPU cores). Above it use the matrix-free routes.
EXACT_MAX_D = 6000
#: Default number of examples per data chunk for HVPs and Jacobians.
DEFAULT_CHUNK_SIZE = 4096
#: Working-memory budget (bytes) used to size vmap batches of HVPs / Jacobian rows.
WORK_BUDGET_BYTES = 1 << 30
#: ``top_eigenvalues`` uses the dense route up to this d (d HVPs are then cheaper than Lanczos).
TOP_EXACT_MAX_D = 1000

_EPS = float(np.finfo(np.float64).eps)
_MATRIX_FREE_HINT = (
    "use the matrix-free routes instead: hessian_rank(..., method=\"matrix_free\"), "
    "top_eigenvalues(...), hessian_trace(...) or damped_logdet(..., method=\"slq\")"
)




# --------------------------------------------------------------------------------------------
# Rank bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass
class RankResult:
    """A numerical rank with the evidence needed to judge it.

    Attributes:
        rank: number of values with ``|value| > tol``.
        values: numpy float64 array of the values the rank was read from, sorted by descending
            absolute value: signed eigenvalues for Hessians / symmetric matrices, singular values
            for ``G`` and general matrices. For ``method="matrix_free"`` only the leading values
            found by Lanczos are present.
        tol: the tolerance used (absolute, same units as ``values``).
        gap_decades: ``log10(|last kept| / |first dropped|)``. ``None`` when no gap exists
            (nothing was kept or nothing was dropped); ``float('inf')`` when the first dropped value
            is exactly 0. A value under 2 means the rank depends on the tolerance.
        ranks_at: ``{tolerance: rank}`` at ``tol`` × 1e-3, 1e-2, 1e2, 1e3. An entry is ``None``
            when that rank cannot be determined from the values available (matrix-free, below the
            smallest eigenvalue found). Empty when ``tol == 0``.
        method: how the values were obtained (``"exact"``, ``"matrix_free"``, ``"svd(G)"`` ...).
        size: the matrix size entering the default tolerance (d for a Hessian, ``max(n·k, d)``
            for ``G``, ``max(A.shape)`` for an explicit matrix).
        lower_bound: ``True`` when Lanczos stopped before reaching values below ``tol``, so the
            true rank may be larger than ``rank``.

    ``int(result)`` is the rank.
    """

    rank: int
    values: np.ndarray
    tol: float
    gap_decades: Optional[float]
    ranks_at: dict
    method: str
    size: int
    lower_bound: bool = False

    def __int__(self) -> int:
        return int(self.rank)

    def __repr__(self) -> str:
        if self.gap_decades is None:
            gap = "no gap"
        elif math.isinf(self.gap_decades):
            gap = "gap=inf (exact zeros)"
        else:
            gap = f"gap={self.gap_decades:.1f} decades"
        alt = ", ".join(
            f"{t:.1e}: {'?' if r is None else r}" for t, r in sorted(self.ranks_at.items())
        )
        lb = " (lower bound)" if self.lower_bound else ""
        return (
            f"RankResult(rank={self.rank}{lb} of {self.size}, method={self.method!r}, "
            f"tol={self.tol:.3e}, {gap}, n_values={len(self.values)}, ranks_at={{{alt}}})"
        )


def _check_tol(tol: Optional[float]) -> Optional[float]:
    if tol is None:
        return None
    try:
        tol_f = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tol must be a positive number or None; got {tol!r}.") from None
    if not math.isfinite(tol_f) or tol_f <= 0:
        raise ValueError(
            f"tol must be a positive finite number (or None for the default max·size·eps); got {tol!r}."
        )
    return tol_f


def rank_from_values(
    values,
    size: int,
    tol: Optional[float] = None,
    *,
    method: str = "values",
    complete: bool = True,
    warn: bool = True,
) -> RankResult:
    """Numerical rank from eigenvalues or singular values, with gap diagnostics.

    A value counts towards the rank when ``|value| > tol``. The default tolerance follows
    ``numpy.linalg.matrix_rank``: ``tol = max|value| · size · eps`` with ``eps`` the float64
    machine epsilon (2.2e-16); it is 0 for an all-zero spectrum (rank 0).

    Args:
        values: 1-D array-like of eigenvalues (any sign) or singular values.
        size: matrix dimension used in the default tolerance (``max(rows, cols)``).
        tol: absolute tolerance (> 0) or ``None`` for the default.
        method: label stored in the result.
        complete: ``False`` when ``values`` are only the leading values (e.g. from Lanczos): ranks
            at tolerances below the smallest value given are then reported as undetermined.
        warn: issue a :class:`RankWarning` when ``gap_decades < 2``.

    Returns:
        :class:`RankResult`.

    Raises:
        ValueError: if ``tol <= 0`` or the values are not finite.

    Example:
        >>> r = rank_from_values([3.0, 1.0, 1e-17], size=3)
        >>> r.rank, round(r.gap_decades)
        (2, 17)
    """
    tol = _check_tol(tol)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise ValueError("the values contain NaN or inf; the matrix (or Hessian) is not finite.")
    order = np.argsort(-np.abs(v), kind="stable")
    v = v[order]
    a = np.abs(v)
    vmax = float(a[0]) if a.size else 0.0
    if tol is None:
        tol = vmax * int(size) * _EPS
    rank = int(np.count_nonzero(a > tol))
    if rank == 0 or rank == a.size:
        gap = None
    elif a[rank] == 0.0:
        gap = float("inf")
    else:
        gap = float(np.log10(a[rank - 1] / a[rank]))
    ranks_at: dict = {}
    if tol > 0:
        smallest = float(a[-1]) if a.size else 0.0
        for f in (1e-3, 1e-2, 1e2, 1e3):
            t = tol * f
            if complete or smallest <= t:
                ranks_at[t] = int(np.count_nonzero(a > t))
            else:
                ranks_at[t] = None
    lower_bound = (not complete) and rank == a.size and a.size < size
    res = RankResult(rank, v, float(tol), gap, ranks_at, method, int(size), lower_bound)
    if warn and gap is not None and gap < 2:
        warnings.warn(
            f"ill-determined rank: the spectral gap at tol={tol:.2e} spans only {gap:.2f} decades "
            f"(|last kept|={a[rank - 1]:.3e}, |first dropped|={a[rank]:.3e}); ranks at nearby "
            f"tolerances: {ranks_at}. Report the rank with its tolerance.",
            RankWarning,
            stacklevel=3,
        )
    return res


def matrix_rank(A, tol: Optional[float] = None, hermitian: bool = True) -> RankResult:
    """Numerical rank of an explicit matrix, with gap diagnostics (float64).

    With ``hermitian=True`` the values are the eigenvalues of the symmetric matrix ``A``
    (``eigvalsh``; ``A`` must be symmetric up to rounding); otherwise its singular values
    (``svdvals``). Tolerance convention as in :func:`rank_from_values` with ``size = max(A.shape)``.

    Example:
        >>> matrix_rank(np.diag([2.0, 1.0, 0.0])).rank
        2
    """
    A_t = (A.detach() if isinstance(A, torch.Tensor) else torch.as_tensor(np.asarray(A)))
    A_t = A_t.to(device="cpu", dtype=torch.float64)
    if A_t.ndim != 2:
        raise ValueError(f"matrix_rank needs a 2-D matrix; got shape {tuple(A_t.shape)}.")
    if A_t.numel() == 0:
        raise ValueError(f"matrix_rank needs a non-empty matrix; got shape {tuple(A_t.shape)}.")
    if not torch.isfinite(A_t).all():
        raise ValueError("the matrix contains NaN or inf.")
    if hermitian:
        if A_t.shape[0] != A_t.shape[1]:
            raise ValueError(f"hermitian=True needs a square matrix; got shape {tuple(A_t.shape)}.")
        asym = float((A_t - A_t.T).abs().max())
        scale = float(A_t.abs().max())
        if asym > 1e-8 * max(scale, 1e-300):
            raise ValueError(
                f"the matrix is not symmetric (max|A - Aᵀ| = {asym:.2e} vs max|A| = {scale:.2e}); "
                "pass hermitian=False to use singular values."
            )
        vals = torch.linalg.eigvalsh((A_t + A_t.T) / 2)
        method = "eigvalsh"
    else:
        vals = torch.linalg.svdvals(A_t)
        method = "svd"
    return rank_from_values(vals.cpu().numpy(), max(A_t.shape), tol, method=method)


# --------------------------------------------------------------------------------------------
# Shared set-up: float64 copy, data chunks, one HVP implementation
# --------------------------------------------------------------------------------------------


def _available_memory() -> float:
    """Bytes of memory available to this process (MemAvailable on Linux), or inf if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def _float64_model(model: nn.Module) -> FlatModel:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "the model has no trainable parameters (none with requires_grad=True), so its Hessian "
            "and Jacobian are empty."
        )
    if model.training and any(
        isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm))
        for m in model.modules()
    ):
        warnings.warn(
            "the model is in training mode and contains dropout or batch-norm layers, so the loss is "
            "random or depends on the data chunking; call model.eval() first for a well-defined "
            "Hessian.",
            UserWarning,
            stacklevel=3,
        )
    m64 = copy.deepcopy(model).to(torch.float64)
    return FlatModel(m64)


def _activation_numel(fm: FlatModel, x1: torch.Tensor) -> int:
    """Rough count of activation values per example (sum of all module outputs), for batching."""
    total = [0]
    handles = []

    def hook(_mod, _inp, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel()

    for mod in fm.model.modules():
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            fm.forward(fm.w_star, x1)
    except Exception:  # the estimate is only for sizing batches
        total[0] = 0
    finally:
        for h in handles:
            h.remove()
    return max(int(total[0]) // max(int(x1.shape[0]), 1), int(x1[0].numel()), 1)


class HessianOperator(LinearOperator):
    """The Hessian of the mean training loss as a matrix-free ``scipy`` linear operator (float64).

    Hessian-vector products are reverse-over-reverse (the VJP of ``torch.func.grad`` of the chunk
    loss; forward-over-reverse is avoided because it fails for some losses' reductions), computed on
    a float64 copy of the model, summed over data chunks with weights ``n_chunk / n``, and batched
    over several vectors with ``torch.func.vmap`` (falling back to a loop if the model cannot be
    vmapped). With a single chunk the first-order graph is built once and reused for every product.

    Cost of one HVP: about 2-4 forward/backward passes over the data. Memory: the chunk's
    activations (×batch of vectors) plus O(d) per vector.

    Build it with :func:`hessian_operator`. Attributes: ``d``, ``n`` (examples), ``loss_spec``,
    ``flat`` (the float64 :class:`FlatModel`), ``n_hvp`` (products computed so far).
    Methods: ``matvec``/``matmat`` (numpy, via scipy), ``torch_matmat(V)`` for ``V`` of shape
    ``(b, d)`` returning ``(b, d)`` rows ``H v``, ``dense()`` for the full matrix, ``loss()``
    and ``grad()`` at the current parameters.
    """

    def __init__(self, model: nn.Module, data: Any, loss: Union[str, Callable] = "mse",
                 chunk_size: Optional[int] = None):
        fm = _float64_model(model)
        x, y = as_tensors(data, device=fm.device, dtype=torch.float64)
        n = int(x.shape[0])
        if chunk_size is None:
            chunk_size = DEFAULT_CHUNK_SIZE
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}.")
        probe = min(n, 8)
        with torch.no_grad():
            out = fm.forward(fm.w_star, x[:probe])
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"the model must return one tensor of outputs; got {type(out).__name__}."
            )
        if out.ndim == 0 or out.shape[0] != probe:
            raise ValueError(
                f"the model must return one output per example along dim 0; on {probe} examples it "
                f"returned shape {tuple(out.shape)}."
            )
        spec = resolve_loss(loss, out, y[:probe])
        y = spec.prepare_targets(out, y)
        with torch.no_grad():
            val = spec.check_scalar(spec.mean(out, y[:probe]))
        if spec.name == "callable" and spec.per_sample is None:
            chunk_size = max(chunk_size, n)  # not known to be a per-example mean: no chunking
        self.flat = fm
        self.loss_spec: LossSpec = spec
        self.n = n
        self.d = fm.d
        self.w = fm.w_star
        self.chunks = [(x[i:i + chunk_size], y[i:i + chunk_size]) for i in range(0, n, chunk_size)]
        self.weights = [xc.shape[0] / n for xc, _ in self.chunks]
        a = _activation_numel(fm, x[:1])
        csize = max(xc.shape[0] for xc, _ in self.chunks)
        per_vec = 8 * (8 * csize * a + 4 * self.d)
        self.batch = int(max(1, min(256, WORK_BUDGET_BYTES // per_vec)))
        self._cached = None
        self._vmap_ok = True
        self.n_hvp = 0
        if not torch.isfinite(val):
            raise ValueError(f"the loss at the current parameters is not finite ({float(val)}).")
        super().__init__(dtype=np.float64, shape=(self.d, self.d))

    # -- autodiff -----------------------------------------------------------------------------
    def _chunk_loss(self, c: int) -> Callable[[torch.Tensor], torch.Tensor]:
        xc, yc = self.chunks[c]
        fm, spec = self.flat, self.loss_spec

        def f(w):
            return spec.check_scalar(spec.mean(fm.forward(w, xc), yc))

        return f

    def _vjp(self, c: int):
        if len(self.chunks) == 1 and self._cached is not None:
            return self._cached
        g, vjp_fn = torch.func.vjp(torch.func.grad(self._chunk_loss(c)), self.w)
        if len(self.chunks) == 1:
            self._cached = vjp_fn
        return vjp_fn

    def _apply(self, vjp_fn, V: torch.Tensor) -> torch.Tensor:
        if self._vmap_ok and V.shape[0] > 1:
            try:
                return torch.func.vmap(lambda v: vjp_fn(v)[0])(V)
            except Exception:  # e.g. a model with data-dependent control flow
                self._vmap_ok = False
        return torch.stack([vjp_fn(v)[0] for v in V])

    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Rows ``H v`` for the rows ``v`` of ``V`` (shape ``(b, d)`` or ``(d,)``), float64."""
        V = torch.as_tensor(V, dtype=torch.float64, device=self.w.device)
        single = V.ndim == 1
        if single:
            V = V.unsqueeze(0)
        out = torch.zeros_like(V)
        for c, wc in enumerate(self.weights):
            vjp_fn = self._vjp(c)
            for i in range(0, V.shape[0], self.batch):
                out[i:i + self.batch] += wc * self._apply(vjp_fn, V[i:i + self.batch])
        self.n_hvp += V.shape[0]
        return out[0] if single else out

    def _matvec(self, v):
        v = torch.from_numpy(np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(-1)))
        return self.torch_matmat(v).cpu().numpy()

    def _matmat(self, V):
        V = torch.from_numpy(np.ascontiguousarray(np.asarray(V, dtype=np.float64).T))
        return self.torch_matmat(V).cpu().numpy().T

    def _adjoint(self):
        return self

    def dense(self) -> torch.Tensor:
        """The full d×d Hessian (float64), symmetrised; d HVPs against basis blocks."""
        _check_dense_size(self.d)
        d = self.d
        H = torch.zeros(d, d, dtype=torch.float64, device=self.w.device)
        for c, wc in enumerate(self.weights):
            vjp_fn = self._vjp(c)
            for i in range(0, d, self.batch):
                j = min(d, i + self.batch)
                E = torch.zeros(j - i, d, dtype=torch.float64, device=self.w.device)
                E[torch.arange(j - i), torch.arange(i, j)] = 1.0
                H[i:j] += wc * self._apply(vjp_fn, E)
        self.n_hvp += d
        H = (H + H.T) / 2
        if not torch.isfinite(H).all():
            raise ValueError("the Hessian contains NaN or inf at the current parameters.")
        return H

    def loss(self) -> float:
        """Mean training loss at the current parameters (float64)."""
        with torch.no_grad():
            return float(sum(wc * self._chunk_loss(c)(self.w) for c, wc in enumerate(self.weights)))

    def grad(self) -> torch.Tensor:
        """Gradient of the mean training loss at the current parameters (float64, shape (d,))."""
        return sum(wc * torch.func.grad(self._chunk_loss(c))(self.w) for c, wc in enumerate(self.weights))


def hessian_operator(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", *,
                     chunk_size: Optional[int] = None) -> HessianOperator:
    """Matrix-free Hessian of the mean training loss at the model's current parameters.

    Returns a :class:`HessianOperator` (a ``scipy.sparse.linalg.LinearOperator`` of shape (d, d),
    float64) usable with ``eigsh``, ``cg`` etc. All curvature functions of this module use it.

    Example:
        >>> op = hessian_operator(nn.Linear(3, 1), (torch.randn(20, 3), torch.randn(20)))
        >>> op.shape
        (4, 4)
    """
    return HessianOperator(model, data, loss, chunk_size=chunk_size)


def _check_dense_size(d: int, what: str = "the dense Hessian", max_d: int = EXACT_MAX_D) -> None:
    if d > max_d:
        raise ValueError(
            f"{what} has d = {d} parameters, above the exact limit EXACT_MAX_D = {max_d} "
            f"(d² float64 entries = {d * d * 8 / 2**30:.2f} GiB plus eigendecomposition work); "
            + _MATRIX_FREE_HINT + "."
        )
    need = 3.0 * d * d * 8
    avail = _available_memory()
    if need > avail:
        raise ValueError(
            f"{what} (d = {d}) needs about {need / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB "
            "of memory is available; " + _MATRIX_FREE_HINT + "."
        )


# --------------------------------------------------------------------------------------------
# Hessian and its rank
# --------------------------------------------------------------------------------------------


def hessian(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", *,
            chunk_size: Optional[int] = None) -> torch.Tensor:
    """Exact Hessian ∇²L_n(w) of the mean training loss at the model's current parameters.

    Computed in float64 on a copy of the model (``jacrev`` of ``grad``: batched reverse-over-reverse
    HVPs against the basis), with the data processed in chunks of ``chunk_size`` examples (the
    Hessian of the mean is the size-weighted sum of chunk Hessians). Parameters are ordered as
    ``model.named_parameters()`` (trainable ones only), flattened.

    Args:
        model: the network; not modified.
        data: ``(inputs, targets)``, a Dataset or a DataLoader (see :func:`slt_basins.data.as_tensors`).
        loss: ``"mse"``, ``"cross_entropy"`` or a callable ``(outputs, targets) -> scalar mean loss``.

    Returns:
        float64 tensor of shape (d, d), symmetric; units of loss / parameter².

    Raises:
        ValueError: when d > :data:`EXACT_MAX_D` (6000) or d²·8 bytes (×3 for working memory) exceed
            the available memory — use ``hessian_rank(..., method="matrix_free")``,
            ``top_eigenvalues`` or ``hessian_trace`` then; for a non-scalar loss, empty data or a
            model without trainable parameters.

    Example:
        >>> H = hessian(nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2)))
        >>> H  # L = mean((w·x)²) over 2 examples -> H = I
        tensor([[1., 0.],
                [0., 1.]], dtype=torch.float64)
    """
    fm_d = sum(p.numel() for p in model.parameters() if p.requires_grad) if isinstance(model, nn.Module) else 0
    if fm_d:
        _check_dense_size(fm_d)
    return hessian_operator(model, data, loss, chunk_size=chunk_size).dense()


def _eigvalsh_rank(H: torch.Tensor, tol, method: str) -> RankResult:
    vals = torch.linalg.eigvalsh(H).cpu().numpy()
    return rank_from_values(vals, H.shape[0], tol, method=method)


def _v0(d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(d)


def _eigsh(op: LinearOperator, k: int, which: str, seed: int = 0, **kw) -> np.ndarray:
    d = op.shape[0]
    try:
        return eigsh(op, k=k, which=which, return_eigenvectors=False, v0=_v0(d, seed), **kw)
    except ArpackNoConvergence as err:
        vals = np.asarray(err.eigenvalues)
        warnings.warn(
            f"Lanczos (eigsh, k={k}, which={which!r}) did not converge; using the {vals.size} "
            "converged eigenvalues only.",
            RuntimeWarning,
            stacklevel=3,
        )
        return vals


def _lanczos_rank(op: HessianOperator, tol, k0: int, max_k: Optional[int], seed: int) -> RankResult:
    d = op.d
    kmax = d - 1 if max_k is None else max(1, min(int(max_k), d - 1))
    k = max(1, min(int(k0), kmax))
    while True:
        vals = _eigsh(op, k, "LM", seed=seed)
        a = np.abs(vals)
        if a.size:
            t = tol if tol is not None else float(a.max()) * d * _EPS
            if a.min() <= t:
                return rank_from_values(vals, d, tol, method=f"matrix_free(eigsh k={k})", complete=False)
        if k >= kmax:
            break
        k = min(2 * k, kmax)
    if k >= d - 1 and d <= EXACT_MAX_D:  # every eigenvalue is above tol: finish densely
        return _eigvalsh_rank(op.dense(), tol, "matrix_free(dense fallback)")
    res = rank_from_values(vals, d, tol, method=f"matrix_free(eigsh k={k})", complete=False, warn=False)
    res.lower_bound = True
    warnings.warn(
        f"Lanczos found {k} eigenvalues all above tol={res.tol:.2e}; the Hessian rank is at least "
        f"{res.rank} (raise max_k to continue).",
        RankWarning,
        stacklevel=3,
    )
    return res


def hessian_rank(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", *,
                 tol: Optional[float] = None, method: str = "auto", k0: int = 16,
                 max_k: Optional[int] = None, chunk_size: Optional[int] = None,
                 seed: int = 0) -> RankResult:
    """Numerical rank of the Hessian of the mean training loss at the current parameters.

    Methods:
        ``"exact"``: ``eigvalsh`` of the float64 dense Hessian (:func:`hessian`); d ≤ EXACT_MAX_D.
        ``"matrix_free"``: Lanczos (``scipy.sparse.linalg.eigsh``, largest |eigenvalue|) on the
            HVP operator, with k = k0, 2·k0, 4·k0, … until the smallest |eigenvalue| found is at
            most ``tol``; the rank is then the count above ``tol``. Cost ≈ a few × k HVPs per round
            (each HVP ≈ 2-4 passes over the data), memory O(d·k). It is exact only when the
            spectrum has a clear gap at ``tol``: Lanczos resolves eigenvalues to ≈ eps·‖H‖, so values
            in a continuum near ``tol`` are not reliable (check ``gap_decades``). If k reaches d−1
            the dense route finishes the job (d ≤ EXACT_MAX_D); if it reaches ``max_k`` the result is
            flagged ``lower_bound=True``.
        ``"auto"``: exact if d ≤ EXACT_MAX_D, else matrix-free.

    Tolerance: absolute, default ``max|eig| · d · eps`` (as ``numpy.linalg.matrix_rank``).

    Interpretation: rank(H)/2 ≤ λ ≤ rank(H)/2 + (d − rank H)/4 at a minimum of an analytic K
    (rlct-truth.md §5.1). rank H = rank G only at zero-residual minima of a regression loss. The
    default tolerance is near float64 precision, so a residual of float32 size (targets computed
    by a float32 model) already shows up as extra rank: compute teacher targets in float64, or pass
    a ``tol`` and check ``gap_decades`` / ``ranks_at``.

    Example:
        >>> x = torch.randn(50, 3); net = nn.Linear(3, 2, bias=False)
        >>> hessian_rank(net, (x, net(x).detach())).rank
        6
    """
    tol = _check_tol(tol)
    if method not in ("auto", "exact", "matrix_free"):
        raise ValueError(f"method must be 'auto', 'exact' or 'matrix_free'; got {method!r}.")
    op = hessian_operator(model, data, loss, chunk_size=chunk_size)
    if method == "auto":
        method = "exact" if op.d <= EXACT_MAX_D else "matrix_free"
    if method == "exact":
        _check_dense_size(op.d)
        return _eigvalsh_rank(op.dense(), tol, "exact")
    if op.d == 1:
        return _eigvalsh_rank(op.dense(), tol, "matrix_free(d=1)")
    return _lanczos_rank(op, tol, k0, max_k, seed)


# --------------------------------------------------------------------------------------------
# Behavioural Jacobian G, its rank, the NTK
# --------------------------------------------------------------------------------------------


def _inputs_tensor(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        x = inputs
    elif isinstance(inputs, np.ndarray):
        x = torch.as_tensor(inputs)
    else:  # (inputs, targets) pair, Dataset or DataLoader
        x, _ = as_tensors(inputs)
    if x.ndim == 0:
        raise ValueError("inputs need a leading example dimension; got a 0-d tensor.")
    if x.shape[0] == 0:
        raise ValueError(
            f"inputs have a batch size of 0 (shape {tuple(x.shape)}); G needs at least one example."
        )
    return x


def behaviour_jacobian(model: nn.Module, inputs: Any, output: str = "raw", *,
                       chunk_size: Optional[int] = None) -> torch.Tensor:
    """The behavioural Jacobian G = ∂(outputs on the training inputs)/∂w, in float64.

    One row per training output: example i's outputs (flattened, k per example) occupy rows
    ``i·k … i·k + k − 1``; columns are the flattened trainable parameters (``named_parameters``
    order). Computed per example with ``torch.func.vmap(jacrev)`` on a float64 copy of the model,
    ``chunk_size`` examples at a time (models that cannot be vmapped per example, e.g. BatchNorm in
    training mode, fall back to one full-batch ``jacrev``).

    Args:
        inputs: tensor of inputs (n, …), or ``(inputs, targets)`` / Dataset / DataLoader.
        output: ``"raw"`` (model outputs, e.g. regression outputs or logits) or ``"probs"``
            (softmax over the last output dimension first; the behaviour of a classifier whose
            Gauss-Newton rank equals rank G, rlct-truth.md §5.2).

    Returns:
        float64 tensor of shape (n·k, d); units of output / parameter.

    Raises:
        ValueError: empty inputs, unknown ``output``, ``output="probs"`` on a model whose last
            output dimension is 1, or G too large for memory.

    Example:
        >>> G = behaviour_jacobian(nn.Linear(3, 2, bias=False), torch.eye(3))
        >>> G.shape
        torch.Size([6, 6])
    """
    if output not in ("raw", "probs"):
        raise ValueError(f"output must be 'raw' or 'probs'; got {output!r}.")
    x = _inputs_tensor(inputs)
    fm = _float64_model(model)
    x = x.to(device=fm.device, dtype=torch.float64) if x.is_floating_point() else x.to(fm.device)
    n, w = int(x.shape[0]), fm.w_star
    with torch.no_grad():
        out1 = fm.forward(w, x[:1])
    if not isinstance(out1, torch.Tensor) or out1.ndim == 0:
        raise ValueError("the model must return a tensor of outputs with a leading example dimension.")
    if output == "probs" and (out1.ndim < 2 or out1.shape[-1] == 1):
        raise ValueError(
            f"output='probs' applies a softmax over the last output dimension, but the model's "
            f"outputs have shape {tuple(out1.shape)} (last dimension "
            f"{out1.shape[-1] if out1.ndim >= 2 else 'missing'}): these are not a classifier's "
            "logits. Use output='raw'."
        )
    k = int(out1[0].numel())
    d = fm.d
    need = 8.0 * n * k * d
    if need > _available_memory() / 2:
        raise ValueError(
            f"G has n·k × d = {n * k} × {d} float64 entries ({need / 2**30:.2f} GiB), too large for "
            f"memory; use fewer inputs or the Hessian's matrix-free routes ({_MATRIX_FREE_HINT})."
        )

    def behaviour(wv, xb):
        o = fm.forward(wv, xb)
        if output == "probs":
            o = torch.softmax(o, dim=-1)
        return o.reshape(xb.shape[0], -1)

    def one(wv, xi):
        return behaviour(wv, xi.unsqueeze(0)).reshape(-1)

    a = _activation_numel(fm, x[:1])
    per_example = 8 * (3 * k * d + 4 * k * a)
    cs = chunk_size or max(1, min(DEFAULT_CHUNK_SIZE, WORK_BUDGET_BYTES // per_example))
    per_ex_jac = torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0))
    try:
        blocks = [per_ex_jac(w, x[i:i + cs]) for i in range(0, n, cs)]
        G = torch.cat(blocks).reshape(n * k, d)
    except Exception:  # not vmappable per example: one full-batch Jacobian
        G = torch.func.jacrev(lambda wv: behaviour(wv, x).reshape(-1))(w)
    if not torch.isfinite(G).all():
        raise ValueError("the behavioural Jacobian contains NaN or inf at the current parameters.")
    return G.detach()


def g_rank(model: nn.Module, inputs: Any, *, output: str = "raw", tol: Optional[float] = None,
           chunk_size: Optional[int] = None) -> RankResult:
    """Numerical rank of the behavioural Jacobian G (see :func:`behaviour_jacobian`).

    Read from G's own singular values (``torch.linalg.svdvals`` of the float64 G, not GᵀG, which
    would square the condition number). Default tolerance ``σ_max · max(n·k, d) · eps``.

    At a zero-residual minimum of MSE, rank H = rank G; G-rank/2 is a lower bound on the LLC
    (exact only at Morse–Bott points). For softmax + cross-entropy use ``output="probs"``: its rank
    equals the rank of the cross-entropy Gauss–Newton matrix, which is below the logits' rank G.

    Example:
        >>> g_rank(nn.Linear(3, 2, bias=False), torch.randn(10, 3)).rank
        6
    """
    tol = _check_tol(tol)
    G = behaviour_jacobian(model, inputs, output, chunk_size=chunk_size)
    s = torch.linalg.svdvals(G).cpu().numpy()
    return rank_from_values(s, max(G.shape), tol, method=f"svd(G, output={output!r})")


def ntk(model: nn.Module, inputs: Any, *, output: str = "raw") -> torch.Tensor:
    """Empirical neural tangent kernel Θ = G Gᵀ on the inputs, float64, shape (n·k, n·k).

    Entry ``(i·k + a, j·k + b)`` is ⟨∂f_a(x_i)/∂w, ∂f_b(x_j)/∂w⟩; units of output². Its rank equals
    rank G.

    Example:
        >>> ntk(nn.Linear(2, 1, bias=False), torch.eye(2))  # G = I for a linear model on the basis
        tensor([[1., 0.],
                [0., 1.]], dtype=torch.float64)
    """
    G = behaviour_jacobian(model, inputs, output)
    return G @ G.T


# --------------------------------------------------------------------------------------------
# Trace, top eigenvalues, damped log-determinant
# --------------------------------------------------------------------------------------------


class TraceResult(NamedTuple):
    """Hutchinson estimate of tr H: ``estimate`` ± ``stderr`` (= sample std / √num_samples)."""

    estimate: float
    stderr: float
    num_samples: int


@dataclass
class LogDetResult:
    """``log det(H + δI)``: ``value`` (nats), ``stderr`` (0.0 for the exact route), ``method``,
    ``delta``, ``num_probes`` and ``lanczos_steps`` (SLQ only)."""

    value: float
    stderr: float
    method: str
    delta: float
    num_probes: Optional[int] = None
    lanczos_steps: Optional[int] = None


def _rademacher(b: int, d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (b, d), generator=gen).to(torch.float64).mul_(2).sub_(1)


def hessian_trace(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", *,
                  num_samples: int = 100, seed: int = 0,
                  chunk_size: Optional[int] = None) -> TraceResult:
    """Hutchinson estimate of the Hessian trace tr ∇²L_n(w) (units: loss / parameter²).

    ``tr H ≈ mean_j z_jᵀ H z_j`` with ``num_samples`` Rademacher probes ``z_j`` (seeded by ``seed``),
    HVPs batched with vmap. ``stderr`` is the sample standard deviation / √num_samples; the
    estimator is unbiased, and its variance is 2 Σ_{i≠j} H_ij². Cost: ``num_samples`` HVPs.

    Example:
        >>> x = torch.randn(100, 4)
        >>> t = hessian_trace(nn.Linear(4, 1), (x, torch.randn(100)), num_samples=50)
        >>> t.estimate > 0
        True
    """
    num_samples = int(num_samples)
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 (for a standard error); got {num_samples}.")
    op = hessian_operator(model, data, loss, chunk_size=chunk_size)
    gen = torch.Generator().manual_seed(int(seed))
    est = []
    for i in range(0, num_samples, op.batch):
        Z = _rademacher(min(op.batch, num_samples - i), op.d, gen).to(op.w.device)
        est.append((Z * op.torch_matmat(Z)).sum(dim=1))
    e = torch.cat(est).cpu().numpy()
    return TraceResult(float(e.mean()), float(e.std(ddof=1) / math.sqrt(num_samples)), num_samples)


def top_eigenvalues(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", k: int = 10,
                    *, method: str = "auto", chunk_size: Optional[int] = None,
                    seed: int = 0) -> np.ndarray:
    """The k largest (algebraic) eigenvalues of the Hessian, descending, as a float64 numpy array.

    ``method="exact"`` uses ``eigvalsh`` of the dense Hessian; ``"matrix_free"`` uses Lanczos
    (``eigsh``, ``which="LA"``) on the HVP operator (cost: a few × k HVPs, more when eigenvalues
    cluster); ``"auto"`` is exact for d ≤ TOP_EXACT_MAX_D (1000) or k ≥ d − 1, else matrix-free.
    Units: loss / parameter². The largest eigenvalue is the classic "sharpness".

    Example:
        >>> top_eigenvalues(nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2)), k=1)
        array([1.])
    """
    k = int(k)
    if method not in ("auto", "exact", "matrix_free"):
        raise ValueError(f"method must be 'auto', 'exact' or 'matrix_free'; got {method!r}.")
    op = hessian_operator(model, data, loss, chunk_size=chunk_size)
    if not 1 <= k <= op.d:
        raise ValueError(f"k must be between 1 and d = {op.d}; got {k}.")
    if method == "auto":
        method = "exact" if (op.d <= TOP_EXACT_MAX_D or k >= op.d - 1) else "matrix_free"
    if method == "exact" or k >= op.d:
        vals = torch.linalg.eigvalsh(op.dense()).cpu().numpy()
    else:
        vals = _eigsh(op, k, "LA", seed=seed)
    return np.sort(vals)[::-1][:k].copy()


def _slq_logdet(op: HessianOperator, delta: float, num_probes: int, steps: int, seed: int):
    """Stochastic Lanczos quadrature for tr log(H + δI); returns per-probe estimates (numpy)."""
    d = op.d
    m = max(1, min(int(steps), d))
    gen = torch.Generator().manual_seed(int(seed))
    per_probe = []
    # Lanczos with full reorthogonalisation stores m vectors per probe: size batches to memory.
    b_mem = max(1, int(WORK_BUDGET_BYTES // (8 * d * (m + 4))))
    b_max = max(1, min(op.batch, b_mem))
    for start in range(0, num_probes, b_max):
        b = min(b_max, num_probes - start)
        Q = torch.zeros(m, b, d, dtype=torch.float64, device=op.w.device)
        q = _rademacher(b, d, gen).to(op.w.device) / math.sqrt(d)
        alphas = torch.zeros(b, m, dtype=torch.float64)
        betas = torch.zeros(b, m, dtype=torch.float64)
        length = torch.full((b,), m, dtype=torch.long)
        active = torch.ones(b, dtype=torch.bool)
        q_prev = torch.zeros_like(q)
        beta_prev = torch.zeros(b, dtype=torch.float64, device=op.w.device)
        scale = None
        for j in range(m):
            Q[j] = q
            wv = op.torch_matmat(q) + delta * q
            alpha = (wv * q).sum(1)
            wv = wv - alpha[:, None] * q - beta_prev[:, None] * q_prev
            for _ in range(2):  # full reorthogonalisation (twice is enough)
                coef = torch.einsum("jbd,bd->jb", Q[: j + 1], wv)
                wv = wv - torch.einsum("jb,jbd->bd", coef, Q[: j + 1])
            beta = wv.norm(dim=1)
            alpha_c, beta_c = alpha.cpu(), beta.cpu()
            alphas[:, j] = torch.where(active, alpha_c, torch.zeros_like(alpha_c))
            if scale is None:
                scale = float(alpha_c.abs().max()) + delta
            broke = active & (beta_c <= 1e-10 * scale)
            length[broke] = j + 1
            active = active & ~broke
            if j == m - 1 or not bool(active.any()):
                break
            betas[:, j] = torch.where(active, beta_c, torch.zeros_like(beta_c))
            act = active.to(wv.device)
            q_prev = q
            safe = torch.where(act, beta, torch.ones_like(beta))
            q = torch.where(act[:, None], wv / safe[:, None], torch.zeros_like(wv))
            beta_prev = torch.where(act, beta, torch.zeros_like(beta))
        for i in range(b):
            L = int(length[i])
            T = torch.diag(alphas[i, :L])
            if L > 1:
                off = betas[i, : L - 1]
                T = T + torch.diag(off, 1) + torch.diag(off, -1)
            theta, U = torch.linalg.eigh(T)
            if float(theta.min()) <= 0:
                raise ValueError(
                    f"H + δI is not positive definite (a Ritz value of H + δI is {float(theta.min()):.3e} "
                    f"≤ 0, so H has an eigenvalue below −δ = {-delta:.3e}); raise delta."
                )
            per_probe.append(d * float((U[0] ** 2 * torch.log(theta)).sum()))
    return np.asarray(per_probe)


def damped_logdet(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse",
                  delta: float = 1e-3, *, method: str = "auto", num_probes: int = 30,
                  lanczos_steps: int = 60, seed: int = 0,
                  chunk_size: Optional[int] = None) -> LogDetResult:
    """``log det(H + δI)`` of the loss Hessian: a scale-fixed "basin volume" proxy (nats).

    ``δ`` plays the role of weight decay / a prior precision: flat directions contribute ``log δ``
    each instead of −∞ (basin-flatness.md claim 5). Larger is sharper; a smaller basin volume.

    Methods:
        ``"exact"``: Σ log(λ_i + δ) over the eigenvalues of the dense Hessian (d ≤ EXACT_MAX_D).
            Requires H + δI positive definite.
        ``"slq"``: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): ``num_probes``
            Rademacher probes, ``lanczos_steps`` Lanczos steps each (full reorthogonalisation),
            ``tr log(H + δI) ≈ d · mean_j Σ_i τ_{ij}² log θ_{ij}``; ``stderr`` = std / √num_probes.
            The quadrature is exact per probe once ``lanczos_steps`` ≥ the number of distinct
            eigenvalues; otherwise it is biased when δ is tiny relative to λ_max (raise the steps).
            Cost: num_probes × lanczos_steps HVPs; memory num_probes-batch × lanczos_steps × d.
        ``"auto"``: exact if d ≤ EXACT_MAX_D, else SLQ.

    Raises:
        ValueError: if ``delta <= 0``, or H has an eigenvalue below −δ (raise δ).

    Example:
        >>> r = damped_logdet(nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2)), delta=1.0)
        >>> round(r.value, 6)  # 2·log(1 + 1)
        1.386294
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta <= 0:
        raise ValueError(f"delta must be a positive finite number; got {delta!r}.")
    if method not in ("auto", "exact", "slq"):
        raise ValueError(f"method must be 'auto', 'exact' or 'slq'; got {method!r}.")
    op = hessian_operator(model, data, loss, chunk_size=chunk_size)
    if method == "auto":
        method = "exact" if op.d <= EXACT_MAX_D else "slq"
    if method == "exact":
        _check_dense_size(op.d)
        lam = torch.linalg.eigvalsh(op.dense())
        lo = float(lam.min())
        if lo + delta <= 0:
            raise ValueError(
                f"H + δI is not positive definite: H has eigenvalue {lo:.3e} below −δ = {-delta:.3e}; "
                "raise delta (or evaluate at a minimum)."
            )
        return LogDetResult(float(torch.log(lam + delta).sum()), 0.0, "exact", delta)
    num_probes = int(num_probes)
    if num_probes < 2:
        raise ValueError(f"num_probes must be at least 2 (for a standard error); got {num_probes}.")
    if int(lanczos_steps) < 1:
        raise ValueError(f"lanczos_steps must be at least 1; got {lanczos_steps}.")
    e = _slq_logdet(op, delta, num_probes, int(lanczos_steps), seed)
    return LogDetResult(float(e.mean()), float(e.std(ddof=1) / math.sqrt(num_probes)), "slq", delta,
                        num_probes, int(min(lanczos_steps, op.d)))
