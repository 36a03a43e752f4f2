"""slt_basins.toys: parsing, evaluation, models, input validation and docstring examples.

Reference values are the benchmark cases of tests/data/cases.json (formulas and papers in
docs/ground-truth.md); exact values are tested in test_toys_truth.py.
"""
from __future__ import annotations

import dataclasses
import doctest
import random
from fractions import Fraction

import pytest
import torch
from torch import nn

import slt_basins.toys as toys
from slt_basins.toys import (
    RLCT,
    DeepLinearNetwork,
    Polynomial,
    PolynomialRegression,
    ReducedRankRegression,
    crossing_valley,
    dln_rlct,
    finite_temperature_target,
    gaussian_target,
    multiplicity_bias,
    newton_rlct,
    power,
    rrr_rlct,
    sum_of_powers,
)


def exact_eval(K: Polynomial, point):
    out = Fraction(0)
    for exp, c in K.terms.items():
        v = c
        for x, a in zip(point, exp):
            v *= Fraction(x) ** a
        out += v
    return out


# ---------------------------------------------------------------------------------------------
# RLCT value type
# ---------------------------------------------------------------------------------------------
def test_rlct_dataclass():
    r = RLCT(Fraction(1, 2), 2, True, "crossing valley")
    assert float(r) == 0.5 and r.lam == Fraction(1, 2)
    assert str(r) == "lambda = 1/2 (0.5), m = 2 [certified: crossing valley]"
    assert "NOT certified" in str(RLCT(1, 1, False, "x"))
    assert RLCT(3, 1).value == Fraction(3) and isinstance(RLCT(3, 1).value, Fraction)
    assert RLCT(0.25).value == Fraction(1, 4)
    assert RLCT("7/8").value == Fraction(7, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = Fraction(1)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError):
            RLCT(1, bad)
    assert r == RLCT(Fraction(1, 2), 2, True, "crossing valley")


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
EQUIVALENT = [
    ("(w1-w2)**2", "w1**2 - 2*w1*w2 + w2**2"),
    ("(w1-w2)^2", "w1^2 - 2*w1*w2 + w2^2"),
    ("(w1*w2 - w3*w4)**2", "w1**2*w2**2 - 2*w1*w2*w3*w4 + w3**2*w4**2"),
    ("(w1**2+w2**2)**4", "w1**8 + 4*w1**6*w2**2 + 6*w1**4*w2**4 + 4*w1**2*w2**6 + w2**8"),
    ("w**4", "w1**4"),
    ("x**4", "w1^4"),
    ("3/2*w1**2", "1.5*w1**2"),
    ("w1**2/4", "0.25*w1**2"),
    ("-(-w1**2)", "+w1**2"),
    ("(w1*w2)**2 + (w1*w2)**4", "w1**2*w2**2 + w1**4*w2**4"),
    ("w1**2*(w2**2+w3**2)", "(w1*w2)**2+(w1*w3)**2"),
    ("(w1 + w2)*(w1 - w2)", "w1**2 - w2**2"),
    ("w1**2**1", "w1**2"),
    ("2*w1**2 - w1**2", "w1**2"),
]


@pytest.mark.parametrize("a,b", EQUIVALENT)
def test_parser_expands(a, b):
    assert Polynomial(a) == Polynomial(b)
    assert hash(Polynomial(a)) == hash(Polynomial(b))


