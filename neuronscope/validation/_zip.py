"""Structural checks of an untrusted zip archive, made from its headers alone.

Nothing here decompresses a member. The central directory's size is bounded before
:class:`zipfile.ZipFile` parses it (each entry becomes a Python object, a ~20x amplification), and
every member's declared sizes, compression ratio, name and place in the file are checked.
"""

from __future__ import annotations

import itertools
import re
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from neuronscope.errors import InvalidInput

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"

# End-of-central-directory records, as zipfile reads them (see zipfile._EndRecData).
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_MAX_COMMENT = 1 << 16
# A central directory entry: 46 fixed bytes, then name, extra field and comment.
_CD_ENTRY_FIXED = 46
_CD_ENTRY_EXTRA_ALLOWANCE = 4096

_FLAG_ENCRYPTED = 0x1
_FLAG_STRONG_ENCRYPTION = 0x40
_FLAG_UTF8 = 0x800
_ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipPolicy:
    """What one kind of upload allows, and the error codes its problems are reported with."""

    what: str
    invalid_code: str
    bomb_code: str
    max_members: int
    max_member_bytes: int
    max_total_bytes: int
    max_ratio: float
    ratio_min_bytes: int
    max_name_bytes: int


def _fail(policy: ZipPolicy, message: str, *, bomb: bool = False) -> InvalidInput:
    return InvalidInput(f"{policy.what}: {message}", code=policy.bomb_code if bomb else policy.invalid_code)


def quote(name: str, limit: int = 80) -> str:
    """``repr`` of an untrusted string, shortened so that it cannot flood a message."""
    return repr(name if len(name) <= limit else name[:limit] + "…")


def _central_directory_sizes(fp: BinaryIO, file_size: int) -> list[int] | None:
    """Every central-directory size the end records declare, or ``None`` if there is no end record.

    Mirrors zipfile's search (a comment-free record at the very end, else the last signature in
    the final 64 KiB) and reads the ZIP64 record both where zipfile 3.11 looks for it (right before
    the locator) and where the locator points, so that no reading of the file escapes the bound.
    """
    if file_size < _EOCD.size:
        return None
    fp.seek(file_size - _EOCD.size)
    tail = fp.read(_EOCD.size)
    if tail[:4] == _EOCD_SIG and tail[-2:] == b"\0\0":
        record_at = file_size - _EOCD.size
        record = tail
    else:
        search_from = max(file_size - _MAX_COMMENT - _EOCD.size, 0)
        fp.seek(search_from)
        data = fp.read()
        start = data.rfind(_EOCD_SIG)
        if start < 0 or len(data) - start < _EOCD.size:
            return None
        record_at = search_from + start
        record = data[start : start + _EOCD.size]
    sizes = [int(_EOCD.unpack(record)[5])]
    locator_at = record_at - _EOCD64_LOCATOR.size
    if locator_at < 0:
        return sizes
    fp.seek(locator_at)
    locator = fp.read(_EOCD64_LOCATOR.size)
    if len(locator) != _EOCD64_LOCATOR.size:
        return sizes
    signature, _disk, relative_offset, _disks = _EOCD64_LOCATOR.unpack(locator)
    if signature != _EOCD64_LOCATOR_SIG:
        return sizes
    for at in (locator_at - _EOCD64.size, relative_offset):
        if 0 <= at <= file_size - _EOCD64.size:
            fp.seek(at)
            record64 = fp.read(_EOCD64.size)
            if len(record64) == _EOCD64.size and record64[:4] == _EOCD64_SIG:
                sizes.append(int(_EOCD64.unpack(record64)[8]))
    return sizes


def name_problem(name: str, max_name_bytes: int) -> str | None:
    """Why ``name`` is not a safe relative member name, or ``None`` if it is."""
    if not name:
        return "an empty name"
    if len(name.encode("utf-8", "surrogatepass")) > max_name_bytes:
        return f"a name longer than {max_name_bytes} bytes"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "a control character (e.g. NUL) in its name"
    if "\\" in name:
        return "a backslash in its name"
    if name.startswith("/") or _DRIVE.match(name):
        return "an absolute path"
    parts = name.split("/")
    if any(part in {".", ".."} for part in parts):
        return "a '.' or '..' path component (path traversal)"
    if "" in parts[:-1]:
        return "an empty path component"
    return None


