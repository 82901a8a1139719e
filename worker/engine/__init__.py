"""The analysis engine: pre-activations, generalized activation patterns, pattern similarity,
transition density and layer health for ONNX and TorchScript models.

Imports neither FastAPI nor Celery. The one entry point is :func:`analyze`.
"""

from worker.engine.analysis import ProgressCallback, analyze
from worker.engine.errors import AnalysisError

__all__ = ["AnalysisError", "ProgressCallback", "analyze"]
