"""Untrusted ExportedProgram archives (``torch.export.save``, ``.pt2``): a zip structure check
made without loading anything, and telling them from TorchScript archives by their entries.

Loading a ``.pt2`` unpickles (its sample inputs and constants), so it is code like TorchScript:
what is checked here only keeps the upload from being a zip bomb or a plainly wrong file.
Loading it belongs in the worker's confined process.

Error codes (:class:`~neuronscope.errors.InvalidInput`, HTTP 422): ``model_invalid``,
``model_too_large``, ``model_zip_bomb``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Literal

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import ZIP_MAGIC, open_checked_zip, quote
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.torchscript import model_zip_policy

ArchiveKind = Literal["torchscript", "pt2"]


@dataclass(frozen=True)
class ExportedProgramSummary:
    """A structurally sound archive: its top-level folder, member count, declared size and the
    number of serialized programs (``models/*.json``)."""

    prefix: str
    members: int
    uncompressed_bytes: int
    programs: int


def model_zip_members(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> list[zipfile.ZipInfo]:
    """The members of a model zip, its structure checked from its headers alone (size, zip
    bombs, names); raises ``InvalidInput`` with ``model_too_large``, ``model_invalid`` or
    ``model_zip_bomb``."""
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size > limits.max_model_bytes:
            raise InvalidInput(
                f"model: the file is {size} bytes; at most {limits.max_model_bytes} are accepted",
                code="model_too_large",
            )
        magic = fp.read(len(ZIP_MAGIC))
        if magic != ZIP_MAGIC:
            raise InvalidInput(
                f"model: expected a PyTorch archive (a zip file, magic b'PK\\x03\\x04'), got {magic!r}",
                code="model_invalid",
            )
        with open_checked_zip(fp, size, model_zip_policy(limits)) as archive:
            return archive.infolist()


def archive_kind(names: list[str]) -> ArchiveKind:
    """``"pt2"`` when the members include ``<folder>/archive_format`` and ``<folder>/models/``
    (``torch.export.save``), else ``"torchscript"`` (checked further by
    ``check_torchscript_archive``).

    >>> archive_kind(["m/archive_format", "m/models/model.json", "m/data/weights/weight_0"])
    'pt2'
    >>> archive_kind(["m/data.pkl", "m/code/__torch__/m.py"])
    'torchscript'
    """
    return "pt2" if is_exported_program(names) else "torchscript"


def is_exported_program(names: list[str]) -> bool:
    """Whether zip members ``names`` are a ``torch.export.save`` archive: a top-level
    ``<folder>/archive_format`` and a ``<folder>/models/`` directory (the one rule the API, the
    validation and the engine's loader share)."""
    has_format = any(name.count("/") == 1 and name.endswith("/archive_format") for name in names)
    has_models = any(name.split("/")[1:2] == ["models"] for name in names)
    return has_format and has_models


def check_exported_program_archive(
    path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS
) -> ExportedProgramSummary:
    """Check that ``path`` looks like a ``torch.export.save`` archive, from its zip headers alone.

    Expected: every member under one top-level folder ``P/``, with ``P/archive_format`` and at
    least one ``P/models/<name>.json``; sizes and compression ratios within ``limits``.
    """
    infos = model_zip_members(path, limits)
    names = [info.orig_filename for info in infos]
    prefixes = {name.split("/", 1)[0] for name in names}
    if len(prefixes) != 1 or any("/" not in name for name in names):
        raise InvalidInput(
            "model: expected every member of an ExportedProgram archive under one top-level folder, "
            f"got top-level entries {', '.join(sorted(quote(prefix) for prefix in prefixes)[:10])}",
            code="model_invalid",
        )
    prefix = prefixes.pop()
    programs = [n for n in names if n.startswith(f"{prefix}/models/") and n.endswith(".json")]
    if f"{prefix}/archive_format" not in names or not programs:
        raise InvalidInput(
            f"model: expected an ExportedProgram archive with {prefix}/archive_format and "
            f"{prefix}/models/*.json, got {len(names)} members without them (save the model with "
            "torch.export.save(torch.export.export(model, example), path))",
            code="model_invalid",
        )
    return ExportedProgramSummary(
        prefix=prefix,
        members=len(names),
        uncompressed_bytes=sum(info.file_size for info in infos),
        programs=len(programs),
    )