def test_polynomial_attributes_and_printing():
    K = Polynomial("w1**2*w2**2 + w3**4")
    assert (K.d, K.degree) == (3, 4)
    assert K.terms == {(2, 2, 0): Fraction(1), (0, 0, 4): Fraction(1)}
    K.terms[(1, 1, 1)] = 5  # a copy
    assert (1, 1, 1) not in K.terms
    assert str(K) == "w1**2*w2**2 + w3**4"
    assert repr(K) == "Polynomial('w1**2*w2**2 + w3**4', d=3)"
    assert K.variables == (0, 1, 2)
    assert str(Polynomial("(w1-w2)**2")) == "w1**2 - 2*w1*w2 + w2**2"
    assert str(Polynomial("-3/2*w1**2 + w2**4/3")) == "-3/2*w1**2 + 1/3*w2**4"
    # d padding adds unused variables
    K5 = Polynomial("w1**2", d=5)
    assert K5.d == 5 and K5.variables == (0,)
    assert K5.rlct().value == Fraction(1, 2)
    # dicts
    assert Polynomial({(2, 2): 1, (0, 4): "1"}) == Polynomial("w1**2*w2**2 + w2**4")
    assert Polynomial({4: 1}) == power(2)
    assert Polynomial({(2,): 1}, d=3) == Polynomial("w1**2", d=3)
    assert Polynomial(K) == K and Polynomial(K, d=4).d == 4


def test_string_roundtrip_random():
    rng = random.Random(1)
    for _ in range(60):
        d = rng.randint(1, 4)
        terms = {}
        for _ in range(rng.randint(1, 5)):
            e = tuple(rng.randint(0, 4) for _ in range(d))
            terms[e] = Fraction(rng.randint(-9, 9), rng.randint(1, 5))
        terms[(2,) + (0,) * (d - 1)] = Fraction(1)
        K = Polynomial(terms)
        assert Polynomial(str(K), d=K.d) == K
        assert eval(repr(K), {"Polynomial": Polynomial}) == K  # noqa: S307  (repr is re-readable)


BAD_STRINGS = [
    ("w1 w2", "cannot parse"),
    ("2w1", "cannot parse"),
    ("sin(w1)", "function calls"),
    ("w1.real", "Attribute"),
    ("w1**-1", "non-negative integer"),
    ("w1**0.5", "non-negative integer"),
    ("w1**w2", "exponents must be numbers"),
    ("w1/w2", "division"),
    ("w1/0", "division"),
    ("y**2", "unknown symbol 'y'"),
    ("w0**2", "indices start at 1"),
    ("w + w1", "mixes"),
    ("3", "constant"),
    ("w1 - w1", "zero polynomial"),
    ("", "empty"),
    ("w1 < 2", "Compare"),
    ("'a'", "unsupported constant"),
    ("w1**1000", "larger than"),
    ("__import__('os')", "function calls"),
]


@pytest.mark.parametrize("text,msg", BAD_STRINGS)
def test_parser_rejects(text, msg):
    with pytest.raises(ValueError, match=msg):
        Polynomial(text)


def test_bad_constructor_inputs():
    with pytest.raises(ValueError, match="uses w3"):
        Polynomial("w3**2", d=2)
    with pytest.raises(ValueError):
        Polynomial(42)
    with pytest.raises(ValueError):
        Polynomial({(2, 0): 1, (2,): 1})
    with pytest.raises(ValueError):
        Polynomial({(-1,): 1})
    with pytest.raises(ValueError):
        Polynomial({})
    with pytest.raises(ValueError, match="constant"):
        Polynomial({(0, 0): 5})


# ---------------------------------------------------------------------------------------------
# rlct() input validation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["w1**3", "w1*w2", "-w1**2", "w1**2 - w2**2", "-w1**2*w2**2 + w1**6",
                                  "w1**2*w2 + w1**8 + w2**8", "w1"])
def test_rlct_rejects_polynomials_not_nonnegative_near_zero(expr):
    with pytest.raises(ValueError, match="not >= 0 near w = 0"):
        Polynomial(expr).rlct()


def test_rlct_other_errors():
    with pytest.raises(ValueError, match="K\\(0\\)"):
        Polynomial("1 + w1**2").rlct()
    with pytest.raises(ValueError, match="length"):
        Polynomial("w1**2*w2**2").rlct([1])
    with pytest.raises(ValueError, match="> -1"):
        Polynomial("w1**2").rlct([-1])
    with pytest.raises(ValueError):
        newton_rlct({})
    with pytest.raises(ValueError):
        newton_rlct({(2,): 1}, method="simplex")


