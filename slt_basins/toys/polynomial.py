"""Polynomial potentials K(w) with exact coefficients, exact RLCTs and torch evaluation.

:class:`Polynomial` holds K(w) = Σ_α c_α w^α over variables w1..wd with rational coefficients
(``fractions.Fraction``). It is built from a string, parsed safely with :mod:`ast` (never ``eval``)::

    Polynomial("w1**2*w2**2 + w3**4")
    Polynomial("(w1*w2 - w3*w4)^2")          # ^ means power
    Polynomial("(w1**2 + w2**2)**4")         # products and powers of sums are expanded
    Polynomial("3/2*w**2")                   # a lone 'w' (or 'x') means the 1-D variable w1

or from a dict ``{(2, 2): 1, (0, 4): 1}`` (exponent tuple -> coefficient).

What it gives:

* ``K.rlct(prior_exponents=None)``: exact (λ, m) at w = 0 by the Newton-polyhedron method,
  ``certified`` only when Newton non-degeneracy is certified (see :mod:`slt_basins.toys.rlct`).
* ``K(w)``: differentiable evaluation on torch tensors, ``(chains, d) -> (chains,)``, ``(d,) -> ()``.
* ``K.hessian_rank()``: exact rank of Hess K(0) (from the degree-2 part).
* ``K.regression(n, noise_std, seed)``: a regression model whose population loss is K (when K is a
  square or a sum of squares).
* ``K.shift(point)``: K(w + point), to compute local RLCTs at other zeros of K.

Convenience constructors: :func:`power`, :func:`crossing_valley`, :func:`sum_of_powers`.
"""
from __future__ import annotations

import ast
import math
import re
from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .rlct import RLCT, as_fraction, exact_rank, newton_rlct, parse_terms

__all__ = [
    "Polynomial",
    "PolynomialRegression",
    "power",
    "crossing_valley",
    "sum_of_powers",
]

Exponent = Tuple[int, ...]
Terms = Dict[Exponent, Fraction]

_MAX_TERMS = 50_000
_MAX_POWER = 256
_VAR_RE = re.compile(r"^w(\d+)$")


# ---------------------------------------------------------------------------------------------
# exact sparse polynomial arithmetic on {exponent tuple: Fraction}
# ---------------------------------------------------------------------------------------------
def _clean(t: Mapping[Exponent, Fraction]) -> Terms:
    return {k: v for k, v in t.items() if v != 0}


def _add(a: Terms, b: Terms, sign: int = 1) -> Terms:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Fraction(0)) + sign * v
    return _clean(out)


def _mul(a: Terms, b: Terms) -> Terms:
    out: Terms = {}
    for ka, va in a.items():
        for kb, vb in b.items():
            k = tuple(x + y for x, y in zip(ka, kb))
            out[k] = out.get(k, Fraction(0)) + va * vb
    out = _clean(out)
    if len(out) > _MAX_TERMS:
        raise ValueError(
            f"the expanded polynomial has more than {_MAX_TERMS} terms; use a smaller expression"
        )
    return out


def _pow(a: Terms, k: int, d: int) -> Terms:
    result: Terms = {(0,) * d: Fraction(1)}
    base = a
    while k:
        if k & 1:
            result = _mul(result, base)
        k >>= 1
        if k:
            base = _mul(base, base)
    return result


def _const(c: Fraction, d: int) -> Terms:
    return _clean({(0,) * d: Fraction(c)})


def _is_const(t: Terms, d: int) -> bool:
    return all(k == (0,) * d for k in t)


def _const_value(t: Terms, d: int) -> Fraction:
    return t.get((0,) * d, Fraction(0))


# ---------------------------------------------------------------------------------------------
# safe parser
# ---------------------------------------------------------------------------------------------
_SYNTAX_HELP = (
    "Write K with numbers, the variables w1, w2, ..., wd (or a lone w / x for one variable), "
    "+ - * / (division by numbers only), ** or ^ (non-negative integer powers) and parentheses, "
    "e.g. 'w1**2*w2**2 + w3**4' or '(w1*w2 - w3*w4)**2'."
)