def _local_span(fp: BinaryIO, info: zipfile.ZipInfo, policy: ZipPolicy) -> tuple[int, int]:
    """``(start, end)`` of a member's local header and data, checked against its directory entry."""
    name = quote(info.orig_filename)
    if info.header_offset < 0:
        raise _fail(policy, f"member {name} has a negative offset; the archive is corrupt")
    fp.seek(info.header_offset)
    raw = fp.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise _fail(policy, f"member {name}: expected a local header at byte {info.header_offset}, got EOF")
    header = _LOCAL_HEADER.unpack(raw)
    if header[0] != ZIP_MAGIC:
        raise _fail(
            policy, f"member {name}: expected a local header at byte {info.header_offset}, got {raw[:4]!r}"
        )
    flags, name_length, extra_length = header[3], header[10], header[11]
    raw_name = fp.read(name_length)
    encoding = "utf-8" if flags & _FLAG_UTF8 else "cp437"
    try:
        local_name = raw_name.decode(encoding)
    except UnicodeDecodeError:
        local_name = ""
    if local_name != info.orig_filename:
        raise _fail(
            policy,
            f"member {name}: the local header names it {quote(local_name)}; expected both headers to agree",
        )
    data_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    return info.header_offset, data_start + info.compress_size


def _check_member(info: zipfile.ZipInfo, policy: ZipPolicy) -> None:
    name = quote(info.orig_filename)
    problem = name_problem(info.orig_filename, policy.max_name_bytes)
    if problem is None and info.filename != info.orig_filename:
        problem = "a name the zip reader had to rewrite"
    if problem is not None:
        raise _fail(policy, f"member {name} has {problem}; expected plain relative names")
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
        raise _fail(policy, f"member {name} is encrypted; expected unencrypted members")
    if info.compress_type not in _ALLOWED_METHODS:
        raise _fail(
            policy,
            f"member {name} uses compression method {info.compress_type}; expected stored (0) or deflate (8)",
        )
    if info.file_size > policy.max_member_bytes:
        raise _fail(
            policy,
            f"member {name} declares {info.file_size} bytes uncompressed; "
            f"at most {policy.max_member_bytes} are accepted",
            bomb=True,
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _fail(
            policy,
            f"member {name} is stored uncompressed but declares {info.compress_size} bytes stored "
            f"and {info.file_size} bytes uncompressed; expected equal sizes",
        )
    if info.file_size > policy.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > policy.max_ratio:
            raise _fail(
                policy,
                f"member {name} declares {info.file_size} bytes from {info.compress_size} compressed "
                f"(ratio {ratio:.0f}:1); at most {policy.max_ratio:g}:1 is accepted",
                bomb=True,
            )


@contextmanager
def open_checked_zip(fp: BinaryIO, file_size: int, policy: ZipPolicy) -> Iterator[zipfile.ZipFile]:
    """Open ``fp`` as a zip whose structure has been checked from its headers alone.

    Raises :class:`InvalidInput` with ``policy.invalid_code`` for a corrupt or odd archive (no end
    record, unsafe or duplicate names, encryption, unknown compression, members overlapping the
    central directory or running past it) and ``policy.bomb_code`` for one out of bounds (too many
    members, a central directory too large for them, declared sizes or ratios over the limits,
    members sharing bytes).
    """
    sizes = _central_directory_sizes(fp, file_size)
    if sizes is None:
        raise _fail(
            policy, "expected a zip archive but found no end-of-central-directory record (truncated?)"
        )
    max_directory = policy.max_members * (_CD_ENTRY_FIXED + policy.max_name_bytes + _CD_ENTRY_EXTRA_ALLOWANCE)
    if max(sizes) > max_directory:
        raise _fail(
            policy,
            f"the central directory declares {max(sizes)} bytes; at most {max_directory} fit "
            f"{policy.max_members} members",
            bomb=True,
        )
    fp.seek(0)
    try:
        archive = zipfile.ZipFile(fp)
    except Exception as exc:  # a hostile archive can trip any parsing error
        raise _fail(policy, f"expected a readable zip archive, got {type(exc).__name__}: {exc}") from exc
    try:
        infos = archive.infolist()
        if len(infos) > policy.max_members:
            raise _fail(
                policy,
                f"the archive has {len(infos)} members; at most {policy.max_members} are accepted",
                bomb=True,
            )
        seen: set[str] = set()
        total = 0
        for info in infos:
            _check_member(info, policy)
            if info.orig_filename in seen:
                raise _fail(
                    policy, f"member {quote(info.orig_filename)} appears twice; expected unique names"
                )
            seen.add(info.orig_filename)
            total += info.file_size
        if total > policy.max_total_bytes:
            raise _fail(
                policy,
                f"the members declare {total} bytes uncompressed together; "
                f"at most {policy.max_total_bytes} are accepted",
                bomb=True,
            )
        spans = sorted((_local_span(fp, info, policy), info.orig_filename) for info in infos)
        for ((_, end), name), ((next_start, _), next_name) in itertools.pairwise(spans):
            if end > next_start:
                raise _fail(
                    policy,
                    f"members {quote(name)} and {quote(next_name)} share bytes; expected disjoint members",
                    bomb=True,
                )
        if spans and spans[-1][0][1] > archive.start_dir:
            raise _fail(
                policy,
                f"member {quote(spans[-1][1])} runs past the start of the central directory "
                f"(byte {archive.start_dir}); the archive is truncated or corrupt",
            )
        yield archive
    finally:
        archive.close()
