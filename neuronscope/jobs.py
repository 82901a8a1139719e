"""Job records in Redis: the API creates them, workers move them along, nobody asks Celery.

One hash per job (``{prefix}:job:{id}``, which names its tenant) and, per tenant, an index of
its jobs, newest last (``{prefix}:tenant:{tenant}:jobs``, a sorted set whose members
``{created_µs:016d}:{id}`` all score 0, so lexicographic order is creation order and a member is
an exact keyset cursor) and the set of its unfinished jobs (``{prefix}:tenant:{tenant}:active``).

Status changes go through :meth:`JobStore._transition`, a WATCH/MULTI transaction that checks the
current status first, so a cancel racing a finishing worker ends in exactly one terminal state,
and a redelivered task never re-runs a finished job. The transition that finishes a job also takes
it out of its tenant's active set, so workers keep the per-tenant count right without knowing it
exists. Reads and cancels from the API pass the caller's tenant: another tenant's job is ``None``,
exactly like an unknown one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

import redis
from pydantic import BaseModel, ConfigDict

from neuronscope.errors import NeuronscopeError
from neuronscope.settings import DEFAULT_TENANT

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
#: A listing cursor: the index member of the last job on the previous page.
CURSOR_PATTERN = r"^\d{16}:[0-9a-f-]{36}$"
_CURSOR = re.compile(CURSOR_PATTERN)


class JobError(BaseModel):
    """Why a job failed: a stable ``code`` and a message a person can act on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    message: str


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    fraction: float


class JobRecord(BaseModel):
    """The service's own truth about one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    status: JobStatus
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    model_id: str
    model_format: str
    dataset_id: str
    dataset_format: str
    config: str
    attempts: int
    tenant: str = DEFAULT_TENANT
    #: The dataset's sample count as inspected when it was uploaded; ``None`` for older records.
    dataset_samples: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact a job reads: its content id, its detected format and, for a dataset, the sample
    count recorded when it was stored."""

    id: str
    format: str
    samples: int | None = None


class InvalidCursor(ValueError):
    """A ``cursor`` that no listing handed out."""


class TooManyActiveJobs(NeuronscopeError):
    """The tenant already has ``limit`` jobs that have not finished."""

    code = "too_many_jobs"

    def __init__(self, tenant: str, active: int, limit: int) -> None:
        super().__init__(
            f"expected at most {limit} unfinished (queued or running) jobs per tenant, tenant "
            f"{tenant!r} has {active}: wait for one to finish or cancel one"
        )
        self.active = active
        self.limit = limit


