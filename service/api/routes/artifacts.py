"""Content-addressed uploads: ``POST /v1/models`` and ``POST /v1/datasets``, and look-ups by id.

The bytes are stored once for everyone; the right to use an id is the uploading tenant's
(``service.core.ownership``), so another tenant's id answers 404 like an unknown one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Response, UploadFile, status

from neuronscope.storage import ArtifactInfo, ArtifactKind
from service.api.deps import OwnershipDep, SettingsDep, StorageDep, TenantDep, get_tenant
from service.errors import ArtifactNotFound, error_responses
from service.schemas import ArtifactOut
from service.uploads import store_upload

router = APIRouter(prefix="/v1", tags=["artifacts"], dependencies=[Depends(get_tenant)])

_UPLOAD_RESPONSES = {
    200: {"model": ArtifactOut, "description": "This tenant uploaded these bytes before: the same id"},
    **error_responses(400, 401, 413, 422, 503),
}


def _upload(
    kind: ArtifactKind,
    file: UploadFile,
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    ownership: OwnershipDep,
    tenant: str,
) -> ArtifactOut:
    info, _ = store_upload(storage, settings, file.file, kind)
    # 201 when new *to this tenant*: whether someone else stored the same bytes is not told.
    created = ownership.grant(tenant, kind, info.id)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return ArtifactOut.of(info)


@router.post("/models", status_code=201, response_model=ArtifactOut, responses=_UPLOAD_RESPONSES)
def upload_model(
    file: Annotated[UploadFile, File(description="An ONNX model or a TorchScript archive.")],
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    ownership: OwnershipDep,
    tenant: TenantDep,
) -> ArtifactOut:
    """Store a model once; its id is the sha256 of its bytes."""
    return _upload("model", file, response, settings, storage, ownership, tenant)


@router.post("/datasets", status_code=201, response_model=ArtifactOut, responses=_UPLOAD_RESPONSES)
def upload_dataset(
    file: Annotated[UploadFile, File(description="A NumPy .npz archive (x, optional y) or a .npy array.")],
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    ownership: OwnershipDep,
    tenant: TenantDep,
) -> ArtifactOut:
    """Store a dataset once; its id is the sha256 of its bytes."""
    return _upload("dataset", file, response, settings, storage, ownership, tenant)


def owned_artifact(
    kind: ArtifactKind, artifact_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: str
) -> ArtifactInfo | None:
    """The artifact if ``tenant`` uploaded it and it is still stored; ``None`` otherwise."""
    if not ownership.owns(tenant, kind, artifact_id):
        return None
    return storage.artifact(kind, artifact_id)


def _lookup(
    kind: ArtifactKind, artifact_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: str
) -> ArtifactOut:
    info = owned_artifact(kind, artifact_id, storage, ownership, tenant)
    if info is None:
        raise ArtifactNotFound(f"no {kind} with id {artifact_id!r}")
    return ArtifactOut.of(info)


@router.get("/models/{model_id}", response_model=ArtifactOut, responses=error_responses(401, 404, 422, 503))
def get_model(model_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: TenantDep) -> ArtifactOut:
    """Whether this tenant has a model with this id stored (skip the upload if so)."""
    return _lookup("model", model_id, storage, ownership, tenant)


@router.get(
    "/datasets/{dataset_id}", response_model=ArtifactOut, responses=error_responses(401, 404, 422, 503)
)
def get_dataset(
    dataset_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: TenantDep
) -> ArtifactOut:
    """Whether this tenant has a dataset with this id stored (skip the upload if so)."""
    return _lookup("dataset", dataset_id, storage, ownership, tenant)
