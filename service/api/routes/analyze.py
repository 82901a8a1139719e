"""``POST /v1/analyze``: check the config, store the uploads, check the job's planned work against
the budget, record the job, then queue it.

With an ``Idempotency-Key`` the job id is claimed for (tenant, key, request fingerprint) before
the job is recorded, so a retried request gets the job of the first one instead of a second job.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Response, UploadFile
from pydantic import ValidationError

from neuronscope.contracts import AnalysisConfig
from neuronscope.contracts.budget import Budget, check_budget, check_pairs_in_range, plan_work
from neuronscope.jobs import ArtifactRef, JobRecord, TooManyActiveJobs, new_job_id
from neuronscope.settings import Settings
from neuronscope.storage import ArtifactKind, Storage
from neuronscope.validation import inspect_dataset
from service.api.deps import (
    IdempotencyDep,
    JobStoreDep,
    OwnershipDep,
    QueueDep,
    SettingsDep,
    StorageDep,
    TenantDep,
    get_tenant,
)
from service.api.routes.artifacts import owned_artifact, store_owned_upload
from service.core.idempotency import Claim, ClaimContended, FingerprintMismatch, fingerprint
from service.errors import (
    ArtifactNotFound,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    ServiceUnavailable,
    TooManyJobs,
    error_responses,
)
from service.schemas import AnalyzeAccepted

log = logging.getLogger("neuronscope.api")
router = APIRouter(prefix="/v1", tags=["analysis"], dependencies=[Depends(get_tenant)])

#: How long a request waits for a concurrent one with the same Idempotency-Key to record its job.
REPLAY_WAIT_S = 5.0
#: Printable ASCII without spaces, like the keys clients generate (UUIDs, ULIDs, hashes).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


def parse_config(raw: str | None) -> str:
    """The config as canonical JSON (only what the client set), or 422 ``invalid_config``."""
    if raw is None or not raw.strip():
        return "{}"
    try:
        config = AnalysisConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidRequest(f"config: {problems}", code="invalid_config") from exc
    return config.model_dump_json(exclude_unset=True)


def _resolve(
    kind: ArtifactKind,
    upload: UploadFile | None,
    artifact_id: str | None,
    settings: SettingsDep,
    storage: StorageDep,
    ownership: OwnershipDep,
    tenant: str,
) -> ArtifactRef:
    field = "model" if kind == "model" else "dataset"
    if (upload is None) == (artifact_id is None):
        raise InvalidRequest(
            f"expected exactly one of the '{field}' file and the '{field}_id' field, got "
            + ("both" if upload is not None else "neither")
        )
    if upload is not None:
        info, _ = store_owned_upload(kind, upload.file, settings, storage, ownership, tenant)
    else:
        assert artifact_id is not None
        found = owned_artifact(kind, artifact_id.strip().lower(), storage, ownership, tenant)
        if found is None:
            raise ArtifactNotFound(
                f"no {kind} with id {artifact_id!r}: upload it with POST /v1/{kind}s first, or send the file"
            )
        info = found
    return ArtifactRef(id=info.id, format=info.format, samples=info.samples)


@router.post(
    "/analyze",
    status_code=202,
    response_model=AnalyzeAccepted,
    responses={
        200: {
            "model": AnalyzeAccepted,
            "description": "A retry with the same Idempotency-Key and the same request: the first "
            "request's job (header Idempotent-Replayed: true)",
        },
        **error_responses(400, 401, 404, 409, 413, 422, 429, 503),
    },
)
def analyze(
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    jobs: JobStoreDep,
    queue: QueueDep,
    ownership: OwnershipDep,
    idempotency: IdempotencyDep,
    tenant: TenantDep,
    model: Annotated[UploadFile | None, File(description="An ONNX model or a TorchScript archive.")] = None,
    model_id: Annotated[str | None, Form(description="Id of a model uploaded with POST /v1/models.")] = None,
    dataset: Annotated[UploadFile | None, File(description="A .npz (x, optional y) or .npy dataset.")] = None,
    dataset_id: Annotated[
        str | None, Form(description="Id of a dataset uploaded with POST /v1/datasets.")
    ] = None,
    config: Annotated[
        str | None,
        Form(description="The analysis config as a JSON object (AnalysisConfig); {} for defaults."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Any unique string (a UUID, say). A retry with the same key and the same "
            "model, dataset and config returns the first request's job (200) instead of queueing "
            "another; the same key with a different request is 422 idempotency_key_reused. Keys "
            "are per tenant and remembered for NEURONSCOPE_IDEMPOTENCY_TTL_S.",
        ),
    ] = None,
) -> AnalyzeAccepted:
    """Queue an analysis of a model on a dataset; poll the returned ``status_url``.

    A job that plans more work than the server's budget (NEURONSCOPE_MAX_TD_POINTS,
    NEURONSCOPE_MAX_PS_PAIRS, NEURONSCOPE_MAX_FORWARD_COST) is refused with 422 ``budget_exceeded``.
    """
    config_json = parse_config(config)
    model_ref = _resolve("model", model, model_id, settings, storage, ownership, tenant)
    dataset_ref = _resolve("dataset", dataset, dataset_id, settings, storage, ownership, tenant)
    planned = AnalysisConfig.model_validate_json(config_json)
    _check_planned_work(planned, model_ref, dataset_ref, settings, storage)

    job_id = new_job_id()
    claim = None
    if idempotency_key is not None:
        request_fingerprint = fingerprint(model_ref.id, dataset_ref.id, config_json)
        claim, earlier = _claim_or_replay(
            idempotency, jobs, tenant, idempotency_key, request_fingerprint, job_id
        )
        if earlier is not None:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Location"] = f"/v1/jobs/{earlier.job_id}"
            return AnalyzeAccepted.of(earlier)

    try:
        record = _create_and_queue(jobs, queue, job_id, model_ref, dataset_ref, config_json, tenant, settings)
    except BaseException:
        if claim is not None:  # no job came of it: let a retry with this key try again
            idempotency.release(tenant, claim)
        raise
    response.headers["Location"] = f"/v1/jobs/{record.job_id}"
    return AnalyzeAccepted.of(record)


def _dataset_samples(storage: Storage, settings: Settings, dataset_id: str) -> int:
    """The sample count of a dataset stored before counts were recorded at upload, from its
    headers (a hard link into storage's own ``tmp`` for the filesystem backend, so nothing is
    copied)."""
    scratch = settings.data_dir / "tmp" if settings.storage_backend == "filesystem" else None
    with tempfile.TemporaryDirectory(prefix="plan-", dir=scratch) as tmp:
        path = Path(tmp) / "dataset"
        try:
            storage.fetch("dataset", dataset_id, path)
        except FileNotFoundError:
            raise ArtifactNotFound(
                f"no dataset with id {dataset_id!r}: it was deleted while this request ran"
            ) from None
        return inspect_dataset(path).samples


def _check_planned_work(
    config: AnalysisConfig, model: ArtifactRef, dataset: ArtifactRef, settings: Settings, storage: Storage
) -> None:
    """422 when explicit pairs name missing samples or the planned work is over the budget."""
    samples = (
        dataset.samples if dataset.samples is not None else _dataset_samples(storage, settings, dataset.id)
    )
    check_pairs_in_range(config, samples)
    info = storage.artifact("model", model.id)
    if info is None:
        raise ArtifactNotFound(f"no model with id {model.id!r}: it was deleted while this request ran")
    budget = Budget(
        max_td_points=settings.max_td_points,
        max_ps_pairs=settings.max_ps_pairs,
        max_forward_cost=settings.max_forward_cost,
    )
    check_budget(plan_work(config, samples, info.size), budget)


def _claim_or_replay(
    idempotency: IdempotencyDep,
    jobs: JobStoreDep,
    tenant: str,
    key: str,
    request_fingerprint: str,
    job_id: str,
) -> tuple[Claim | None, JobRecord | None]:
    """Claim ``key`` for ``job_id``, or find the job an earlier request with it created.

    A request racing the first one with the same key waits (briefly) until that one has recorded
    its job, or has given the key up after failing, in which case this one claims it.
    """
    deadline = time.monotonic() + REPLAY_WAIT_S
    while True:
        try:
            claim = idempotency.claim(tenant, key, request_fingerprint, job_id)
        except FingerprintMismatch:
            raise IdempotencyKeyReused(
                "Idempotency-Key: expected the same model, dataset and config as the request that "
                "first used this key, got a different request; use a new key for a new analysis"
            ) from None
        except ClaimContended:
            raise IdempotencyKeyInUse("Idempotency-Key: other requests keep using this key; retry") from None
        if claim.new:
            return claim, None
        earlier = jobs.get(claim.job_id, tenant=tenant)
        if earlier is not None:
            return None, earlier
        if time.monotonic() > deadline:
            raise IdempotencyKeyInUse(
                "Idempotency-Key: the request that first used this key has not recorded its job yet "
                "(or that job's record expired); retry in a moment"
            )
        time.sleep(0.05)


def _create_and_queue(
    jobs: JobStoreDep,
    queue: QueueDep,
    job_id: str,
    model: ArtifactRef,
    dataset: ArtifactRef,
    config_json: str,
    tenant: str,
    settings: SettingsDep,
) -> JobRecord:
    """Record the job (within the tenant's limit), then queue it; no record stays if queueing fails."""
    try:
        record = jobs.create(
            model=model,
            dataset=dataset,
            config=config_json,
            tenant=tenant,
            job_id=job_id,
            max_active=settings.max_active_jobs_per_tenant,
        )
    except TooManyActiveJobs as exc:
        raise TooManyJobs(exc.message) from exc
    try:
        queue.enqueue(record.job_id)
    except Exception as exc:  # kombu raises transport-specific errors
        log.warning("could not queue job %s: %s", record.job_id, exc)
        jobs.delete(record.job_id)
        raise ServiceUnavailable("the queue (Redis) is unreachable; nothing was queued, retry later") from exc
    return record
