"""slt_basins: local learning coefficients, exact RLCT ground truth and flatness measures."""
from .calibration import CalibrationResult, calibrate, calibrate_potential
from .compare import compare_measures
from .curvature import (
    RankResult,
    behaviour_jacobian,
    damped_logdet,
    g_rank,
    hessian,
    hessian_rank,
    hessian_trace,
    matrix_rank,
    ntk,
    top_eigenvalues,
)
from .errors import (
    CalibrationError,
    CheckpointMismatchError,
    LLCWarning,
    LocalizationWarning,
    RankWarning,
    SamplerDivergedError,
    VmapFallbackWarning,
)
from .llc import default_nbeta, estimate_llc, estimate_llc_potential
from .operators import HessianOperator, JacobianOperator, hessian_operator, jacobian_operator
from .options import LLCOptions
from .multitemperature import (
    MultiTemperatureResult,
    ReweightResult,
    default_span,
    estimate_llc_multitemperature,
    estimate_llc_multitemperature_potential,
    fit_multitemperature,
    reweight_llc,
)
from .result import CheckFailure, Checks, LLCResult
from .trajectory import TrajectoryResult, estimate_llc_trajectory
from .localization import LocalizationSweep, llc_vs_localization
from .refine import attention_head_params, attention_modules

__version__ = "0.1.0"

__all__ = [
    "estimate_llc",
    "estimate_llc_potential",
    "estimate_llc_trajectory",
    "TrajectoryResult",
    "llc_vs_localization",
    "LocalizationSweep",
    "LocalizationWarning",
    "estimate_llc_multitemperature",
    "estimate_llc_multitemperature_potential",
    "fit_multitemperature",
    "MultiTemperatureResult",
    "ReweightResult",
    "reweight_llc",
    "default_span",
    "compare_measures",
    "calibrate",
    "calibrate_potential",
    "CalibrationResult",
    "CalibrationError",
    "default_nbeta",
    "LLCResult",
    "LLCOptions",
    "Checks",
    "CheckFailure",
    "LLCWarning",
    "SamplerDivergedError",
    "CheckpointMismatchError",
    "VmapFallbackWarning",
    "hessian",
    "hessian_rank",
    "behaviour_jacobian",
    "g_rank",
    "ntk",
    "hessian_trace",
    "top_eigenvalues",
    "damped_logdet",
    "matrix_rank",
    "RankResult",
    "RankWarning",
    "HessianOperator",
    "JacobianOperator",
    "hessian_operator",
    "jacobian_operator",
    "attention_head_params",
    "attention_modules",
]
