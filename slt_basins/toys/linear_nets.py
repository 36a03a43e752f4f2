"""Exact learning coefficients of reduced rank regression and deep linear networks.

* :func:`rrr_rlct`: Aoyagi & Watanabe (2005), *Neural Networks* 18(7):924–933, Main Theorem: the RLCT of
  y = B A x with A ∈ R^{H×M}, B ∈ R^{N×H} and true rank r.
* :func:`dln_rlct`: Aoyagi (2024), *Neural Networks* 172:106132, Thm 1 / Def. 3 (also Furman & Lau
  2024, Thm B.1): the RLCT of f(x) = W_L ⋯ W_1 x with widths H^(1) (input), …, H^(L+1) (output) and
  true rank r. For L = 2 it coincides with :func:`rrr_rlct`.
* :class:`DeepLinearNetwork` / :class:`ReducedRankRegression`: teacher, data and ``nn.Sequential`` model
  at a **minimal** true point (every layer of rank exactly r).

**Global vs local.** Both formulas give the *global* RLCT: the minimum of the local value over the
whole set of true parameters. The LLC at a particular true parameter equals it at minimal points
(every layer of rank r; derived for L = 2, conjectured for L ≥ 3) and is in general *larger*
elsewhere, so the formula is only a lower bound there. Example: (M, H, N) = (3, 3, 3), r = 1 with A0
invertible and B0 of rank 1 is Morse–Bott with LLC 9/2, while Aoyagi–Watanabe gives 4 (``docs/ground-truth.md``).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .rlct import RLCT

__all__ = ["rrr_rlct", "dln_rlct", "DeepLinearNetwork", "ReducedRankRegression"]


def _check_int(name: str, v, minimum: int) -> int:
    if isinstance(v, np.integer):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _check_rank(r, widths: Sequence[int]) -> int:
    r = _check_int("r (true rank)", r, 0)
    if r > min(widths):
        raise ValueError(
            f"true rank r = {r} exceeds the smallest width {min(widths)} of {list(widths)}; "
            f"use 0 <= r <= {min(widths)}"
        )
    return r


def rrr_rlct(M: int, H: int, N: int, r: int) -> RLCT:
    """RLCT of reduced rank regression y = B A x (Aoyagi & Watanabe 2005), exactly.

    Args:
        M: input dimension, H: inner (bottleneck) dimension, N: output dimension (all ≥ 1).
        r: rank of the true product B0 A0, 0 ≤ r ≤ min(M, H, N).

    Returns:
        :class:`RLCT` (certified; the reason names the case 1a / 1b / 2 / 3 / 4 of the theorem).
        This is the global value; it equals the LLC at minimal points (rank A0 = rank B0 = r) and
        is only a lower bound for the LLC elsewhere (module docstring).

    Cases (Aoyagi & Watanabe 2005, Main Theorem): with N+r ≤ M+H, M+r ≤ N+H, H+r ≤ M+N:
    1a (M+H+N+r even) λ = [2(H+r)(M+N) − (M−N)² − (H+r)²]/8, m = 1;
    1b (odd) the same +1/8, m = 2. Otherwise 2: M+H < N+r, λ = (HM − Hr + Nr)/2;
    3: N+H < M+r, λ = (HN − Hr + Mr)/2; 4: M+N < H+r, λ = MN/2; all with m = 1.

    Example:
        >>> print(rrr_rlct(5, 3, 5, 1))
        lambda = 8 (8), m = 1 [certified: Aoyagi-Watanabe 2005, case 1a]
        >>> rrr_rlct(5, 3, 5, 0).value, rrr_rlct(5, 3, 5, 0).multiplicity
        (Fraction(13, 2), 2)
    """
    M = _check_int("M", M, 1)
    H = _check_int("H", H, 1)
    N = _check_int("N", N, 1)
    r = _check_rank(r, (M, H, N))
    src = "Aoyagi-Watanabe 2005, case "
    if M + H < N + r:
        return RLCT(Fraction(H * M - H * r + N * r, 2), 1, True, src + "2")
    if N + H < M + r:
        return RLCT(Fraction(H * N - H * r + M * r, 2), 1, True, src + "3")
    if M + N < H + r:
        return RLCT(Fraction(M * N, 2), 1, True, src + "4")
    base = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    if (M + H + N + r) % 2 == 0:
        return RLCT(Fraction(base, 8), 1, True, src + "1a")
    return RLCT(Fraction(base + 1, 8), 2, True, src + "1b")


def _check_widths(widths) -> List[int]:
    try:
        ws = list(widths)
    except TypeError:
        raise ValueError(f"widths must be a sequence of positive integers, got {widths!r}") from None
    if len(ws) < 2:
        raise ValueError(
            f"widths must list at least 2 sizes (input and output, i.e. at least one layer), got {ws}"
        )
    return [_check_int(f"widths[{i}]", w, 1) for i, w in enumerate(ws)]


def dln_rlct(widths: Sequence[int], r: int) -> RLCT:
    """RLCT of a deep linear network f(x) = W_L ⋯ W_1 x (Aoyagi 2024), exactly.

    Args:
        widths: [H^(1) (input), H^(2), …, H^(L+1) (output)], all ≥ 1, at least 2 entries.
            W_l has shape (H^(l+1), H^(l)).
        r: rank of the true product, 0 ≤ r ≤ min(widths).

    Method (Aoyagi 2024, Thm 1 / Def. 3): M^(s) = H^(s) − r. The unique set S (|S| = ℓ+1, ℓ ≥ 1) is a
    prefix of the sorted M's (ties never split) with Σ_S M ≥ ℓ·max_S M and Σ_S M < ℓ·min_{∉S} M.
    With Σ = Σ_S M, M̄ = ⌈Σ/ℓ⌉, a = Σ − (M̄−1)ℓ:
    λ = [−r² + r(H^(1) + H^(L+1))]/2 + a(ℓ−a)/(4ℓ) − ℓ(ℓ−1)/4·(Σ/ℓ)² + ½ Σ_{s<t∈S} M^(s)M^(t),
    m = a(ℓ−a) + 1. The m formula is the one coded by Lau et al.; it matches Aoyagi–Watanabe for
    L = 2 and the monomial result for widths [1,…,1], and is unconfirmed in print for L ≥ 3.

    Global value: equals the LLC at minimal points (every layer of rank r), otherwise a lower bound.

    Example:
        >>> print(dln_rlct([4, 5, 3, 4], 2))
        lambda = 7 (7), m = 2 [certified: Aoyagi 2024 (width indices S = {1, 3, 4}, l = 2)]
        >>> dln_rlct([2] * 11, 0).multiplicity
        17
    """
    H = _check_widths(widths)
    r = _check_rank(r, H)
    Ms = [h - r for h in H]
    order = sorted(range(len(Ms)), key=lambda i: Ms[i])
    sm = [Ms[i] for i in order]
    found = []
    for size in range(2, len(sm) + 1):
        if size < len(sm) and sm[size - 1] == sm[size]:
            continue  # would split a tie: condition 1 fails
        ell = size - 1
        S = sm[:size]
        total = sum(S)
        rest_min = sm[size] if size < len(sm) else None
        if total < ell * max(S):
            continue
        if rest_min is not None and not total < ell * rest_min:
            continue
        found.append(size)
    if len(found) != 1:  # pragma: no cover - the theorem guarantees uniqueness
        raise RuntimeError(f"internal error: {len(found)} index sets S found for widths {H}, r = {r}")
    size = found[0]
    ell = size - 1
    S = sm[:size]
    total = sum(S)
    Mbar = -(-total // ell)
    a = total - (Mbar - 1) * ell
    pair = sum(S[i] * S[j] for i in range(size) for j in range(i + 1, size))
    lam = (
        Fraction(-r * r + r * (H[0] + H[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pair, 2)
    )
    m = a * (ell - a) + 1
    S_idx = sorted(order[:size])
    S_txt = "{" + ", ".join(str(i + 1) for i in S_idx) + "}"
    return RLCT(lam, m, True, f"Aoyagi 2024 (width indices S = {S_txt}, l = {ell})")


class DeepLinearNetwork:
    """A deep linear network teacher–student set-up at a minimal true point.

    f(x) = W_L ⋯ W_1 x, widths [H^(1) (input), …, H^(L+1) (output)], true product of rank r.

    Args:
        widths: layer sizes, at least 2, all ≥ 1.
        r: true rank, 0 ≤ r ≤ min(widths).
        teacher_seed: default seed for :meth:`teacher`, :meth:`model` and :meth:`dataset`.

    The teacher has **every layer of rank exactly r**: W_l = U_l diag(s_l) V_lᵀ with U_l, V_l having
    r orthonormal columns (QR of Gaussians) and s_l ~ U[0.5, 1.5], resampled until the product has
    rank r. At such minimal points the LLC equals :meth:`rlct` (Aoyagi's global value; derived for
    L = 2, conjectured for L ≥ 3); at other true points it is only a lower bound (``docs/ground-truth.md``).
    For r = 0 all weights are 0.

    Data (:meth:`dataset`): x ~ N(0, I_{H^(1)}), y = teacher(x) + noise_std·N(0, I). The population
    MSE (mean over samples and outputs) is then ‖W_L⋯W_1 − W0‖_F² / H^(L+1) + noise_std².

    Example:
        >>> dln = DeepLinearNetwork([4, 5, 3, 4], r=2)
        >>> dln.d, dln.rlct().value, dln.hessian_rank()
        (47, Fraction(7, 1), 12)
        >>> x, y = dln.dataset(100, seed=1)
        >>> torch.allclose(dln.model()(x), y)
        True
    """

    def __init__(self, widths: Sequence[int], r: int, teacher_seed: int = 0):
        self.widths = _check_widths(widths)
        self.r = _check_rank(r, self.widths)
        self.teacher_seed = int(teacher_seed)

    @property
    def L(self) -> int:
        """Number of weight matrices (len(widths) − 1).

        >>> DeepLinearNetwork([3, 2, 4], 1).L
        2
        """
        return len(self.widths) - 1

    @property
    def d(self) -> int:
        """Number of parameters Σ_l H^(l) H^(l+1) (no biases).

        >>> DeepLinearNetwork([3, 2, 4], 1).d  # 3·2 + 2·4
        14
        """
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))

    def rlct(self) -> RLCT:
        """Aoyagi's (global) RLCT, :func:`dln_rlct` (= the LLC at the minimal teacher point).

        Example:
            >>> DeepLinearNetwork([4, 4, 4, 4], 0).rlct().value
            Fraction(11, 2)
        """
        return dln_rlct(self.widths, self.r)

    def hessian_rank(self) -> int:
        """Rank of Hess K at a minimal true point: r(H^(1) + H^(L+1) − r) (= G-rank; ``docs/flatness.md``).

        2·λ minus this is 2·λ_DLN(H − r; 0), the singular part. Example:
            >>> DeepLinearNetwork([10, 5, 5, 5, 10], 2).hessian_rank()
            36
        """
        return self.r * (self.widths[0] + self.widths[-1] - self.r)

    def teacher(self, seed: Optional[int] = None) -> List[torch.Tensor]:
        """Teacher weights [W_1, …, W_L] (float64, W_l of shape (H^(l+1), H^(l))), each of rank r.

        Args:
            seed: defaults to ``teacher_seed``. Deterministic given the seed.

        Example:
            >>> [int(torch.linalg.matrix_rank(W)) for W in DeepLinearNetwork([4, 5, 3, 4], 2).teacher()]
            [2, 2, 2]
        """
        seed = self.teacher_seed if seed is None else int(seed)
        ws, r = self.widths, self.r
        if r == 0:
            return [torch.zeros(b, a, dtype=torch.float64) for a, b in zip(ws[:-1], ws[1:])]
        g = torch.Generator().manual_seed(seed)
        for _ in range(100):
            mats = []
            for a, b in zip(ws[:-1], ws[1:]):
                U, _ = torch.linalg.qr(torch.randn(b, r, generator=g, dtype=torch.float64))
                V, _ = torch.linalg.qr(torch.randn(a, r, generator=g, dtype=torch.float64))
                s = 0.5 + torch.rand(r, generator=g, dtype=torch.float64)
                mats.append((U * s) @ V.T)
            prod = mats[0]
            for W in mats[1:]:
                prod = W @ prod
            # each layer has rank exactly r by construction (orthonormal U, V and s >= 0.5)
            if int(torch.linalg.matrix_rank(prod)) == r:
                return mats
        raise RuntimeError("could not draw a teacher with a product of rank r")  # pragma: no cover

    def model(self, seed: Optional[int] = None) -> nn.Sequential:
        """Bias-free ``nn.Sequential`` of float64 ``nn.Linear`` layers initialised at ``teacher(seed)``.

        Example:
            >>> m = DeepLinearNetwork([3, 2, 4], 1).model()
            >>> [tuple(l.weight.shape) for l in m], m[0].bias is None
            ([(2, 3), (4, 2)], True)
        """
        layers = []
        for W in self.teacher(seed):
            lin = nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(W)
            layers.append(lin)
        net = nn.Sequential(*layers)
        net.true_rlct = self.rlct()  # read by slt_basins.compare_measures (the LLC at this minimal teacher)
        return net

    def dataset(self, n: int, seed: int, noise_std: float = 0.0, teacher_seed: Optional[int] = None):
        """Draw (x, y): x ~ N(0, I) of shape (n, H^(1)), y = x W0ᵀ + noise_std·N(0, I), float64.

        Args:
            n: number of samples. seed: seed for x and the noise.
            noise_std: label noise s.d. (0: noiseless teacher data, as in Lau et al.'s DLN runs).
            teacher_seed: which teacher (default ``self.teacher_seed``, the one :meth:`model` uses).

        Example:
            >>> x, y = DeepLinearNetwork([3, 2, 4], 1).dataset(10, seed=0, noise_std=0.1)
            >>> x.shape, y.shape, y.dtype
            (torch.Size([10, 3]), torch.Size([10, 4]), torch.float64)
        """
        n = _check_int("n", n, 1)
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(n, self.widths[0], generator=g, dtype=torch.float64)
        y = x
        for W in self.teacher(teacher_seed):
            y = y @ W.T
        if noise_std > 0:
            y = y + noise_std * torch.randn(y.shape, generator=g, dtype=torch.float64)
        return x, y

    def __repr__(self) -> str:
        return f"{type(self).__name__}(widths={self.widths}, r={self.r})"


class ReducedRankRegression(DeepLinearNetwork):
    """Reduced rank regression y = B A x: the L = 2 deep linear network with widths [M, H, N].

    ``rlct()`` uses :func:`rrr_rlct` (identical to :func:`dln_rlct` for L = 2). The teacher is a
    minimal point (rank A0 = rank B0 = r), where the LLC equals the Aoyagi–Watanabe value.

    Example:
        >>> rrr = ReducedRankRegression(5, 3, 5, r=1)
        >>> rrr.d, rrr.rlct().value, rrr.hessian_rank()
        (30, Fraction(8, 1), 9)
    """

    def __init__(self, M: int, H: int, N: int, r: int, teacher_seed: int = 0):
        super().__init__([M, H, N], r, teacher_seed)
        self.M, self.H, self.N = self.widths

    def rlct(self) -> RLCT:
        """The Aoyagi–Watanabe RLCT of reduced rank regression, :func:`rrr_rlct`.

        >>> ReducedRankRegression(5, 3, 5, r=0).rlct().value  # case 1b of the reproduction table
        Fraction(13, 2)
        """
        return rrr_rlct(self.M, self.H, self.N, self.r)

    def __repr__(self) -> str:
        return f"ReducedRankRegression(M={self.M}, H={self.H}, N={self.N}, r={self.r})"
