"""A small Python client for the neuronscope REST API, for notebooks and pipeline code.

>>> from neuronscope.client import Client            # doctest: +SKIP
>>> with Client("http://localhost:8000", api_key="…") as client:   # doctest: +SKIP
...     job = client.analyze("model.onnx", "test.npz", config={"pairs": {"count": 1000}})
...     job.wait(timeout=600, on_progress=lambda info: print(info.progress.stage))
...     report = job.report()
...     print(report.pattern_similarity.different_label.mean)

Every failure raises a :class:`ClientError` carrying the server's error ``code`` and ``detail``:
:class:`ClientConnectionError` when the server cannot be reached, :class:`ServerError` for an
error response (``status_code`` set), :class:`JobFailedError` / :class:`JobCancelledError` when the
job ends without a report, and :class:`JobTimeoutError` when :meth:`Job.wait` runs out of time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.contracts.trend import Trend
from neuronscope.errors import NeuronscopeError
from neuronscope.trend import build_trend

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
#: Consecutive connection failures :meth:`Job.wait` tolerates while polling (server restarts).
POLL_RETRIES = 3


class ClientError(NeuronscopeError):
    """Any failure of a client call. ``code`` / ``detail`` are the server's when it sent them."""

    code = "client_error"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.detail = message
        self.status_code = status_code


class ClientConnectionError(ClientError):
    """The server could not be reached, or did not answer in time."""

    code = "connection_failed"


class ServerError(ClientError):
    """The server answered with an error status (``status_code``) and ``{"error", "detail"}``."""

    code = "server_error"


