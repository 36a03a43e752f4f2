"""Every exception and warning class of the package, in one place (the root of the import graph).

Errors say what to change; warnings say why a number may be wrong. Catch the base classes to
handle a family: :class:`LLCWarning` (every warning about an LLC estimate), ``ValueError`` (every
bad input, including :class:`CalibrationError` and :class:`CheckpointMismatchError`).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("γ sets the number", LocalizationWarning)
    >>> issubclass(caught[0].category, LLCWarning)
    True
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "LLCWarning", "LocalizationWarning", "VmapFallbackWarning", "RankWarning",
    "SamplerDivergedError", "CalibrationError", "CheckpointMismatchError", "warn",
]


class LLCWarning(UserWarning):
    """The LLC estimate may be biased or unconverged (the message says why and what to change)."""


class LocalizationWarning(LLCWarning):
    """The localization γ, not the loss, sets λ̂: in most directions nβ·h ≲ γ at w* (h the Hessian
    eigenvalues), so the chains' spread there is fixed by γ and λ̂ measures γ as much as the model."""


class VmapFallbackWarning(UserWarning):
    """The model could not be vectorised over chains with torch.func.vmap; chains run in a loop."""


class RankWarning(UserWarning):
    """The numerical rank is ill-determined: the spectral gap at the cut is under 2 decades."""


class SamplerDivergedError(RuntimeError):
    """Every chain diverged. ``partial`` holds the raw traces sampled before that happened."""

    def __init__(self, message: str, partial: Optional[Any] = None):
        super().__init__(message)
        self.partial = partial


class CalibrationError(ValueError):
    """No setting of the calibration grid passed the rules. The message says what to try next;
    ``table`` holds every cell that was run, with its ``status``."""

    def __init__(self, message: str, table: Optional[Any] = None):
        super().__init__(message)
        self.table = table


class CheckpointMismatchError(ValueError):
    """A checkpoint file exists but was written with other settings (the message lists them)."""


def warn(message: str, category: type = LLCWarning) -> None:
    """Issue a warning attributed to the first caller outside ``slt_basins`` (the user's line),
    however deep inside the package it is raised."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
