"""The JSON contracts shared by the engine, the CLI and the API: analysis config and report."""

from neuronscope.contracts.config import (
    DEFAULT_BREAKPOINTS,
    AnalysisConfig,
    PairSample,
    PairSpec,
    TransitionDensityConfig,
)
from neuronscope.contracts.report import REPORT_SCHEMA_VERSION, Report

__all__ = [
    "DEFAULT_BREAKPOINTS",
    "REPORT_SCHEMA_VERSION",
    "AnalysisConfig",
    "PairSample",
    "PairSpec",
    "Report",
    "TransitionDensityConfig",
]
