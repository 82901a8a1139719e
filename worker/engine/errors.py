"""The analysis engine's error type."""

from __future__ import annotations

from neuronscope.errors import NeuronscopeError


class AnalysisError(NeuronscopeError):
    """An analysis that cannot run on these inputs.

    Codes in use: ``model_invalid``, ``model_unsupported``, ``no_activation_layers``,
    ``unknown_layer``, ``dataset_invalid``, ``dataset_shape_mismatch``, ``labels_invalid``,
    ``pairs_invalid``, ``breakpoints_invalid``, ``device_unavailable``, ``out_of_memory`` and
    ``model_runtime_error`` (a model run that failed: ``worker.engine.capture.run_errors``),
    ``cancelled``, and ``analysis_error`` for an internal contract broken between engine parts (a
    bug, not an input problem).
    """

    code = "analysis_error"
