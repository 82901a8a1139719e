"""Open a model file as a ``CaptureModel``, whichever format its content is in.

Example (a ReLU MLP exported to ONNX at ``path``, inputs named ``"x"``)::

    model = open_model(path, example={"x": x[:2]})
    result = model.capture({"x": x[:256]})
    result.pre[0].shape  # [256, model.layers[0].neurons]
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

from neuronscope.contracts.config import CapturePoint
from neuronscope.validation.exported_program import is_exported_program
from worker.engine.capture.base import CaptureModel, Example, InputSpec, ModelFormat
from worker.engine.errors import AnalysisError

__all__ = ["ModelFormat", "archive_format", "detect_format", "model_inputs", "open_model"]

_ZIP_MAGIC = b"PK\x03\x04"


def detect_format(path: Path) -> ModelFormat:
    """``"torchscript"`` for a ``torch.jit.save`` zip archive, ``"pt2"`` for a
    ``torch.export.save`` one, else ``"onnx"`` (parsed later).

    Raises ``AnalysisError`` with ``model_invalid`` (missing, empty or corrupt file) or
    ``model_unsupported`` (a zip that is neither, such as a ``torch.save`` checkpoint).
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise AnalysisError(
            f"expected a readable model file at {path}, got: {exc}", code="model_invalid"
        ) from exc
    if not head:
        raise AnalysisError(f"expected a model file, got an empty file {path.name}", code="model_invalid")
    if not zipfile.is_zipfile(path):
        if head == _ZIP_MAGIC:
            raise AnalysisError(
                f"expected a complete zip archive (TorchScript) in {path.name}, "
                "got a truncated or corrupt one",
                code="model_invalid",
            )
        return "onnx"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise AnalysisError(
            f"expected a readable zip archive in {path.name}, got: {exc}", code="model_invalid"
        ) from exc
    found = archive_format(names)
    if found is not None:
        return found
    raise AnalysisError(
        f"expected an ExportedProgram (torch.export.save), a TorchScript archive (torch.jit.save) or an ONNX "
        f"model in {path.name}, got a zip with neither's entries (a torch.save checkpoint?); save the model "
        "with torch.export.save(torch.export.export(model, example), path) or torch.onnx.export",
        code="model_unsupported",
    )


def archive_format(names: list[str]) -> ModelFormat | None:
    """Which PyTorch archive a zip with member ``names`` is: ``"pt2"`` when it has
    ``<folder>/archive_format`` and ``<folder>/models/`` (``torch.export.save``), ``"torchscript"``
    when it has ``<folder>/code/`` or ``<folder>/constants.pkl`` (``torch.jit.save``), else None.

    >>> archive_format(["m/archive_format", "m/models/model.json", "m/data/weights/weight_0"])
    'pt2'
    >>> archive_format(["m/data.pkl", "m/code/__torch__/m.py", "m/constants.pkl"])
    'torchscript'
    """
    if is_exported_program(names):
        return "pt2"
    if any("/code/" in name or name.endswith("constants.pkl") for name in names):
        return "torchscript"
    return None


def model_inputs(path: Path) -> list[InputSpec]:
    """The model's inputs without running it.

    ONNX: names, shapes (batch dimension included; ``str`` / ``None`` are dynamic) and dtypes as
    declared. TorchScript: names from ``forward``'s schema (``self`` and arguments with defaults
    left out), shape ``()`` (unknown), dtype as traced or ``"float32"``. ``.pt2``: the user inputs
    as exported (``None`` for a dynamic dimension).
    """
    found = detect_format(path)
    if found == "onnx":
        from worker.engine.capture.onnx_model import load_proto, onnx_inputs

        return onnx_inputs(load_proto(path, external_data="ignore"))
    import torch

    if found == "pt2":
        from worker.engine.capture.exported_model import load_program, program_inputs

        return program_inputs(load_program(path, torch.device("cpu")))

    from worker.engine.capture.torchscript_model import load_script, script_inputs

    return script_inputs(load_script(path, torch.device("cpu")))


def open_model(
    path: Path,
    *,
    device: str = "auto",
    layer_names: Sequence[str] | None = None,
    example: Example,
    trusted: bool = False,
    capture_points: Sequence[CapturePoint] = (),
) -> CaptureModel:
    """Load ``path`` (ONNX, TorchScript or ``.pt2``, told apart by content) on ``device`` and discover its
    activation layers by running ``example`` (arrays ``[B, ...]``, B of 1 or 2, keyed by input name).

    ``layer_names`` restricts the layers analysed; ``None`` keeps every activation found and every
    ``capture_points`` tensor, analysed as a layer after the activations.
    ``trusted`` loads ONNX weights stored as external data from the model's directory; otherwise
    such a model is refused with ``model_external_data``. Raises
    ``AnalysisError`` with ``model_invalid``, ``model_unsupported``, ``dataset_shape_mismatch``,
    ``no_activation_layers``, ``unknown_layer``, ``unknown_tensor`` or ``device_unavailable``.
    """
    names = list(layer_names) if layer_names is not None else None
    points = list(capture_points)
    found = detect_format(path)
    if found == "pt2":
        from worker.engine.capture.exported_model import load_exported

        return load_exported(path, device=device, layer_names=names, example=example, capture_points=points)
    if found == "onnx":
        from worker.engine.capture.onnx_model import load_onnx

        return load_onnx(
            path,
            device=device,
            layer_names=names,
            example=example,
            external_data="load" if trusted else "reject",
            capture_points=points,
        )
    from worker.engine.capture.torchscript_model import load_torchscript

    return load_torchscript(path, device=device, layer_names=names, example=example, capture_points=points)
