"""What every model front end provides to the rest of the engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from worker.engine.errors import AnalysisError

#: The model formats the engine opens: ONNX, TorchScript (``torch.jit.save``) and ExportedProgram
#: (``torch.export.save``, ``.pt2``).
ModelFormat = Literal["onnx", "torchscript", "pt2"]


@dataclass(frozen=True)
class InputSpec:
    """One model input. ``shape`` includes the batch dimension; ``None`` or a string is dynamic;
    ``()`` means the rank is not known (TorchScript before an example batch was seen)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


#: The example batch a front end discovers layers on: the arrays themselves, or a function of the
#: inputs the model declares (so the dataset is bound to a model loaded only once).
Example = Mapping[str, np.ndarray] | Callable[[list[InputSpec]], Mapping[str, np.ndarray]]


def example_for(example: Example, declared: list[InputSpec]) -> Mapping[str, np.ndarray]:
    """The example batch for a model that declares ``declared`` inputs."""
    return example(declared) if callable(example) else example


@dataclass(frozen=True)
class ActivationLayer:
    """One activation layer found in the model.

    ``name`` is unique within the model; ``op_type`` is a canonical op type from
    ``neuronscope.contracts.config.OpType``; ``shape`` is the per-sample shape of the activation
    map (batch dimension excluded), so ``neurons == prod(shape)``. ``default_breakpoints`` is set
    only where the layer's own attributes define Γ (e.g. Clip bounds, HardSigmoid's kinks), else
    ``None``. ``params`` are the layer's own parameters that move its breakpoints' images or its
    range (``neuronscope.contracts.post_space.Params``: HardSigmoid alpha/beta, Softplus
    beta/threshold, LeakyReLU/ELU/CELU alpha), as ``(name, value)`` pairs.
    """

    name: str
    op_type: str
    shape: tuple[int, ...]
    default_breakpoints: tuple[float, ...] | None = None
    params: tuple[tuple[str, float], ...] = ()

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def selected_positions(available: Sequence[str], layer_names: Sequence[str] | None) -> list[int]:
    """Positions in ``available`` (the layers found, in order) of the layers ``layer_names`` asks
    for, every position when it is None. Raises ``AnalysisError(code="unknown_layer")`` for a
    name not among ``available``."""
    if layer_names is None:
        return list(range(len(available)))
    unknown = [name for name in layer_names if name not in available]
    if unknown:
        raise AnalysisError(
            f"unknown layer names {unknown}; expected names among the activation layers {list(available)}",
            code="unknown_layer",
        )
    wanted = set(layer_names)
    return [i for i, name in enumerate(available) if name in wanted]


@dataclass
class CaptureResult:
    """One batch through the model.

    ``outputs``: ``[B, ...]`` the model's first output. ``pre[k]`` / ``post[k]``: ``[B, neurons_k]``
    float32 values at the input / output of ``layers[k]``, flattened per sample, on the
    front end's device, detached, never aliased by later in-place ops. They may share storage with
    each other or with ``outputs`` (``post[k]`` is ``pre[k + 1]`` when two activations are
    chained): treat them as read-only.
    """

    outputs: torch.Tensor
    pre: list[torch.Tensor]
    post: list[torch.Tensor]


class CaptureModel(Protocol):
    """A loaded model that can run batches with or without capturing activations."""

    format: ModelFormat
    inputs: list[InputSpec]
    layers: list[ActivationLayer]
    device: torch.device
    runtime: str
    #: What the analysis of this model cannot cover (recurrent gates), for the report's
    #: ``model.warnings``.
    warnings: list[str]

    def capture(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult:
        """Run one batch (arrays or tensors keyed by input name, ``[B, ...]``) and capture ``layers``.

        Every batch must have the per-sample input shapes of the example the model was opened
        with, else ``AnalysisError(code="dataset_shape_mismatch")``.
        """
        ...

    def infer(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Plain inference of the same batch, nothing captured: the baseline for benchmarks."""
        ...
