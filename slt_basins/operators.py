"""Curvature operators: the loss Hessian and the behavioural Jacobian of a model, matrix-free.

Each operator is a ``scipy.sparse.linalg.LinearOperator`` in **float64**, built once from
``(model, data, loss)`` (or ``(model, inputs)`` for the Jacobian) on one float64 *copy* of the
model, at the model's current parameters ``w``; the user's module is never modified or cast.
Every algorithm of :mod:`slt_basins.curvature` (ranks, trace, top eigenvalues, log-determinant)
takes such an operator through ``op=``, so one operator serves them all, and any other
``LinearOperator`` (or array) can stand in for it (see :func:`as_operator`).

* :class:`HessianOperator`: ``H = ∇²L_n(w)`` of the **mean** training loss
  ``L_n(w) = (1/n) Σ_i ℓ(f(x_i, w), y_i)`` with the conventions of
  :func:`slt_basins.losses.resolve_loss`; shape (d, d), units loss / parameter².
* :class:`JacobianOperator`: the behavioural Jacobian ``G = ∂(outputs on the inputs)/∂w``; shape
  (n·k, d), units output / parameter. ``2/(n·k) · GᵀG`` is the Gauss–Newton part of the MSE
  Hessian, and is itself an operator: ``(2 / (n * k)) * (J.H @ J)``.

Both process the data in chunks of at most ``chunk_size`` examples (the Hessian of a mean is the
chunk-size-weighted sum of chunk Hessians, so results do not depend on the chunking) and batch
products over several vectors with ``torch.func.vmap``. Besides the scipy interface
(``matvec``/``matmat``/``rmatvec``) they offer ``torch_matmat(V)`` (rows ``A v`` for the rows of a
``(b, d)`` float64 tensor), ``dense()`` (the full matrix) and the attributes ``batch`` (vectors per
product batch) and ``device``.
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, aslinearoperator
from torch import nn

from .data import as_tensors
from .functional import FlatModel
from .losses import LossSpec, resolve_loss

__all__ = [
    "EXACT_MAX_D",
    "DEFAULT_CHUNK_SIZE",
    "WORK_BUDGET_BYTES",
    "G_MAX_ENTRIES",
    "TorchOperator",
    "HessianOperator",
    "JacobianOperator",
    "hessian_operator",
    "jacobian_operator",
    "as_operator",
    "g_inputs",
    "check_dense_size",
    "check_memory",
]

#: Largest parameter count for which a dense d×d Hessian is built (d²·8 bytes = 288 MB at 6000;
#: ``eigvalsh`` then takes about 10-20 s on 2 CPU cores). Above it use the matrix-free routes.
EXACT_MAX_D = 6000
#: Default number of examples per data chunk for HVPs and Jacobians.
DEFAULT_CHUNK_SIZE = 4096
#: Working-memory budget (bytes) used to size vmap batches of HVPs / Jacobian rows.
WORK_BUDGET_BYTES = 1 << 30
#: Most float64 entries of a dense behavioural Jacobian G that :func:`slt_basins.compare_measures`
#: and the reproduce suite build (320 MB; ``svdvals`` of a 20,000 × 2,000 G takes about 15 s on
#: 2 CPU cores). Above it they use the first ``G_MAX_ENTRIES // (k·d)`` inputs (:func:`g_inputs`).
G_MAX_ENTRIES = 40_000_000

MATRIX_FREE_HINT = (
    "use the matrix-free routes instead: hessian_rank(..., method=\"matrix_free\"), "
    "top_eigenvalues(...), hessian_trace(...) or damped_logdet(..., method=\"slq\")"
)


# --------------------------------------------------------------------------------------------
# Memory checks and the float64 copy
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


def check_dense_size(d: int, what: str = "the dense Hessian", max_d: int = EXACT_MAX_D) -> None:
    """Raise ``ValueError`` (naming the matrix-free routes) if a dense d×d float64 matrix is too big.

    Too big means d > ``max_d`` (default :data:`EXACT_MAX_D`) or 3·d²·8 bytes (the matrix plus
    eigendecomposition work) above the memory available.

    Example:
        >>> check_dense_size(10)  # 800 bytes: fine
    """
    if d > max_d:
        raise ValueError(
            f"{what} has d = {d} parameters, above the exact limit EXACT_MAX_D = {max_d} "
            f"(d² float64 entries = {d * d * 8 / 2**30:.2f} GiB plus eigendecomposition work); "
            + MATRIX_FREE_HINT + "."
        )
    need = 3.0 * d * d * 8
    avail = _available_memory()
    if need > avail:
        raise ValueError(
            f"{what} (d = {d}) needs about {need / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB "
            "of memory is available; " + MATRIX_FREE_HINT + "."
        )


def check_memory(need_bytes: float, what: str) -> None:
    """Raise ``ValueError`` if ``need_bytes`` exceed half the memory available.

    Example:
        >>> check_memory(8.0 * 100, "a 10 × 10 matrix")
    """
    if need_bytes > _available_memory() / 2:
        raise ValueError(
            f"{what} needs {need_bytes / 2**30:.2f} GiB of float64 entries, too large for memory; "
            f"use fewer inputs or the matrix-free routes ({MATRIX_FREE_HINT})."
        )


def _float64_model(model: nn.Module) -> FlatModel:
    """A :class:`FlatModel` of a float64 deep copy of ``model`` (the only copy an operator makes)."""
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
            stacklevel=4,
        )
    return FlatModel(copy.deepcopy(model).to(torch.float64))


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


# --------------------------------------------------------------------------------------------
# The shared torch/scipy plumbing
# --------------------------------------------------------------------------------------------


class TorchOperator(LinearOperator):
    """A float64 ``LinearOperator`` whose products are computed on torch tensors.

    Subclasses implement ``torch_matmat(V)`` (rows ``A v`` for the rows ``v`` of ``V``, shape
    ``(b, cols)`` → ``(b, rows)``) and, unless symmetric, ``torch_rmatmat(U)`` (rows ``Aᵀ u``). The
    scipy products, ``dense()`` (the full matrix from products against basis blocks) and the
    ``batch`` / ``device`` attributes the algorithms use come from here.

    Example:
        >>> op = as_operator(np.diag([2.0, 3.0]))  # a TorchOperator view of an array
        >>> op.torch_matmat(torch.eye(2, dtype=torch.float64))
        tensor([[2., 0.],
                [0., 3.]], dtype=torch.float64)
    """

    batch: int = 64
    device: torch.device = torch.device("cpu")
    _vmap_ok: bool = True

    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def torch_rmatmat(self, U: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], V: torch.Tensor) -> torch.Tensor:
        """``fn`` applied to each row of ``V``: vmapped, or in a loop if the model cannot be vmapped."""
        if self._vmap_ok and V.shape[0] > 1:
            try:
                return torch.func.vmap(fn)(V)
            except Exception:  # e.g. a model with data-dependent control flow
                self._vmap_ok = False
        return torch.stack([fn(v) for v in V])

    def _numpy(self, fn, X):
        """scipy's column convention (a vector or columns) → torch rows → back."""
        X = np.asarray(X, dtype=np.float64)
        rows = X.reshape(1, -1) if X.ndim == 1 else X.T
        out = fn(torch.from_numpy(np.ascontiguousarray(rows)).to(self.device)).cpu().numpy()
        return out.reshape(-1) if X.ndim == 1 else out.T

    def _matvec(self, v):
        return self._numpy(self.torch_matmat, v)

    def _matmat(self, V):
        return self._numpy(self.torch_matmat, V)

    def _rmatvec(self, u):
        return self._numpy(self.torch_rmatmat, u)

    def _rmatmat(self, U):
        return self._numpy(self.torch_rmatmat, U)

    def dense(self) -> torch.Tensor:
        """The full matrix (float64 tensor of ``self.shape``), from products against basis blocks."""
        rows, cols = self.shape
        if rows == cols:
            check_dense_size(cols, "the dense operator")
        else:
            check_memory(8.0 * rows * cols, f"the dense {rows} × {cols} operator")
        blocks = []
        for i in range(0, cols, self.batch):
            j = min(cols, i + self.batch)
            E = torch.zeros(j - i, cols, dtype=torch.float64, device=self.device)
            E[torch.arange(j - i), torch.arange(i, j)] = 1.0
            blocks.append(self.torch_matmat(E))
        return torch.cat(blocks).T.contiguous()


