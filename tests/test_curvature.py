"""Tests for slt_basins.curvature and slt_basins.operators: Hessian / G ranks against known formulas
(docs/flatness.md; Singh, Bachmann & Hofmann 2021, arXiv:2106.16225), and every algorithm on an
operator passed directly (op=), against exact answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls
from scipy.sparse.linalg import LinearOperator, aslinearoperator
from torch import nn

from slt_basins.operators import HessianOperator, JacobianOperator, as_operator, g_inputs, jacobian_operator
from slt_basins.curvature import (
    EXACT_MAX_D,
    LogDetResult,
    RankWarning,
    TraceResult,
    behaviour_jacobian,
    damped_logdet,
    g_rank,
    hessian,
    hessian_operator,
    hessian_rank,
    hessian_trace,
    matrix_rank,
    ntk,
    rank_from_values,
    top_eigenvalues,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def dln(widths, seed=0):
    """Bias-free deep linear network in float64 with standard-normal weights (a generic point)."""
    g = _gen(seed)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    m = nn.Sequential(*layers).to(F64)
    with torch.no_grad():
        for lay in layers:
            lay.weight.copy_(torch.randn(lay.weight.shape, generator=g, dtype=F64))
    return m


def dln_teacher(widths, r, seed=0):
    """DLN whose every layer is W_l = U_l V_lᵀ of rank r (so the product has rank r)."""
    g = _gen(seed)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    m = nn.Sequential(*layers).to(F64)
    with torch.no_grad():
        for lay in layers:
            o, i = lay.weight.shape
            U = torch.randn(o, r, generator=g, dtype=F64)
            V = torch.randn(i, r, generator=g, dtype=F64)
            lay.weight.copy_(U @ V.T / math.sqrt(r))
    return m


def noiseless_data(model, d_in, n=50, seed=1):
    x = torch.randn(n, d_in, generator=_gen(seed), dtype=F64)
    with torch.no_grad():
        y = model(x)
    return x, y


# ------------------------------------------------------------------------------------------
# Hessian correctness
# ------------------------------------------------------------------------------------------


def test_hessian_matches_autograd_and_chunking():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))  # float32 model
    x, y = torch.randn(37, 3), torch.randn(37, 2)
    H = hessian(net, (x, y))
    assert H.dtype == F64 and H.shape == (32, 32)
    assert next(net.parameters()).dtype == torch.float32  # the user's model is untouched
    # reference: autograd on an explicit float64 functional
    net64 = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(F64)
    net64.load_state_dict({k: v.to(F64) for k, v in net.state_dict().items()})
    x64, y64 = x.to(F64), y.to(F64)
    names = [n for n, _ in net64.named_parameters()]
    shapes = [p.shape for _, p in net64.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in net64.parameters()])

    def loss(w):
        parts = torch.split(w, [math.prod(s) for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return F.mse_loss(torch.func.functional_call(net64, params, (x64,)), y64)

    H_ref = torch.autograd.functional.hessian(loss, w0)
    assert torch.allclose(H, H_ref, atol=1e-12, rtol=1e-10)
    # chunked data (chunks of 5, 5, ..., 2): Hessian of the mean = weighted sum of chunk Hessians
    H_chunked = hessian_operator(net, (x, y), chunk_size=5).dense()
    assert torch.allclose(H_chunked, H_ref, atol=1e-12, rtol=1e-10)


def test_hessian_cross_entropy_matches_autograd():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).to(F64)
    x, y = torch.randn(20, 4, dtype=F64), torch.randint(0, 3, (20,))
    w0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    H = hessian(net, (x, y), "cross_entropy")
    fm_names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def loss(w):
        parts = torch.split(w, [math.prod(s) for s in shapes])
        params = {n: p.reshape(s) for n, p, s in zip(fm_names, parts, shapes)}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    assert torch.allclose(H, torch.autograd.functional.hessian(loss, w0), atol=1e-12)


class W2X(nn.Module):
    """f(x) = w² x: with targets 0, L = mean(w⁴ x²) ∝ w⁴ (λ = 1/4)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w**2 * x


