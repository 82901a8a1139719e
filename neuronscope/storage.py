"""Where uploaded models and datasets and finished reports live, behind one small interface.

Artifacts are content-addressed (sha256 of their bytes), so the same upload always gets the same
id and is stored once. Reports are written once per job. :class:`FileSystemStorage` keeps both
under one directory that the API and every worker must see (a local disk for one machine, a shared
volume for many); an object-store backend implements the same :class:`Storage` protocol.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

ArtifactKind = Literal["model", "dataset"]
ArtifactFormat = Literal["onnx", "torchscript", "pt2", "npz", "npy"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024
_KINDS: tuple[ArtifactKind, ...] = ("model", "dataset")
#: What a write answers on a full disk or an exhausted disk quota.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class ArtifactInfo:
    id: str
    kind: ArtifactKind
    format: ArtifactFormat
    size: int
    #: A dataset's sample count, recorded from its headers when it was stored (``None`` for models
    #: and for datasets stored before it was recorded).
    samples: int | None = None


class UploadTooLarge(Exception):
    """The upload went past ``max_bytes`` while it was being stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class StorageFull(OSError):
    """The storage's disk (or its disk quota) is full: nothing was stored."""

    def __init__(self, what: str, cause: OSError) -> None:
        super().__init__(cause.errno, f"no space left to store {what}: {cause.strerror}")
        self.what = what


@contextlib.contextmanager
def _space_checked(what: str) -> Iterator[None]:
    """Turn a write's ENOSPC/EDQUOT into :class:`StorageFull`."""
    try:
        yield
    except StorageFull:
        raise
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise StorageFull(what, exc) from exc
        raise


class StagedUpload:
    """An upload written to a private temporary file, hashed, not yet visible to anyone.

    Check it (``path``), then :meth:`Storage.commit` or :meth:`discard` it.
    """

    def __init__(self, path: Path, sha256: str, size: int, head: bytes) -> None:
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.head = head

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def is_artifact_id(value: str) -> bool:
    return bool(_SHA256.match(value))


class Storage(Protocol):
    """What the API and the workers need from artifact and report storage."""

    def stage(self, source: BinaryIO, *, max_bytes: int) -> StagedUpload:
        """Copy ``source`` to a private temporary place while hashing it."""
        ...

    def commit(
        self, staged: StagedUpload, kind: ArtifactKind, fmt: ArtifactFormat, *, samples: int | None = None
    ) -> tuple[ArtifactInfo, bool]:
        """Make a staged upload an artifact (with a dataset's sample count, as inspected when it
        was checked); ``True`` when it was not stored before."""
        ...

    def artifact(self, kind: ArtifactKind, artifact_id: str) -> ArtifactInfo | None:
        """The stored artifact, or ``None`` for an unknown or malformed id."""
        ...

    def fetch(self, kind: ArtifactKind, artifact_id: str, dest: Path) -> None:
        """Put a copy of the artifact's bytes at ``dest`` (a local path the caller owns)."""
        ...

    def put_report(self, job_id: str, data: bytes) -> bool:
        """Store a job's report once; ``False`` (and nothing written) when it already exists."""
        ...

    def get_report(self, job_id: str) -> bytes | None: ...

    def delete_artifact(self, kind: ArtifactKind, artifact_id: str) -> bool:
        """Remove a stored artifact; ``True`` when it was there."""
        ...

    def delete_report(self, job_id: str) -> bool:
        """Remove a job's stored report; ``True`` when it was there."""
        ...

    def artifacts_older_than(self, cutoff: datetime) -> Iterator[tuple[ArtifactKind, str]]:
        """Every stored artifact last uploaded before ``cutoff``."""
        ...

    def artifact_uploaded_at(self, kind: ArtifactKind, artifact_id: str) -> datetime | None:
        """When the artifact was last uploaded (by anyone), or ``None`` when it is not stored."""
        ...

    def discard_staged_before(self, cutoff: datetime) -> int:
        """Remove uploads and writes being staged that nobody touched since ``cutoff`` (left by a
        killed process); how many were removed."""
        ...

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]:
        """The job id of every stored report written before ``cutoff``."""
        ...


