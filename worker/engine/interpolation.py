"""Where transition density interpolates: between the inputs when they are all floating, else in
the embedding space of a model that has one (the first floating tensors computed from its integer
inputs), the choice named in the report. Integer inputs along an embedding path
take the nearer endpoint's value (an attention mask of sample i up to the midpoint, of j after).

Example (a float model, ``bound`` its dataset)::

    space = interpolation_space(model, bound, pairs, batch_size=256)
    result = space.capture(space.paths(pairs[:4], points=16))   # 4 paths of 16 points, in order
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from worker.engine.capture.base import CaptureModel, CaptureResult
from worker.engine.errors import AnalysisError
from worker.engine.inputs import BoundInputs
from worker.engine.metrics.transition import interpolation_points

Space = Literal["inputs", "embedding"]
Batch = dict[str, torch.Tensor]


@runtime_checkable
class EmbeddingModel(Protocol):
    """A front end that can run from its embedding (``worker.engine.capture.exported_model``)."""

    @property
    def embedding_names(self) -> list[str]: ...

    @property
    def embedding_inputs(self) -> list[str]: ...

    def embed(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def capture_embedded(self, batch: Mapping[str, np.ndarray | torch.Tensor]) -> CaptureResult: ...


@dataclass(frozen=True)
class InterpolationSpace:
    """``space`` and the ``tensors`` interpolated (input names, or embedding tensor names);
    ``endpoints[name][k]`` the value of sample ``index[k]`` (``index`` maps a sample to ``k``);
    ``nearest``: the inputs that take the nearer endpoint's value instead."""

    space: Space
    tensors: list[str]
    model: CaptureModel
    endpoints: dict[str, torch.Tensor]
    nearest: dict[str, torch.Tensor]
    index: dict[int, int]

    def path(self, i: int, j: int, points: int, start: int = 0, stop: int | None = None) -> Batch:
        """Points ``start..stop-1`` of the ``points``-point path from sample ``i`` to ``j``."""
        end = points if stop is None else stop
        a, b = self.index[i], self.index[j]
        batch = {
            name: interpolation_points(values[a], values[b], points, start, end)
            for name, values in self.endpoints.items()
        }
        if self.nearest:
            far = torch.arange(start, end) * 2 >= points - 1  # past the midpoint: j's value
            for name, values in self.nearest.items():
                rows = torch.where(far, b, a)
                batch[name] = values[rows]
        return batch

    def paths(self, pairs: torch.Tensor, points: int) -> Batch:
        """Every point of each pair's path, the paths one after the other: ``[P * points, ...]``."""
        parts = [self.path(i, j, points) for i, j in pairs.tolist()]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def capture(self, batch: Batch) -> CaptureResult:
        """The model's layers on a batch of path points."""
        if self.space == "embedding":
            assert isinstance(self.model, EmbeddingModel)
            return self.model.capture_embedded(batch)
        return self.model.capture(batch)


def interpolation_space(
    model: CaptureModel, bound: BoundInputs, pairs: torch.Tensor, batch_size: int
) -> InterpolationSpace:
    """The space TD interpolates in for ``[P, 2]`` ``pairs`` of ``bound``'s samples, with the
    endpoints it needs (embeddings computed ``batch_size`` samples at a time).

    Raises ``AnalysisError(code="dataset_invalid")`` for integer inputs of a model that cannot be
    run from its embedding (no floating per-sample tensor is computed from them).
    """
    samples = sorted({int(v) for v in pairs.reshape(-1).tolist()})
    index = {sample: k for k, sample in enumerate(samples)}
    rows = torch.as_tensor(samples, dtype=torch.int64)
    arrays = {name: torch.as_tensor(array[rows.numpy()]) for name, array in bound.arrays.items()}
    integer = [name for name, array in bound.arrays.items() if not np.issubdtype(array.dtype, np.floating)]
    if not integer:
        floats = {name: values.to(model.device) for name, values in arrays.items()}
        return InterpolationSpace("inputs", list(bound.arrays), model, floats, {}, index)
    if not isinstance(model, EmbeddingModel) or not model.embedding_inputs:
        raise AnalysisError(
            f"transition density interpolates between inputs, and input {integer[0]!r} holds "
            f"{bound.arrays[integer[0]].dtype} values (token ids?) that cannot be interpolated, and "
            "the model computes no floating per-sample tensor from them (an embedding) to interpolate "
            'in instead; set "transition_density": null',
            code="dataset_invalid",
        )
    embedded: dict[str, list[torch.Tensor]] = {name: [] for name in model.embedding_inputs}
    for start in range(0, len(samples), batch_size):
        part = model.embed({name: values[start : start + batch_size] for name, values in arrays.items()})
        for name, values in part.items():
            embedded[name].append(values)
    endpoints = {name: torch.cat(parts) for name, parts in embedded.items() if parts}
    endpoints |= {name: arrays[name].to(model.device) for name in bound.arrays if name not in integer}
    nearest = {name: arrays[name].to(model.device) for name in integer}
    return InterpolationSpace("embedding", list(model.embedding_names), model, endpoints, nearest, index)


def unavailable(model: CaptureModel) -> str | None:
    """Why transition density cannot run on ``model`` whatever the pairs (integer inputs and no
    embedding to interpolate in), None when it can."""
    dtypes = {spec.name: spec.dtype for spec in model.inputs}
    integer = [name for name, dtype in dtypes.items() if not _floating(dtype)]
    if not integer or (isinstance(model, EmbeddingModel) and model.embedding_inputs):
        return None
    return (
        f"input {integer[0]!r} holds {dtypes[integer[0]]} values (token ids?) that cannot be "
        f"interpolated, and this {model.format} model computes no floating per-sample tensor from "
        "them (an embedding) to interpolate in instead"
    )


def describe_space(model: CaptureModel) -> tuple[Space, list[str]]:
    """Where TD interpolates for ``model`` and the tensors interpolated, as the report states them
    (known once the model is open, before any path runs)."""
    integer = [spec.name for spec in model.inputs if not _floating(spec.dtype)]
    if not integer:
        return "inputs", [spec.name for spec in model.inputs]
    names = model.embedding_names if isinstance(model, EmbeddingModel) else []
    floats = [spec.name for spec in model.inputs if spec.name not in integer]
    return "embedding", [*names, *floats]


def _floating(dtype: str) -> bool:
    try:
        return bool(np.issubdtype(np.dtype(dtype), np.floating))
    except TypeError:
        return False
