"""Exact ground truth for singular learning theory toys (no sampling).

* :class:`RLCT`: value type (exact λ as a Fraction, multiplicity m, certified flag, reason).
* :class:`Polynomial`: polynomial potentials K(w) with exact Newton-polyhedron RLCTs, exact Hessian
  rank, differentiable torch evaluation and a matching regression model; constructors
  :func:`power`, :func:`crossing_valley`, :func:`sum_of_powers`.
* :func:`rrr_rlct`, :func:`dln_rlct`, :class:`ReducedRankRegression`, :class:`DeepLinearNetwork`:
  Aoyagi–Watanabe (2005) and Aoyagi (2024) learning coefficients, teachers at minimal points.
* :func:`finite_temperature_target`, :func:`gaussian_target`, :func:`crossing_valley_box_target`,
  :func:`multiplicity_bias`: exact finite-nβ values of t·E[K] to test samplers without the
  asymptotic bias.

The formulas and their papers are on the documentation page ``docs/ground-truth.md``.

Example:
    >>> from slt_basins.toys import Polynomial, dln_rlct
    >>> print(Polynomial("w1**2*w2**2").rlct())
    lambda = 1/2 (0.5), m = 2 [certified: ...]
    >>> dln_rlct([4, 4, 4, 4], 0).value
    Fraction(11, 2)
"""
from .finite_t import (
    crossing_valley_box_target,
    finite_temperature_target,
    gaussian_target,
    multiplicity_bias,
)
from .linear_nets import DeepLinearNetwork, ReducedRankRegression, dln_rlct, rrr_rlct
from .polynomial import Polynomial, PolynomialRegression, crossing_valley, power, sum_of_powers
from .rlct import RLCT, newton_rlct

__all__ = [
    "RLCT",
    "newton_rlct",
    "Polynomial",
    "PolynomialRegression",
    "power",
    "crossing_valley",
    "sum_of_powers",
    "rrr_rlct",
    "dln_rlct",
    "ReducedRankRegression",
    "DeepLinearNetwork",
    "finite_temperature_target",
    "gaussian_target",
    "crossing_valley_box_target",
    "multiplicity_bias",
]
