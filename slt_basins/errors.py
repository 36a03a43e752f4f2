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
    """The LLC estimate may be biased or unconverged (the message says why and what to change).

    >>> issubclass(LocalizationWarning, LLCWarning), issubclass(LLCWarning, UserWarning)
    (True, True)
    """


class LocalizationWarning(LLCWarning):
    """The localization γ, not the loss, sets λ̂: in most directions nβ·h ≲ γ at w* (h the Hessian
    eigenvalues), so the chains' spread there is fixed by γ and λ̂ measures γ as much as the model.

    >>> LocalizationWarning.__mro__[1].__name__
    'LLCWarning'
    """


class VmapFallbackWarning(UserWarning):
    """The model could not be vectorised over chains with torch.func.vmap; chains run in a loop.

    The estimate is the same, only slower. Silence it with a filter:

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("ignore", VmapFallbackWarning)
    ...     warnings.warn("no vmap rule for this model", VmapFallbackWarning)
    >>> caught
    []
    """


class RankWarning(UserWarning):
    """The numerical rank is ill-determined: the spectral gap at the cut is under 2 decades.

    It is not an :class:`LLCWarning` (it is about a flatness measure, not about λ̂):

    >>> issubclass(RankWarning, LLCWarning)
    False
    """


class SamplerDivergedError(RuntimeError):
    """Every chain diverged. ``partial`` holds the raw traces sampled before that happened.

    >>> e = SamplerDivergedError("all 4 chains diverged", partial={"steps_done": 30})
    >>> isinstance(e, RuntimeError), e.partial
    (True, {'steps_done': 30})
    """

    def __init__(self, message: str, partial: Optional[Any] = None):
        super().__init__(message)
        self.partial = partial


class CalibrationError(ValueError):
    """No setting of the calibration grid passed the rules. The message says what to try next;
    ``table`` holds every cell that was run, with its ``status``.

    >>> e = CalibrationError("no setting passed the calibration rules", table=[{"status": "diverged"}])
    >>> isinstance(e, ValueError), e.table[0]["status"]
    (True, 'diverged')
    """

    def __init__(self, message: str, table: Optional[Any] = None):
        super().__init__(message)
        self.table = table


class CheckpointMismatchError(ValueError):
    """A checkpoint file exists but was written with other settings (the message lists them).

    >>> issubclass(CheckpointMismatchError, ValueError)
    True
    """


def warn(message: str, category: type = LLCWarning) -> None:
    """Issue a warning attributed to the first caller outside ``slt_basins`` (the user's line),
    however deep inside the package it is raised.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("R-hat = 1.2 > 1.05")
    >>> caught[0].category.__name__, str(caught[0].message)
    ('LLCWarning', 'R-hat = 1.2 > 1.05')
    """
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
