"""Hostile datasets, built for real in each test: pickles, bombs, lying headers, broken files."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neuronscope.errors import InvalidInput
from neuronscope.validation import (
    ArrayHeader,
    DatasetHeader,
    Limits,
    ModelInput,
    check_dataset_fits_model,
    inspect_dataset,
    load_dataset,
)

# --- building hostile files ----------------------------------------------------------------------


def npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def raw_npy(
    descr: str, shape: tuple[int, ...] | str, body: bytes = b"", *, version: tuple[int, int] = (1, 0)
) -> bytes:
    """An ``.npy`` written by hand: the header says whatever we like, the body is what we give."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape}, }}"
    length_format = "<H" if version == (1, 0) else "<I"
    prefix_length = 6 + 2 + struct.calcsize(length_format)
    padding = -(prefix_length + len(text) + 1) % 64
    header = (text + " " * padding + "\n").encode("latin1")
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(header)) + header + body


def write_zip(path: Path, members: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(
        path, "w", compression=compression, compresslevel=9 if compression else None
    ) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def patch_member(path: Path, name: str, **fields: int) -> None:
    """Rewrite a member's declared ``crc``/``compress_size``/``file_size`` in both its headers."""
    data = bytearray(path.read_bytes())
    offsets = {"crc": (14, 16), "compress_size": (18, 20), "file_size": (22, 24)}  # local, central
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    central = data.find(b"PK\x01\x02")
    encoded = name.encode()
    while central >= 0:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + name_length]) == encoded:
            break
        central = data.find(b"PK\x01\x02", central + 4)
    assert central >= 0
    for field, value in fields.items():
        local_at, central_at = offsets[field]
        struct.pack_into("<L", data, local + local_at, value)
        struct.pack_into("<L", data, central + central_at, value)
    path.write_bytes(bytes(data))


def error_of(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.fixture
def good_npz(tmp_path: Path) -> Path:
    path = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(12, 1, 4, 4)), y=np.arange(12) % 3)
    return path


# --- valid datasets ------------------------------------------------------------------------------


def test_npz_inspect_then_load(good_npz: Path) -> None:
    header = inspect_dataset(good_npz)
    assert header.format == "npz"
    assert header.samples == 12
    assert header.arrays["x"] == ArrayHeader((12, 1, 4, 4), "float64", 12 * 16 * 8)
    assert header.input_keys == ("x",)
    assert header.labels == ArrayHeader((12,), "int64", 96)

    data = load_dataset(good_npz)
    assert data.inputs["x"].dtype == np.float32 and data.inputs["x"].shape == (12, 1, 4, 4)
    assert data.labels is not None and data.labels.tolist() == [i % 3 for i in range(12)]


def test_npy_holds_inputs_alone_and_format_comes_from_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "looks_like.npz"  # the name lies; the bytes are an .npy
    path.write_bytes(npy_bytes(np.arange(20, dtype=np.int32).reshape(5, 4)))
    header = inspect_dataset(path)
    assert header.format == "npy" and header.samples == 5 and header.labels is None
    data = load_dataset(path)
    assert data.inputs["x"].dtype == np.int32  # integer inputs kept for models that take ints

    npz_named_npy = tmp_path / "looks_like.npy"
    np.savez_compressed(npz_named_npy.with_suffix(".tmp.npz"), x=np.ones((3, 2), ">f8"))
    npz_named_npy.write_bytes(npz_named_npy.with_suffix(".tmp.npz").read_bytes())
    data = load_dataset(npz_named_npy)
    assert data.inputs["x"].dtype == np.dtype("float32")  # big-endian float64 → native float32


def test_multi_input_keys(tmp_path: Path) -> None:
    path = tmp_path / "multi.npz"
    np.savez(
        path, image=np.zeros((6, 3, 8, 8), np.float32), ids=np.zeros((6, 5), np.int64), y=np.zeros(6, np.int8)
    )
    header = inspect_dataset(path)
    assert header.input_keys == ("image", "ids")
    inputs = [ModelInput("image", ("N", 3, 8, 8), "float32"), ModelInput("ids", ("N", 5), "tensor(int64)")]
    assert check_dataset_fits_model(header, inputs) == {"image": "image", "ids": "ids"}
    data = load_dataset(path)
    assert data.inputs["ids"].dtype == np.int64

    error = error_of(check_dataset_fits_model, header, [*inputs, ModelInput("mask", ("N", 5), "bool")])
    assert error.code == "dataset_missing_key" and "'mask'" in error.message


# --- pickles and odd dtypes --------------------------------------------------------------------


