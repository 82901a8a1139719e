"""``POST /v1/analyze``: check the config, store the uploads, record the job, then queue it."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import ValidationError

from neuronscope.contracts import AnalysisConfig
from neuronscope.jobs import ArtifactRef
from neuronscope.storage import ArtifactKind
from service.api.deps import JobStoreDep, QueueDep, SettingsDep, StorageDep
from service.errors import ArtifactNotFound, InvalidRequest, ServiceUnavailable, error_responses
from service.schemas import AnalyzeAccepted
from service.uploads import store_upload

log = logging.getLogger("neuronscope.api")
router = APIRouter(prefix="/v1", tags=["analysis"])


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
) -> ArtifactRef:
    field = "model" if kind == "model" else "dataset"
    if (upload is None) == (artifact_id is None):
        raise InvalidRequest(
            f"expected exactly one of the '{field}' file and the '{field}_id' field, got "
            + ("both" if upload is not None else "neither")
        )
    if upload is not None:
        info, _ = store_upload(storage, settings, upload.file, kind)
    else:
        assert artifact_id is not None
        found = storage.artifact(kind, artifact_id.strip().lower())
        if found is None:
            raise ArtifactNotFound(
                f"no {kind} with id {artifact_id!r}: upload it with POST /v1/{kind}s first, or send the file"
            )
        info = found
    return ArtifactRef(id=info.id, format=info.format)


@router.post(
    "/analyze",
    status_code=202,
    response_model=AnalyzeAccepted,
    responses=error_responses(404, 413, 422, 503),
)
def analyze(
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    jobs: JobStoreDep,
    queue: QueueDep,
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
) -> AnalyzeAccepted:
    """Queue an analysis of a model on a dataset; poll the returned ``status_url``."""
    config_json = parse_config(config)
    model_ref = _resolve("model", model, model_id, settings, storage)
    dataset_ref = _resolve("dataset", dataset, dataset_id, settings, storage)
    record = jobs.create(model=model_ref, dataset=dataset_ref, config=config_json)
    try:
        queue.enqueue(record.job_id)
    except Exception as exc:  # kombu raises transport-specific errors
        log.warning("could not queue job %s: %s", record.job_id, exc)
        jobs.delete(record.job_id)
        raise ServiceUnavailable("the queue (Redis) is unreachable; nothing was queued, retry later") from exc
    response.headers["Location"] = f"/v1/jobs/{record.job_id}"
    return AnalyzeAccepted.of(record)