def test_odd_monomials_off_the_compact_faces_do_not_block_certification():
    # w1^3 w2 lies in the interior of the Newton polyhedron of w1^2 + w2^2
    r = Polynomial("w1**2 + w2**2 + w1**3*w2 - 5*w1**5").rlct()
    assert (r.value, r.multiplicity, r.certified) == (1, 1, True)
    # a negative interior monomial too
    r = Polynomial("w1**2*w2**2 - 3*w1**3*w2**3 + w1**8").rlct()
    assert r.certified and r.value == Fraction(1, 2)


def test_newton_methods_agree_on_random_polynomials():
    rng = random.Random(7)
    n = 0
    while n < 25:
        d = rng.randint(2, 3)
        terms = {}
        for _ in range(rng.randint(2, 6)):
            e = tuple(2 * rng.randint(0, 3) for _ in range(d))
            if any(e):
                terms[e] = rng.randint(1, 4)
        if not terms:
            continue
        tau = [Fraction(rng.randint(0, 4), rng.randint(1, 2)) for _ in range(d)]
        a = newton_rlct(terms, tau, method="exact")
        b = newton_rlct(terms, tau, method="float")
        assert a == b
        assert a.certified
        n += 1


def test_newton_larger_blocks_and_vertex_pruning(monkeypatch):
    import slt_basins.toys.rlct as rlct_mod

    # linked blocks with many monomials: non-vertex points are pruned (exactly verified) first
    K = Polynomial("(w1**2+w2**2+w3**2+w4**2+w5**2+w6**2+w7**2+w8**2)**2")
    assert len(K.terms) == 36
    r = K.rlct()
    assert (r.value, r.multiplicity, r.certified) == (2, 1, True)  # homogeneous: d/4
    r = Polynomial("(w1**2+w2**2+w3**2+w4**2+w5**2)**2 + (w1*w2*w3*w4*w5)**2").rlct()
    assert (r.value, r.multiplicity, r.certified) == (Fraction(5, 4), 1, True)
    # pruning never changes a result: force it on for small cases and compare
    exprs = ["w1**4+w1**2*w2**2+w2**6", "(w1**2+w2**2)**4", "(w1-w2)**2", "(w1*w2 - w3*w4)**2",
             "(w1**2 - w2**2)**2", "(w1*w2)**2+(w2*w3)**2+(w1*w3)**2", "w1**2*w2**2 + w1**3*w2**3 + w1**6"]
    before = [Polynomial(e).rlct() for e in exprs]
    monkeypatch.setattr(rlct_mod, "_EXACT_COMBINATIONS", 0)
    after = [Polynomial(e).rlct() for e in exprs]
    assert before == after


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["w1**2*w2**2 + w3**4", "(w1*w2 - w3*w4)**2", "(w1-1)**2*(w1**2+w2**2)**4",
                                  "3/2*w1**2 - w1*w2 + 7", "w1**8"])
