"""Request and response bodies of the HTTP API (the report itself is ``neuronscope.contracts.Report``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from neuronscope.jobs import JobError, JobProgress, JobRecord, JobStatus
from neuronscope.storage import ArtifactFormat, ArtifactInfo, ArtifactKind


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Body):
    """Every error response."""

    error: str = Field(description="Stable machine-readable code, e.g. 'job_not_found', 'invalid_config'.")
    detail: str = Field(description="What was expected and what came in.")


class ArtifactOut(_Body):
    id: str = Field(description="sha256 of the uploaded bytes (hex); pass it as model_id / dataset_id.")
    kind: ArtifactKind
    format: ArtifactFormat
    size: int = Field(description="Bytes.")

    @classmethod
    def of(cls, info: ArtifactInfo) -> ArtifactOut:
        return cls(id=info.id, kind=info.kind, format=info.format, size=info.size)


def job_urls(job_id: str) -> dict[str, str]:
    return {
        "status_url": f"/v1/jobs/{job_id}",
        "report_url": f"/v1/jobs/{job_id}/report",
        "html_report_url": f"/v1/jobs/{job_id}/report.html",
    }


class AnalyzeAccepted(_Body):
    job_id: str
    status: JobStatus
    status_url: str
    report_url: str
    html_report_url: str

    @classmethod
    def of(cls, record: JobRecord) -> AnalyzeAccepted:
        return cls(job_id=record.job_id, status=record.status, **job_urls(record.job_id))


class JobOut(_Body):
    job_id: str
    status: JobStatus
    progress: JobProgress = Field(
        description="The current stage (queued, starting, load, pattern_similarity, …, done) and the "
        "fraction of that stage done, in [0, 1]."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None = Field(description="Why the job failed or was cancelled; null otherwise.")
    model_id: str
    dataset_id: str
    attempts: int = Field(description="How many times a worker started this job.")
    report_url: str = Field(description="Where the JSON report is (404 until the job succeeded).")
    html_report_url: str

    @classmethod
    def of(cls, record: JobRecord) -> JobOut:
        urls = job_urls(record.job_id)
        return cls(
            job_id=record.job_id,
            status=record.status,
            progress=record.progress,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
            model_id=record.model_id,
            dataset_id=record.dataset_id,
            attempts=record.attempts,
            report_url=urls["report_url"],
            html_report_url=urls["html_report_url"],
        )


class JobList(_Body):
    jobs: list[JobOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class Health(_Body):
    status: Literal["ok"] = "ok"


class Ready(_Body):
    status: Literal["ready"] = "ready"
    redis: Literal["ok"] = "ok"
    workers: int = Field(description="Workers that answered the ping (at least this many are up).")
    confinement: str = Field(
        description="How this host confines the processes that open uploaded models, e.g. "
        "`landlock-abi7+seccomp+netns+no-caps`; `none` where it cannot (then PyTorch-format uploads "
        "are refused unless NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED is set)."
    )
    confined: bool = Field(description="Whether that confinement is active.")