class _DeletesCanary:
    """Unpickling this deletes the canary file: proof that nothing was unpickled if it survives."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.remove, (str(self.canary),))


def test_object_array_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("alive")
    objects = np.empty((3,), dtype=object)
    objects[:] = [_DeletesCanary(canary)] * 3
    member = npy_bytes(objects, allow_pickle=True)
    assert b"remove" in member  # the pickle is really in there

    npz = write_zip(tmp_path / "objects.npz", [("x.npy", member)])
    assert error_of(inspect_dataset, npz).code == "dataset_object_array"
    assert error_of(load_dataset, npz).code == "dataset_object_array"
    npy = tmp_path / "objects.npy"
    npy.write_bytes(member)
    assert error_of(load_dataset, npy).code == "dataset_object_array"
    assert canary.exists()

    pickled = tmp_path / "plain_pickle.npy"
    pickled.write_bytes(pickle.dumps(_DeletesCanary(canary)))
    assert error_of(load_dataset, pickled).code == "dataset_invalid"
    assert canary.exists()


@pytest.mark.parametrize(
    ("array", "code"),
    [
        (np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")]), "dataset_object_array"),
        (np.zeros(4, dtype="V8"), "dataset_object_array"),
        (np.array(["a", "b"]), "dataset_dtype_unsupported"),
        (np.zeros(4, np.complex64), "dataset_dtype_unsupported"),
    ],
)
def test_structured_void_and_non_numeric_dtypes(tmp_path: Path, array: np.ndarray, code: str) -> None:
    path = write_zip(tmp_path / "d.npz", [("x.npy", npy_bytes(array))])
    assert error_of(inspect_dataset, path).code == code


# --- sizes declared before anything is allocated ---------------------------------------------------


def test_header_declaring_a_huge_shape_with_a_tiny_body(tmp_path: Path) -> None:
    lie = raw_npy("<f4", (10**6, 10**6), b"\0" * 16)
    npy = tmp_path / "huge.npy"
    npy.write_bytes(lie)
    error = error_of(load_dataset, npy)
    assert error.code == "dataset_too_large"
    assert "(1000000, 1000000)" in error.message and str(4 * 10**12) in error.message

    npz = write_zip(tmp_path / "huge.npz", [("x.npy", lie)])
    assert error_of(load_dataset, npz).code == "dataset_too_large"


def test_truncated_and_padded_npy_bodies(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    path.write_bytes(raw_npy("<f4", (100, 10), b"\0" * 40))
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_invalid" and "4000 bytes" in error.message and "holds 40" in error.message
    path.write_bytes(npy_bytes(np.zeros((2, 2), np.float32)) + b"trailing")
    assert error_of(inspect_dataset, path).code == "dataset_invalid"


def test_total_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((10, 10), np.float64), b=np.zeros((10, 10), np.float64))
    limits = Limits(max_array_bytes=1000, max_total_bytes=1500)
    error = error_of(inspect_dataset, path, limits)
    assert error.code == "dataset_too_large" and "1600" in error.message


def test_malformed_headers(tmp_path: Path) -> None:
    path = tmp_path / "h.npy"
    cases = [
        raw_npy("<f4", "(-1, 4)"),
        raw_npy("<f4", "(2.5,)"),
        raw_npy("<f4", "'nope'"),
        raw_npy("<f4", (2,), version=(3, 0)),
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 60000),  # header length over the limit
        b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{",  # 2 GiB header: never allocated
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 64) + b"((((((((" * 8,
        raw_npy("<f4", "(" + "1, " * 40 + ")"),  # rank 40
    ]
    for data in cases:
        path.write_bytes(data)
        assert error_of(inspect_dataset, path).code == "dataset_invalid", data[:80]


# --- zip bombs ---------------------------------------------------------------------------------


def test_member_declaring_a_huge_uncompressed_size(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "bomb.npz", [("x.npy", npy_bytes(np.zeros((4, 4))))], compression=zipfile.ZIP_DEFLATED
    )
    patch_member(path, "x.npy", file_size=3 * 2**30)
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_zip_bomb" and str(3 * 2**30) in error.message


def test_compression_ratio_over_the_limit(tmp_path: Path) -> None:
    zeros = npy_bytes(np.zeros((8, 2**17), np.float64))  # 8 MiB of zeros → ~8 KiB deflated
    path = write_zip(tmp_path / "zeros.npz", [("x.npy", zeros)], compression=zipfile.ZIP_DEFLATED)
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_zip_bomb" and "ratio" in error.message
    # the same data is fine where the operator allows such ratios
    assert inspect_dataset(path, Limits(max_compression_ratio=10_000)).samples == 8


def test_central_directory_too_large_for_the_member_limit(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "cd.npz", [("x.npy", npy_bytes(np.zeros(3)))])
    data = bytearray(path.read_bytes())
    struct.pack_into("<L", data, len(data) - 22 + 12, 10**9)  # EOCD: central directory size
    path.write_bytes(bytes(data))
    assert error_of(inspect_dataset, path).code == "dataset_zip_bomb"


def test_zip64_end_record_declaring_a_huge_central_directory(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "cd64.npz", [("x.npy", npy_bytes(np.zeros(3)))])
    data = path.read_bytes()
    eocd_at = len(data) - 22
    (cd_offset,) = struct.unpack_from("<L", data, eocd_at + 16)
    record64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, 10**12, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd_at, 1)
    path.write_bytes(data[:eocd_at] + record64 + locator + data[eocd_at:])
    assert error_of(inspect_dataset, path).code == "dataset_zip_bomb"


def test_too_many_members(tmp_path: Path) -> None:
    members = [(f"k{i}.npy", npy_bytes(np.zeros(2))) for i in range(5)]
    path = write_zip(tmp_path / "many.npz", members)
    assert error_of(inspect_dataset, path, Limits(max_members=4)).code == "dataset_zip_bomb"
    assert inspect_dataset(path, Limits(max_members=5)).samples == 2


# --- lying and broken files --------------------------------------------------------------------


def test_npy_header_disagrees_with_the_zip_entry(tmp_path: Path) -> None:
    member = raw_npy("<f4", (10,), b"\0" * 400)  # header says 40 bytes of data, entry holds 400
    path = write_zip(tmp_path / "lie.npz", [("x.npy", member)])
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_invalid" and "agree" in error.message


def test_member_that_decompresses_past_its_declared_size(tmp_path: Path) -> None:
    honest = npy_bytes(np.arange(10, dtype=np.float32))
    path = write_zip(
        tmp_path / "longer.npz", [("x.npy", honest + b"\0" * 4096)], compression=zipfile.ZIP_DEFLATED
    )
    # declare only the honest prefix, with its CRC: zipfile alone would cut the stream there silently
    patch_member(path, "x.npy", file_size=len(honest), crc=zlib.crc32(honest))
    assert inspect_dataset(path).samples == 10  # the headers all agree
    error = error_of(load_dataset, path)
    assert error.code == "dataset_invalid" and "'x'" in error.message


def test_member_with_a_crc_forged_for_the_longer_stream(tmp_path: Path) -> None:
    # large enough that reading the header does not reach the end of the stream
    honest = npy_bytes(np.random.default_rng(0).normal(size=20_000).astype(np.float32))
    path = write_zip(
        tmp_path / "forged.npz", [("x.npy", honest + b"\0" * 4096)], compression=zipfile.ZIP_DEFLATED
    )
    patch_member(path, "x.npy", file_size=len(honest), crc=zlib.crc32(honest + b"\0"))
    error = error_of(load_dataset, path)
    assert error.code == "dataset_invalid" and "more than" in error.message


def test_member_data_running_past_the_central_directory(tmp_path: Path) -> None:
    member = npy_bytes(np.arange(10.0))
    path = write_zip(tmp_path / "past.npz", [("x.npy", member)], compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        compressed = archive.getinfo("x.npy").compress_size
    patch_member(path, "x.npy", compress_size=compressed + 500)
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_invalid" and "runs past" in error.message


def test_wrong_crc_is_caught_on_load(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "crc.npz", [("x.npy", npy_bytes(np.arange(10.0)))], compression=zipfile.ZIP_DEFLATED
    )
    patch_member(path, "x.npy", crc=12345)
    assert error_of(load_dataset, path).code == "dataset_invalid"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_files(good_npz: Path, tmp_path: Path, keep: float) -> None:
    data = good_npz.read_bytes()
    npz = tmp_path / "cut.npz"
    npz.write_bytes(data[: int(len(data) * keep)])
    assert error_of(load_dataset, npz).code == "dataset_invalid"
    full = npy_bytes(np.zeros((50, 3)))
    npy = tmp_path / "cut.npy"
    npy.write_bytes(full[: int(len(full) * keep)])
    assert error_of(load_dataset, npy).code == "dataset_invalid"


@pytest.mark.parametrize(
    "content", [b"", b"garbage" * 100, os.urandom(4096), b"PK\x03\x04" + os.urandom(500)]
)
def test_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    assert error_of(load_dataset, path).code == "dataset_invalid"


@pytest.mark.parametrize(
    "name",
    ["../x.npy", "/x.npy", "sub/x.npy", "x.txt", ".npy", "x.npy/", "C:x.npy", "a\\x.npy", "x\x00.npy"],
)
def test_odd_member_names(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "odd.npz", [(name, npy_bytes(np.zeros(3)))])
    assert error_of(inspect_dataset, path).code == "dataset_invalid"


def test_duplicate_members(tmp_path: Path) -> None:
    path = tmp_path / "dup.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(path, [("x.npy", npy_bytes(np.zeros(3))), ("x.npy", npy_bytes(np.ones(3)))])
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_invalid" and "twice" in error.message


def test_encrypted_flag_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "enc.npz", [("x.npy", npy_bytes(np.zeros(3)))])
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 8, 1)
    struct.pack_into("<H", data, 6, 1)
    path.write_bytes(bytes(data))
    assert error_of(inspect_dataset, path).code == "dataset_invalid"


# --- contents ----------------------------------------------------------------------------------


def test_nan_and_inf_name_the_key_and_count(tmp_path: Path) -> None:
    x = np.zeros((5, 4), np.float32)
    x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, x=x)
    error = error_of(load_dataset, path)
    assert error.code == "dataset_not_finite" and "'x'" in error.message and " 3 " in error.message

    np.savez(path, x=np.full((2, 2), 1e300))  # finite in float64, infinite in float32
    error = error_of(load_dataset, path)
    assert error.code == "dataset_not_finite" and "float64 to float32" in error.message


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.zeros(6, np.float32), "integer"),
        (np.zeros(5, np.int64), "expected 6 labels"),
        (np.zeros((6, 1), np.int64), "1-D"),
        (np.zeros(6, bool), "integer"),
    ],
)
def test_labels(tmp_path: Path, labels: np.ndarray, fragment: str) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((6, 2), np.float32), y=labels)
    error = error_of(inspect_dataset, path)
    assert error.code == "dataset_labels_invalid" and fragment in error.message


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    path = tmp_path / "only_y.npz"
    np.savez(path, y=np.arange(3))
    assert error_of(inspect_dataset, path).code == "dataset_missing_key"
    np.savez(path, x=np.zeros((0, 3)))
    assert error_of(inspect_dataset, path).code == "dataset_empty"
    np.savez(path, x=np.float32(1.0))
    assert error_of(inspect_dataset, path).code == "dataset_shape_mismatch"
    np.savez(path, a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    assert error_of(inspect_dataset, path).code == "dataset_shape_mismatch"


# --- fitting the model's inputs ----------------------------------------------------------------


def header_of(**arrays: tuple[tuple[int, ...], str]) -> DatasetHeader:
    return DatasetHeader(
        "npz",
        {key: ArrayHeader(shape, dtype, 0) for key, (shape, dtype) in arrays.items()},
        samples=next(iter(arrays.values()))[0][0],
    )


def test_shape_mismatch_names_input_and_shapes() -> None:
    header = header_of(x=((10, 784), "float32"))
    error = error_of(check_dataset_fits_model, header, [("x", (None, 1, 28, 28), "float32")])
    assert error.code == "dataset_shape_mismatch"
    assert "input 'x': expected per-sample shape (1, 28, 28) but the dataset has (784,)" in error.message
    error = error_of(check_dataset_fits_model, header, [("input", ("N", 785), "float32")])
    assert "input 'input' (dataset key 'x')" in error.message and "(785,)" in error.message


def test_fixed_batch_dim_and_dynamic_dims_do_not_constrain() -> None:
    header = header_of(x=((10, 3, 32, 40), "uint8"))
    assert check_dataset_fits_model(header, [("img", (1, 3, "h", None), "float32")]) == {"img": "x"}
    assert check_dataset_fits_model(header, [("img", None, "float32")]) == {"img": "x"}
    named = header_of(img=((10, 3, 32, 40), "uint8"))
    assert check_dataset_fits_model(named, [("img", (1, 3, 32, 40), "float")]) == {"img": "img"}


def test_objects_with_name_shape_dtype_attributes_are_accepted() -> None:
    @dataclass(frozen=True)
    class Spec:  # the engine's InputSpec has this form
        name: str
        shape: tuple[int | str | None, ...]
        dtype: str

    header = header_of(x=((4, 7), "float32"))
    assert check_dataset_fits_model(header, [Spec("inp", ("N", 7), "float32")]) == {"inp": "x"}
    error = error_of(check_dataset_fits_model, header, [Spec("inp", ("N", 8), "float32")])
    assert error.code == "dataset_shape_mismatch"


def test_package_imports_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys, neuronscope.validation; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'onnxruntime'}); "
        "sys.exit(str(heavy) if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dtype_mismatch_and_unexpected_keys() -> None:
    header = header_of(x=((4, 7), "float32"))
    error = error_of(check_dataset_fits_model, header, [("ids", ("N", 7), "tensor(int64)")])
    assert error.code == "dataset_dtype_mismatch" and "float32" in error.message
    extra = header_of(x=((4, 7), "float32"), x_test=((4, 7), "float32"))
    error = error_of(check_dataset_fits_model, extra, [("x", ("N", 7), "float32")])
    assert error.code == "dataset_unexpected_key" and "x_test" in error.message
    assert (
        error_of(check_dataset_fits_model, header, [("a", None, "f"), ("b", None, "f")]).code
        == "dataset_missing_key"
    )