def test_call_matches_exact_value_and_autograd(expr):
    K = Polynomial(expr)
    g = torch.Generator().manual_seed(0)
    pts = [[Fraction(rng, 4) for rng in torch.randint(-6, 7, (K.d,), generator=g).tolist()] for _ in range(7)]
    w = torch.tensor([[float(x) for x in p] for p in pts], dtype=torch.float64, requires_grad=True)
    out = K(w)
    assert out.shape == (7,) and out.dtype == torch.float64
    for v, p in zip(out.tolist(), pts):
        assert v == pytest.approx(float(exact_eval(K, p)), rel=1e-12, abs=1e-12)
    # gradient against finite differences of the exact polynomial
    out.sum().backward()
    h = Fraction(1, 10**6)
    for i in range(K.d):
        e = [Fraction(0)] * K.d
        e[i] = h
        fd = (exact_eval(K, [a + b for a, b in zip(pts[0], e)]) - exact_eval(K, [a - b for a, b in zip(pts[0], e)])) / (2 * h)
        assert float(w.grad[0, i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-6)


def test_call_shapes_and_dtypes():
    K = Polynomial("w1**2*w2**2 + w3**4")
    assert K(torch.tensor([1.0, 2.0, 3.0])).shape == ()
    assert float(K(torch.tensor([1.0, 2.0, 3.0]))) == 85.0
    assert K(torch.zeros(4, 5, 3)).shape == (4, 5)
    assert K(torch.zeros(2, 3, dtype=torch.float32)).dtype == torch.float32
    assert K(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float64
    assert K([[1, 1, 1]]).dtype == torch.float64  # non-tensors become float64
    with pytest.raises(ValueError, match="shape"):
        K(torch.zeros(2, 2))
    # the gradient at 0 is finite (no pow(0, 0) trouble)
    w = torch.zeros(3, 3, requires_grad=True)
    K(w).sum().backward()
    assert torch.isfinite(w.grad).all() and (w.grad == 0).all()
    # big sparse potentials evaluate quickly
    S = sum_of_powers(500, 4, 1000)
    x = torch.randn(8, 1000, dtype=torch.float64)
    assert torch.allclose(S(x), (x[:, :500] ** 4).sum(-1))


def test_torch_func_transforms_pickle_and_copy():
    import copy
    import pickle

    from torch.func import grad, jacrev, vmap

    K = Polynomial("(w1*w2 - w3*w4)**2 + w1**4")
    W = torch.randn(5, 4, dtype=torch.float64)
    g = vmap(grad(K))(W)
    w = W.clone().requires_grad_(True)
    K(w).sum().backward()
    assert torch.allclose(g, w.grad)
    assert torch.equal(jacrev(jacrev(K))(torch.zeros(4, dtype=torch.float64)), torch.zeros(4, 4, dtype=torch.float64))
    # transforms must not leave wrapped tensors behind in the object
    assert pickle.loads(pickle.dumps(K)) == K
    model, (x, _) = K.regression(8, 0.1, 0)
    out = vmap(lambda v: torch.func.functional_call(model, {"w": v}, (x,)))(W)
    assert out.shape == (5, 8, 2)  # two squares: (w1 w2 - w3 w4)^2 and (w1^2)^2
    assert torch.equal(copy.deepcopy(model)(x), model(x))
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), model(x))


def test_hessian_rank_exact():
    assert Polynomial("(w1-w2)**2").hessian_rank() == 1
    assert Polynomial("w1**2 + w2**2 + w1**4").hessian_rank() == 2
    assert Polynomial("w1**2*w2**2").hessian_rank() == 0
    assert Polynomial("(w1+w2+w3)**2 + (w1-w2)**2").hessian_rank() == 2
    assert Polynomial("w1*w2 + w3**2").hessian_rank() == 3  # indefinite, still rank 3
    H = Polynomial("(w1-w2)**2 + 3*w3**2").hessian()
    assert H == [[2, -2, 0], [-2, 2, 0], [0, 0, 6]]
    # random rational quadratic forms: compare with float64 rank
    rng = random.Random(3)
    for _ in range(20):
        d, k = rng.randint(1, 6), rng.randint(1, 6)
        rows = [[rng.randint(-2, 2) for _ in range(d)] for _ in range(k)]
        K = None
        for r in rows:
            lin = " + ".join(f"({c})*w{i + 1}" for i, c in enumerate(r))
            K = f"({lin})**2" if K is None else K + f" + ({lin})**2"
        try:
            P = Polynomial(K, d=d)
        except ValueError:  # all rows zero
            continue
        expected = int(torch.linalg.matrix_rank(torch.tensor(rows, dtype=torch.float64)))
        assert P.hessian_rank() == expected


def test_shift_is_exact_translation():
    K = Polynomial("(w1-1)**2*(w1**2+w2**2)**4")
    p = [Fraction(1), Fraction(3, 10)]
    S = K.shift(p)
    for q in [[Fraction(0), Fraction(0)], [Fraction(1, 3), Fraction(-2, 5)]]:
        assert exact_eval(S, q) == exact_eval(K, [a + b for a, b in zip(q, p)])
    with pytest.raises(ValueError):
        K.shift([1])


