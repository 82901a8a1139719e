"""Untrusted datasets: ``.npy`` (the inputs alone) or ``.npz`` (``x`` or one array per model input,
plus optional integer labels ``y``).

Everything is decided from headers first: the file's magic bytes, the zip central directory and
each array's ``.npy`` header. Only then is anything decompressed or allocated, with pickles
refused, and every member read back no further than its declared size.

Error codes (all :class:`~neuronscope.errors.InvalidInput`, HTTP 422): ``dataset_invalid``
(truncated, garbage, lying or odd structure), ``dataset_object_array`` (object, structured or void
dtype), ``dataset_dtype_unsupported`` (strings, complex, dates), ``dataset_too_large``,
``dataset_zip_bomb``, ``dataset_missing_key``, ``dataset_unexpected_key``, ``dataset_empty``,
``dataset_labels_invalid``, ``dataset_shape_mismatch``, ``dataset_dtype_mismatch``,
``dataset_not_finite``.
"""

from __future__ import annotations

import copy
import io
import math
import os
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt

from neuronscope.errors import InvalidInput
from neuronscope.validation._zip import EMPTY_ZIP_MAGIC, ZIP_MAGIC, ZipPolicy, open_checked_zip, quote
from neuronscope.validation.limits import DEFAULT_LIMITS, Limits
from neuronscope.validation.specs import Dim, InputDescription, as_model_input, format_shape

_NPY_MAGIC = b"\x93NUMPY"
_NPY_PREFIX_LENGTH = 8
#: Version → struct of the header-length field. Version 3.0 (utf-8 field names) only ever holds
#: structured dtypes, which are refused anyway.
_NPY_HEADER_LENGTH = {(1, 0): struct.Struct("<H"), (2, 0): struct.Struct("<I")}
#: Room for an ``.npy`` member's own magic, length field and header on top of its array bytes.
_NPY_OVERHEAD = _NPY_PREFIX_LENGTH + 4
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_LABELS_KEY = "y"
_SINGLE_INPUT_KEY = "x"
_SUPPORTED_KINDS = "biuf"


@dataclass(frozen=True)
class ArrayHeader:
    """One array as its ``.npy`` header declares it; ``dtype`` is a numpy name (``"float32"``)."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class DatasetHeader:
    """What a dataset declares, read without loading it.

    ``arrays`` maps every key (``"x"`` for an ``.npy``) to its header, in file order;
    ``samples`` is the leading dimension every input shares.
    """

    format: Literal["npy", "npz"]
    arrays: Mapping[str, ArrayHeader]
    samples: int

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Every key except the labels ``y``."""
        return tuple(key for key in self.arrays if key != _LABELS_KEY)

    @property
    def labels(self) -> ArrayHeader | None:
        return self.arrays.get(_LABELS_KEY)


@dataclass
class DatasetArrays:
    """A loaded dataset: inputs ``[N, ...]`` keyed as in the file (float inputs as float32,
    integer and bool inputs kept as they are, in native byte order) and labels ``[N]`` or ``None``."""

    inputs: dict[str, npt.NDArray[Any]]
    labels: npt.NDArray[Any] | None


@dataclass(frozen=True)
class _Inspected:
    header: DatasetHeader
    data_offset: int  # .npy only: where the array bytes start


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _invalid(message: str, code: str = "dataset_invalid") -> InvalidInput:
    return InvalidInput(message, code=code)