class W1W2X(nn.Module):
    """f(x) = w1 w2 x: with targets 0, L ∝ w1² w2² (λ = 1/2, multiplicity 2)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.w[0] * self.w[1] * x


def test_hessian_vanishes_for_higher_order_potentials():
    x = torch.randn(20, 1, generator=_gen(0))
    y = torch.zeros(20, 1)
    H4 = hessian(W2X(), (x, y))
    H22 = hessian(W1W2X(), (x, y))
    assert H4.shape == (1, 1) and torch.equal(H4, torch.zeros(1, 1, dtype=F64))
    assert H22.shape == (2, 2) and torch.equal(H22, torch.zeros(2, 2, dtype=F64))
    r = hessian_rank(W1W2X(), (x, y))
    assert r.rank == 0 and r.gap_decades is None
    # away from 0 the w⁴ potential is curved: L = mean(x²) w⁴, H = 12 w² mean(x²)
    m = W2X()
    with torch.no_grad():
        m.w.fill_(0.5)
    assert float(hessian(m, (x, y))) == pytest.approx(12 * 0.25 * float((x.double() ** 2).mean()), rel=1e-12)


# ------------------------------------------------------------------------------------------
# rank H = rank G at zero-residual minima; Singh et al. at generic points
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths,r", [([4, 5, 3, 4], 2), ([5, 6, 4, 3], 1), ([3, 4, 5, 6], 3)])
def test_rank_h_equals_rank_g_at_teacher_minimum(widths, r):
    m = dln_teacher(widths, r)
    x, y = noiseless_data(m, widths[0])
    rH = hessian_rank(m, (x, y))
    rG = g_rank(m, x)
    expected = r * (widths[0] + widths[-1] - r)
    assert rH.rank == rG.rank == expected
    assert rH.gap_decades > 8 and rG.gap_decades > 8  # well-determined ranks
    # H equals its Gauss-Newton part (2/(n k)) GᵀG: the functional part vanishes at zero residual
    H = hessian(m, (x, y))
    G = behaviour_jacobian(m, x)
    GN = 2.0 / y.numel() * G.T @ G
    assert torch.allclose(H, GN, atol=1e-10 * float(H.abs().max()))
    # the NTK has the same rank
    assert matrix_rank(ntk(m, x)).rank == expected


@pytest.mark.parametrize(
    "widths,n,rank_h,rank_g,rank_hf",
    [([4, 3, 5], 3, 24, 15, 18), ([5, 6, 4, 3], 50, 57, 15, 51), ([6, 4, 4, 4, 5], 50, 76, 28, 72)],
)
def test_singh_rank_formulas_at_generic_points(widths, n, rank_h, rank_g, rank_hf):
    m = dln(widths)
    g = _gen(1)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randn(n, widths[-1], generator=g, dtype=F64)  # random targets: residual ≠ 0
    assert hessian_rank(m, (x, y)).rank == rank_h
    assert g_rank(m, x).rank == rank_g  # = rank H_o, the Gauss-Newton part
    H = hessian(m, (x, y))
    G = behaviour_jacobian(m, x)
    H_f = H - 2.0 / y.numel() * G.T @ G  # functional part Σ r ∇²f
    assert matrix_rank(2.0 / y.numel() * G.T @ G).rank == rank_g
    assert matrix_rank(H_f).rank == rank_hf


def test_rank_h_exceeds_rank_g_with_noisy_labels_at_the_erm():
    """Diagonal 'squared-weight' network f(x) = Σ_j w_j² x_j at its empirical minimiser.

    The ERM is w_j = sqrt(φ_j) with φ the non-negative least-squares solution. Where noise makes the
    unconstrained coefficient negative, φ_j = 0: the column of G vanishes (∂f/∂w_j = 2 w_j x_j = 0)
    but H_jj = 4 ∂L/∂φ_j > 0 (the residual is not orthogonal to x_j). So rank H > rank G; without
    noise the teacher itself is the ERM, the residual is 0 and rank H = rank G.
    """

    class SquaredDiag(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(torch.as_tensor(w, dtype=F64))

        def forward(self, x):
            return (x * self.w**2).sum(dim=1, keepdim=True)

    p, n = 6, 40
    g = _gen(3)
    x = torch.randn(n, p, generator=g, dtype=F64)
    beta = torch.tensor([1.0, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=F64)
    # noiseless: zero residual, rank H = rank G = 2
    y0 = x @ beta
    m0 = SquaredDiag(beta.sqrt())
    assert hessian_rank(m0, (x, y0)).rank == g_rank(m0, x).rank == 2
    # noisy labels: ERM by NNLS in φ = w²
    y = y0 + 0.5 * torch.randn(n, generator=g, dtype=F64)
    phi, _ = nnls(x.numpy(), y.numpy())
    m = SquaredDiag(np.sqrt(phi))
    op = hessian_operator(m, (x, y))
    assert float(op.grad().norm()) < 1e-10  # a critical point ...
    rH, rG = hessian_rank(m, (x, y)), g_rank(m, x)
    assert np.all(rH.values > -1e-12)  # ... and a minimum (H ⪰ 0)
    n_zero = int(np.sum(phi == 0))
    assert 0 < n_zero < p
    assert rG.rank == p - n_zero
    assert rH.rank == p > rG.rank


def test_cross_entropy_gauss_newton_rank_below_g_rank():
    """[5,6,4,3] at a generic point with random labels (Singh, Bachmann & Hofmann 2021, arXiv:2106.16225): rank G = 15 on
    logits, rank H_o = rank G_probs = 10 (Singh's formula with k → k−1), rank H = 42."""
    widths, n = [5, 6, 4, 3], 50
    m = dln(widths)
    g = _gen(1)
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    labels = torch.randint(0, widths[-1], (n,), generator=g)
    G = behaviour_jacobian(m, x)  # logits
    assert g_rank(m, x).rank == 15
    with torch.no_grad():
        p = torch.softmax(m(x), dim=-1)
    k = widths[-1]
    A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # softmax Jacobian per example
    J = G.reshape(n, k, -1)
    H_o = torch.einsum("nkd,nkl,nle->de", J, A, J) / n  # CE Gauss-Newton part
    assert matrix_rank(H_o).rank == 10
    assert g_rank(m, x, output="probs").rank == 10
    assert hessian_rank(m, (x, labels), "cross_entropy").rank == 2 * 2 * 10 + 2 * (5 + 2) - 3 * 4
    # the probability-Jacobian is the softmax-Jacobian-weighted logit Jacobian
    G_p = behaviour_jacobian(m, x, output="probs").reshape(n, k, -1)
    assert torch.allclose(G_p, torch.einsum("nkl,nld->nkd", A, J), atol=1e-12)


# ------------------------------------------------------------------------------------------
# matrix-free routes against the exact ones
# ------------------------------------------------------------------------------------------


def test_exact_and_matrix_free_rank_agree():
    widths = [4, 5, 3, 4]
    m = dln_teacher(widths, 2)
    x, y = noiseless_data(m, widths[0])
    ex = hessian_rank(m, (x, y), method="exact")
    mf = hessian_rank(m, (x, y), method="matrix_free")
    assert ex.rank == mf.rank == 12
    assert hessian_rank(m, (x, y), method="matrix_free", chunk_size=7).rank == 12
    assert mf.method.startswith("matrix_free") and not mf.lower_bound
    assert mf.gap_decades > 8
    np.testing.assert_allclose(mf.values[:12], ex.values[:12], rtol=1e-9)
    assert hessian_rank(m, (x, y)).method == "exact"  # auto, small d


def test_matrix_free_rank_full_rank_falls_back_to_dense():
    widths = [6, 4, 4, 4, 5]
    m = dln(widths)
    g = _gen(1)
    x, y = torch.randn(50, 6, generator=g, dtype=F64), torch.randn(50, 5, generator=g, dtype=F64)
    r = hessian_rank(m, (x, y), method="matrix_free")
    assert r.rank == 76 and r.gap_decades is None


def test_lanczos_lower_bound_flagged():
    widths = [5, 6, 4, 3]
    m = dln(widths)
    g = _gen(1)
    x, y = torch.randn(50, 5, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64)
    with pytest.warns(RankWarning, match="at least"):
        r = hessian_rank(m, (x, y), method="matrix_free", k0=8, max_k=16)
    assert r.lower_bound and r.rank == 16


def test_hutchinson_trace_within_three_stderr():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 2))
    data = (torch.randn(80, 6), torch.randn(80, 2))
    exact = float(torch.trace(hessian(net, data)))
    t = hessian_trace(net, data, num_samples=200, seed=0)
    assert isinstance(t, TraceResult) and t.num_samples == 200
    assert 0 < t.stderr < 0.5 * abs(exact)
    assert abs(t.estimate - exact) < 3 * t.stderr
    # chunked data (several HVP graphs summed) gives the same products
    t2 = hessian_trace(net, data, num_samples=200, seed=0, chunk_size=16)
    assert t2.estimate == pytest.approx(t.estimate, rel=1e-10)