def test_arithmetic():
    a, b = Polynomial("w1**2", d=2), Polynomial("w2**4")
    assert a + b == Polynomial("w1**2 + w2**4")
    assert (a * b) == crossing_valley(1, 2)
    assert (a - Polynomial("w1**2 + w2**2")) == Polynomial("-w2**2")
    assert 2 * a == Polynomial("2*w1**2", d=2)
    sq = Polynomial("w1 - w2") ** 2
    assert sq == Polynomial("(w1-w2)**2")
    assert sq.square_factors()[0][1] == Polynomial("w1 - w2")


def test_convenience_constructors():
    assert power(3) == Polynomial("w1**6") and power(3).rlct().value == Fraction(1, 6)
    assert crossing_valley() == Polynomial("w1**2*w2**2")
    assert crossing_valley(1, 2) == Polynomial("w1**2*w2**4")
    assert crossing_valley((2, 2)) == Polynomial("w1**4*w2**4")
    assert crossing_valley(1, 0, 1).d == 3
    assert sum_of_powers(2, 4, 3) == Polynomial("w1**4 + w2**4", d=3)
    for f, args in [(power, (0,)), (power, (1.5,)), (crossing_valley, (0, 0)), (crossing_valley, (-1, 1)),
                    (sum_of_powers, (2, 3, 4)), (sum_of_powers, (5, 2, 4)), (sum_of_powers, (0, 2, 4))]:
        with pytest.raises(ValueError):
            f(*args)


# ---------------------------------------------------------------------------------------------
# regression models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr,J", [("(w1*w2)**2", 1), ("w1**2*w2**2", 1), ("(w1*w2 - w3*w4)**2", 1),
                                    ("(w1-w2)**2 + 2*w3**4", 2), ("(w1*w2)**2+(w2*w3)**2+(w1*w3)**2", 3),
                                    ("w1**2 + w2**4", 2), ("(w1**2+w2**2)**4", 1), ("w1**8*w2**2", 1),
                                    ("4*(w1 - w2)**2/9", 1)])
def test_regression_model(expr, J):
    K = Polynomial(expr)
    model, (x, y) = K.regression(n=64, noise_std=0.3, seed=5)
    assert isinstance(model, PolynomialRegression) and isinstance(model, nn.Module)
    params = dict(model.named_parameters())
    assert list(params) == ["w"] and params["w"].shape == (K.d,)
    assert params["w"].dtype == torch.float64 and (params["w"] == 0).all()
    assert x.shape == (64, 1) and y.shape == (64, J) and x.dtype == y.dtype == torch.float64
    assert model.num_outputs == J
    out = model(x)
    assert out.shape == (64, J) and (out == 0).all()  # w* = 0 is a true parameter
    # K(w) = sum_j g_j(w)^2 exactly, and the model output is g(w) x
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        w = torch.randn(K.d, generator=g, dtype=torch.float64)
        with torch.no_grad():
            model.w.copy_(w)
        gw = model.g().detach()
        assert float((gw**2).sum()) == pytest.approx(float(K(w)), rel=1e-12)
        assert torch.allclose(model(x), x * gw)
    # determinism
    _, (x2, y2) = K.regression(n=64, noise_std=0.3, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # gradients flow to w
    with torch.no_grad():
        model.w.fill_(0.3)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    assert model.w.grad is not None and torch.isfinite(model.w.grad).all()


def test_regression_population_loss_scaling():
    """Mean-reduced MSE -> (K(w) + J sigma^2) / J for unit-variance x (large n)."""
    K = Polynomial("(w1*w2)**2 + w3**2")  # J = 2
    model, (x, y) = K.regression(n=200_000, noise_std=0.5, seed=0)
    w = torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64)
    with torch.no_grad():
        model.w.copy_(w)
        loss = float(nn.functional.mse_loss(model(x), y))
    assert loss == pytest.approx((float(K(w)) + 2 * 0.25) / 2, rel=0.02)


