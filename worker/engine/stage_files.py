"""The files a split analysis's stages hand each other: a capture (of a block of samples, or of the
whole dataset with its labels) as one ``.npz`` of plain arrays, read with ``allow_pickle=False``.

Patterns are written as the :class:`~worker.engine.metrics.patterns.PatternStore` holds them
(bit-packed layers stay packed), layer health as its exact state
(:meth:`~worker.engine.metrics.health.HealthAccumulator.state`), region counts per label and
flat-region counts as their states, outputs as ``[n, D]`` float32, so a capture read back holds
the same bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.engine.analysis import Captured, DatasetCapture
from worker.engine.errors import AnalysisError
from worker.engine.metrics.chance import LabelRegionCounts
from worker.engine.metrics.death import ValueAccumulator
from worker.engine.metrics.flat import FlatCounts
from worker.engine.metrics.health import HealthAccumulator
from worker.engine.metrics.patterns import PatternStore

#: Bytes of unpacked patterns rebuilt at a time when a stage loads stored patterns.
_LOAD_BYTES = 64 * 2**20
_HEALTH = "health_"
_LABELS = "label_counts_"
_FLAT = "flat_"
_VALUES = "values_"


def internal(message: str) -> AnalysisError:
    return AnalysisError(message, code="internal_error")


def capture_arrays(capture: DatasetCapture) -> dict[str, np.ndarray]:
    """The arrays of a capture: ``neurons``, ``regions``, ``layer{l}`` patterns, ``outputs`` and
    the ``health_*`` state."""
    store = capture.store
    index = torch.arange(store.n_samples)
    arrays: dict[str, np.ndarray] = {
        "neurons": np.asarray(store.neurons, dtype=np.int64),
        "regions": np.asarray(store.regions, dtype=np.int64),
        "outputs": capture.outputs.detach().to(device="cpu", dtype=torch.float32).numpy(),
    }
    for layer in range(store.num_layers):
        data = store.stored_rows(layer, index)
        arrays[f"layer{layer}"] = data.cpu().numpy()
    arrays.update({_HEALTH + key: value for key, value in capture.health.state().items()})
    arrays.update({_LABELS + key: value for key, value in capture.label_counts.state().items()})
    arrays.update({_FLAT + key: value for key, value in capture.flat.state().items()})
    for layer, regions in enumerate(capture.flat.flat):
        arrays[f"{_FLAT}regions{layer}"] = np.asarray(regions, dtype=np.int64)
    if capture.values is not None:
        arrays.update({_VALUES + key: value for key, value in capture.values.state().items()})
    return arrays


def save_capture(path: Path, capture: DatasetCapture, seconds: float) -> None:
    """A block's capture and the seconds it took."""
    np.savez(path, allow_pickle=False, seconds=np.float64(seconds), **capture_arrays(capture))


def save_captured(path: Path, captured: Captured, timings: dict[str, float]) -> None:
    """A whole dataset's capture with its labels, the labels' source, the accuracy and the
    seconds the stages so far took (``load``, ``capture``)."""
    np.savez(
        path,
        allow_pickle=False,
        labels=captured.labels.to(device="cpu", dtype=torch.int64).numpy(),
        labels_source=np.asarray(captured.labels_source),
        accuracy=np.asarray([] if captured.accuracy is None else [captured.accuracy], dtype=np.float64),
        load_s=np.float64(timings.get("load", 0.0)),
        capture_s=np.float64(timings.get("capture", 0.0)),
        **capture_arrays(captured.capture),
    )


def load_capture(path: Path, device: torch.device) -> tuple[DatasetCapture, float]:
    """The capture :func:`save_capture` (or :func:`save_captured`) wrote, on ``device``, and its
    seconds."""
    with np.load(path, allow_pickle=False) as data:
        neurons = [int(m) for m in array(data, "neurons", np.int64, 1)]
        regions = [int(r) for r in array(data, "regions", np.int64, 1)]
        outputs = torch.from_numpy(array(data, "outputs", np.float32, 2)).to(device)
        layers = [array(data, f"layer{layer}", np.uint8, 2) for layer in range(len(neurons))]
        state, labelled, flat, value_state = (
            _prefixed(data, prefix) for prefix in (_HEALTH, _LABELS, _FLAT, _VALUES)
        )
        seconds = float(data["seconds"]) if "seconds" in data.files else float(data["capture_s"])
    store = PatternStore(outputs.shape[0], neurons, regions, device=device)
    step = max(1, _LOAD_BYTES // max(store.total_neurons, 1))
    for start in range(0, store.n_samples, step):
        store.append_stored([torch.from_numpy(stored[start : start + step]) for stored in layers])
    if not store.complete:
        raise internal(f"{path.name}: expected {store.n_samples} stored patterns, got {store.filled}")
    health = HealthAccumulator.combine(neurons, regions, [state], device=device)
    try:
        label_counts = LabelRegionCounts.from_state(neurons, regions, labelled, device=device)
        flat_regions = [[int(r) for r in flat[f"regions{layer}"]] for layer in range(len(neurons))]
        flat_counts = FlatCounts.from_state(neurons, flat_regions, flat, device=device)
    except KeyError as missing:
        raise internal(f"{path.name}: expected the label and flat-region counts, missing {missing}") from None
    values = ValueAccumulator.combine([value_state], device=device) if value_state else None
    return DatasetCapture(store, health, outputs, label_counts, flat_counts, values), seconds


def _prefixed(data: Any, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) :]: data[key] for key in data.files if key.startswith(prefix)}


def load_captured(path: Path, device: torch.device) -> tuple[Captured, dict[str, float]]:
    """The whole capture with its labels :func:`save_captured` wrote, and its timings."""
    capture, _ = load_capture(path, device)
    with np.load(path, allow_pickle=False) as data:
        labels = torch.from_numpy(array(data, "labels", np.int64, 1))
        source = str(data["labels_source"])
        accuracy = array(data, "accuracy", np.float64, 1)
        timings = {"load": float(data["load_s"]), "capture": float(data["capture_s"])}
    if source not in ("dataset", "predicted") or labels.shape != (capture.store.n_samples,):
        raise internal(
            f"{path.name}: expected {capture.store.n_samples} labels from 'dataset' or 'predicted', "
            f"got {labels.shape[0]} from {source!r}"
        )
    labels_source: Any = source
    found = float(accuracy[0]) if accuracy.size else None
    return Captured(capture, labels, labels_source, found), timings


def array(data: Any, key: str, dtype: type[np.generic], ndim: int) -> np.ndarray:
    """``data[key]`` checked to be an ``ndim``-d ``dtype`` array."""
    if key not in data.files:
        raise internal(f"expected an array {key!r} in the stage file, got keys {sorted(data.files)}")
    found = data[key]
    if found.dtype != dtype or found.ndim != ndim:
        raise internal(
            f"{key}: expected a {ndim}-d {np.dtype(dtype)} array, got {found.ndim}-d {found.dtype}"
        )
    return np.ascontiguousarray(found)