def test_top_eigenvalues_exact_and_lanczos_agree():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    data = (torch.randn(64, 8), torch.randn(64, 4))
    lam = torch.linalg.eigvalsh(hessian(net, data)).numpy()[::-1]
    ex = top_eigenvalues(net, data, k=5)
    mf = top_eigenvalues(net, data, k=5, method="matrix_free")
    np.testing.assert_allclose(ex, lam[:5], rtol=1e-10)
    np.testing.assert_allclose(mf, lam[:5], rtol=1e-8)
    assert np.all(np.diff(mf) <= 0)


def test_damped_logdet_exact_and_slq():
    widths = [10, 10, 10]  # d = 200, teacher minimum so H ⪰ 0
    m = dln_teacher(widths, 3)
    x, y = noiseless_data(m, widths[0], n=100)
    lam = torch.linalg.eigvalsh(hessian(m, (x, y)))
    for delta in (1e-3, 1e-1):
        ex = damped_logdet(m, (x, y), delta=delta)
        assert isinstance(ex, LogDetResult) and ex.method == "exact" and ex.stderr == 0.0
        assert ex.value == pytest.approx(float(torch.log(lam + delta).sum()), rel=1e-12)
        slq = damped_logdet(m, (x, y), delta=delta, method="slq", num_probes=30, lanczos_steps=60)
        assert slq.method == "slq" and slq.stderr > 0
        assert abs(slq.value - ex.value) < slq.stderr


