"""What a worker process needs to run jobs (settings, job records, storage, leases, its host's
confinement) and the refusals that follow from them before any analysis process starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis

from neuronscope.confinement import default_paths, exposing_root, host_confinement
from neuronscope.confinement_reports import HostConfinement, publish, this_host
from neuronscope.job_lease import JobLeases
from neuronscope.jobs import JobError, JobRecord, JobStore, connect
from neuronscope.settings import Settings
from neuronscope.storage import Storage, open_storage
from neuronscope.validation import CODE_FORMATS
from worker.child.environment import worker_zygote

log = logging.getLogger("neuronscope.worker")


@dataclass(frozen=True)
class Confinement:
    """Whether this worker confines its analysis processes, and how (or why not)."""

    active: bool
    mechanism: str
    reason: str = ""

    def describe(self) -> str:
        return self.mechanism if self.active else f"none ({self.reason})"


def worker_confinement(settings: Settings) -> Confinement:
    """What confinement analysis processes get on this host (probed once per process, by
    confining a throw-away child for real), and whether it keeps the data directory out of reach."""
    found = host_confinement()
    mechanism = str(found.get("mechanism", "none"))
    if not found.get("active"):
        return Confinement(False, mechanism, str(found.get("error") or f"this host gives only {mechanism}"))
    exposed = exposing_root(default_paths([]), settings.data_dir)
    if exposed is not None:
        return Confinement(
            False,
            mechanism,
            f"the data directory {settings.data_dir} overlaps {exposed}, which analysis processes read; "
            "move NEURONSCOPE_DATA_DIR out of the Python installation and system directories",
        )
    return Confinement(True, mechanism)


def sandbox_refused(settings: Settings, confinement: Confinement, model_format: str) -> JobError | None:
    """``sandbox_unavailable`` for a model that is code where no confinement is active, unless the
    operator opted out (``NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED``)."""
    if model_format in CODE_FORMATS and not confinement.active and not settings.sandbox_allow_unconfined:
        return JobError(
            code="sandbox_unavailable",
            message=f"{model_format} models are code, and this worker cannot confine the process that "
            f"would run them: {confinement.reason}. Export the model to ONNX, or (trusted networks only) "
            "set NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true",
        )
    return None


def torchscript_refused(ctx: WorkerContext, record: JobRecord) -> JobError | None:
    """The worker's own check of ``NEURONSCOPE_ALLOW_TORCHSCRIPT`` (the API checks it too)."""
    if record.model_format in CODE_FORMATS and not ctx.settings.allow_torchscript:
        return JobError(
            code="torchscript_disabled",
            message="PyTorch-format models (TorchScript and .pt2) are switched off on this worker "
            "(NEURONSCOPE_ALLOW_TORCHSCRIPT=false); export the model to ONNX",
        )
    return None


@dataclass
class WorkerContext:
    """What a worker process needs to run jobs: settings, job records, storage, a Redis client."""

    settings: Settings
    jobs: JobStore
    storage: Storage
    leases: JobLeases
    redis_client: Redis | None = None
    confinement: Confinement | None = None

    def sandbox(self) -> Confinement:
        """This worker's confinement, probed on first use."""
        if self.confinement is None:
            self.confinement = worker_confinement(self.settings)
        return self.confinement

    @classmethod
    def of(cls, settings: Settings) -> WorkerContext:
        client = connect(settings.require_redis_url())
        if settings.launch == "fork":
            # it imports the libraries while the first job's inputs are fetched
            worker_zygote(settings.job_threads).start()
        confinement = worker_confinement(settings)
        log_confinement(confinement, settings)
        report_confinement(client, settings.key_prefix, confinement)
        return cls(
            confinement=confinement,
            settings=settings,
            jobs=JobStore(client, prefix=settings.key_prefix, ttl_s=settings.job_ttl_s),
            storage=open_storage(settings.storage_backend, settings.data_dir),
            leases=JobLeases(client, prefix=settings.key_prefix, ttl_s=settings.job_lease_s),
            redis_client=client,
        )

    def client(self) -> Redis:
        if self.redis_client is None:
            raise RuntimeError("this WorkerContext has no Redis client; build it with WorkerContext.of")
        return self.redis_client


def report_confinement(client: Redis, prefix: str, confinement: Confinement) -> None:
    """Tell the API (``/readyz``) what this host's analysis processes get; a Redis hiccup only
    delays the report."""
    try:
        publish(
            client,
            prefix,
            HostConfinement(this_host(), confinement.active, confinement.mechanism, confinement.reason),
        )
    except Exception as exc:
        log.warning("could not report this worker's confinement: %s", exc)


def log_confinement(confinement: Confinement, settings: Settings) -> None:
    if confinement.active:
        log.info("analysis processes are confined: %s", confinement.mechanism)
    elif settings.sandbox_allow_unconfined:
        log.warning(
            "analysis processes are NOT confined (%s) and NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED=true: "
            "PyTorch-format models run with this worker's access to files and network",
            confinement.reason,
        )
    else:
        log.warning(
            "analysis processes cannot be confined (%s): PyTorch-format jobs are refused "
            "(sandbox_unavailable); ONNX jobs run",
            confinement.reason,
        )