class _Parser:
    def __init__(self, text: str, d: Optional[int]):
        if not isinstance(text, str):
            raise ValueError(f"expected a string, got {type(text).__name__}")
        src = text.strip().replace("^", "**")
        if not src:
            raise ValueError("empty polynomial string. " + _SYNTAX_HELP)
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"cannot parse {text!r} as a polynomial ({e.msg}). {_SYNTAX_HELP}") from None
        self.text = text
        self.tree = tree
        for node in ast.walk(tree):
            if isinstance(node, (ast.Call, ast.Attribute, ast.Subscript, ast.Lambda, ast.Compare,
                                 ast.BoolOp, ast.IfExp, ast.Tuple, ast.List, ast.Dict, ast.Set)):
                raise ValueError(
                    f"unsupported syntax ({type(node).__name__}) in {text!r}: only polynomials are "
                    f"allowed, no function calls or other expressions. {_SYNTAX_HELP}"
                )
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        index: Dict[str, int] = {}
        lone = names & {"w", "x"}
        if lone:
            if len(names) > 1:
                raise ValueError(
                    f"{text!r} mixes the 1-D variable name(s) {sorted(lone)} with {sorted(names - lone)}; "
                    "use w1, w2, ... for several variables."
                )
            index[lone.pop()] = 0
        else:
            for nm in names:
                mt = _VAR_RE.match(nm)
                if not mt:
                    raise ValueError(f"unknown symbol {nm!r} in {text!r}. {_SYNTAX_HELP}")
                i = int(mt.group(1))
                if i < 1:
                    raise ValueError(f"variable {nm!r}: indices start at 1 (w1, w2, ...)")
                index[nm] = i - 1
        d_found = max(index.values(), default=-1) + 1
        if d is None:
            d = max(d_found, 1)
        else:
            d = int(d)
            if d < d_found:
                raise ValueError(f"{text!r} uses w{d_found}, but d = {d} was given; pass d >= {d_found}")
        self.d = d
        self.index = index

    # -- expansion -----------------------------------------------------------------------------
    def poly(self, node) -> Terms:
        d = self.d
        if isinstance(node, ast.Expression):
            return self.poly(node.body)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"unsupported constant {v!r} in {self.text!r}. {_SYNTAX_HELP}")
            return _const(as_fraction(v), d)
        if isinstance(node, ast.Name):
            e = [0] * d
            e[self.index[node.id]] = 1
            return {tuple(e): Fraction(1)}
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return self.poly(node.operand)
            if isinstance(node.op, ast.USub):
                return {k: -v for k, v in self.poly(node.operand).items()}
            raise ValueError(f"unsupported operator in {self.text!r}. {_SYNTAX_HELP}")
        if isinstance(node, ast.BinOp):
            op = node.op
            if isinstance(op, ast.Add):
                return _add(self.poly(node.left), self.poly(node.right))
            if isinstance(op, ast.Sub):
                return _add(self.poly(node.left), self.poly(node.right), -1)
            if isinstance(op, ast.Mult):
                return _mul(self.poly(node.left), self.poly(node.right))
            if isinstance(op, ast.Div):
                den = self.poly(node.right)
                if not _is_const(den, d) or _const_value(den, d) == 0:
                    raise ValueError(
                        f"in {self.text!r}: division is only allowed by a non-zero number. {_SYNTAX_HELP}"
                    )
                c = 1 / _const_value(den, d)
                return _clean({k: v * c for k, v in self.poly(node.left).items()})
            if isinstance(op, ast.Pow):
                k = self.exponent(node.right)
                return _pow(self.poly(node.left), k, d)
        raise ValueError(
            f"unsupported syntax ({type(node).__name__}) in {self.text!r}. {_SYNTAX_HELP}"
        )

    def exponent(self, node) -> int:
        e = self.poly(node)
        if not _is_const(e, self.d):
            raise ValueError(f"in {self.text!r}: exponents must be numbers, not polynomials")
        v = _const_value(e, self.d)
        if v.denominator != 1 or v < 0:
            raise ValueError(f"in {self.text!r}: exponent {v} is not a non-negative integer")
        if v > _MAX_POWER:
            raise ValueError(f"in {self.text!r}: exponent {v} is larger than {_MAX_POWER}")
        return int(v)

    # -- factored (sum of squares) form ---------------------------------------------------------
    def square(self, node) -> Optional[Tuple[Fraction, Terms]]:
        """(c, g) with node == c*g**2 and c > 0, read off the syntax; None if not recognised."""
        d = self.d
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return self.square(node.operand)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                k = self.exponent(node.right)
                if k % 2 == 0 and k > 0:
                    return Fraction(1), _pow(self.poly(node.left), k // 2, d)
                if k > 0:
                    inner = self.square(node.left)
                    if inner is not None:
                        return inner[0] ** k, _pow(inner[1], k, d)
                    return None
            elif isinstance(node.op, ast.Mult):
                a, b = self.square(node.left), self.square(node.right)
                if a is not None and b is not None:
                    return a[0] * b[0], _mul(a[1], b[1])
                return self._monomial_square(node)
            elif isinstance(node.op, ast.Div):
                a = self.square(node.left)
                den = self.poly(node.right)
                if a is not None and _is_const(den, d) and _const_value(den, d) > 0:
                    return a[0] / _const_value(den, d), a[1]
                return self._monomial_square(node)
        return self._monomial_square(node)

    def _monomial_square(self, node) -> Optional[Tuple[Fraction, Terms]]:
        t = self.poly(node)
        if len(t) != 1:
            return None
        (exp, c), = t.items()
        if c <= 0 or any(a % 2 for a in exp):
            return None
        return c, {tuple(a // 2 for a in exp): Fraction(1)}

    def factors(self) -> Optional[List[Tuple[Fraction, Terms]]]:
        body = self.tree.body
        terms = []

        def flatten(n):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
                flatten(n.left)
                flatten(n.right)
            else:
                terms.append(n)

        flatten(body)
        out = []
        for n in terms:
            sq = self.square(n)
            if sq is None:
                return None
            out.append(sq)
        return out


# ---------------------------------------------------------------------------------------------
# Polynomial
# ---------------------------------------------------------------------------------------------
def _fmt_coef_mono(exp: Exponent, c: Fraction, first: bool, one_d_name: Optional[str] = None) -> str:
    parts = []
    for i, a in enumerate(exp):
        name = f"w{i + 1}"
        if a == 1:
            parts.append(name)
        elif a > 1:
            parts.append(f"{name}**{a}")
    mono = "*".join(parts)
    sign = "-" if c < 0 else "+"
    ac = abs(c)
    if not mono:
        body = str(ac)
    elif ac == 1:
        body = mono
    else:
        body = f"{ac}*{mono}"
    if first:
        return ("-" if c < 0 else "") + body
    return f" {sign} {body}"


class Polynomial:
    """A polynomial K(w) in w1..wd with exact rational coefficients.

    Args:
        spec: a string such as ``"w1**2*w2**2 + w3**4"`` or ``"(w1 - w2)^2"`` (safe :mod:`ast`
            parser: numbers, w1..wd or a lone w/x, + - * / ** ^ and parentheses; products and powers
            of sums are expanded), a dict ``{exponent tuple: coefficient}`` (int keys are accepted
            for d = 1), or another Polynomial (copied).
        d: number of variables. Default: the largest variable index used (string) or the tuple
            length (dict). A larger d adds variables that K does not depend on.

    A string of the form ``(f)**2``, ``c*(f)**2`` or a sum of such squares (or of even monomials
    with positive coefficients) keeps its factored form K = Σ_j c_j f_j², used by
    :meth:`regression`.

    Raises:
        ValueError: unparsable or non-polynomial input, or K constant (including zero).

    Attributes:
        d: number of variables; ``degree``: total degree; ``terms``: dict exponent -> Fraction.

    Example:
        >>> K = Polynomial("w1**2*w2**2 + w3**4")
        >>> K.d, K.degree, K.terms[(0, 0, 4)]
        (3, 4, Fraction(1, 1))
        >>> print(K.rlct())      # λ = 1/2 + 1/4, m = 2 + 1 − 1
        lambda = 3/4 (0.75), m = 2 [certified: ...]
        >>> K(torch.ones(5, 3, dtype=torch.float64)).shape
        torch.Size([5])
    """

    __slots__ = ("_terms", "_d", "_factors", "_tables")

    def __init__(self, spec: Union[str, Mapping, "Polynomial"], d: Optional[int] = None):
        factors = None
        if isinstance(spec, Polynomial):
            terms, dd, factors = dict(spec._terms), spec._d, spec._factors
            if d is not None and int(d) != dd:
                terms, factors, dd = _pad(terms, dd, int(d)), None, int(d)
        elif isinstance(spec, str):
            p = _Parser(spec, d)
            terms = _clean(p.poly(p.tree))
            dd = p.d
            try:
                factors = p.factors()
            except ValueError:
                factors = None
        elif isinstance(spec, Mapping):
            terms, dd = _from_mapping(spec, d)
        else:
            raise ValueError(
                f"Polynomial needs a string like 'w1**2*w2**2' or a dict {{(2, 2): 1}}, got "
                f"{type(spec).__name__}"
            )
        if not terms:
            raise ValueError(f"{spec!r} is the zero polynomial; K must be a non-constant polynomial")
        if _is_const(terms, dd):
            raise ValueError(
                f"{spec!r} is the constant {_const_value(terms, dd)}; K must depend on w (use w1, w2, ...)"
            )
        self._init(terms, dd, factors)

    def _init(self, terms: Terms, d: int, factors):
        self._terms = terms
        self._d = d
        if factors is not None:
            # keep the factored form only if it reproduces K exactly
            total: Terms = {}
            for c, g in factors:
                total = _add(total, {k: c * v for k, v in _mul(g, g).items()})
            if total != terms or any(c <= 0 for c, _ in factors):
                factors = None
        self._factors = factors
        self._tables = self._build_tables()

    @classmethod
    def _raw(cls, terms: Terms, d: int) -> "Polynomial":
        """Build without the non-constant check (used for factors f_j, which may be constants)."""
        obj = cls.__new__(cls)
        obj._init(_clean(dict(terms)), d, None)
        return obj

    # -- basic properties ----------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Number of variables w1..wd.

        >>> Polynomial("w3**2").d, Polynomial("w1**2", d=4).d
        (3, 4)
        """
        return self._d

    @property
    def degree(self) -> int:
        """Total degree max |α|.

        >>> Polynomial("w1**2*w2**4").degree
        6
        """
        return max((sum(k) for k in self._terms), default=0)

    @property
    def terms(self) -> Dict[Exponent, Fraction]:
        """A copy of ``{exponent tuple: Fraction coefficient}`` (zero coefficients dropped).

        >>> Polynomial("2*w1*w2").terms
        {(1, 1): Fraction(2, 1)}
        """
        return dict(self._terms)

    @property
    def variables(self) -> Tuple[int, ...]:
        """0-based indices of the variables that K depends on.

        >>> Polynomial("w2**2", d=3).variables
        (1,)
        """
        return tuple(i for i in range(self._d) if any(k[i] for k in self._terms))

    def __str__(self) -> str:
        items = sorted(self._terms.items(), key=lambda kv: (sum(kv[0]), [-a for a in kv[0]]))
        return "".join(_fmt_coef_mono(k, v, i == 0) for i, (k, v) in enumerate(items))

    def __repr__(self) -> str:
        return f"Polynomial({str(self)!r}, d={self._d})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Polynomial):
            return NotImplemented
        return self._d == other._d and self._terms == other._terms

    def __hash__(self) -> int:
        return hash((self._d, frozenset(self._terms.items())))

    # -- arithmetic (exact) --------------------------------------------------------------------
    def _coerce(self, other) -> Optional[Terms]:
        if isinstance(other, Polynomial):
            if other._d != self._d:
                raise ValueError(f"cannot combine polynomials with d = {self._d} and d = {other._d}")
            return other._terms
        if isinstance(other, (int, Fraction, float, str)) and not isinstance(other, bool):
            return _const(as_fraction(other), self._d)
        return None

    def __add__(self, other):
        t = self._coerce(other)
        return NotImplemented if t is None else Polynomial(_add(self._terms, t), d=self._d)

    __radd__ = __add__

    def __sub__(self, other):
        t = self._coerce(other)
        return NotImplemented if t is None else Polynomial(_add(self._terms, t, -1), d=self._d)

    def __mul__(self, other):
        t = self._coerce(other)
        return NotImplemented if t is None else Polynomial(_mul(self._terms, t), d=self._d)

    __rmul__ = __mul__

    def __pow__(self, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError("only positive integer powers of a Polynomial are supported")
        out = Polynomial(_pow(self._terms, k, self._d), d=self._d)
        if k % 2 == 0:
            out._init(out._terms, out._d, [(Fraction(1), _pow(self._terms, k // 2, self._d))])
        return out

    # -- exact analysis ------------------------------------------------------------------------
    def rlct(self, prior_exponents: Optional[Sequence] = None) -> RLCT:
        """RLCT (λ, m) of K at w* = 0 by the Newton-polyhedron method, in exact arithmetic.

        Args:
            prior_exponents: τ for a prior φ ∝ Π|w_i|^{τ_i} near 0 (each τ_i > −1); default 0
                (any prior positive at 0).

        Returns:
            :class:`RLCT`. ``certified=True`` only if Newton non-degeneracy is certified (every
            monomial on a compact face of the Newton polyhedron is even with a positive coefficient);
            otherwise the Newton value with ``certified=False`` (it can be wrong: for
            ``(w1-w2)**2`` Newton gives 1, the truth is 1/2).

        Raises:
            ValueError: if K(0) != 0, or K is not ≥ 0 near 0 (a vertex monomial of the Newton
                polyhedron is odd or negative, e.g. ``w1**3``, ``w1*w2``, ``-w1**2``).

        Example:
            >>> Polynomial("w1**8*w2**2").rlct(prior_exponents=[6, 3]).value   # λ = min((6+1)/8, (3+1)/2)
            Fraction(7, 8)
        """
        return newton_rlct(self._terms, prior_exponents)

    def hessian(self) -> List[List[Fraction]]:
        """Exact Hessian matrix of K at w = 0 (d x d list of Fractions), from the degree-2 part.

        Example:
            >>> Polynomial("(w1 - w2)**2").hessian()
            [[Fraction(2, 1), Fraction(-2, 1)], [Fraction(-2, 1), Fraction(2, 1)]]
        """
        d = self._d
        H = [[Fraction(0)] * d for _ in range(d)]
        for k, c in self._terms.items():
            if sum(k) != 2:
                continue
            nz = [i for i, a in enumerate(k) if a]
            if len(nz) == 1:
                H[nz[0]][nz[0]] += 2 * c
            else:
                i, j = nz
                H[i][j] += c
                H[j][i] += c
        return H

    def hessian_rank(self) -> int:
        """Exact rank of Hess K(0) (rational Gaussian elimination on the degree-2 part).

        Example:
            >>> Polynomial("(w1 - w2)**2").hessian_rank(), Polynomial("w1**2*w2**2").hessian_rank()
            (1, 0)
        """
        rows: Dict[int, Dict[int, Fraction]] = {}
        for k, c in self._terms.items():
            if sum(k) != 2:
                continue
            nz = [i for i, a in enumerate(k) if a]
            if len(nz) == 1:
                i = nz[0]
                rows.setdefault(i, {})[i] = rows.setdefault(i, {}).get(i, 0) + 2 * c
            else:
                i, j = nz
                rows.setdefault(i, {})[j] = rows.setdefault(i, {}).get(j, 0) + c
                rows.setdefault(j, {})[i] = rows.setdefault(j, {}).get(i, 0) + c
        return exact_rank(list(rows.values()))

    def shift(self, point: Sequence) -> "Polynomial":
        """The polynomial w ↦ K(w + point), exactly (point entries: int/Fraction/str/float).

        Use it for local RLCTs at other zeros of K, e.g. the crossing valley at an axis point::

            >>> Polynomial("w1**2*w2**2").shift([1, 0]).rlct().multiplicity
            1
        """
        p = [as_fraction(x, "shift") for x in point]
        if len(p) != self._d:
            raise ValueError(f"point has length {len(p)}, expected d = {self._d}")
        d = self._d
        out: Terms = {}
        for k, c in self._terms.items():
            acc: Terms = {(0,) * d: c}
            for i, a in enumerate(k):
                if a == 0:
                    continue
                uni: Terms = {}
                for j in range(a + 1):
                    coef = math.comb(a, j) * p[i] ** (a - j)
                    if coef:
                        e = [0] * d
                        e[i] = j
                        uni[tuple(e)] = Fraction(coef)
                acc = _mul(acc, uni)
            out = _add(out, acc)
        return Polynomial(out, d=d)

    def square_factors(self) -> List[Tuple[Fraction, "Polynomial"]]:
        """K as Σ_j c_j f_j² with c_j > 0: a list of (c_j, f_j).

        Uses the factored form of the input string (``(f)**2``, ``c*(f)**2``, sums of squares), or,
        for any K whose monomials are all even with positive coefficients, f_j = w^{α_j/2} and
        c_j = the coefficient.

        Raises:
            ValueError: if K is not recognisably a sum of squares.

        Example:
            >>> [(c, str(f)) for c, f in Polynomial("(w1*w2 - w3*w4)**2").square_factors()]
            [(Fraction(1, 1), 'w1*w2 - w3*w4')]
        """
        if self._factors is not None:
            return [(c, Polynomial._raw(g, self._d)) for c, g in self._factors]
        if all(c > 0 and not any(a % 2 for a in k) for k, c in self._terms.items()):
            return [
                (c, Polynomial._raw({tuple(a // 2 for a in k): Fraction(1)}, self._d))
                for k, c in sorted(self._terms.items())
            ]
        raise ValueError(
            f"K = {self} is not written as a square or a sum of squares, so it is not the population "
            "loss of a regression model. Write it as '(f)**2' or '(f1)**2 + (f2)**2 + ...' "
            "(e.g. '(w1 - w2)**2' instead of 'w1**2 - 2*w1*w2 + w2**2')."
        )

    # -- torch evaluation ----------------------------------------------------------------------
    def _build_tables(self):
        """Index tables for evaluation (plain CPU tensors, built once, outside any torch transform)."""
        items = sorted(self._terms.items())
        kmax = max([1] + [sum(1 for a in k if a) for k, _ in items])
        var_idx = torch.zeros(len(items), kmax, dtype=torch.long)
        pow_idx = torch.zeros(len(items), kmax, dtype=torch.long)
        for t, (k, _) in enumerate(items):
            j = 0
            for i, a in enumerate(k):
                if a:
                    var_idx[t, j] = i
                    pow_idx[t, j] = a
                    j += 1
        coef = torch.tensor([float(c) for _, c in items], dtype=torch.float64)
        maxpow = max([0] + [max(k) for k, _ in items])
        return var_idx, pow_idx, coef, maxpow

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """Evaluate K on a tensor of shape ``(..., d)``; returns shape ``(...)``.

        ``(chains, d) -> (chains,)`` and ``(d,) -> ()``. Differentiable (built from products, no
        ``pow``), so it can serve as a sampler potential. The result has the input's dtype and
        device; non-tensors are converted with ``torch.as_tensor`` (float64 by default).
        """
        if not isinstance(w, torch.Tensor):
            w = torch.as_tensor(w, dtype=torch.float64)
        if not w.is_floating_point():
            w = w.to(torch.float64)
        if w.ndim == 0 or w.shape[-1] != self._d:
            raise ValueError(f"expected a tensor of shape (..., {self._d}), got {tuple(w.shape)}")
        var_idx, pow_idx, coef, maxpow = self._tables
        if w.device != var_idx.device:
            var_idx, pow_idx = var_idx.to(w.device), pow_idx.to(w.device)
        coef = coef.to(device=w.device, dtype=w.dtype)
        powers = [torch.ones_like(w)]
        for _ in range(maxpow):
            powers.append(powers[-1] * w)
        table = torch.stack(powers, dim=-1)  # (..., d, maxpow+1)
        mono = table[..., var_idx, pow_idx].prod(dim=-1)  # (..., T)
        return mono @ coef

    # -- regression model ----------------------------------------------------------------------
    def regression(self, n: int, noise_std: float = 0.0, seed: int = 0):
        """A regression model whose population loss is K, with a data set drawn at w* = 0.

        Writes K = Σ_j c_j f_j(w)² (:meth:`square_factors`) and builds a :class:`PolynomialRegression`
        with one trainable float64 parameter ``w`` of shape (d,), initialised at w* = 0, computing
        ``model(x)[:, j] = g_j(w) * x`` with g_j = √c_j · f_j (so Σ_j g_j² = K exactly) for
        x of shape (n, 1). Data: x ~ N(0, 1) and y = noise_std · N(0, 1) of shape (n, J) (the truth
        is g = 0), both drawn from ``torch.Generator().manual_seed(seed)``.

        Scaling: for unit-variance x, E[Σ_j (g_j(w) x − y_j)²] = K(w) + J·noise_std². With
        ``torch.nn.functional.mse_loss`` (mean over samples *and* the J outputs) the population loss
        is (K(w) + J·noise_std²)/J; for J = 1 it is K(w) + noise_std². A Gaussian negative
        log-likelihood with variance σ² gives K/(2σ²) + const instead; λ is unchanged by such
        rescaling, only nβ is (``docs/theory.md``, rescaling).

        Returns:
            ``(model, (x, y))``.

        Raises:
            ValueError: K is not a (sum of) square(s), K(0) != 0, or bad n / noise_std.

        Example:
            >>> model, (x, y) = Polynomial("(w1*w2)**2").regression(n=100, noise_std=0.5, seed=0)
            >>> model(x).shape, y.shape, model.w.shape
            (torch.Size([100, 1]), torch.Size([100, 1]), torch.Size([2]))
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
        if _const_value(self._terms, self._d) != 0:
            raise ValueError("K(0) != 0, so w* = 0 is not a true parameter; shift K to a zero first")
        factors = self.square_factors()
        model = PolynomialRegression(factors, self._d)
        model.true_rlct = self.rlct()  # read by slt_basins.compare_measures (the truth at w* = 0)
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(n, 1, generator=g, dtype=torch.float64)
        y = noise_std * torch.randn(n, len(factors), generator=g, dtype=torch.float64)
        return model, (x, y)


def _pad(terms: Terms, d_old: int, d_new: int) -> Terms:
    if d_new < d_old:
        raise ValueError(f"cannot reduce d from {d_old} to {d_new}")
    return {k + (0,) * (d_new - d_old): v for k, v in terms.items()}


def _from_mapping(spec: Mapping, d: Optional[int]) -> Tuple[Terms, int]:
    terms, dd = parse_terms(spec)
    if dd is None:
        raise ValueError("empty dict: K must be a non-constant polynomial")
    if d is not None:
        terms = _pad(terms, dd, int(d))
        dd = int(d)
    return terms, dd


class PolynomialRegression(nn.Module):
    """y ≈ g(w)·x with g_j(w) = √c_j f_j(w); population loss Σ_j E[(g_j x − y_j)²] = K(w) + const.

    Built by :meth:`Polynomial.regression`. The only trainable parameter is ``w`` (float64,
    shape (d,), initialised at 0). ``forward(x)`` maps x of shape (n, 1) to (n, J).

    Attributes:
        factors: list of (c_j, f_j) with K = Σ c_j f_j²; ``num_outputs`` = J.

    Example:
        >>> model, (x, y) = Polynomial("w1**2*w2**2").regression(n=100, seed=0)
        >>> model.num_outputs, model(x).shape, [n for n, _ in model.named_parameters()]
        (1, torch.Size([100, 1]), ['w'])
    """

    def __init__(self, factors: List[Tuple[Fraction, Polynomial]], d: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.factors = list(factors)
        self.num_outputs = len(self.factors)
        self._scales = [math.sqrt(float(c)) for c, _ in self.factors]

    def g(self, w: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output coefficients g(w), shape (J,), so that K(w) = Σ_j g_j(w)² (default w: ``self.w``).

        Example:
            >>> m, _ = Polynomial("(w1 - w2)**2 + w3**4").regression(4)
            >>> m.g(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64))
            tensor([-2.,  4.], dtype=torch.float64)
        """
        w = self.w if w is None else w
        return torch.stack([s * f(w) for s, f in zip(self._scales, (f for _, f in self.factors))], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x of shape (n, 1) (or (n,)) -> g(w)·x of shape (n, J).

        >>> m, _ = Polynomial("(w1 - w2)**2 + w3**4").regression(4)
        >>> m(torch.ones(3, dtype=torch.float64)).shape  # g(0) = 0 at initialisation
        torch.Size([3, 2])
        """
        if x.ndim == 1:
            x = x[:, None]
        return x * self.g().to(x.dtype)


# ---------------------------------------------------------------------------------------------
# convenience constructors
# ---------------------------------------------------------------------------------------------
def power(k: int) -> Polynomial:
    """K(w) = w^(2k) in one variable (λ = 1/(2k), m = 1; Watanabe 2009).

    Example:
        >>> power(2)            # w^4
        Polynomial('w1**4', d=1)
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (K = w**(2k)), got {k!r}")
    return Polynomial({(2 * k,): 1})


def crossing_valley(*k: int) -> Polynomial:
    """K(w) = Π_i w_i^(2 k_i) (normal crossing; λ = 1/(2 max k_i), m = #ties; Watanabe 2009).

    ``crossing_valley()`` is the classic w1²w2² (k = (1, 1)); ``crossing_valley(1, 2)`` is w1²w2⁴.

    Example:
        >>> crossing_valley(1, 1, 1).rlct().multiplicity
        3
    """
    if len(k) == 1 and isinstance(k[0], (tuple, list)):
        k = tuple(k[0])
    if not k:
        k = (1, 1)
    if any(isinstance(a, bool) or not isinstance(a, int) or a < 0 for a in k) or not any(k):
        raise ValueError(f"crossing_valley needs non-negative integers k_i, not all zero; got {k!r}")
    return Polynomial({tuple(2 * a for a in k): 1})


def sum_of_powers(r: int, p: int, d: int) -> Polynomial:
    """K(w) = Σ_{i ≤ r} w_i^p in R^d with p even (λ = r/p, m = 1; Xu 2024; sum rule of Lin 2011).

    With a flat prior t·K ~ Gamma(r/p, 1) exactly (``docs/theory.md``).

    Example:
        >>> sum_of_powers(500, 4, 1000).rlct().value      # λ = r/p = 500/4
        Fraction(125, 1)
    """
    for name, v in (("r", r), ("p", p), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if p % 2:
        raise ValueError(f"p must be even (K must be >= 0), got p = {p}")
    if r > d:
        raise ValueError(f"r = {r} must be <= d = {d}")
    terms = {}
    for i in range(r):
        e = [0] * d
        e[i] = p
        terms[tuple(e)] = 1
    return Polynomial(terms, d=d)