def test_damped_logdet_rejects_indefinite_hessian():
    m = dln([5, 6, 4, 3])
    g = _gen(1)
    data = (torch.randn(50, 5, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64))
    with pytest.raises(ValueError, match="below −δ"):
        damped_logdet(m, data, delta=1e-3)
    with pytest.raises(ValueError, match="raise delta"):
        damped_logdet(m, data, delta=1e-3, method="slq", num_probes=4, lanczos_steps=40)


# ------------------------------------------------------------------------------------------
# rank routine on explicit matrices
# ------------------------------------------------------------------------------------------


def test_rank_from_values_conventions():
    r = rank_from_values([3.0, -1.0, 1e-17, 0.0], size=4)
    assert r.rank == 2
    assert r.tol == pytest.approx(3.0 * 4 * np.finfo(float).eps)
    assert r.gap_decades == pytest.approx(np.log10(1.0 / 1e-17))
    assert list(r.values) == [3.0, -1.0, 1e-17, 0.0]
    assert set(r.ranks_at) == {r.tol * f for f in (1e-3, 1e-2, 1e2, 1e3)}
    assert "rank=2" in repr(r) and "decades" in repr(r)
    assert rank_from_values([1.0, 0.0], size=2).gap_decades == math.inf
    assert rank_from_values([1.0, 0.5], size=2).gap_decades is None  # nothing dropped
    assert rank_from_values([0.0, 0.0], size=2).rank == 0
    with pytest.warns(RankWarning, match="ill-determined"):
        r2 = rank_from_values([1.0, 0.1], size=2, tol=0.5)
    assert r2.rank == 1 and r2.gap_decades == pytest.approx(1.0)
    assert int(r2) == 1
    # matches numpy's matrix_rank default on a random low-rank matrix
    A = np.random.default_rng(0).standard_normal((7, 3)) @ np.random.default_rng(1).standard_normal((3, 9))
    assert matrix_rank(A, hermitian=False).rank == np.linalg.matrix_rank(A) == 3


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 12),
    r=st.integers(0, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_rank_invariant_under_orthogonal_similarity(n, r, seed):
    r = min(r, n)
    rng = np.random.default_rng(seed)
    eig = np.zeros(n)
    eig[:r] = rng.uniform(0.1, 10.0, size=r) * rng.choice([-1.0, 1.0], size=r)
    A = np.diag(eig)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    B = Q @ A @ Q.T
    B = (B + B.T) / 2
    ra, rb = matrix_rank(A), matrix_rank(B)
    assert ra.rank == rb.rank == r
    np.testing.assert_allclose(np.sort(np.abs(rb.values))[::-1][:r], np.sort(np.abs(eig))[::-1][:r], rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(a=st.integers(1, 15), b=st.integers(1, 15), k=st.integers(1, 15), seed=st.integers(0, 2**31 - 1))
def test_random_product_has_rank_k(a, b, k, seed):
    k = min(k, a, b)
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((a, k)) @ rng.standard_normal((k, b))
    assert matrix_rank(M, hermitian=False).rank == k
    assert matrix_rank(M @ M.T).rank == k  # symmetric PSD route


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_error():
    net = nn.Linear(3, 2)
    data = (torch.randn(10, 3), torch.randn(10, 2))
    with pytest.raises(ValueError, match="scalar"):
        hessian(net, data, loss=lambda o, t: (o - t).pow(2).mean(dim=1))
    with pytest.raises(ValueError, match="scalar"):
        hessian_rank(net, data, loss=lambda o, t: (o - t).pow(2).sum(dim=0))
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        hessian(frozen, data)
    with pytest.raises(ValueError, match="no trainable parameters"):
        g_rank(frozen, data[0])
    with pytest.raises(ValueError, match="0 examples|empty"):
        hessian(net, (torch.zeros(0, 3), torch.zeros(0, 2)))
    with pytest.raises(ValueError, match="batch size of 0"):
        behaviour_jacobian(net, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="not a classifier"):
        g_rank(nn.Linear(3, 1), data[0], output="probs")
    with pytest.raises(ValueError, match="output must be"):
        behaviour_jacobian(net, data[0], output="logits")
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="tol"):
            hessian_rank(net, data, tol=bad)
        with pytest.raises(ValueError, match="tol"):
            g_rank(net, data[0], tol=bad)
        with pytest.raises(ValueError, match="tol"):
            rank_from_values([1.0], size=1, tol=bad)
    with pytest.raises(ValueError, match="delta"):
        damped_logdet(net, data, delta=0.0)
    with pytest.raises(ValueError, match="method"):
        hessian_rank(net, data, method="lanczos")
    with pytest.raises(ValueError, match="symmetric"):
        matrix_rank(np.array([[1.0, 2.0], [0.0, 1.0]]))


def test_exact_route_refuses_large_d_and_names_matrix_free_route():
    big = nn.Linear(100, 61)  # d = 6161 > EXACT_MAX_D
    assert sum(p.numel() for p in big.parameters()) > EXACT_MAX_D
    data = (torch.randn(4, 100), torch.randn(4, 61))
    with pytest.raises(ValueError, match='method="matrix_free"') as err:
        hessian(big, data)
    assert "top_eigenvalues" in str(err.value) and "hessian_trace" in str(err.value)
    with pytest.raises(ValueError, match="EXACT_MAX_D"):
        hessian_rank(big, data, method="exact")
    # the matrix-free routes work there
    t = hessian_trace(big, data, num_samples=4)
    assert math.isfinite(t.estimate)
    assert top_eigenvalues(big, data, k=2).shape == (2,)


# ------------------------------------------------------------------------------------------
# every algorithm on an operator passed directly (op=)
# ------------------------------------------------------------------------------------------

EIG = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0, 0.0])  # rank 5, trace 11.5