def test_regression_errors():
    with pytest.raises(ValueError, match="sum of squares"):
        Polynomial("w1**2 - 2*w1*w2 + 2*w2**2 - w2**2 + w3**2*w1").regression(10, 0.1, 0)
    with pytest.raises(ValueError, match="K\\(0\\)"):
        Polynomial("(w1 - 1)**2").regression(10, 0.1, 0)
    with pytest.raises(ValueError):
        Polynomial("w1**2").regression(0, 0.1, 0)
    with pytest.raises(ValueError):
        Polynomial("w1**2").regression(10, -1.0, 0)


# ---------------------------------------------------------------------------------------------
# linear networks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("widths,r", [([4, 5, 3, 4], 2), ([10, 5, 5, 5, 10], 2), ([3, 3, 3], 0),
                                      ([2, 4, 3], 1), ([5, 4, 6], 4)])
def test_dln_teacher_model_dataset(widths, r):
    net = DeepLinearNetwork(widths, r)
    T = net.teacher()
    assert len(T) == len(widths) - 1 == net.L
    for W, a, b in zip(T, widths[:-1], widths[1:]):
        assert W.shape == (b, a) and W.dtype == torch.float64
        assert int(torch.linalg.matrix_rank(W)) == r  # every layer has rank exactly r
    prod = T[0]
    for W in T[1:]:
        prod = W @ prod
    assert int(torch.linalg.matrix_rank(prod)) == r
    if r == 0:
        assert all((W == 0).all() for W in T)
    # deterministic per seed, different across seeds
    assert all(torch.equal(A, B) for A, B in zip(T, net.teacher(0)))
    if r > 0:
        assert not torch.equal(T[0], net.teacher(1)[0])
    m = net.model()
    assert isinstance(m, nn.Sequential) and len(m) == net.L
    assert all(isinstance(l, nn.Linear) and l.bias is None and l.weight.dtype == torch.float64 for l in m)
    assert sum(p.numel() for p in m.parameters()) == net.d
    assert all(torch.equal(l.weight, W) for l, W in zip(m, T))
    x, y = net.dataset(50, seed=3)
    assert x.shape == (50, widths[0]) and y.shape == (50, widths[-1]) and x.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(m(x), y, atol=1e-12)
    x2, y2 = net.dataset(50, seed=3, noise_std=0.1)
    assert torch.equal(x, x2) and not torch.equal(y, y2)
    assert float((y2 - y).std()) == pytest.approx(0.1, rel=0.3)
    assert net.rlct() == dln_rlct(widths, r)
    assert "DeepLinearNetwork" in repr(net)


def test_minimal_teacher_hessian_rank_equals_formula():
    """docs/flatness.md: at a minimal point rank Hess K = r(d_in + d_out - r); x ~ N(0, I) gives K = ||W - W0||_F^2."""
    for widths, r in [([4, 5, 3, 4], 2), ([3, 4, 2], 1), ([2, 3, 3, 2], 0)]:
        net = DeepLinearNetwork(widths, r)
        T = net.teacher()
        shapes = [W.shape for W in T]
        W0 = T[0]
        for W in T[1:]:
            W0 = W @ W0

        def K(w):
            mats, i = [], 0
            for s in shapes:
                mats.append(w[i:i + s.numel()].reshape(s))
                i += s.numel()
            P = mats[0]
            for M in mats[1:]:
                P = M @ P
            return ((P - W0) ** 2).sum()

        H = torch.autograd.functional.hessian(K, torch.cat([W.reshape(-1) for W in T]))
        assert int(torch.linalg.matrix_rank(H, rtol=1e-9)) == net.hessian_rank()


def test_rrr_class():
    rrr = ReducedRankRegression(5, 3, 5, 1)
    assert (rrr.M, rrr.H, rrr.N, rrr.widths) == (5, 3, 5, [5, 3, 5])
    assert rrr.d == 30 and rrr.rlct() == rrr_rlct(5, 3, 5, 1)
    assert rrr.rlct().value == dln_rlct([5, 3, 5], 1).value
    assert repr(rrr) == "ReducedRankRegression(M=5, H=3, N=5, r=1)"
    x, y = rrr.dataset(10, seed=0)
    assert x.shape == (10, 5) and y.shape == (10, 5)