def _read_exact(fp: _Readable, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = fp.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_npy_header(fp: _Readable, where: str, limits: Limits) -> tuple[ArrayHeader, int]:
    """Parse one ``.npy`` header from ``fp``; return it and the header's length in bytes.

    The header is read into memory (at most ``limits.max_header_bytes``) before numpy parses it,
    so a length field declaring gigabytes allocates nothing.
    """
    prefix = _read_exact(fp, _NPY_PREFIX_LENGTH)
    if len(prefix) < _NPY_PREFIX_LENGTH or not prefix.startswith(_NPY_MAGIC):
        raise _invalid(f"{where}: expected a .npy array (magic b'\\x93NUMPY'), got {prefix[:8]!r}")
    version = (prefix[6], prefix[7])
    length_field = _NPY_HEADER_LENGTH.get(version)
    if length_field is None:
        raise _invalid(f"{where}: expected .npy format version 1.0 or 2.0, got {version[0]}.{version[1]}")
    raw_length = _read_exact(fp, length_field.size)
    if len(raw_length) != length_field.size:
        raise _invalid(f"{where}: the .npy header is truncated")
    (header_length,) = length_field.unpack(raw_length)
    if header_length > limits.max_header_bytes:
        raise _invalid(
            f"{where}: the .npy header declares {header_length} bytes; "
            f"at most {limits.max_header_bytes} are accepted"
        )
    text = _read_exact(fp, header_length)
    if len(text) != header_length:
        raise _invalid(
            f"{where}: the .npy header is truncated: expected {header_length} bytes, got {len(text)}"
        )
    buffer = io.BytesIO(prefix + raw_length + text)
    try:
        np.lib.format.read_magic(buffer)
        reader = _HEADER_READERS[version]
        shape, _fortran_order, dtype = reader(buffer, max_header_size=limits.max_header_bytes)
    except Exception as exc:  # a hostile header can trip any parsing error
        raise _invalid(f"{where}: the .npy header cannot be parsed: {type(exc).__name__}: {exc}") from exc
    _check_dtype(dtype, where)
    if len(shape) > limits.max_rank or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise _invalid(
            f"{where}: expected a shape of at most {limits.max_rank} non-negative integers, "
            f"got {quote(repr(shape), 200)}"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limits.max_array_bytes:
        raise _invalid(
            f"{where}: the header declares shape {format_shape(shape)} of {dtype.name} = {nbytes} bytes; "
            f"at most {limits.max_array_bytes} bytes per array are accepted",
            code="dataset_too_large",
        )
    header_bytes = len(prefix) + len(raw_length) + len(text)
    return ArrayHeader(shape=tuple(shape), dtype=dtype.name, nbytes=nbytes), header_bytes


def _check_dtype(dtype: np.dtype[Any], where: str) -> None:
    if dtype.hasobject or dtype.kind == "O":
        raise _invalid(
            f"{where}: expected a numeric array, got an object array "
            "(it needs pickle, which is never loaded)",
            code="dataset_object_array",
        )
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind == "V":
        raise _invalid(
            f"{where}: expected a plain numeric array, got a structured or void dtype {str(dtype)[:80]}",
            code="dataset_object_array",
        )
    if dtype.kind not in _SUPPORTED_KINDS:
        raise _invalid(
            f"{where}: expected a bool, integer or floating-point array, got dtype {dtype.name}",
            code="dataset_dtype_unsupported",
        )


def _file_size(fp: BinaryIO) -> int:
    return os.fstat(fp.fileno()).st_size


def _zip_policy(limits: Limits) -> ZipPolicy:
    header_room = limits.max_header_bytes + _NPY_OVERHEAD
    return ZipPolicy(
        what="dataset",
        invalid_code="dataset_invalid",
        bomb_code="dataset_zip_bomb",
        max_members=limits.max_members,
        max_member_bytes=limits.max_array_bytes + header_room,
        max_total_bytes=limits.max_total_bytes + limits.max_members * header_room,
        max_ratio=limits.max_compression_ratio,
        ratio_min_bytes=limits.compression_ratio_min_bytes,
        max_name_bytes=limits.max_name_bytes,
    )


def _member_key(info: zipfile.ZipInfo) -> str:
    name = info.orig_filename
    if not name.endswith(".npy") or len(name) == len(".npy") or "/" in name:
        raise _invalid(
            f"dataset: member {quote(name)} is not a top-level '<key>.npy' array; "
            "expected an .npz written by numpy.savez / savez_compressed"
        )
    return name[: -len(".npy")]


def _inspect_npz(archive: zipfile.ZipFile, limits: Limits) -> dict[str, ArrayHeader]:
    arrays: dict[str, ArrayHeader] = {}
    for info in archive.infolist():
        key = _member_key(info)
        where = f"dataset array {quote(key)}"
        try:
            with archive.open(info) as member:
                header, header_length = _read_npy_header(member, where, limits)
        except InvalidInput:
            raise
        except Exception as exc:  # corrupt deflate stream, bad local header, ...
            raise _invalid(f"{where}: the member cannot be read: {type(exc).__name__}: {exc}") from exc
        declared = header_length + header.nbytes
        if declared != info.file_size:
            raise _invalid(
                f"{where}: the .npy header declares {format_shape(header.shape)} of {header.dtype} "
                f"({declared} bytes with the header) but the zip entry declares {info.file_size} bytes; "
                "expected them to agree"
            )
        arrays[key] = header
    return arrays


def _inspect_open(fp: BinaryIO, limits: Limits) -> _Inspected:
    size = _file_size(fp)
    fp.seek(0)
    magic = fp.read(len(_NPY_MAGIC))
    data_offset = 0
    if magic.startswith(_NPY_MAGIC):
        fp.seek(0)
        header, data_offset = _read_npy_header(fp, "dataset", limits)
        if size - data_offset != header.nbytes:
            raise _invalid(
                f"dataset: the header declares shape {format_shape(header.shape)} of {header.dtype} "
                f"= {header.nbytes} bytes but the file holds {size - data_offset} bytes of data "
                "(truncated or padded?)"
            )
        file_format: Literal["npy", "npz"] = "npy"
        arrays = {_SINGLE_INPUT_KEY: header}
    elif magic.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        file_format = "npz"
        with open_checked_zip(fp, size, _zip_policy(limits)) as archive:
            arrays = _inspect_npz(archive, limits)
    else:
        raise _invalid(
            "dataset: expected an .npy array (magic b'\\x93NUMPY') or an .npz zip archive "
            "(magic b'PK\\x03\\x04'), "
            f"got a file starting with {magic[:6]!r}"
        )
    total = sum(array.nbytes for array in arrays.values())
    if total > limits.max_total_bytes:
        raise _invalid(
            f"dataset: the arrays declare {total} bytes together; "
            f"at most {limits.max_total_bytes} are accepted",
            code="dataset_too_large",
        )
    return _Inspected(header=_summarise(file_format, arrays), data_offset=data_offset)


def _summarise(file_format: Literal["npy", "npz"], arrays: dict[str, ArrayHeader]) -> DatasetHeader:
    inputs = {key: array for key, array in arrays.items() if key != _LABELS_KEY}
    if not inputs:
        raise _invalid(
            f"dataset: expected an array named 'x' (or arrays named after the model's inputs), "
            f"got keys {sorted(arrays)}",
            code="dataset_missing_key",
        )
    for key, array in inputs.items():
        if not array.shape:
            raise _invalid(
                f"dataset input {quote(key)}: expected an array of shape (N, ...) with one row per sample, "
                "got a 0-d array",
                code="dataset_shape_mismatch",
            )
    counts = {key: array.shape[0] for key, array in inputs.items()}
    if len(set(counts.values())) != 1:
        raise _invalid(
            f"dataset: expected every input to hold the same number of samples, got {counts}",
            code="dataset_shape_mismatch",
        )
    samples = next(iter(counts.values()))
    if samples == 0:
        raise _invalid("dataset: expected at least one sample, got 0", code="dataset_empty")
    labels = arrays.get(_LABELS_KEY)
    if labels is not None:
        kind = np.dtype(labels.dtype).kind
        if kind not in "iu":
            raise _invalid(
                f"dataset labels 'y': expected an integer array, got dtype {labels.dtype}",
                code="dataset_labels_invalid",
            )
        if len(labels.shape) != 1:
            raise _invalid(
                f"dataset labels 'y': expected a 1-D array of shape ({samples},), "
                f"got shape {format_shape(labels.shape)}",
                code="dataset_labels_invalid",
            )
        if labels.shape[0] != samples:
            raise _invalid(
                f"dataset labels 'y': expected {samples} labels (one per sample), got {labels.shape[0]}",
                code="dataset_labels_invalid",
            )
    return DatasetHeader(format=file_format, arrays=arrays, samples=samples)


def inspect_dataset(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> DatasetHeader:
    """Check a dataset from its headers alone and describe it; nothing is decompressed or loaded.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.npz"
    >>> np.savez(path, x=np.zeros((10, 784), np.float32), y=np.arange(10))
    >>> header = inspect_dataset(path)
    >>> header.samples, header.arrays["x"].shape, header.arrays["y"].dtype
    (10, (10, 784), 'int64')
    """
    with open(path, "rb") as fp:
        return _inspect_open(fp, limits).header


def _read_member(archive: zipfile.ZipFile, key: str, limits: Limits) -> npt.NDArray[Any]:
    info = archive.getinfo(f"{key}.npy")
    where = f"dataset array {quote(key)}"
    # Let the stream run one byte past the declared size, so that a member which decompresses to
    # more than it declares is caught rather than silently cut.
    bounded = copy.copy(info)
    bounded.file_size = info.file_size + 1
    try:
        with archive.open(bounded) as stream:
            array = np.lib.format.read_array(
                stream, allow_pickle=False, max_header_size=limits.max_header_bytes
            )
            extra = stream.read(1)  # also makes zipfile verify the CRC
    except Exception as exc:
        raise _invalid(f"{where}: the member cannot be read: {type(exc).__name__}: {exc}") from exc
    if extra:
        raise _invalid(
            f"{where}: the member decompresses to more than the {info.file_size} bytes it declares"
        )
    return array


def _load_open(fp: BinaryIO, limits: Limits) -> tuple[DatasetHeader, dict[str, npt.NDArray[Any]]]:
    inspected = _inspect_open(fp, limits)
    header = inspected.header
    arrays: dict[str, npt.NDArray[Any]] = {}
    if header.format == "npy":
        fp.seek(0)
        try:
            arrays[_SINGLE_INPUT_KEY] = np.load(
                fp, allow_pickle=False, max_header_size=limits.max_header_bytes
            )
        except Exception as exc:
            raise _invalid(f"dataset: the array cannot be read: {type(exc).__name__}: {exc}") from exc
    else:
        with open_checked_zip(fp, _file_size(fp), _zip_policy(limits)) as archive:
            for key in header.arrays:
                arrays[key] = _read_member(archive, key, limits)
    for key, array in arrays.items():
        expected = header.arrays[key]
        if array.shape != expected.shape or array.dtype.name != expected.dtype:
            raise _invalid(
                f"dataset array {quote(key)}: expected {format_shape(expected.shape)} of {expected.dtype} "
                f"as inspected, loaded {format_shape(array.shape)} of {array.dtype.name}"
            )
    return header, arrays


def _prepare_input(key: str, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if array.dtype.kind != "f":
        return array.astype(array.dtype.newbyteorder("="), copy=False)
    source = array.dtype.name
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(np.float32, copy=False)
    bad = converted.size - int(np.count_nonzero(np.isfinite(converted)))
    if bad:
        overflow = "" if source in {"float32", "float16"} else f" after conversion from {source} to float32"
        raise _invalid(
            f"dataset input {quote(key)}: expected finite numbers, got {bad} NaN or ±Inf values{overflow} "
            f"out of {converted.size}",
            code="dataset_not_finite",
        )
    return converted


def load_dataset(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> DatasetArrays:
    """Inspect a dataset, then load it with pickles refused; float inputs become float32.

    The file is opened once, so what is loaded is what was inspected.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.npz"
    >>> np.savez_compressed(path, x=np.ones((4, 3)), y=np.array([0, 1, 0, 1]))
    >>> data = load_dataset(path)
    >>> data.inputs["x"].dtype, data.labels.tolist()
    (dtype('float32'), [0, 1, 0, 1])
    """
    with open(path, "rb") as fp:
        _header, arrays = _load_open(fp, limits)
    labels = arrays.pop(_LABELS_KEY, None)
    if labels is not None:
        labels = labels.astype(labels.dtype.newbyteorder("="), copy=False)
    inputs = {key: _prepare_input(key, array) for key, array in arrays.items()}
    return DatasetArrays(inputs=inputs, labels=labels)


# --- fitting a dataset to a model -------------------------------------------------------------

_FLOAT_NAMES = {"double", "half", "bfloat16"}


def _dtype_kind(name: str) -> str | None:
    """``"f"``, ``"i"``, ``"u"``, ``"b"`` for a numpy, ONNX or torch dtype name; ``None`` if unknown."""
    text = name.strip().lower()
    if text.startswith("tensor(") and text.endswith(")"):
        text = text[len("tensor(") : -1]
    text = text.removeprefix("torch.")
    if text.startswith("float") or text in _FLOAT_NAMES:
        return "f"
    if text.startswith("uint"):
        return "u"
    if text.startswith("int") or text in {"long", "short"}:
        return "i"
    if text == "bool":
        return "b"
    return None


_ACCEPTED_KINDS = {"f": "biuf", "i": "biu", "u": "biu", "b": "b"}
_KIND_WORDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "bool"}


def _check_input(name: str, key: str, shape: tuple[Dim, ...] | None, dtype: str, array: ArrayHeader) -> None:
    where = f"input {quote(name)}" + ("" if key == name else f" (dataset key {quote(key)})")
    if shape is not None:
        expected, actual = tuple(shape[1:]), array.shape[1:]
        if not shape:
            raise _invalid(
                f"{where}: the model declares a 0-d input, which cannot be fed samples of shape "
                f"{format_shape(array.shape)}",
                code="dataset_shape_mismatch",
            )
        fits = len(array.shape) == len(shape) and all(
            not isinstance(want, int) or want < 0 or want == got
            for want, got in zip(expected, actual, strict=True)
        )
        if not fits:
            raise _invalid(
                f"{where}: expected per-sample shape {format_shape(expected)} but the dataset has "
                f"{format_shape(actual)} (model shape {format_shape(tuple(shape))}, dataset shape "
                f"{format_shape(array.shape)})",
                code="dataset_shape_mismatch",
            )
    kind = _dtype_kind(dtype)
    actual_kind = np.dtype(array.dtype).kind
    if kind is not None and actual_kind not in _ACCEPTED_KINDS[kind]:
        raise _invalid(
            f"{where}: the model takes {dtype} ({_KIND_WORDS[kind]}) but the dataset holds {array.dtype}",
            code="dataset_dtype_mismatch",
        )


def check_dataset_fits_model(
    header: DatasetHeader,
    model_inputs: Sequence[InputDescription],
) -> dict[str, str]:
    """Check a dataset against the model's inputs; return ``{model input name: dataset key}``.

    A single-input model reads the key named after its input, else ``x``; a multi-input model
    reads one key per input name. Per-sample shapes must match where the model fixes them (the
    batch dimension never constrains N); a float input accepts bool, integer or float data, an
    integer input integer or bool data, a bool input bool data. ``model_inputs`` may be
    :class:`ModelInput` values, ``(name, shape, dtype)`` tuples or any objects with those
    attributes (the engine's ``InputSpec``).

    >>> header = DatasetHeader("npz", {"x": ArrayHeader((10, 784), "float32", 31360)}, samples=10)
    >>> check_dataset_fits_model(header, [("input", ("N", 784), "float32")])
    {'input': 'x'}
    >>> check_dataset_fits_model(header, [("input", ("N", 1, 28, 28), "float32")])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neuronscope.errors.InvalidInput: dataset_shape_mismatch: input 'input' (dataset key 'x'): expected ...
    """
    specs = [as_model_input(spec) for spec in model_inputs]
    if not specs:
        raise ValueError("check_dataset_fits_model: expected at least one model input, got none")
    keys = header.input_keys
    names = [spec[0] for spec in specs]
    if len(specs) == 1:
        name = names[0]
        if name in keys and name != _LABELS_KEY:
            mapping = {name: name}
        elif _SINGLE_INPUT_KEY in keys:
            mapping = {name: _SINGLE_INPUT_KEY}
        else:
            raise _invalid(
                f"dataset: expected an array named 'x' or {quote(name)} for the model's input, "
                f"got keys {sorted(keys)}",
                code="dataset_missing_key",
            )
    else:
        missing = [name for name in names if name not in keys or name == _LABELS_KEY]
        if missing:
            raise _invalid(
                f"dataset: the model has {len(names)} inputs {names}; expected one array named after each, "
                f"missing {missing} (got keys {sorted(keys)}; 'y' is always the labels)",
                code="dataset_missing_key",
            )
        mapping = {name: name for name in names}
    unexpected = sorted(set(keys) - set(mapping.values()))
    if unexpected:
        raise _invalid(
            f"dataset: unexpected keys {unexpected}; expected only {sorted(set(mapping.values()))} "
            "for the model's inputs and optionally 'y' for the labels",
            code="dataset_unexpected_key",
        )
    for name, shape, dtype in specs:
        key = mapping[name]
        _check_input(name, key, shape, dtype, header.arrays[key])
    return mapping
