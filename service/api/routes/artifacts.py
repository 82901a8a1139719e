"""Content-addressed uploads: ``POST /v1/models`` and ``POST /v1/datasets``, and look-ups by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile, status

from neuronscope.storage import ArtifactKind
from service.api.deps import SettingsDep, StorageDep
from service.errors import ArtifactNotFound, error_responses
from service.schemas import ArtifactOut
from service.uploads import store_upload

router = APIRouter(prefix="/v1", tags=["artifacts"])

_UPLOAD_RESPONSES = {
    200: {"model": ArtifactOut, "description": "These bytes were uploaded before: the same id"},
    **error_responses(413, 422, 503),
}


def _upload(
    kind: ArtifactKind, file: UploadFile, response: Response, settings: SettingsDep, storage: StorageDep
) -> ArtifactOut:
    info, created = store_upload(storage, settings, file.file, kind)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return ArtifactOut.of(info)


@router.post("/models", status_code=201, response_model=ArtifactOut, responses=_UPLOAD_RESPONSES)
def upload_model(
    file: Annotated[UploadFile, File(description="An ONNX model or a TorchScript archive.")],
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
) -> ArtifactOut:
    """Store a model once; its id is the sha256 of its bytes."""
    return _upload("model", file, response, settings, storage)


@router.post("/datasets", status_code=201, response_model=ArtifactOut, responses=_UPLOAD_RESPONSES)
def upload_dataset(
    file: Annotated[UploadFile, File(description="A NumPy .npz archive (x, optional y) or a .npy array.")],
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
) -> ArtifactOut:
    """Store a dataset once; its id is the sha256 of its bytes."""
    return _upload("dataset", file, response, settings, storage)


def _lookup(kind: ArtifactKind, artifact_id: str, storage: StorageDep) -> ArtifactOut:
    info = storage.artifact(kind, artifact_id)
    if info is None:
        raise ArtifactNotFound(f"no {kind} with id {artifact_id!r}")
    return ArtifactOut.of(info)


@router.get("/models/{model_id}", response_model=ArtifactOut, responses=error_responses(404, 422))
def get_model(model_id: str, storage: StorageDep) -> ArtifactOut:
    """Whether a model with this id is stored (skip the upload if so)."""
    return _lookup("model", model_id, storage)


@router.get("/datasets/{dataset_id}", response_model=ArtifactOut, responses=error_responses(404, 422))
def get_dataset(dataset_id: str, storage: StorageDep) -> ArtifactOut:
    """Whether a dataset with this id is stored (skip the upload if so)."""
    return _lookup("dataset", dataset_id, storage)