class FileSystemStorage:
    """Artifacts and reports in a directory tree::

    root/artifacts/{model,dataset}/ab/abcdef….bin   the bytes (mtime: when they were last uploaded)
    root/artifacts/{model,dataset}/ab/abcdef….json  {"kind", "format", "size", "created_at"}
    root/reports/{job_id}.json
    root/tmp/                                       uploads being staged

    Every write goes to ``tmp`` first and is published with ``os.link``, which fails rather than
    overwrite, so concurrent writers of the same id cannot tear a file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        for sub in ("artifacts/model", "artifacts/dataset", "reports", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # -- artifacts ------------------------------------------------------------------------------

    def _artifact_path(self, kind: ArtifactKind, artifact_id: str) -> Path:
        return self.root / "artifacts" / kind / artifact_id[:2] / f"{artifact_id}.bin"

    def stage(self, source: BinaryIO, *, max_bytes: int) -> StagedUpload:
        digest = hashlib.sha256()
        size = 0
        head = b""
        with _space_checked("the upload"):
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        path = Path(name)
        try:
            with _space_checked("the upload"), os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(max_bytes)
                    if len(head) < 512:
                        head += chunk[: 512 - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StagedUpload(path, digest.hexdigest(), size, head)

    def commit(
        self, staged: StagedUpload, kind: ArtifactKind, fmt: ArtifactFormat, *, samples: int | None = None
    ) -> tuple[ArtifactInfo, bool]:
        info = ArtifactInfo(id=staged.sha256, kind=kind, format=fmt, size=staged.size, samples=samples)
        target = self._artifact_path(kind, staged.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta: dict[str, object] = {
            "kind": kind,
            "format": fmt,
            "size": staged.size,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if samples is not None:
            meta["samples"] = samples
        try:
            # Metadata first: an artifact is visible only once its .bin exists, and then its
            # metadata is already there.
            self._publish(target.with_suffix(".json"), json.dumps(meta).encode())
            try:
                with _space_checked("the upload"):
                    os.link(staged.path, target)
                created = True
            except FileExistsError:
                created = False
                # Uploaded again: its time to live starts over.
                with contextlib.suppress(FileNotFoundError):
                    os.utime(target)
        finally:
            staged.discard()
        stored = self.artifact(kind, staged.sha256)
        return (stored or info), created

    def artifact(self, kind: ArtifactKind, artifact_id: str) -> ArtifactInfo | None:
        if not is_artifact_id(artifact_id):
            return None
        path = self._artifact_path(kind, artifact_id)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            size = path.stat().st_size
        except (FileNotFoundError, ValueError):
            return None
        samples = meta.get("samples")
        return ArtifactInfo(
            id=artifact_id,
            kind=kind,
            format=meta["format"],
            size=size,
            samples=samples if isinstance(samples, int) else None,
        )

    def fetch(self, kind: ArtifactKind, artifact_id: str, dest: Path) -> None:
        if not is_artifact_id(artifact_id):
            raise FileNotFoundError(f"no {kind} with id {artifact_id!r}")
        source = self._artifact_path(kind, artifact_id)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)

    def delete_artifact(self, kind: ArtifactKind, artifact_id: str) -> bool:
        if not is_artifact_id(artifact_id):
            return False
        path = self._artifact_path(kind, artifact_id)
        # The .bin first: once it is gone the artifact is unknown, whatever happens to the .json.
        existed = _unlink(path)
        _unlink(path.with_suffix(".json"))
        return existed

    def artifacts_older_than(self, cutoff: datetime) -> Iterator[tuple[ArtifactKind, str]]:
        for kind in _KINDS:
            for path in (self.root / "artifacts" / kind).glob("??/*.bin"):
                if is_artifact_id(path.stem) and _modified_before(path, cutoff):
                    yield kind, path.stem

    def artifact_uploaded_at(self, kind: ArtifactKind, artifact_id: str) -> datetime | None:
        if not is_artifact_id(artifact_id):
            return None
        try:
            mtime = self._artifact_path(kind, artifact_id).stat().st_mtime
        except FileNotFoundError:
            return None
        return datetime.fromtimestamp(mtime, UTC)

    # -- reports --------------------------------------------------------------------------------

    def _report_path(self, job_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f-]{36}", job_id):
            raise ValueError(f"expected a job id (UUID), got {job_id!r}")
        return self.root / "reports" / f"{job_id}.json"

    def put_report(self, job_id: str, data: bytes) -> bool:
        return self._publish(self._report_path(job_id), data)

    def get_report(self, job_id: str) -> bytes | None:
        try:
            return self._report_path(job_id).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def delete_report(self, job_id: str) -> bool:
        try:
            return _unlink(self._report_path(job_id))
        except ValueError:
            return False

    def reports_older_than(self, cutoff: datetime) -> Iterator[str]:
        for path in (self.root / "reports").glob("*.json"):
            if re.fullmatch(r"[0-9a-f-]{36}", path.stem) and _modified_before(path, cutoff):
                yield path.stem

    def discard_staged_before(self, cutoff: datetime) -> int:
        return sum(_unlink(path) for path in self._tmp.iterdir() if _modified_before(path, cutoff))

    # -- internals ------------------------------------------------------------------------------

    def _publish(self, target: Path, data: bytes) -> bool:
        """Write ``data`` to ``target`` unless it exists; ``True`` when this call wrote it."""
        if target.exists():
            return False
        with _space_checked(target.name):
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="write-")
        try:
            with _space_checked(target.name), os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                with _space_checked(target.name):
                    os.link(name, target)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(name)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _modified_before(path: Path, cutoff: datetime) -> bool:
    try:
        return path.stat().st_mtime < cutoff.timestamp()
    except FileNotFoundError:
        return False


def open_storage(backend: str, data_dir: Path) -> Storage:
    """The storage a settings object names (only ``filesystem`` so far)."""
    if backend == "filesystem":
        return FileSystemStorage(data_dir)
    raise ValueError(f"expected storage backend 'filesystem', got {backend!r}")