def rotated(eig, seed=0):
    """Q diag(eig) Qᵀ for a random orthogonal Q: a dense symmetric matrix with known spectrum."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((eig.size, eig.size)))
    return (Q * eig) @ Q.T


def test_rank_and_top_eigenvalues_of_a_known_operator():
    op = aslinearoperator(rotated(EIG))
    for method in ("exact", "matrix_free"):
        r = hessian_rank(op=op, method=method, k0=2)
        assert r.rank == 5 and not r.lower_bound and r.gap_decades > 10
    np.testing.assert_allclose(hessian_rank(op=op).values[:5], EIG[:5], rtol=1e-12)
    np.testing.assert_allclose(top_eigenvalues(op=op, k=3), [5.0, 3.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(top_eigenvalues(op=op, k=3, method="matrix_free"), [5.0, 3.0, 2.0], rtol=1e-10)
    np.testing.assert_allclose(hessian(op=op).numpy(), rotated(EIG), atol=1e-14)
    # arrays and tensors are operators too
    assert hessian_rank(op=rotated(EIG)).rank == hessian_rank(op=torch.as_tensor(rotated(EIG))).rank == 5


def test_trace_and_logdet_of_a_known_operator_are_exact():
    """For a diagonal matrix every Rademacher probe gives zᵀAz = tr A and d·qᵀlog(A + δI)q = log det."""
    op = aslinearoperator(np.diag(EIG))
    t = hessian_trace(op=op, num_samples=10)
    assert t.estimate == pytest.approx(11.5, rel=1e-14) and t.stderr == pytest.approx(0.0, abs=1e-12)
    delta = 0.1
    exact = float(np.sum(np.log(EIG + delta)))
    assert damped_logdet(op=op, delta=delta).value == pytest.approx(exact, rel=1e-13)
    slq = damped_logdet(op=op, delta=delta, method="slq", num_probes=4, lanczos_steps=8)
    assert slq.value == pytest.approx(exact, rel=1e-10) and slq.stderr < 1e-9
    # a rotated matrix: the same log det exactly, SLQ within its standard error
    rot = aslinearoperator(rotated(EIG))
    assert damped_logdet(op=rot, delta=delta).value == pytest.approx(exact, rel=1e-12)
    slq = damped_logdet(op=rot, delta=delta, method="slq", num_probes=200, lanczos_steps=8)
    assert abs(slq.value - exact) < 3 * slq.stderr
    t = hessian_trace(op=rot, num_samples=400)
    assert abs(t.estimate - 11.5) < 3 * t.stderr


def test_g_rank_ntk_and_jacobian_of_a_known_operator():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((12, 3)) @ rng.standard_normal((3, 7))  # rank 3, 12 × 7
    r = g_rank(op=aslinearoperator(G))
    assert r.rank == 3 and r.size == 12 and r.method == "svd(op)"
    np.testing.assert_allclose(behaviour_jacobian(op=G).numpy(), G, atol=1e-14)
    np.testing.assert_allclose(ntk(op=G).numpy(), G @ G.T, atol=1e-12)


def test_one_hessian_operator_serves_every_algorithm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    data = (torch.randn(40, 4), torch.randn(40, 2))
    op = hessian_operator(net, data)
    assert isinstance(op, HessianOperator) and isinstance(op, LinearOperator)
    assert torch.equal(hessian(op=op), hessian(net, data))
    assert hessian_rank(op=op).rank == hessian_rank(net, data).rank
    assert hessian_trace(op=op, seed=3) == hessian_trace(net, data, seed=3)
    np.testing.assert_array_equal(top_eigenvalues(op=op, k=3), top_eigenvalues(net, data, k=3))
    a, b = damped_logdet(op=op, delta=1.0), damped_logdet(net, data, delta=1.0)
    assert a.value == b.value
    assert op.n_hvp > 0  # the products ran on the shared operator


def test_jacobian_operator_products_and_gauss_newton_operator():
    """J v, Jᵀ u against the dense G; at a zero-residual minimum of MSE the Gauss–Newton operator
    2/(n k) · JᵀJ is the Hessian, so every Hessian algorithm takes it."""
    widths = [4, 5, 3, 4]
    m = dln_teacher(widths, 2)
    x, y = noiseless_data(m, widths[0])
    J = jacobian_operator(m, x, chunk_size=7)
    assert isinstance(J, JacobianOperator) and J.shape == (50 * 4, 47)
    G = J.dense()
    torch.testing.assert_close(G, behaviour_jacobian(m, x), atol=1e-13, rtol=1e-13)
    g = _gen(2)
    V, U = torch.randn(3, 47, generator=g, dtype=F64), torch.randn(2, 200, generator=g, dtype=F64)
    torch.testing.assert_close(J.torch_matmat(V), V @ G.T, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(J.torch_rmatmat(U), U @ G, atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(J.matvec(V[0].numpy()), (G @ V[0]).numpy(), atol=1e-12)
    np.testing.assert_allclose(J.rmatvec(U[0].numpy()), (G.T @ U[0]).numpy(), atol=1e-12)
    GN = (2.0 / y.numel()) * (J.H @ J)
    assert hessian_rank(op=GN).rank == hessian_rank(op=GN, method="matrix_free").rank == 12
    assert g_rank(op=J).rank == 12
    np.testing.assert_allclose(top_eigenvalues(op=GN, k=2), top_eigenvalues(m, (x, y), k=2), rtol=1e-9)


def test_op_and_model_are_alternatives():
    net = nn.Linear(3, 2)
    data = (torch.randn(10, 3), torch.randn(10, 2))
    A = np.eye(3)
    for fn in (hessian, hessian_rank, hessian_trace, top_eigenvalues, damped_logdet):
        with pytest.raises(TypeError, match="not both"):
            fn(net, data, op=A)
        with pytest.raises(TypeError, match="not both"):
            fn(op=A, chunk_size=4)
        with pytest.raises(TypeError, match="not both"):
            fn(op=A, loss="cross_entropy")
        with pytest.raises(TypeError, match="op="):
            fn()
        with pytest.raises(TypeError, match="data not given"):
            fn(net)
        with pytest.raises(ValueError, match="square"):
            fn(op=np.ones((3, 2)))
    for fn in (behaviour_jacobian, g_rank, ntk):
        with pytest.raises(TypeError, match="not both"):
            fn(net, data[0], op=A)
        with pytest.raises(TypeError, match="not both"):
            fn(op=A, output="probs")
        with pytest.raises(TypeError, match="inputs not given"):
            fn(net)
    with pytest.raises(ValueError, match="not symmetric"):
        hessian_rank(op=np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(TypeError, match="LinearOperator"):
        as_operator("H")


def test_g_inputs_budget():
    x = torch.zeros(100, 3)
    assert g_inputs(x, k=2, d=5)[0] is x
    xs, note = g_inputs(x, k=2, d=50, max_entries=1000)
    assert xs.shape[0] == 10 and "first 10 of 100" in note
    assert g_inputs(x, k=10, d=10**6, max_entries=1000)[0].shape[0] == 1  # at least one input