class _ArrayOperator(TorchOperator):
    """:class:`TorchOperator` view of any ``scipy.sparse.linalg.LinearOperator`` (products on the CPU)."""

    def __init__(self, op: LinearOperator):
        self.op = op
        super().__init__(dtype=np.float64, shape=op.shape)

    def _products(self, fn, V: torch.Tensor) -> torch.Tensor:
        out = np.asarray(fn(V.detach().cpu().numpy().T), dtype=np.float64)
        return torch.from_numpy(np.ascontiguousarray(out.T))

    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:
        single = V.ndim == 1
        out = self._products(self.op.matmat, V.reshape(-1, self.shape[1]))
        return out[0] if single else out

    def torch_rmatmat(self, U: torch.Tensor) -> torch.Tensor:
        single = U.ndim == 1
        out = self._products(self.op.rmatmat, U.reshape(-1, self.shape[0]))
        return out[0] if single else out


def as_operator(op: Any) -> TorchOperator:
    """``op`` as a float64 :class:`TorchOperator`, the form every curvature algorithm works on.

    ``op`` may be a :class:`HessianOperator` / :class:`JacobianOperator` (returned as is), any
    ``scipy.sparse.linalg.LinearOperator``, a numpy array, a scipy sparse matrix or a torch tensor
    (wrapped with ``scipy.sparse.linalg.aslinearoperator``; products then run on the CPU).

    Raises:
        TypeError: if ``op`` is none of these.

    Example:
        >>> as_operator(torch.eye(3)).shape
        (3, 3)
    """
    if isinstance(op, TorchOperator):
        return op
    if isinstance(op, torch.Tensor):
        op = op.detach().cpu().to(torch.float64).numpy()
    if not isinstance(op, LinearOperator) and not hasattr(op, "shape"):
        raise TypeError(
            f"op must be a scipy.sparse.linalg.LinearOperator, an array or a tensor; got {type(op).__name__}."
        )
    lin = aslinearoperator(op)
    if len(lin.shape) != 2:
        raise ValueError(f"op must be 2-D; got shape {lin.shape}.")
    return _ArrayOperator(lin)


