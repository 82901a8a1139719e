"""Content-addressed uploads: ``POST /v1/models`` and ``POST /v1/datasets``, look-ups and deletion by id.

The bytes are stored once for everyone; the right to use an id is the uploading tenant's
(``service.core.ownership``), so another tenant's id answers 404 like an unknown one. Uploads count
against the tenant's storage quota (``service.core.quota``); deleting one takes it from the tenant,
and its bytes go when no tenant owns it any more.
"""

from __future__ import annotations

from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Response, UploadFile, status

from neuronscope.ownership import ArtifactOwnership
from neuronscope.retention import release_artifact
from neuronscope.settings import Settings
from neuronscope.storage import ArtifactInfo, ArtifactKind, Storage
from service.api.deps import OwnershipDep, SettingsDep, StorageDep, TenantDep, get_tenant
from service.core.quota import within_quota
from service.errors import ArtifactNotFound, error_responses
from service.schemas import ArtifactOut
from service.uploads import store_upload

router = APIRouter(prefix="/v1", tags=["artifacts"], dependencies=[Depends(get_tenant)])

_UPLOAD_RESPONSES = {
    200: {"model": ArtifactOut, "description": "This tenant uploaded these bytes before: the same id"},
    **error_responses(400, 401, 413, 422, 503, 507),
}


def store_owned_upload(
    kind: ArtifactKind,
    source: BinaryIO,
    settings: Settings,
    storage: Storage,
    ownership: ArtifactOwnership,
    tenant: str,
) -> tuple[ArtifactInfo, bool]:
    """Store an upload within ``tenant``'s quota and record that it owns it; ``True`` when the
    tenant did not own it before (whether another tenant stored the same bytes is not told)."""
    with within_quota(
        source, kind=kind, tenant=tenant, settings=settings, storage=storage, ownership=ownership
    ) as limited:
        info, _ = store_upload(storage, settings, limited, kind)
        return info, ownership.grant(tenant, kind, info.id)


def _upload(
    kind: ArtifactKind,
    file: UploadFile,
    response: Response,
    settings: SettingsDep,
    storage: StorageDep,
    ownership: OwnershipDep,
    tenant: str,
) -> ArtifactOut:
    info, created = store_owned_upload(kind, file.file, settings, storage, ownership, tenant)
    # 201 when new *to this tenant*: whether someone else stored the same bytes is not told.
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


def _delete(
    kind: ArtifactKind, artifact_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: str
) -> Response:
    if not release_artifact(storage, ownership, tenant, kind, artifact_id):
        raise ArtifactNotFound(f"no {kind} with id {artifact_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_DELETE_RESPONSES = {
    204: {
        "description": "Deleted: the id is no longer this tenant's (the bytes go when no tenant owns them)"
    },
    **error_responses(401, 404, 422, 503),
}


@router.delete("/models/{model_id}", status_code=204, response_class=Response, responses=_DELETE_RESPONSES)
def delete_model(model_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: TenantDep) -> Response:
    """Delete this tenant's model (jobs already queued with it fail with ``artifact_missing``)."""
    return _delete("model", model_id, storage, ownership, tenant)


@router.delete(
    "/datasets/{dataset_id}", status_code=204, response_class=Response, responses=_DELETE_RESPONSES
)
def delete_dataset(
    dataset_id: str, storage: StorageDep, ownership: OwnershipDep, tenant: TenantDep
) -> Response:
    """Delete this tenant's dataset (jobs already queued with it fail with ``artifact_missing``)."""
    return _delete("dataset", dataset_id, storage, ownership, tenant)
