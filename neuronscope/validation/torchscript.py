"""Untrusted TorchScript archives: a zip structure check made without loading anything.

A TorchScript archive is code (PyTorch's own security policy says so); what is checked here only
keeps the upload from being a zip bomb or a plainly wrong file. Loading it belongs in the worker's
sandboxed, resource-limited process.

Error codes (:class:`~neuronscope.errors.InvalidInput`, HTTP 422): ``model_invalid``,
``model_too_large``, ``model_zip_bomb``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import ZIP_MAGIC, ZipPolicy, open_checked_zip, quote
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class TorchScriptSummary:
    """A structurally sound archive: its top-level folder, member count and declared size."""

    prefix: str
    members: int
    uncompressed_bytes: int


def model_zip_policy(limits: Limits) -> ZipPolicy:
    """The zip limits of an uploaded PyTorch archive (TorchScript or ``.pt2``)."""
    return ZipPolicy(
        what="model",
        invalid_code="model_invalid",
        bomb_code="model_zip_bomb",
        max_members=limits.max_model_members,
        max_member_bytes=limits.max_model_uncompressed_bytes,
        max_total_bytes=limits.max_model_uncompressed_bytes,
        max_ratio=limits.max_compression_ratio,
        ratio_min_bytes=limits.compression_ratio_min_bytes,
        max_name_bytes=limits.max_name_bytes,
    )


def check_torchscript_archive(
    path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS
) -> TorchScriptSummary:
    """Check that ``path`` looks like a ``torch.jit.save`` archive, from its zip headers alone.

    Expected: every member under one top-level folder ``P/``, with ``P/data.pkl`` and either code
    (``P/code/...``) or ``P/constants.pkl``; sizes and compression ratios within ``limits``.
    """
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
                f"model: expected a TorchScript archive (a zip file, magic b'PK\\x03\\x04'), got {magic!r}",
                code="model_invalid",
            )
        with open_checked_zip(fp, size, model_zip_policy(limits)) as archive:
            infos = archive.infolist()
    names = [info.orig_filename for info in infos]
    prefixes = {name.split("/", 1)[0] for name in names}
    if len(prefixes) != 1 or any("/" not in name for name in names):
        raise InvalidInput(
            "model: expected every member of a TorchScript archive under one top-level folder, "
            f"got top-level entries {', '.join(sorted(quote(prefix) for prefix in prefixes)[:10])}",
            code="model_invalid",
        )
    prefix = prefixes.pop()
    members = set(names)
    has_code = any(name.startswith(f"{prefix}/code/") for name in names)
    if f"{prefix}/data.pkl" not in members or not (has_code or f"{prefix}/constants.pkl" in members):
        raise InvalidInput(
            f"model: expected a TorchScript archive with {prefix}/data.pkl and {prefix}/code/ or "
            f"{prefix}/constants.pkl, got {len(names)} members without them (a torch.save checkpoint "
            "or another zip? save the model with torch.jit.script(model).save(path))",
            code="model_invalid",
        )
    return TorchScriptSummary(
        prefix=prefix, members=len(names), uncompressed_bytes=sum(info.file_size for info in infos)
    )
