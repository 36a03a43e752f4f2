"""Property-based tests (hypothesis) of the exact RLCT code in :mod:`slt_basins.toys`.

Every assertion is an exact :class:`fractions.Fraction` / int equality. The properties are the
structural facts stated on docs/ground-truth.md:

* Newton polyhedra (Varchenko 1976; Lin 2011): the (λ, m) is invariant under relabelling the variables and under
  positive rescaling of the coefficients (P(K) depends on the support only; certification on the
  support and the signs only);
* sums in disjoint variables add (Lin 2011), λ = λ_f + λ_g, m = m_f + m_g − 1;
* normal crossings (Watanabe 2009): a monomial Π w_i^(2k_i) has λ = 1/(2 max k_i), m = #ties at the max;
* Aoyagi & Watanabe 2005 / Aoyagi 2024: the decomposition identities of reduced rank regression and deep linear networks,
  and DLN with two layers = Aoyagi–Watanabe.

Budget: the whole file runs in a few seconds on 2 cores (small ``max_examples``, no deadline).
"""
from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from slt_basins.toys import (
    Polynomial,
    crossing_valley,
    dln_rlct,
    newton_rlct,
    rrr_rlct,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------
pos_fraction = st.builds(Fraction, st.integers(1, 20), st.integers(1, 20))


def even_exponent(d: int):
    """An exponent tuple of length d with entries in {0, 2, 4, 6}, not all zero."""
    return st.lists(st.sampled_from([0, 2, 4, 6]), min_size=d, max_size=d).filter(any).map(tuple)


@st.composite
def even_positive_terms(draw, d=None, max_d=4, max_terms=4):
    """{exponent: coefficient} of a sum of even monomials with positive rational coefficients.

    Such a K is a sum of squares of monomials, so Newton non-degeneracy is certified (Lin 2011).
    """
    if d is None:
        d = draw(st.integers(1, max_d))
    exps = draw(st.lists(even_exponent(d), min_size=1, max_size=max_terms, unique=True))
    return {e: draw(pos_fraction) for e in exps}


def rlct_of(terms, d=None, prior=None):
    return Polynomial(dict(terms), d=d).rlct(prior_exponents=prior)


def same(a, b):
    """(λ, m, certified) of two RLCTs agree exactly."""
    assert isinstance(a.value, Fraction) and isinstance(b.value, Fraction)
    assert (a.value, a.multiplicity, a.certified) == (b.value, b.multiplicity, b.certified), (a, b)


# ---------------------------------------------------------------------------------------------
# 1. invariance under permuting the variables
# ---------------------------------------------------------------------------------------------
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_permutation_invariance(data):
    terms = data.draw(even_positive_terms())
    d = len(next(iter(terms)))
    perm = data.draw(st.permutations(range(d)))
    permuted = {tuple(e[perm[i]] for i in range(d)): c for e, c in terms.items()}
    a, b = rlct_of(terms), rlct_of(permuted)
    same(a, b)
    assert a.certified  # sums of even monomials with positive coefficients


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_permutation_invariance_with_prior(data):
    """Same, permuting a monomial prior |w|^τ together with the variables."""
    terms = data.draw(even_positive_terms())
    d = len(next(iter(terms)))
    tau = data.draw(st.lists(st.integers(0, 3), min_size=d, max_size=d))
    perm = data.draw(st.permutations(range(d)))
    permuted = {tuple(e[perm[i]] for i in range(d)): c for e, c in terms.items()}
    same(rlct_of(terms, prior=tau), rlct_of(permuted, prior=[tau[perm[i]] for i in range(d)]))


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_permutation_invariance_uncertified(data):
    """Permutation invariance including uncertified inputs and rejected ones.

    K = (even positive part) + c·w^β with arbitrary β and a sign: depending on where β falls, K is
    certified, uncertified (β on a compact face, odd or negative) or rejected with ValueError (β a
    vertex of P(K), K not ≥ 0 near 0). Which of the three happens, and (λ, m, certified), must not
    depend on the labelling of the variables.
    """
    terms = data.draw(even_positive_terms(max_terms=3))
    d = len(next(iter(terms)))
    if len(terms) >= 2 and data.draw(st.booleans()):
        # midpoint of two support points (integral, since exponents are even): it often lies on a
        # compact edge, which gives the uncertified case, e.g. w1^2 - w1 w2 + w2^2
        p, q = data.draw(st.lists(st.sampled_from(sorted(terms)), min_size=2, max_size=2, unique=True))
        extra = tuple((x + y) // 2 for x, y in zip(p, q))
    else:
        extra = data.draw(st.lists(st.integers(0, 6), min_size=d, max_size=d).filter(any).map(tuple))
    assume(extra not in terms)
    terms = dict(terms)
    terms[extra] = Fraction(data.draw(st.sampled_from([-3, -1, 1, 2])))
    perm = data.draw(st.permutations(range(d)))
    permuted = {tuple(e[perm[i]] for i in range(d)): c for e, c in terms.items()}
    try:
        a = rlct_of(terms)
    except ValueError:
        a = None
    try:
        b = rlct_of(permuted)
    except ValueError:
        b = None
    assert (a is None) == (b is None)
    assume(a is not None)
    same(a, b)


# ---------------------------------------------------------------------------------------------
# 2. invariance under positive rescaling of coefficients
# ---------------------------------------------------------------------------------------------
@settings(max_examples=50, **SETTINGS)
@given(terms=even_positive_terms(), scale=pos_fraction)
def test_global_positive_scaling(terms, scale):
    base = rlct_of(terms)
    assert base.certified
    same(base, rlct_of({e: scale * c for e, c in terms.items()}))


@settings(max_examples=50, **SETTINGS)
@given(data=st.data())
def test_individual_positive_scaling(data):
    terms = data.draw(even_positive_terms())
    factors = data.draw(st.lists(pos_fraction, min_size=len(terms), max_size=len(terms)))
    scaled = {e: f * c for (e, c), f in zip(terms.items(), factors)}
    base = rlct_of(terms)
    assert base.certified
    same(base, rlct_of(scaled))


# ---------------------------------------------------------------------------------------------
# 3. sums in disjoint variables (Lin 2011)
# ---------------------------------------------------------------------------------------------
def _join(f, g, a, b):
    """f(w1..wa) + g(w_{a+1}..w_{a+b}) as one dict of length-(a+b) exponents."""
    out = {e + (0,) * b: c for e, c in f.items()}
    out.update({(0,) * a + e: c for e, c in g.items()})
    return out


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_disjoint_sum_rule(data):
    a, b = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    f = data.draw(even_positive_terms(d=a, max_terms=3))
    g = data.draw(even_positive_terms(d=b, max_terms=3))
    rf, rg = rlct_of(f), rlct_of(g)
    assert rf.certified and rg.certified
    rs = rlct_of(_join(f, g, a, b))
    assert rs.certified
    assert rs.value == rf.value + rg.value
    assert rs.multiplicity == rf.multiplicity + rg.multiplicity - 1


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_disjoint_sum_rule_single_block(data):
    """The sum rule again, with the package's block split defeated.

    ``newton_rlct`` itself splits K into blocks of linked variables and applies the sum rule, so the
    test above partly checks the package against its own rule. Here a *dominated* cross monomial
    α·w_j² (α a support point of f, w_j a variable of g) is added: it links all variables into one
    block, so the joint Newton polyhedron is enumerated, but it lies in α + R^d_{≥0} and leaves
    P(K), the compact faces and hence (λ, m, certified) unchanged.
    """
    a, b = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    f = data.draw(even_positive_terms(d=a, max_terms=3))
    g = data.draw(even_positive_terms(d=b, max_terms=3))
    joint = _join(f, g, a, b)
    d = a + b
    # link the blocks: for every support point α of f (resp. g) and every variable w_j used by g
    # (resp. f), add the dominated monomial w^α·w_j²
    f_vars = [i for i in range(a) if any(e[i] for e in f)]
    g_vars = [a + j for j in range(b) if any(e[j] for e in g)]
    for e in list(f):
        for j in g_vars:
            x = list(e) + [0] * b
            x[j] = 2
            joint[tuple(x)] = joint.get(tuple(x), Fraction(0)) + Fraction(1)
    for e in list(g):
        for i in f_vars:
            x = [0] * a + list(e)
            x[i] = 2
            joint[tuple(x)] = joint.get(tuple(x), Fraction(0)) + Fraction(1)
    rf, rg, rs = rlct_of(f), rlct_of(g), rlct_of(joint, d=d)
    assert rs.certified
    assert "disjoint" not in rs.reason  # one block: the joint polyhedron was enumerated
    assert rs.value == rf.value + rg.value
    assert rs.multiplicity == rf.multiplicity + rg.multiplicity - 1


# ---------------------------------------------------------------------------------------------
# 4. decomposition identities for RRR (Aoyagi & Watanabe 2005) and DLN (Aoyagi 2024)
# ---------------------------------------------------------------------------------------------
dim = st.integers(1, 12)


@settings(max_examples=150, **SETTINGS)
@given(M=dim, H=dim, N=dim, data=st.data())
def test_rrr_rank_decomposition(M, H, N, data):
    # rrr_rlct requires M, H, N >= 1, so λ_RRR(M−r, H−r, N−r; 0) is only defined for
    # r < min(M, H, N); r = min is covered by test_rrr_full_rank_is_regular below.
    assume(min(M, H, N) >= 2)
    r = data.draw(st.integers(0, min(M, H, N) - 1))
    full = rrr_rlct(M, H, N, r)
    red = rrr_rlct(M - r, H - r, N - r, 0)
    assert full.value == Fraction(r * (M + N - r), 2) + red.value
    # the case conditions and the parity of M+H+N+r are invariant under subtracting r everywhere
    assert full.multiplicity == red.multiplicity


@settings(max_examples=60, **SETTINGS)
@given(M=dim, H=dim, N=dim)
def test_rrr_full_rank_is_regular(M, H, N):
    """r = min(M, H, N): the reduced model has a zero dimension (λ = 0), and y = BAx is a submersion
    onto the rank-r matrices near every true point, so λ = r(M+N−r)/2 (half that manifold's
    dimension) with m = 1."""
    r = min(M, H, N)
    res = rrr_rlct(M, H, N, r)
    assert res.value == Fraction(r * (M + N - r), 2)
    assert res.multiplicity == 1


widths_st = st.lists(st.integers(1, 10), min_size=3, max_size=6)


@settings(max_examples=150, **SETTINGS)
@given(widths=widths_st, data=st.data())
def test_dln_rank_decomposition(widths, data):
    # dln_rlct requires every width >= 1, so λ_DLN(H − r; 0) needs r < min(widths);
    # r = min is covered by test_dln_full_rank_is_regular below.
    assume(min(widths) >= 2)
    r = data.draw(st.integers(0, min(widths) - 1))
    full = dln_rlct(widths, r)
    red = dln_rlct([h - r for h in widths], 0)
    assert full.value == Fraction(r * (widths[0] + widths[-1] - r), 2) + red.value
    assert full.multiplicity == red.multiplicity  # m depends on M^(s) = H^(s) − r only


@settings(max_examples=60, **SETTINGS)
@given(widths=widths_st)
def test_dln_full_rank_is_regular(widths):
    r = min(widths)
    res = dln_rlct(widths, r)
    assert res.value == Fraction(r * (widths[0] + widths[-1] - r), 2)
    assert res.multiplicity == 1


# ---------------------------------------------------------------------------------------------
# 5. DLN with two layers = reduced rank regression
# ---------------------------------------------------------------------------------------------
@settings(max_examples=200, **SETTINGS)
@given(M=dim, H=dim, N=dim, data=st.data())
def test_dln_two_layers_is_rrr(M, H, N, data):
    r = data.draw(st.integers(0, min(M, H, N)))
    a, b = dln_rlct([M, H, N], r), rrr_rlct(M, H, N, r)
    assert a.value == b.value
    assert a.multiplicity == b.multiplicity


@settings(max_examples=20, **SETTINGS)
@given(L=st.integers(1, 8))
def test_dln_all_ones_is_crossing_valley(L):
    """Widths [1]*(L+1), r = 0: K = (w1⋯wL)², a monomial: λ = 1/2, m = L (Aoyagi 2024), same as Newton."""
    a = dln_rlct([1] * (L + 1), 0)
    b = crossing_valley(*([1] * L)).rlct()
    assert (a.value, a.multiplicity) == (b.value, b.multiplicity) == (Fraction(1, 2), L)


# ---------------------------------------------------------------------------------------------
# 6. monomials (Watanabe 2009)
# ---------------------------------------------------------------------------------------------
@settings(max_examples=80, **SETTINGS)
@given(k=st.lists(st.integers(0, 5), min_size=1, max_size=6).filter(any), c=pos_fraction)
def test_monomial_rlct(k, c):
    kmax = max(k)
    want = (Fraction(1, 2 * kmax), k.count(kmax))
    res = Polynomial({tuple(2 * a for a in k): c}).rlct()
    assert (res.value, res.multiplicity) == want
    assert res.certified
    res2 = crossing_valley(*k).rlct()
    assert (res2.value, res2.multiplicity, res2.certified) == (*want, True)


# ---------------------------------------------------------------------------------------------
# extras: dominated higher-order terms, exact vs float enumeration
# ---------------------------------------------------------------------------------------------
@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_dominated_terms_do_not_matter(data):
    """Adding c·w^(α+β) with α in the support, β ≥ 0, β ≠ 0 (any sign, any parity) leaves P(K) and
    its compact faces unchanged, hence (λ, m, certified) too (Varchenko 1976)."""
    terms = data.draw(even_positive_terms())
    d = len(next(iter(terms)))
    alpha = data.draw(st.sampled_from(sorted(terms)))
    beta = data.draw(st.lists(st.integers(0, 3), min_size=d, max_size=d).filter(any))
    new = tuple(x + y for x, y in zip(alpha, beta))
    assume(new not in terms)
    coef = Fraction(data.draw(st.sampled_from([-5, -1, 1, 3])), data.draw(st.integers(1, 4)))
    same(rlct_of(terms), rlct_of({**terms, new: coef}))


@settings(max_examples=30, **SETTINGS)
@given(terms=even_positive_terms(max_d=4, max_terms=5))
def test_exact_and_float_enumeration_agree(terms):
    a = newton_rlct(terms, method="exact")
    b = newton_rlct(terms, method="float")
    same(a, b)
