"""slt_basins: local learning coefficients, exact RLCT ground truth and flatness measures."""
from .llc import LLCWarning, SamplerDivergedError, default_nbeta, estimate_llc, estimate_llc_potential
from .result import LLCResult
from .targets import VmapFallbackWarning

__version__ = "0.1.0"

__all__ = [
    "estimate_llc",
    "estimate_llc_potential",
    "default_nbeta",
    "LLCResult",
    "LLCWarning",
    "SamplerDivergedError",
    "VmapFallbackWarning",
]
