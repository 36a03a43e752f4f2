"""Exact real log canonical thresholds (RLCTs) and the Newton-polyhedron method.

Everything here is exact rational arithmetic (:class:`fractions.Fraction`); nothing is sampled.

* :class:`RLCT` is the value type returned by every ground-truth function of :mod:`slt_basins.toys`.
* :func:`newton_rlct` computes the RLCT λ and multiplicity m at w = 0 of a polynomial
  K(w) = Σ_α c_α w^α ≥ 0 by the Newton-polyhedron method (Varchenko 1976; S. Lin, PhD thesis 2011),
  with an optional monomial prior φ ∝ Π|w_i|^{τ_i}.

Method (Varchenko 1976; Lin 2011). Let P(K) = conv(∪_{α∈supp K} (α + R^d_{≥0})) and
t* = min{t : t(τ+1) ∈ P(K)}. If K is non-degenerate w.r.t. P(K), then λ = 1/t* and m is the
codimension of the smallest face of P(K) containing t*(τ+1). t* is computed from the dual LP
t* = max_{c≥0, ⟨c,τ+1⟩=1} min_α ⟨c, α⟩ by exact enumeration of the vertices (c, s) of the
hypograph {c ≥ 0, ⟨c,τ+1⟩ = 1, s ≤ ⟨c,α⟩ ∀α}; m = 1 + (affine dimension of the optimal vertices).

The same vertex list gives, for every monomial, the set of dual weights c at which it is a minimiser
of ⟨c,·⟩. From it we read off which monomials lie on *compact* faces (some strictly positive c) and
which are vertices of P(K) (a full-dimensional cell). Non-degeneracy is **certified** by the
sufficient condition "every monomial on a compact face has even exponents and a positive coefficient"
(then every face polynomial is > 0 on the real torus). A vertex monomial with an odd exponent or a
negative coefficient means K is not ≥ 0 near 0, and is an error.

Enumeration cost is C(n + d, d) small solves for n monomials in a block of d linked variables. Points
dominated by another exponent, and (for larger blocks) points that are provably not vertices of P(K)
(float LP, then exact check) are dropped first. Larger enumerations use a float64 numpy pre-filter
(integer-determinant singularity test, 1e-9 feasibility tolerance) that only proposes candidates;
every vertex is then re-solved and checked in exact arithmetic. A vertex could only be missed if
float64 error exceeded the tolerance, which does not happen for moderate integer exponents.

Variables are first split into independent blocks (variables that never share a monomial); by the
sum rule for disjoint variables (Lin 2011) λ = Σ λ_b and m = Σ m_b − (B−1).
Variables that do not appear in K are dropped (they do not change the poles of the zeta function).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["RLCT", "newton_rlct", "as_fraction", "exact_rank"]

Exponent = Tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# value type
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RLCT:
    """A (local) learning coefficient λ with its multiplicity m.

    Attributes:
        value: λ as an exact :class:`fractions.Fraction` (ints and Fractions are accepted and
            converted; floats are converted through their decimal repr, e.g. 0.5 -> 1/2).
        multiplicity: m ≥ 1, the order of the pole −λ of the zeta function.
        certified: True when the value is backed by a theorem whose hypotheses were checked
            (e.g. Newton non-degeneracy, or a closed-form literature result); False when it is only
            the Newton-polyhedron value and may be wrong (see ``reason``).
        reason: short human-readable provenance of the value.

    ``float(r)`` gives λ as a float; ``str(r)`` a one-line summary.

    Example:
        >>> r = RLCT(Fraction(1, 2), 2, True, "crossing valley")
        >>> float(r), r.multiplicity
        (0.5, 2)
        >>> print(r)
        lambda = 1/2 (0.5), m = 2 [certified: crossing valley]
    """

    value: Fraction
    multiplicity: int = 1
    certified: bool = True
    reason: str = ""

    def __post_init__(self):
        object.__setattr__(self, "value", as_fraction(self.value, "RLCT value"))
        m = self.multiplicity
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or int(m) < 1:
            raise ValueError(f"multiplicity must be an integer >= 1, got {m!r}")
        object.__setattr__(self, "multiplicity", int(m))
        object.__setattr__(self, "certified", bool(self.certified))
        object.__setattr__(self, "reason", str(self.reason))

    def __float__(self) -> float:
        return float(self.value)

    @property
    def lam(self) -> Fraction:
        """Alias of ``value`` (λ, an exact fraction).

        >>> newton_rlct({(2, 4): 1}).lam
        Fraction(1, 4)
        """
        return self.value

    def __str__(self) -> str:
        status = "certified" if self.certified else "NOT certified"
        s = f"lambda = {self.value} ({float(self.value):.6g}), m = {self.multiplicity} [{status}"
        if self.reason:
            s += f": {self.reason}"
        return s + "]"


def as_fraction(x, what: str = "value") -> Fraction:
    """Convert an int, Fraction, decimal string ("1/2", "0.25") or float to an exact Fraction.

    Floats go through ``repr`` so that 0.1 becomes 1/10, not the binary expansion.

    Example:
        >>> as_fraction(0.1), as_fraction("3/4"), as_fraction(2)
        (Fraction(1, 10), Fraction(3, 4), Fraction(2, 1))
    """
    if isinstance(x, bool):
        raise ValueError(f"{what} must be a number, got a bool")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(float(x)):
            raise ValueError(f"{what} must be finite, got {x!r}")
        return Fraction(repr(float(x)))
    if isinstance(x, str):
        try:
            return Fraction(x.strip())
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"{what}: cannot read {x!r} as a rational number ({e})") from None
    raise ValueError(f"{what} must be an int, Fraction, float or numeric string, got {type(x).__name__}")


# ---------------------------------------------------------------------------------------------
# exact linear algebra
# ---------------------------------------------------------------------------------------------
def exact_rank(rows: Sequence[Mapping[int, Fraction]] | Sequence[Sequence[Fraction]]) -> int:
    """Exact rank of a rational matrix by sparse Gaussian elimination.

    ``rows`` is a list of rows, each either a dense sequence or a sparse ``{column: value}`` dict.

    Example:
        >>> exact_rank([[1, 2], [2, 4]])
        1
    """
    work: List[Dict[int, Fraction]] = []
    for r in rows:
        if isinstance(r, Mapping):
            d = {int(k): Fraction(v) for k, v in r.items() if v != 0}
        else:
            d = {k: Fraction(v) for k, v in enumerate(r) if v != 0}
        if d:
            work.append(d)
    rank = 0
    # index rows by their columns so elimination only touches rows that hold the pivot column
    while work:
        piv_row = work.pop()
        if not piv_row:
            continue
        col = min(piv_row)
        pv = piv_row[col]
        rank += 1
        nxt = []
        for r in work:
            f = r.get(col)
            if f is None:
                nxt.append(r)
                continue
            fac = f / pv
            for k, v in piv_row.items():
                nv = r.get(k, 0) - fac * v
                if nv == 0:
                    r.pop(k, None)
                else:
                    r[k] = nv
            if r:
                nxt.append(r)
        work = nxt
    return rank


def parse_terms(spec: Mapping) -> Tuple[Dict[Exponent, Fraction], Optional[int]]:
    """Validate ``{exponent tuple: coefficient}`` (an int key means d = 1), sum and drop zeros.

    Returns ``(terms, d)`` with exact Fraction coefficients; ``d`` is None for an empty mapping.

    >>> parse_terms({(2, 0): 1, (0, 4): "1/2", (1, 1): 0})
    ({(2, 0): Fraction(1, 1), (0, 4): Fraction(1, 2)}, 2)
    """
    terms: Dict[Exponent, Fraction] = {}
    d = None
    for k, v in spec.items():
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            k = (k,)
        if not isinstance(k, (tuple, list)) or not all(
                isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in k):
            raise ValueError(f"exponent keys must be tuples of non-negative ints, got {k!r}")
        exp = tuple(int(a) for a in k)
        if any(a < 0 for a in exp):
            raise ValueError(f"negative exponent in {k!r}")
        if d is None:
            d = len(exp)
        elif len(exp) != d:
            raise ValueError("all exponent tuples must have the same length")
        terms[exp] = terms.get(exp, Fraction(0)) + as_fraction(v, "coefficient")
    return {k: c for k, c in terms.items() if c != 0}, d


def _solve_exact(A: List[List[Fraction]], b: List[Fraction]) -> Optional[List[Fraction]]:
    """Solve the square system A x = b exactly; None if A is singular."""
    n = len(A)
    M = [list(row) + [bb] for row, bb in zip(A, b)]
    for col in range(n):
        piv = None
        for r in range(col, n):
            if M[r][col] != 0:
                piv = r
                break
        if piv is None:
            return None
        if piv != col:
            M[col], M[piv] = M[piv], M[col]
        pr = M[col]
        pv = pr[col]
        for r in range(n):
            if r != col and M[r][col] != 0:
                f = M[r][col] / pv
                row = M[r]
                for k in range(col, n + 1):
                    if pr[k] != 0:
                        row[k] -= f * pr[k]
    return [M[i][n] / M[i][i] for i in range(n)]


def _affine_dim(points: Sequence[Sequence[Fraction]]) -> int:
    """Affine dimension of a finite set of rational points (−1 for the empty set)."""
    pts = list(points)
    if not pts:
        return -1
    p0 = pts[0]
    return exact_rank([[a - b for a, b in zip(p, p0)] for p in pts[1:]])


# ---------------------------------------------------------------------------------------------
# Newton polyhedron
# ---------------------------------------------------------------------------------------------
def _fmt_monomial(exp: Sequence[int], coef: Fraction, var_ids: Sequence[int]) -> str:
    parts = []
    for e, v in zip(exp, var_ids):
        if e == 1:
            parts.append(f"w{v + 1}")
        elif e > 1:
            parts.append(f"w{v + 1}**{e}")
    mono = "*".join(parts) if parts else "1"
    if coef == 1:
        return mono
    if coef == -1:
        return "-" + mono
    return f"{coef}*{mono}"


_EXACT_COMBINATIONS = 6000  # below this, enumerate in pure Fraction arithmetic
_MAX_COMBINATIONS = 4_000_000


def _dual_vertices(points: List[Exponent], tau1: List[Fraction], method: str) -> Dict[tuple, Fraction]:
    """All vertices (c, s) of {c ≥ 0, ⟨c, τ+1⟩ = 1, s ≤ ⟨c, α⟩ for α in points}, exactly.

    Returns ``{c (tuple of Fractions): s}``. Each vertex solves d of the equations
    {⟨c,α_j⟩ = s} ∪ {c_i = 0} together with ⟨c, τ+1⟩ = 1.
    """
    d = len(tau1)
    n = len(points)
    rows: List[List[Fraction]] = [[Fraction(a) for a in p] + [Fraction(-1)] for p in points]
    rows += [[Fraction(int(i == k)) for k in range(d)] + [Fraction(0)] for i in range(d)]
    eq = list(tau1) + [Fraction(0)]
    ncomb = math.comb(n + d, d)
    if method == "auto":
        method = "exact" if ncomb <= _EXACT_COMBINATIONS else "float"
    if ncomb > _MAX_COMBINATIONS:
        raise ValueError(
            f"the Newton polyhedron has {n} minimal monomials in {d} linked variables, i.e. "
            f"{ncomb} vertex candidates, too many for exact enumeration (limit {_MAX_COMBINATIONS}). "
            "Use fewer monomials, or split K into sums over disjoint groups of variables."
        )

    def exact_vertex(combo) -> Optional[Tuple[tuple, Fraction]]:
        A = [rows[k] for k in combo] + [eq]
        b = [Fraction(0)] * d + [Fraction(1)]
        x = _solve_exact(A, b)
        if x is None:
            return None
        c, s = x[:d], x[d]
        if any(ci < 0 for ci in c):
            return None
        for p in points:
            if sum(a * ci for a, ci in zip(p, c) if a) < s:
                return None
        return tuple(c), s

    verts: Dict[tuple, Fraction] = {}
    if method == "exact":
        for combo in itertools.combinations(range(n + d), d):
            if combo[0] >= n:  # no monomial equation: the s column is zero, singular
                continue
            v = exact_vertex(combo)
            if v is not None:
                verts[v[0]] = v[1]
        return verts
    if method != "float":
        raise ValueError(f"method must be 'auto', 'exact' or 'float', got {method!r}")

    # Float pre-filter, exact verification. The system matrix is made integral (the equality row is
    # scaled by the lcm of the denominators of τ+1), so a non-singular system has |det| >= 1.
    L = 1
    for t in tau1:
        L = L * t.denominator // math.gcd(L, t.denominator)
    R = np.array([[float(v) for v in r] for r in rows])
    E = np.array([float(v * L) for v in eq])
    P = np.array(points, dtype=float)
    scale = 1.0 + float(np.abs(P).max())
    tol = 1e-9 * scale
    candidates: Dict[tuple, tuple] = {}
    it = (c for c in itertools.combinations(range(n + d), d) if c[0] < n)
    chunk = 100_000
    while True:
        block = list(itertools.islice(it, chunk))
        if not block:
            break
        idx = np.array(block, dtype=np.int64)
        A = np.empty((len(block), d + 1, d + 1))
        A[:, :d, :] = R[idx]
        A[:, d, :] = E
        det = np.linalg.det(A)
        ok = np.abs(det) > 0.25
        if not ok.any():
            continue
        rhs = np.zeros((int(ok.sum()), d + 1, 1))
        rhs[:, d, 0] = float(L)
        x = np.linalg.solve(A[ok], rhs)[..., 0]
        c, s = x[:, :d], x[:, d]
        feas = (c >= -tol).all(axis=1) & ((c @ P.T) - s[:, None] >= -tol).all(axis=1)
        sel = np.nonzero(ok)[0][feas]
        for row, k in zip(np.round(x[feas], 10), sel):
            key = tuple(row.tolist())
            if key not in candidates:
                candidates[key] = block[k]
    for combo in candidates.values():
        v = exact_vertex(combo)
        if v is not None:
            verts[v[0]] = v[1]
    return verts


def _prune_non_vertices(points: List[Exponent]) -> List[Exponent]:
    """Drop points that lie in conv(other points) + R^d_{≥0}; they do not change P(K).

    A float LP (scipy HiGHS) proposes convex weights μ with Σ μ_j α_j ≤ p; the weights are rounded to
    rationals and the inclusion is re-checked exactly, so a point is only dropped when provably
    redundant (if scipy is unavailable or the check fails, the point is kept).
    """
    try:
        from scipy.optimize import linprog
    except ImportError:  # pragma: no cover
        return points
    kept = list(points)
    i = 0
    while i < len(kept) and len(kept) > 1:
        p = kept[i]
        others = kept[:i] + kept[i + 1:]
        A = np.array(others, dtype=float)  # (n-1, d)
        res = linprog(
            np.zeros(len(others)), A_ub=A.T, b_ub=np.array(p, dtype=float),
            A_eq=np.ones((1, len(others))), b_eq=[1.0], bounds=(0, None), method="highs",
        )
        redundant = False
        if res.status == 0:
            mu = [Fraction(float(x)).limit_denominator(10**6) if x > 1e-12 else Fraction(0) for x in res.x]
            tot = sum(mu)
            if tot > 0:
                mu = [m / tot for m in mu]
                comb = [sum(m * q[k] for m, q in zip(mu, others) if m) for k in range(len(p))]
                redundant = all(c <= pk for c, pk in zip(comb, p))
        if redundant:
            kept.pop(i)
        else:
            i += 1
    return kept


def _newton_block(
    points: List[Exponent],
    coefs: List[Fraction],
    tau1: List[Fraction],
    var_ids: List[int],
    method: str,
) -> Tuple[Fraction, int, bool, str]:
    """Newton λ, m and certification for one block of linked variables (all appearing)."""
    d = len(tau1)
    # minimal points only: a point dominated componentwise by another never attains min ⟨c,·⟩ alone
    pts = sorted(set(points), key=sum)
    minimal: List[Exponent] = []
    for p in pts:
        if not any(all(qi <= pi for qi, pi in zip(q, p)) for q in minimal):
            minimal.append(p)
    if math.comb(len(minimal) + d, d) > _EXACT_COMBINATIONS:
        minimal = _prune_non_vertices(minimal)
    verts = _dual_vertices(minimal, tau1, method)
    if not verts:  # pragma: no cover - the polytope is non-empty and bounded, so has vertices
        raise RuntimeError("internal error: no dual vertex found")

    s_star = max(verts.values())
    optimal = [c for c, s in verts.items() if s == s_star]
    lam = 1 / s_star
    m = 1 + _affine_dim(optimal)

    # which monomials lie on compact faces, which are vertices of P(K)
    offending = []
    for p, coef in zip(points, coefs):
        cells = [c for c, s in verts.items() if sum(a * ci for a, ci in zip(p, c) if a) == s]
        if not cells:
            continue  # interior point of P(K): never on a face
        covered = set()
        for c in cells:
            covered.update(i for i, ci in enumerate(c) if ci > 0)
        on_compact = len(covered) == d
        bad = coef < 0 or any(a % 2 for a in p)
        if not bad:
            continue
        if _affine_dim(cells) == d - 1:  # a vertex of the Newton polyhedron
            what = "a negative coefficient" if coef < 0 else "an odd exponent"
            raise ValueError(
                f"K is not >= 0 near w = 0: the lowest-order monomial {_fmt_monomial(p, coef, var_ids)} "
                f"(a vertex of the Newton polyhedron) has {what}, so K takes negative values "
                "arbitrarily close to 0. The RLCT is only defined for K >= 0 with K(0) = 0 at a "
                "minimum; change the sign, make the exponents even, or shift to the actual minimum."
            )
        if on_compact:
            offending.append(_fmt_monomial(p, coef, var_ids))

    if offending:
        shown = ", ".join(offending[:3]) + (", ..." if len(offending) > 3 else "")
        return lam, m, False, (
            f"Newton value only; non-degeneracy not certified: {shown} on a compact face is odd or "
            "negative, so the true lambda or m may differ"
        )
    return lam, m, True, "Newton polyhedron, non-degenerate (compact-face monomials even and positive)"


def newton_rlct(
    terms: Mapping[Sequence[int], object],
    prior_exponents: Optional[Sequence] = None,
    *,
    method: str = "auto",
) -> RLCT:
    """RLCT (λ, m) at w = 0 of K(w) = Σ c_α w^α by the Newton-polyhedron method, exactly.

    Args:
        terms: ``{exponent tuple: coefficient}`` (coefficients: int/Fraction/float/str); all tuples
            of the same length d. Must not contain a constant term (K(0) must be 0).
        prior_exponents: τ, for a prior φ(w) ∝ Π|w_i|^{τ_i}·ψ(w) with ψ(0) > 0 (each τ_i > −1);
            default all 0 (prior positive at 0). Entries of variables absent from K are ignored.
        method: vertex enumeration: 'exact' (pure Fraction), 'float' (numpy pre-filter with exact
            verification of every vertex) or 'auto' (exact for small problems). Same result.

    Returns:
        :class:`RLCT` with ``certified=True`` iff non-degeneracy is certified (every monomial on a
        compact face of P(K) is even with positive coefficient); otherwise the Newton value with
        ``certified=False`` and the offending monomials in ``reason``.

    Raises:
        ValueError: empty/zero K, a constant term, a bad prior, or a vertex monomial of P(K) that is
            odd or negative (K not ≥ 0 near 0).

    Example:
        >>> newton_rlct({(2, 2): 1})            # w1^2 w2^2
        RLCT(value=Fraction(1, 2), multiplicity=2, certified=True, reason='...')
        >>> float(newton_rlct({(8, 2): 1}, prior_exponents=(6, 3)))   # min((6+1)/8, (3+1)/2)
        0.875
    """
    clean, d = parse_terms(terms)
    if not clean:
        raise ValueError("K is the zero polynomial; its RLCT is undefined. Give a non-zero K.")
    assert d is not None
    const = clean.get((0,) * d)
    if const is not None:
        raise ValueError(
            f"K(0) = {const} != 0: the RLCT is computed at w* = 0, which must be a zero of K. "
            "Remove the constant term, or shift the polynomial to a zero of K (Polynomial.shift)."
        )
    if prior_exponents is None:
        tau = [Fraction(0)] * d
    else:
        tau = [as_fraction(t, "prior exponent") for t in prior_exponents]
        if len(tau) != d:
            raise ValueError(f"prior_exponents has length {len(tau)}, but K has d = {d} variables")
        if any(t <= -1 for t in tau):
            raise ValueError("prior exponents must be > -1 (otherwise the prior is not integrable at 0)")

    # blocks of linked variables (union-find over monomial supports)
    parent = list(range(d))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    used = set()
    for exp in clean:
        sup = [i for i, a in enumerate(exp) if a]
        used.update(sup)
        for i in sup[1:]:
            a, b = find(sup[0]), find(i)
            if a != b:
                parent[b] = a
    blocks: Dict[int, List[int]] = {}
    for i in sorted(used):
        blocks.setdefault(find(i), []).append(i)

    lam = Fraction(0)
    m = 1
    certified = True
    reasons = []
    block_terms: Dict[int, List[Tuple[Exponent, Fraction]]] = {r: [] for r in blocks}
    for exp, c in clean.items():
        first = next(i for i, a in enumerate(exp) if a)
        block_terms[find(first)].append((exp, c))
    for root, var_ids in blocks.items():
        pts = [tuple(exp[i] for i in var_ids) for exp, _ in block_terms[root]]
        cfs = [c for _, c in block_terms[root]]
        tau1 = [tau[i] + 1 for i in var_ids]
        lb, mb, cb, rb = _newton_block(pts, cfs, tau1, var_ids, method)
        lam += lb
        m += mb - 1
        certified = certified and cb
        if not cb:
            reasons.append(rb)
    if certified:
        reason = "Newton polyhedron, non-degenerate (compact-face monomials even and positive)"
        if len(blocks) > 1:
            reason += f"; sum rule over {len(blocks)} disjoint variable blocks"
    else:
        reason = "; ".join(reasons)
    return RLCT(lam, m, certified, reason)