class JobError(ClientError):
    """A job that ended without a report. ``job`` is its last known state."""

    code = "job_error"

    def __init__(self, message: str, job: JobInfo, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.job = job


class JobFailedError(JobError):
    """The job failed; ``code`` / ``detail`` are the job's error (e.g. ``dataset_shape_mismatch``)."""

    code = "job_failed"


class JobCancelledError(JobError):
    """The job was cancelled."""

    code = "cancelled"


class JobTimeoutError(ClientError):
    """:meth:`Job.wait` ran out of time; the job itself keeps running on the server."""

    code = "timeout"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Artifact(_Body):
    """An uploaded model or dataset; pass it to :meth:`Client.analyze` to reuse it without re-uploading."""

    id: str
    kind: Literal["model", "dataset"]
    format: str | None = None
    size: int | None = None


class JobProgress(_Body):
    stage: str = ""
    fraction: float = 0.0


class JobErrorInfo(_Body):
    code: str
    message: str


class JobInfo(_Body):
    """A job's state as ``GET /v1/jobs/{id}`` returns it."""

    job_id: str
    status: JobStatusName
    progress: JobProgress = JobProgress()
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: JobErrorInfo | None = None
    model_id: str | None = None
    dataset_id: str | None = None
    report_url: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


ModelRef = Artifact | str | os.PathLike[str]
_B = TypeVar("_B", bound=BaseModel)
ConfigArg = AnalysisConfig | Mapping[str, Any] | None


def describe_validation_error(exc: ValidationError, source: str, limit: int = 5) -> str:
    """One line naming each problem: ``config C.json is invalid: pairs.count: …; bogus: unknown key``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        elif err["type"] == "json_invalid":
            parts.append(f"not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})")
        else:
            parts.append(f"{loc}: {err['msg']}")
    more = f" (and {exc.error_count() - limit} more)" if exc.error_count() > limit else ""
    return f"{source} is invalid: " + "; ".join(parts) + more


def _config_json(config: ConfigArg) -> str | None:
    """Validate locally (the same schema as the server) and serialise only what was set."""
    if config is None:
        return None
    if isinstance(config, AnalysisConfig):
        return config.model_dump_json(exclude_unset=True)
    try:
        parsed = AnalysisConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ClientError(describe_validation_error(exc, "config"), code="invalid_config") from None
    return parsed.model_dump_json(exclude_unset=True)


class Job:
    """A submitted analysis."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    @property
    def path(self) -> str:
        return f"/v1/jobs/{self.job_id}"

    def status(self) -> JobInfo:
        """The job's current state."""
        return self.client._parse(JobInfo, self.client._request("GET", self.path))

    def wait(
        self,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[JobInfo], None] | None = None,
    ) -> JobInfo:
        """Poll until the job ends. Returns the final state when it succeeded; raises otherwise.

        Raises :class:`JobFailedError`, :class:`JobCancelledError`, :class:`JobTimeoutError` (after
        ``timeout`` seconds; the job keeps running), or :class:`ClientConnectionError` after
        :data:`POLL_RETRIES` consecutive connection failures.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            try:
                info = self.status()
                failures = 0
            except ClientConnectionError:
                failures += 1
                if failures > POLL_RETRIES:
                    raise
                info = None
            if info is not None:
                if on_progress is not None:
                    on_progress(info)
                if info.status == "succeeded":
                    return info
                if info.status == "failed":
                    err = info.error
                    message = err.message if err else "the job failed without an error message"
                    raise JobFailedError(message, info, code=err.code if err else None)
                if info.status == "cancelled":
                    message = info.error.message if info.error else "the job was cancelled"
                    raise JobCancelledError(message, info)
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(
                    f"job {self.job_id} did not finish within {timeout:g} s (it keeps running on the server)"
                )
            pause = (
                poll_interval
                if deadline is None
                else max(0.0, min(poll_interval, deadline - time.monotonic()))
            )
            time.sleep(pause)

    def report(self) -> Report:
        """The JSON report (the job must have succeeded)."""
        response = self.client._request("GET", f"{self.path}/report")
        try:
            return Report.model_validate_json(response.content)
        except ValidationError as exc:
            raise ClientError(
                f"the server's report for job {self.job_id} does not match this client's report schema: "
                f"{exc.error_count()} errors, first: {exc.errors()[0]['msg']}",
                code="report_invalid",
            ) from None

    def report_html(self) -> str:
        """The self-contained HTML report."""
        return self.client._request("GET", f"{self.path}/report.html").text

    def cancel(self) -> JobInfo:
        """Cancel a queued or running job; returns its state afterwards."""
        response = self.client._request("DELETE", self.path)
        with contextlib.suppress(ValueError, ValidationError):
            return JobInfo.model_validate_json(response.content)
        return self.status()


class Client:
    """Talks to one neuronscope server. Use as a context manager, or call :meth:`close`.

    ``timeout`` bounds each HTTP request (not a whole job: see :meth:`Job.wait`). ``transport``
    is for tests (e.g. ``httpx.MockTransport``).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ClientConnectionError(f"{method} {self.url}{path}: no answer in time ({exc})") from None
        except httpx.TransportError as exc:
            raise ClientConnectionError(f"cannot reach the server at {self.url}: {exc}") from None
        if response.is_success:
            return response
        code, detail = "http_error", response.text.strip()[:500] or response.reason_phrase
        with contextlib.suppress(ValueError):
            body = response.json()
            if isinstance(body, dict):
                if isinstance(body.get("error"), str):
                    code = body["error"]
                if "detail" in body:
                    raw = body["detail"]
                    detail = raw if isinstance(raw, str) else json.dumps(raw)[:500]
        raise ServerError(
            f"{detail} (HTTP {response.status_code})", code=code, status_code=response.status_code
        )

    @staticmethod
    def _parse(model: type[_B], response: httpx.Response) -> _B:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServerError(
                f"unexpected answer from the server for {response.request.url}: {exc.errors()[0]['msg']}",
                code="bad_response",
                status_code=response.status_code,
            ) from None

    def _upload(self, kind: Literal["models", "datasets"], path: str | os.PathLike[str]) -> Artifact:
        file = Path(path)
        with file.open("rb") as fh:
            response = self._request(
                "POST", f"/v1/{kind}", files={"file": (file.name, fh, "application/octet-stream")}
            )
        return self._parse(Artifact, response)

    # -- API --------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether ``GET /readyz`` says the service can run jobs (``False`` when unreachable)."""
        try:
            return self._http.get("/readyz").is_success
        except httpx.HTTPError:
            return False

    def upload_model(self, path: str | os.PathLike[str]) -> Artifact:
        """Upload an ONNX or TorchScript file once; the artifact (id: its sha256) is reusable."""
        return self._upload("models", path)

    def upload_dataset(self, path: str | os.PathLike[str]) -> Artifact:
        """Upload an ``.npz`` / ``.npy`` dataset once."""
        return self._upload("datasets", path)

    def analyze(self, model: ModelRef, dataset: ModelRef, config: ConfigArg = None) -> Job:
        """Submit an analysis. ``model`` / ``dataset``: a file path (uploaded with the request) or an
        :class:`Artifact` from :meth:`upload_model` / :meth:`upload_dataset`. ``config``: an
        :class:`AnalysisConfig` or a dict of the same schema (validated here first; an invalid one
        raises :class:`ClientError` with code ``invalid_config`` and sends nothing)."""
        # Always multipart (plain fields as (None, value) parts), files streamed from disk.
        parts: list[tuple[str, tuple[str | None, Any, str | None]]] = []
        config_json = _config_json(config)
        if config_json is not None:
            parts.append(("config", (None, config_json, None)))
        with contextlib.ExitStack() as stack:
            for field, ref in (("model", model), ("dataset", dataset)):
                if isinstance(ref, Artifact):
                    parts.append((f"{field}_id", (None, ref.id, None)))
                else:
                    file = Path(ref)
                    handle = stack.enter_context(file.open("rb"))
                    parts.append((field, (file.name, handle, "application/octet-stream")))
            response = self._request("POST", "/v1/analyze", files=parts)
        body = response.json() if response.content else {}
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(job_id, str):
            raise ServerError("the server accepted the analysis but sent no job_id", code="bad_response")
        return Job(self, job_id)

    def job(self, job_id: str) -> Job:
        """A handle on an existing job."""
        return Job(self, job_id)

    def trend(self, job_ids: Sequence[str], labels: Sequence[str] | None = None) -> Trend:
        """The trend over the reports of finished jobs, one per training checkpoint, in order
        (``labels`` name the checkpoints; the job ids by default). See :mod:`neuronscope.trend`."""
        reports = [self.job(job_id).report() for job_id in job_ids]
        return build_trend(reports, list(labels) if labels is not None else list(job_ids))
