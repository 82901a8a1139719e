"""Job status, listing, cancellation and reports: all from the service's own records, and only
the caller's tenant's (anyone else's job answers 404 ``job_not_found``, as an unknown id does).

A stored report is parsed against the :class:`Report` contract before it is served: bytes that do
not parse (corrupt, or tampered with) answer 500 ``report_corrupt`` and are never sent.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from neuronscope.contracts import Report
from neuronscope.contracts.report import MAX_REPORT_BYTES, load_report
from neuronscope.errors import InvalidInput
from neuronscope.jobs import CURSOR_PATTERN, InvalidCursor, JobRecord
from service.api.deps import JobStoreDep, StorageDep, TenantDep, get_tenant
from service.errors import (
    FeatureNotAvailable,
    InvalidRequest,
    JobAlreadyFinished,
    JobNotFound,
    ReportCorrupt,
    ReportNotReady,
    error_responses,
)
from service.schemas import JobList, JobOut

log = logging.getLogger("neuronscope.api")

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(get_tenant)])

_HTML_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "The report as one self-contained HTML page"},
    **error_responses(401, 404, 422, 500, 501, 503, json_route=False),
}


def _job(jobs: JobStoreDep, job_id: str, tenant: str) -> JobRecord:
    record = jobs.get(job_id, tenant=tenant)
    if record is None:
        raise JobNotFound(job_id)
    return record


@router.get("", response_model=JobList, responses=error_responses(401, 422, 503))
def list_jobs(
    jobs: JobStoreDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(
            description="next_cursor of the previous page.",
            # Documented here, checked by the job store (422 invalid_cursor).
            json_schema_extra={"pattern": CURSOR_PATTERN},
        ),
    ] = None,
) -> JobList:
    """This tenant's jobs, newest first, a page at a time."""
    try:
        records, next_cursor = jobs.list(limit=limit, cursor=cursor, tenant=tenant)
    except InvalidCursor as exc:
        raise InvalidRequest(str(exc), code="invalid_cursor") from exc
    return JobList(jobs=[JobOut.of(r) for r in records], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 422, 503))
def get_job(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> JobOut:
    """Status, progress, timestamps and, on failure, the error."""
    return JobOut.of(_job(jobs, job_id, tenant))


@router.delete("/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 409, 422, 503))
def cancel_job(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> JobOut:
    """Cancel a queued or running job (a running analysis is stopped within about a second)."""
    record, changed = jobs.cancel(job_id, tenant=tenant)
    if record is None:
        raise JobNotFound(job_id)
    if not changed:
        raise JobAlreadyFinished(f"job {job_id} has already finished with status {record.status!r}")
    return JobOut.of(record)


def _report_bytes(job_id: str, jobs: JobStoreDep, storage: StorageDep, tenant: str) -> bytes:
    record = _job(jobs, job_id, tenant)
    data = storage.get_report(job_id) if record.status == "succeeded" else None
    if data is None:
        hint = {
            "queued": "the job is queued",
            "running": f"the job is running ({record.progress.stage}, {record.progress.fraction:.0%})",
            "failed": f"the job failed ({record.error.code if record.error else 'unknown'})",
            "cancelled": "the job was cancelled",
        }.get(record.status, "the report was deleted or has expired")
        raise ReportNotReady(f"no report for job {job_id}: {hint}")
    return data


def _valid_report(job_id: str, data: bytes) -> Report:
    try:
        return load_report(data)
    except InvalidInput as exc:
        log.error("job %s: stored report refused unread: %s", job_id, exc.message)
        raise ReportCorrupt(
            f"the stored report of job {job_id} is {len(data)} bytes, more than any report the "
            f"worker writes ({MAX_REPORT_BYTES}); it is not served"
        ) from None
    except ValidationError as exc:
        log.error(
            "job %s: stored report is not a valid report (%d errors); not serving it",
            job_id,
            exc.error_count(),
        )
        raise ReportCorrupt(
            f"the stored report of job {job_id} is corrupt: expected a report that matches the "
            f"report contract, got {exc.error_count()} validation errors; it is not served"
        ) from None


@router.get("/{job_id}/report", response_model=Report, responses=error_responses(401, 404, 422, 500, 503))
def get_report(job_id: str, jobs: JobStoreDep, storage: StorageDep, tenant: TenantDep) -> Response:
    """The JSON report of a job that succeeded (404 ``report_not_ready`` until then)."""
    data = _report_bytes(job_id, jobs, storage, tenant)
    _valid_report(job_id, data)
    return Response(content=data, media_type="application/json")


@router.delete(
    "/{job_id}/report",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "The report was deleted"}, **error_responses(401, 404, 422, 503)},
)
def delete_report(job_id: str, jobs: JobStoreDep, storage: StorageDep, tenant: TenantDep) -> Response:
    """Delete the stored report of this tenant's job (the job record stays; 404 when there is none)."""
    record = _job(jobs, job_id, tenant)
    if not storage.delete_report(record.job_id):
        raise ReportNotReady(f"no report for job {job_id} to delete")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses=_HTML_RESPONSES,
)
def get_report_html(job_id: str, jobs: JobStoreDep, storage: StorageDep, tenant: TenantDep) -> HTMLResponse:
    """The report rendered as a self-contained HTML page."""
    data = _report_bytes(job_id, jobs, storage, tenant)
    try:
        from neuronscope.report_html import render_html  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise FeatureNotAvailable("HTML reports are not available in this build") from exc
    return HTMLResponse(render_html(_valid_report(job_id, data)))