_JobIds = list[str]  # ``list`` is a method name inside JobStore


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a job id the service mints (a lowercase UUID4)."""
    return bool(_UUID4.match(value))


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class JobStore:
    """Job records for one key prefix in one Redis database."""

    def __init__(self, client: redis.Redis, *, prefix: str = "neuronscope", ttl_s: int = 0) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    # -- keys -----------------------------------------------------------------------------------

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _index(self, tenant: str) -> str:
        return f"{self._prefix}:tenant:{tenant}:jobs"

    def _active(self, tenant: str) -> str:
        return f"{self._prefix}:tenant:{tenant}:active"

    # -- reads ----------------------------------------------------------------------------------

    def get(self, job_id: str, *, tenant: str | None = None) -> JobRecord | None:
        """The job, or ``None`` for an id that is malformed, unknown, expired or (with ``tenant``)
        another tenant's."""
        if not is_job_id(job_id):
            return None
        fields = cast(dict[str, str], self._r.hgetall(self._key(job_id)))
        if not fields or not _owned(fields, tenant):
            return None
        return self._decode(fields)

    def active_count(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running."""
        return len(self._live_and_stale(tenant)[0])

    def status(self, job_id: str) -> JobStatus | None:
        value = cast(str | None, self._r.hget(self._key(job_id), "status"))
        return cast(JobStatus, value) if value in get_args(JobStatus) else None

    def list(
        self, *, limit: int, cursor: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> tuple[list[JobRecord], str | None]:
        """Up to ``limit`` of the tenant's jobs, newest first, after ``cursor``; and the cursor of
        the next page."""
        if cursor is not None and not _CURSOR.match(cursor):
            raise InvalidCursor(f"expected a cursor from a previous listing's next_cursor, got {cursor!r}")
        index = self._index(tenant)
        jobs: list[JobRecord] = []
        upper = f"({cursor}" if cursor is not None else "+"
        last: str | None = None
        while True:
            # One more than still needed: whether it exists tells if there is a next page.
            want = limit - len(jobs) + 1
            members = cast(
                list[str],
                self._r.zrange(index, upper, "-", desc=True, bylex=True, offset=0, num=want),
            )
            if not members:
                return jobs, None
            pipe = self._r.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self._key(member.split(":", 1)[1]))
            rows = cast(list[dict[str, str]], pipe.execute())
            stale = [member for member, fields in zip(members, rows, strict=True) if not fields]
            if stale:  # expired records: drop them from the index
                self._r.zrem(index, *stale)
            for member, fields in zip(members, rows, strict=True):
                if not fields:
                    continue
                if len(jobs) == limit:
                    return jobs, last
                jobs.append(self._decode(fields))
                last = member
            if len(members) < want:
                return jobs, None
            upper = f"({members[-1]}"

    # -- writes ---------------------------------------------------------------------------------

    def create(
        self,
        *,
        model: ArtifactRef,
        dataset: ArtifactRef,
        config: str,
        tenant: str = DEFAULT_TENANT,
        job_id: str | None = None,
        max_active: int = 0,
    ) -> JobRecord:
        """A new ``queued`` job of ``tenant``, with ``job_id`` or a fresh random one.

        ``max_active`` > 0 refuses the job with :class:`TooManyActiveJobs` when the tenant already
        has that many unfinished jobs; the count and the new job are one transaction, so
        concurrent requests cannot overshoot.
        """
        job_id = job_id or new_job_id()
        if not is_job_id(job_id):
            raise ValueError(f"expected a job id (lowercase UUID4), got {job_id!r}")
        now = _now()
        member = f"{int(now.timestamp() * 1_000_000):016d}:{job_id}"
        fields = {
            "job_id": job_id,
            "status": "queued",
            "stage": "queued",
            "fraction": "0.0",
            "created_at": _iso(now),
            "started_at": "",
            "finished_at": "",
            "error_code": "",
            "error_message": "",
            "model_id": model.id,
            "model_format": model.format,
            "dataset_id": dataset.id,
            "dataset_format": dataset.format,
            "dataset_samples": "" if dataset.samples is None else str(dataset.samples),
            "config": config,
            "attempts": "0",
            "index_member": member,
            "tenant": tenant,
        }
        active_key = self._active(tenant)
        refused: int | None = None

        def body(pipe: redis.client.Pipeline) -> None:
            nonlocal refused
            refused = None
            live, stale = self._live_and_stale(tenant, pipe) if max_active else ([], [])
            pipe.multi()
            if stale:
                pipe.srem(active_key, *stale)
            if max_active and len(live) >= max_active:
                refused = len(live)
                return
            pipe.hset(self._key(job_id), mapping=cast(Any, fields))
            if self._ttl_s:
                pipe.expire(self._key(job_id), self._ttl_s)
            pipe.zadd(self._index(tenant), {member: 0})
            pipe.sadd(active_key, job_id)

        self._r.transaction(cast(Any, body), active_key)
        if refused is not None:
            raise TooManyActiveJobs(tenant, refused, max_active)
        return self._decode(fields)

    def delete(self, job_id: str) -> None:
        """Forget a job entirely (used when it could not be queued, so no phantom remains)."""
        fields = cast(dict[str, str], self._r.hgetall(self._key(job_id)))
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._key(job_id))
        if fields:
            tenant = _tenant_of(fields)
            if fields.get("index_member"):
                pipe.zrem(self._index(tenant), fields["index_member"])
            pipe.srem(self._active(tenant), job_id)
        pipe.execute()

    def start(self, job_id: str, *, max_attempts: int) -> JobRecord | None:
        """Claim a job for a run: ``queued``/``running`` → ``running`` with one more attempt.

        A job already finished is returned unchanged (the caller must not run it again); a job
        past ``max_attempts`` (a redelivery after the worker died each time) becomes ``failed``.
        ``None`` when the job does not exist.
        """

        def change(fields: Mapping[str, str]) -> dict[str, str] | None:
            if fields["status"] in TERMINAL_STATUSES:
                return None
            attempts = int(fields.get("attempts") or 0) + 1
            now = _iso(_now())
            if attempts > max_attempts:
                return {
                    "status": "failed",
                    "attempts": str(attempts - 1),
                    "finished_at": now,
                    "error_code": "too_many_attempts",
                    "error_message": f"the job was started {max_attempts} times and its worker stopped "
                    "each time before it finished (crash, out of memory or shutdown); not retrying",
                }
            return {
                "status": "running",
                "attempts": str(attempts),
                "started_at": fields.get("started_at") or now,
                "stage": "starting",
                "fraction": "0.0",
            }

        return self._transition(job_id, change)

    def set_progress(self, job_id: str, stage: str, fraction: float) -> bool:
        """Record progress of a ``running`` job; ``False`` (nothing written) otherwise."""
        fraction = min(max(float(fraction), 0.0), 1.0)

        def change(fields: Mapping[str, str]) -> dict[str, str] | None:
            if fields["status"] != "running":
                return None
            return {"stage": stage, "fraction": repr(fraction)}

        record = self._transition(job_id, change)
        return record is not None and record.status == "running" and record.progress.stage == stage

    def finish(self, job_id: str, status: JobStatus, error: JobError | None = None) -> JobRecord | None:
        """``running`` → ``succeeded``/``failed``. A job cancelled meanwhile stays cancelled."""
        if status not in ("succeeded", "failed"):
            raise ValueError(f"expected 'succeeded' or 'failed', got {status!r}")

        def change(fields: Mapping[str, str]) -> dict[str, str] | None:
            if fields["status"] not in ACTIVE_STATUSES:
                return None
            update = {"status": status, "finished_at": _iso(_now())}
            if status == "succeeded":
                update |= {"stage": "done", "fraction": "1.0"}
            if error is not None:
                update |= {"error_code": error.code, "error_message": error.message}
            return update

        return self._transition(job_id, change)

    def cancel(self, job_id: str, *, tenant: str | None = None) -> tuple[JobRecord | None, bool]:
        """``queued``/``running`` → ``cancelled``. Returns the record and whether it changed;
        ``(None, False)`` for an unknown job or (with ``tenant``) another tenant's."""
        changed = False

        def change(fields: Mapping[str, str]) -> dict[str, str] | None:
            nonlocal changed
            # Runs again when a concurrent write aborts the transaction: decide afresh each time.
            changed = fields["status"] in ACTIVE_STATUSES
            if not changed:
                return None
            return {
                "status": "cancelled",
                "finished_at": _iso(_now()),
                "error_code": "cancelled",
                "error_message": "the job was cancelled by a DELETE request",
            }

        if not is_job_id(job_id):
            return None, False
        record = self._transition(job_id, change, tenant=tenant)
        return record, changed

    # -- internals ------------------------------------------------------------------------------

    def _transition(
        self,
        job_id: str,
        change: Callable[[Mapping[str, str]], dict[str, str] | None],
        *,
        tenant: str | None = None,
    ) -> JobRecord | None:
        """Read the job under WATCH, apply ``change`` (``None`` = leave as is), write atomically.

        A job that leaves ``queued``/``running`` leaves its tenant's active set in the same
        transaction. With ``tenant``, another tenant's job is ``None`` and left alone.
        """
        key = self._key(job_id)

        def body(pipe: redis.client.Pipeline) -> JobRecord | None:
            fields = cast(dict[str, str], pipe.hgetall(key))
            if not fields or not _owned(fields, tenant):
                return None
            update = change(fields)
            if not update:
                return self._decode(fields)
            pipe.multi()
            pipe.hset(key, mapping=cast(Any, update))
            if self._ttl_s:
                pipe.expire(key, self._ttl_s)
            if update.get("status", fields["status"]) in TERMINAL_STATUSES:
                pipe.srem(self._active(_tenant_of(fields)), job_id)
            return self._decode({**fields, **update})

        return cast(JobRecord | None, self._r.transaction(cast(Any, body), key, value_from_callable=True))

    @staticmethod
    def _decode(fields: Mapping[str, str]) -> JobRecord:
        error = (
            JobError(code=fields["error_code"], message=fields.get("error_message", ""))
            if fields.get("error_code")
            else None
        )
        return JobRecord(
            job_id=fields["job_id"],
            status=cast(JobStatus, fields["status"]),
            progress=JobProgress(
                stage=fields.get("stage", ""), fraction=float(fields.get("fraction") or 0.0)
            ),
            created_at=datetime.fromisoformat(fields["created_at"]),
            started_at=_parse_time(fields.get("started_at")),
            finished_at=_parse_time(fields.get("finished_at")),
            error=error,
            model_id=fields["model_id"],
            model_format=fields["model_format"],
            dataset_id=fields["dataset_id"],
            dataset_format=fields["dataset_format"],
            config=fields.get("config", "{}"),
            attempts=int(fields.get("attempts") or 0),
            tenant=_tenant_of(fields),
            dataset_samples=int(fields["dataset_samples"]) if fields.get("dataset_samples") else None,
        )

    def _live_and_stale(
        self, tenant: str, reader: redis.Redis | redis.client.Pipeline | None = None
    ) -> tuple[_JobIds, _JobIds]:
        """The tenant's active set split into jobs still queued or running and stale members
        (records that expired or finished without leaving the set)."""
        members = sorted(cast(set[str], (reader or self._r).smembers(self._active(tenant))))
        if not members:
            return [], []
        pipe = self._r.pipeline(transaction=False)
        for job_id in members:
            pipe.hget(self._key(job_id), "status")
        statuses = cast(list[str | None], pipe.execute())
        live = [m for m, status in zip(members, statuses, strict=True) if status in ACTIVE_STATUSES]
        stale = [m for m, status in zip(members, statuses, strict=True) if status not in ACTIVE_STATUSES]
        return live, stale


def _tenant_of(fields: Mapping[str, str]) -> str:
    return fields.get("tenant") or DEFAULT_TENANT


def _owned(fields: Mapping[str, str], tenant: str | None) -> bool:
    return tenant is None or _tenant_of(fields) == tenant


def new_job_id() -> str:
    """A fresh job id: a random (version 4) UUID."""
    return str(uuid.uuid4())


def connect(url: str) -> redis.Redis:
    """A Redis client whose replies are ``str`` (what :class:`JobStore` expects)."""
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