@pytest.mark.parametrize("args", [(0, 3, 5, 0), (5, -1, 5, 0), (3, 3, 3, 4), (3, 3, 3, -1), (3.0, 3, 3, 0),
                                  (3, 3, 3, True)])
def test_rrr_bad_input(args):
    with pytest.raises(ValueError):
        rrr_rlct(*args)


@pytest.mark.parametrize("widths,r", [([3], 0), ([], 0), ([3, 0, 2], 0), ([3, -2, 2], 0), ([3, 2, 4], 3),
                                      ([3, 2, 4], -1), ([3, 2.5, 4], 0), (5, 0)])
def test_dln_bad_input(widths, r):
    with pytest.raises(ValueError):
        dln_rlct(widths, r)
    with pytest.raises(ValueError):
        DeepLinearNetwork(widths, r)


# ---------------------------------------------------------------------------------------------
# finite-t validation
# ---------------------------------------------------------------------------------------------
def test_finite_t_validation():
    with pytest.raises(ValueError, match="d <= 3"):
        finite_temperature_target(sum_of_powers(1, 2, 4), 1e3, localization=1)
    with pytest.raises(ValueError, match="localization"):
        finite_temperature_target(power(1), 1e3)
    for kw in [dict(localization=-1), dict(box=0), dict(localization=float("nan"))]:
        with pytest.raises(ValueError):
            finite_temperature_target(power(1), 1e3, **kw)
    with pytest.raises(ValueError):
        finite_temperature_target(power(1), 0, box=1)
    with pytest.raises(ValueError):
        finite_temperature_target(lambda w: w.sum(-1), 1e3, box=1)  # no .d
    with pytest.raises(ValueError, match="negative"):
        finite_temperature_target(Polynomial("w1**2 - w2**2"), 1e3, box=1)
    with pytest.raises(ValueError):
        gaussian_target([-1.0], 1e3, 1.0)
    with pytest.raises(ValueError):
        gaussian_target([0.0], 1e3, 0.0)
    with pytest.raises(ValueError):
        multiplicity_bias("x", 1e3)
    with pytest.raises(ValueError):
        multiplicity_bias((0.5, 2), 1.0)


def test_finite_t_accepts_generic_callables():
    class Pot:
        d = 2

        def __call__(self, w):
            return w[..., 0] ** 2 + w[..., 1] ** 4

    ref = finite_temperature_target(Polynomial("w1**2 + w2**4"), 1e3, localization=100)
    assert finite_temperature_target(Pot(), 1e3, localization=100) == pytest.approx(ref, rel=1e-6)
    assert round(ref, 4) == 0.5723


def test_finite_t_off_axis_zero_set():
    # (w1 - w2)^2 = 1/2 * 4 * u^2 in rotated coordinates: exact sum_i 1/2 t a/(t a + gamma), a = 4
    K = Polynomial("(w1-w2)**2")
    got = finite_temperature_target(K, 100.0, localization=10.0)
    assert got == pytest.approx(gaussian_target([4.0, 0.0], 100.0, 10.0), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# docstring examples
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["rlct", "polynomial", "linear_nets", "finite_t", "__init__"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module("slt_basins.toys" if module == "__init__" else f"slt_basins.toys.{module}")
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                          extraglobs={"torch": torch, "Fraction": Fraction, "RLCT": RLCT}, verbose=False)
    assert res.failed == 0
    assert res.attempted > 0 or module == "__init__"


def test_public_api():
    expected = {"RLCT", "Polynomial", "power", "crossing_valley", "sum_of_powers", "rrr_rlct", "dln_rlct",
                "ReducedRankRegression", "DeepLinearNetwork", "finite_temperature_target",
                "multiplicity_bias", "crossing_valley_box_target", "gaussian_target"}
    assert expected <= set(toys.__all__)
    for name in toys.__all__:
        obj = getattr(toys, name)
        assert obj.__doc__ and len(obj.__doc__) > 40, name