# --------------------------------------------------------------------------------------------
# The Hessian of the mean loss
# --------------------------------------------------------------------------------------------


def _probe_outputs(fm: FlatModel, x: torch.Tensor, probe: int) -> torch.Tensor:
    with torch.no_grad():
        out = fm.forward(fm.w_star, x[:probe])
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model must return one tensor of outputs; got {type(out).__name__}.")
    if out.ndim == 0 or out.shape[0] != probe:
        raise ValueError(
            f"the model must return one output per example along dim 0; on {probe} examples it "
            f"returned shape {tuple(out.shape)}."
        )
    return out


class HessianOperator(TorchOperator):
    """The Hessian of the mean training loss as a matrix-free ``scipy`` linear operator (float64).

    ``H = ∇²L_n(w)`` at the model's current parameters, units loss / parameter², shape (d, d),
    parameters ordered as ``model.named_parameters()`` (trainable ones), flattened. Assumes the
    loss is a mean over examples (built-in losses, or callables that decompose per example; others
    are not chunked).

    Hessian-vector products are reverse-over-reverse (the VJP of ``torch.func.grad`` of the chunk
    loss; forward-over-reverse is avoided because it fails for some losses' reductions), computed on
    one float64 copy of the model, summed over data chunks with weights ``n_chunk / n``, and batched
    over several vectors with ``torch.func.vmap`` (falling back to a loop if the model cannot be
    vmapped). With a single chunk the first-order graph is built once and reused for every product.

    Cost of one HVP: about 2-4 forward/backward passes over the data. Memory: the chunk's
    activations (×batch of vectors) plus O(d) per vector.

    Build it with :func:`hessian_operator`. Attributes: ``d``, ``n`` (examples), ``loss_spec``,
    ``flat`` (the float64 :class:`FlatModel`), ``n_hvp`` (products computed so far).
    Methods: ``matvec``/``matmat`` (numpy, via scipy), ``torch_matmat(V)`` for ``V`` of shape
    ``(b, d)`` returning ``(b, d)`` rows ``H v``, ``dense()`` for the full matrix, ``loss()``
    and ``grad()`` at the current parameters.

    Example:
        >>> op = HessianOperator(nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2)))
        >>> op.matvec(np.array([1.0, 2.0]))  # L = mean((w·x)²) over 2 examples: H = I
        array([1., 2.])
    """

    def __init__(self, model: nn.Module, data: Any, loss: Union[str, Callable] = "mse",
                 chunk_size: Optional[int] = None):
        fm = _float64_model(model)
        x, y = as_tensors(data, device=fm.device, dtype=torch.float64)
        n = int(x.shape[0])
        chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}.")
        probe = min(n, 8)
        out = _probe_outputs(fm, x, probe)
        spec = resolve_loss(loss, out, y[:probe])
        y = spec.prepare_targets(out, y)
        with torch.no_grad():
            val = spec.check_scalar(spec.mean(out, y[:probe]))
        if spec.name == "callable" and spec.per_sample is None:
            chunk_size = max(chunk_size, n)  # not known to be a per-example mean: no chunking
        self.flat, self.loss_spec, self.n, self.d = fm, spec, n, fm.d
        self.w, self.device = fm.w_star, fm.device
        self.chunks = [(x[i:i + chunk_size], y[i:i + chunk_size]) for i in range(0, n, chunk_size)]
        self.weights = [xc.shape[0] / n for xc, _ in self.chunks]
        csize = max(xc.shape[0] for xc, _ in self.chunks)
        per_vec = 8 * (8 * csize * _activation_numel(fm, x[:1]) + 4 * self.d)
        self.batch = int(max(1, min(256, WORK_BUDGET_BYTES // per_vec)))
        self._cached = None
        self._vmap_ok = True
        self.n_hvp = 0
        if not torch.isfinite(val):
            raise ValueError(f"the loss at the current parameters is not finite ({float(val)}).")
        super().__init__(dtype=np.float64, shape=(self.d, self.d))

    def _chunk_loss(self, c: int) -> Callable[[torch.Tensor], torch.Tensor]:
        xc, yc = self.chunks[c]
        fm, spec = self.flat, self.loss_spec

        def f(w):
            return spec.check_scalar(spec.mean(fm.forward(w, xc), yc))

        return f

    def _vjp(self, c: int):
        if len(self.chunks) == 1 and self._cached is not None:
            return self._cached
        _, vjp_fn = torch.func.vjp(torch.func.grad(self._chunk_loss(c)), self.w)
        if len(self.chunks) == 1:
            self._cached = vjp_fn
        return vjp_fn

    def _sum_over_chunks(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(V)
        for c, wc in enumerate(self.weights):
            vjp_fn = self._vjp(c)
            for i in range(0, V.shape[0], self.batch):
                out[i:i + self.batch] += wc * self._map(lambda v: vjp_fn(v)[0], V[i:i + self.batch])
        self.n_hvp += V.shape[0]
        return out

    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Rows ``H v`` for the rows ``v`` of ``V`` (shape ``(b, d)`` or ``(d,)``), float64.

        Example:
            >>> op = HessianOperator(nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2)))
            >>> op.torch_matmat(torch.ones(2))
            tensor([1., 1.], dtype=torch.float64)
        """
        V = torch.as_tensor(V, dtype=torch.float64, device=self.w.device)
        out = self._sum_over_chunks(V.reshape(-1, self.d))
        return out[0] if V.ndim == 1 else out

    def torch_rmatmat(self, U: torch.Tensor) -> torch.Tensor:
        """``H`` is symmetric: the same as :meth:`torch_matmat`."""
        return self.torch_matmat(U)

    def _adjoint(self):
        return self

    def dense(self) -> torch.Tensor:
        """The full d×d Hessian (float64, loss / parameter²), symmetrised; d HVPs against the basis.

        Raises ``ValueError`` if d > :data:`EXACT_MAX_D` or the matrix does not fit in memory.

        Example:
            >>> HessianOperator(nn.Linear(1, 1, bias=False), (torch.ones(1, 1), torch.zeros(1))).dense()
            tensor([[2.]], dtype=torch.float64)
        """
        check_dense_size(self.d)
        H = self._sum_over_chunks(torch.eye(self.d, dtype=torch.float64, device=self.w.device))
        H = (H + H.T) / 2
        if not torch.isfinite(H).all():
            raise ValueError("the Hessian contains NaN or inf at the current parameters.")
        return H

    def loss(self) -> float:
        """Mean training loss L_n(w) at the current parameters (float64, loss units)."""
        with torch.no_grad():
            return float(sum(wc * self._chunk_loss(c)(self.w) for c, wc in enumerate(self.weights)))

    def grad(self) -> torch.Tensor:
        """Gradient ∇L_n(w) at the current parameters (float64, shape (d,), loss / parameter)."""
        return sum(wc * torch.func.grad(self._chunk_loss(c))(self.w) for c, wc in enumerate(self.weights))


def hessian_operator(model: nn.Module, data: Any, loss: Union[str, Callable] = "mse", *,
                     chunk_size: Optional[int] = None) -> HessianOperator:
    """Matrix-free Hessian of the mean training loss at the model's current parameters.

    Returns a :class:`HessianOperator` (a ``scipy.sparse.linalg.LinearOperator`` of shape (d, d),
    float64, loss / parameter²) usable with ``eigsh``, ``cg`` etc., and by every algorithm of
    :mod:`slt_basins.curvature` through ``op=``. Building it copies the model once (in float64).

    Args:
        model: the network; not modified.
        data: ``(inputs, targets)``, a Dataset or a DataLoader (see :func:`slt_basins.data.as_tensors`).
        loss: ``"mse"``, ``"cross_entropy"`` or a callable ``(outputs, targets) -> scalar mean loss``.
        chunk_size: examples per data chunk (default :data:`DEFAULT_CHUNK_SIZE`).

    Example:
        >>> op = hessian_operator(nn.Linear(3, 1), (torch.randn(20, 3), torch.randn(20)))
        >>> op.shape
        (4, 4)
    """
    return HessianOperator(model, data, loss, chunk_size=chunk_size)


# --------------------------------------------------------------------------------------------
# The behavioural Jacobian G
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


class JacobianOperator(TorchOperator):
    """The behavioural Jacobian G = ∂(outputs on the inputs)/∂w as a float64 linear operator.

    Shape (n·k, d), units output / parameter: example i's outputs (flattened, k per example) are
    rows ``i·k … i·k + k − 1``; columns are the flattened trainable parameters
    (``named_parameters`` order). ``output="probs"`` applies a softmax over the last output
    dimension first (for classifiers: the rank of that G is the rank of the cross-entropy
    Gauss–Newton matrix; Singh, Bachmann & Hofmann 2021, arXiv:2106.16225).

    Products ``G v`` are forward-mode (``torch.func.jvp``), ``Gᵀ u`` reverse-mode (``vjp``), chunked
    over the inputs; ``dense()`` builds G per example with ``vmap(jacrev)``, ``chunk_size``
    examples at a time (models that cannot be vmapped per example, e.g. BatchNorm in training mode,
    fall back to one full-batch ``jacrev``). Attributes: ``n``, ``k``, ``d``, ``output``, ``flat``.

    Example:
        >>> J = JacobianOperator(nn.Linear(2, 1, bias=False), torch.eye(2))
        >>> J.shape, J.matvec(np.array([3.0, 4.0]))  # f(x) = w·x: G = the inputs
        ((2, 2), array([3., 4.]))
    """

    def __init__(self, model: nn.Module, inputs: Any, output: str = "raw",
                 chunk_size: Optional[int] = None):
        if output not in ("raw", "probs"):
            raise ValueError(f"output must be 'raw' or 'probs'; got {output!r}.")
        x = _inputs_tensor(inputs)
        fm = _float64_model(model)
        x = x.to(device=fm.device, dtype=torch.float64) if x.is_floating_point() else x.to(fm.device)
        out1 = _probe_outputs(fm, x, 1)
        if output == "probs" and (out1.ndim < 2 or out1.shape[-1] == 1):
            raise ValueError(
                f"output='probs' applies a softmax over the last output dimension, but the model's "
                f"outputs have shape {tuple(out1.shape)} (last dimension "
                f"{out1.shape[-1] if out1.ndim >= 2 else 'missing'}): these are not a classifier's "
                "logits. Use output='raw'."
            )
        self.flat, self.x, self.output, self.w, self.device = fm, x, output, fm.w_star, fm.device
        self.n, self.k, self.d = int(x.shape[0]), int(out1[0].numel()), fm.d
        a = _activation_numel(fm, x[:1])
        per_example = 8 * (3 * self.k * self.d + 4 * self.k * a)
        self.chunk_size = int(chunk_size or max(1, min(DEFAULT_CHUNK_SIZE, WORK_BUDGET_BYTES // per_example)))
        per_vec = 8 * (4 * min(self.chunk_size, self.n) * (a + self.k) + 4 * self.d)
        self.batch = int(max(1, min(256, WORK_BUDGET_BYTES // per_vec)))
        super().__init__(dtype=np.float64, shape=(self.n * self.k, self.d))

    def behaviour(self, w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """The flattened outputs (or probabilities) on inputs ``xb`` at parameters ``w``."""
        o = self.flat.forward(w, xb)
        if self.output == "probs":
            o = torch.softmax(o, dim=-1)
        return o.reshape(-1)

    def _chunks(self):
        for i in range(0, self.n, self.chunk_size):
            yield i * self.k, self.x[i:i + self.chunk_size]

    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Rows ``G v`` (shape ``(b, n·k)``) for the rows ``v`` of ``V`` (shape ``(b, d)``)."""
        V = torch.as_tensor(V, dtype=torch.float64, device=self.device)
        R = V.reshape(-1, self.d)
        parts = []
        for _, xc in self._chunks():
            def jv(v, xc=xc):
                return torch.func.jvp(lambda w: self.behaviour(w, xc), (self.w,), (v,))[1]
            parts.append(torch.cat([self._map(jv, R[i:i + self.batch]) for i in range(0, len(R), self.batch)]))
        out = torch.cat(parts, dim=1)
        return out[0] if V.ndim == 1 else out

    def torch_rmatmat(self, U: torch.Tensor) -> torch.Tensor:
        """Rows ``Gᵀ u`` (shape ``(b, d)``) for the rows ``u`` of ``U`` (shape ``(b, n·k)``)."""
        U = torch.as_tensor(U, dtype=torch.float64, device=self.device)
        R = U.reshape(-1, self.shape[0])
        out = torch.zeros(R.shape[0], self.d, dtype=torch.float64, device=self.device)
        for r0, xc in self._chunks():
            _, vjp_fn = torch.func.vjp(lambda w, xc=xc: self.behaviour(w, xc), self.w)
            rows = R[:, r0:r0 + xc.shape[0] * self.k]
            for i in range(0, len(R), self.batch):
                out[i:i + self.batch] += self._map(lambda u: vjp_fn(u)[0], rows[i:i + self.batch])
        return out[0] if U.ndim == 1 else out

    def dense(self) -> torch.Tensor:
        """G as a float64 tensor of shape (n·k, d); raises ``ValueError`` if it does not fit in memory.

        Example:
            >>> JacobianOperator(nn.Linear(2, 1, bias=False), torch.eye(2)).dense()
            tensor([[1., 0.],
                    [0., 1.]], dtype=torch.float64)
        """
        n, k, d, w, x = self.n, self.k, self.d, self.w, self.x
        check_memory(8.0 * n * k * d, f"G (n·k × d = {n * k} × {d})")
        per_ex_jac = torch.func.vmap(torch.func.jacrev(lambda wv, xi: self.behaviour(wv, xi[None])),
                                     in_dims=(None, 0))
        try:
            G = torch.cat([per_ex_jac(w, x[i:i + self.chunk_size]) for i in range(0, n, self.chunk_size)])
            G = G.reshape(n * k, d)
        except Exception:  # not vmappable per example: one full-batch Jacobian
            G = torch.func.jacrev(lambda wv: self.behaviour(wv, x))(w)
        if not torch.isfinite(G).all():
            raise ValueError("the behavioural Jacobian contains NaN or inf at the current parameters.")
        return G.detach()


def jacobian_operator(model: nn.Module, inputs: Any, output: str = "raw", *,
                      chunk_size: Optional[int] = None) -> JacobianOperator:
    """The behavioural Jacobian G of ``model`` on ``inputs`` as a :class:`JacobianOperator`.

    Shape (n·k, d), float64, output / parameter; the model is copied once. ``inputs`` is a tensor
    (n, …) or ``(inputs, targets)`` / Dataset / DataLoader; ``output`` is ``"raw"`` or ``"probs"``.
    At a zero-residual minimum of the MSE loss ``H = 2/(n·k) · GᵀG``, so
    ``(2 / (n * k)) * (J.H @ J)`` is then a Hessian operator too.

    Example:
        >>> J = jacobian_operator(nn.Linear(3, 2), torch.randn(5, 3))
        >>> J.shape
        (10, 8)
    """
    return JacobianOperator(model, inputs, output, chunk_size=chunk_size)


def g_inputs(x: torch.Tensor, k: int, d: int,
             max_entries: int = G_MAX_ENTRIES) -> tuple[torch.Tensor, str]:
    """The inputs on which to build a dense G within :data:`G_MAX_ENTRIES`, and a note saying so.

    Returns the first ``m = min(n, max_entries // (k·d))`` rows of ``x`` (at least one), so that G
    has at most ``max_entries`` float64 entries, and a note (``"all n inputs"`` or
    ``"first m of n inputs (G limited to … entries)"``). With fewer inputs rank G can only drop.

    Example:
        >>> g_inputs(torch.zeros(100, 3), k=2, d=50, max_entries=1000)[1]
        'first 10 of 100 inputs (G limited to 1e+03 entries)'
    """
    m = max(1, min(x.shape[0], int(max_entries) // max(1, int(k) * int(d))))
    if m < x.shape[0]:
        return x[:m], f"first {m} of {x.shape[0]} inputs (G limited to {max_entries:.0e} entries)"
    return x, f"all {x.shape[0]} inputs"
