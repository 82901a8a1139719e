"""Settings shared by the API and the workers: read from the environment once, validated, cached.

Every variable is documented in ``docs/configuration.md``; keep the two in step. Tests build a
``Settings(...)`` and hand it to the app factory instead of patching the environment.
"""

from __future__ import annotations

import json
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The Celery task that runs one analysis job. The API queues it by name, never by import.
ANALYSIS_TASK = "analysis.run"

_MIB = 1024 * 1024

#: The tenant every request belongs to when no API keys are configured.
DEFAULT_TENANT = "default"

#: What an API key may contain (RFC 6750's token68, so it fits ``Authorization: Bearer KEY``).
_API_KEY = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
API_KEY_MIN_CHARS = 16


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError("api_keys: the same key appears twice")
        seen[key] = value
    return seen


def parse_api_keys(value: Any) -> dict[str, str]:
    """``{"key": "tenant"}`` from a JSON object or ``key:tenant,key2:tenant2``; checked, never echoed.

    Error messages name the entry by position, never by its key.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except json.JSONDecodeError:
                raise ValueError('api_keys: expected a JSON object {"key": "tenant"}') from None
        else:
            pairs: list[tuple[str, Any]] = []
            entries = [entry.strip() for entry in text.split(",") if entry.strip()]
            for n, entry in enumerate(entries, start=1):
                key, sep, tenant = entry.partition(":")
                if not sep:
                    raise ValueError(f"api_keys: entry {n}: expected KEY:TENANT, got no ':'")
                pairs.append((key.strip(), tenant.strip()))
            value = _no_duplicate_keys(pairs)
    if not isinstance(value, dict):
        raise ValueError(f"api_keys: expected a mapping of key to tenant, got {type(value).__name__}")
    keys: dict[str, str] = {}
    for n, (key, tenant) in enumerate(value.items(), start=1):
        if not isinstance(key, str) or not isinstance(tenant, str):
            raise ValueError(f"api_keys: entry {n}: expected a string key and a string tenant")
        if len(key) < API_KEY_MIN_CHARS or not _API_KEY.match(key):
            got = "an empty key" if not key else f"{len(key)} characters"
            if key and not _API_KEY.match(key):
                got += " including others (spaces, ':', ',', quotes…)"
            raise ValueError(
                f"api_keys: entry {n}: expected a key of at least {API_KEY_MIN_CHARS} characters from "
                "A-Z a-z 0-9 . _ ~ + / - "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                f"got {got}"
            )
        if not _TENANT.match(tenant):
            raise ValueError(
                f"api_keys: entry {n}: expected a tenant name of 1 to 64 characters from A-Z a-z 0-9 _ . -, "
                f"got {tenant!r}"
            )
        keys[key] = tenant
    return keys


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "neuronscope"


class SettingsError(ValueError):
    """A setting that is missing or unusable for what was asked of it."""


class Settings(BaseSettings):
    """One validated object for every ``NEURONSCOPE_*`` variable (plus ``REDIS_URL``)."""

    model_config = SettingsConfigDict(
        env_prefix="NEURONSCOPE_",
        env_file=None,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a bad NEURONSCOPE_API_KEYS must not print the other keys
    )

    # -- Where state lives: Redis, storage, the key prefix every process shares ------------------
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="Redis for the queue and the job records. Unset: `neuronscope serve` starts one.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Root of artifact and report storage; must be shared by the API and every worker.",
    )
    storage_backend: Literal["filesystem"] = "filesystem"
    key_prefix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = (
        "neuronscope"
    )

    # -- api: the HTTP API's limits, keys and budgets --------------------------------------------
    api_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        repr=False,
        description="API key → tenant. Empty: no authentication, every client is the default tenant.",
    )
    require_api_keys: bool = Field(
        False,
        description="Refuse to start without NEURONSCOPE_API_KEYS: set it where the API is reachable from a "
        "network (docker-compose.yml does).",
    )
    max_upload_mb: Annotated[int, Field(gt=0)] = 2048
    tenant_quota_mb: Annotated[int, Field(ge=0)] = Field(
        10 * 1024, description="MiB of uploads one tenant may keep (each counted in full); 0: no quota."
    )
    max_header_bytes: Annotated[int, Field(ge=4096, le=16 * _MIB)] = Field(
        64 * 1024, description="Largest request head (request line, headers) in bytes; past it 431, unread."
    )
    max_headers: Annotated[int, Field(ge=16, le=10_000)] = Field(
        100, description="Most header fields one request may carry; more is 431."
    )
    header_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0, description="Seconds a client has to send a whole request head; then 408, connection closed."
    )
    body_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Seconds the API waits for the next bytes of a request body; then 408, closed."
    )
    max_concurrent_requests: Annotated[int, Field(ge=1)] = Field(
        64, description="Requests one API process serves at once (health probes aside); more are 503 at once."
    )
    max_active_jobs_per_tenant: Annotated[int, Field(ge=0)] = 100
    max_td_points: Annotated[int, Field(ge=0)] = Field(
        1_000_000_000, description="Most transition-density points (pairs × points) a job may plan; 0: none."
    )
    max_ps_pairs: Annotated[int, Field(ge=0)] = Field(
        50_000_000_000, description="Most sample pairs one job's pattern similarity may compare; 0: no limit."
    )
    max_forward_cost: Annotated[int, Field(ge=0)] = Field(
        2_000_000_000,
        description="Most forward passes × model size in MiB (at least 1) one job may plan; 0: no limit.",
    )
    idempotency_ttl_s: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] = 24 * 3600
    readyz_timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0

    # -- jobs: what one analysis may use, how often it is tried, how long its records and files are kept ---
    job_time_limit_s: Annotated[int, Field(gt=0, le=7 * 24 * 3600)] = 3600
    job_cpu_time_limit_s: Annotated[int, Field(ge=0)] = 4 * 3600
    job_memory_limit_mb: Annotated[int, Field(ge=0)] = 8192
    job_threads: Annotated[int, Field(ge=0, le=1024)] = 0
    job_max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    job_ttl_s: Annotated[int, Field(ge=0)] = 30 * 24 * 3600
    artifact_ttl_s: Annotated[int, Field(ge=0)] = Field(
        30 * 24 * 3600,
        description="Seconds an upload is kept after it was last uploaded (by any tenant); 0: forever.",
    )
    report_ttl_s: Annotated[int, Field(ge=0)] = Field(
        30 * 24 * 3600, description="Seconds a stored report is kept after it was written; 0: forever."
    )
    retention_sweep_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = Field(
        3600, description="Seconds between a worker's sweeps for uploads and reports past their TTL."
    )

    # -- queue: delivery of jobs to workers ------------------------------------------------------
    queue: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "analysis"
    visibility_timeout_s: Annotated[int | None, Field(ge=1, le=30 * 24 * 3600)] = Field(
        None,
        description="Seconds Redis waits for a job's acknowledgement before it hands the job to another "
        "worker. Unset: the hard time limit plus 600 s. Lower only for tests: a job running longer "
        "than this is delivered a second time.",
    )
    job_lease_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0,
        description="Seconds a running job's lease outlives its last renewal (renewed every third of "
        "that while the job runs). A second delivery of a running job (its visibility timeout passed) "
        "does not run it while the lease is held but checks again after this long; a job whose worker "
        "died runs again at most this long after the broker redelivers it.",
    )

    # -- sandbox: how the processes that open uploaded models start and are confined -------------
    allow_torchscript: bool = True
    sandbox_allow_unconfined: bool = Field(
        False,
        description="Run PyTorch-format models (code) even where the analysis process cannot be confined "
        "(no Landlock or seccomp). Off: such uploads are refused with 422 `sandbox_unavailable`. Only "
        "for a trusted network; ONNX models run either way.",
    )
    sandbox_command: str = Field(
        "",
        description="A command prefix the analysis process runs under (e.g. an nsjail or bwrap "
        "invocation ending in `--`); empty: run it directly.",
    )
    sandbox_launch: Literal["fork", "exec"] | None = Field(
        None,
        description="How the analysis process starts: `fork` from a warm launcher process per worker "
        "process that has the libraries imported (fast), or `exec` as a fresh Python process. Unset: "
        "`fork`, or `exec` when a sandbox command is set (a command prefix cannot wrap a fork).",
    )

    # -- split: when a large analysis runs as parallel tasks -------------------------------------
    chunk_td_points: Annotated[int, Field(ge=0)] = Field(
        2_000_000,
        description="Split transition density into parallel tasks of about this many points "
        "(pairs × points each) when a job has more; 0: never split it.",
    )
    chunk_ps_pairs: Annotated[int, Field(ge=0)] = Field(
        100_000_000,
        description="Split all-pairs pattern similarity into parallel tasks of about this many "
        "sample pairs (row blocks of the N × N matrix) when a job has more; 0: never split it.",
    )
    chunk_capture_samples: Annotated[int, Field(ge=0)] = Field(
        0,
        description="Split the capture (the pass of the dataset through the model) into parallel "
        "tasks of about this many samples, whole batches each, when a job has more; 0: never split it.",
    )

    # -- device: what a worker runs analyses on ---------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="What this worker is for: `cuda` declares a GPU worker, which refuses to start "
        "unless both torch and onnxruntime see a CUDA device (worker.device_check) and runs its jobs "
        "in Celery's solo pool (an initialised CUDA context does not survive a fork); `cpu` and `auto` "
        "start without a check. Jobs still choose their own device (`device` in the analysis config).",
    )

    # -- logging ---------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: Any) -> dict[str, str]:
        return parse_api_keys(value)

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        if self.job_cpu_time_limit_s and self.job_cpu_time_limit_s < 10:
            raise ValueError(
                "job_cpu_time_limit_s: expected 0 (no limit) or at least 10 s, "
                f"got {self.job_cpu_time_limit_s}"
            )
        if self.job_memory_limit_mb and self.job_memory_limit_mb < 256:
            raise ValueError(
                "job_memory_limit_mb: expected 0 (no limit) or at least 256 MiB, "
                f"got {self.job_memory_limit_mb}"
            )
        return self

    @field_validator("sandbox_command")
    @classmethod
    def _command_parses(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"expected a shell-quoted command prefix, got {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _launch_fits(self) -> Settings:
        if self.sandbox_launch == "fork" and self.sandbox_command:
            raise ValueError("sandbox_launch: fork cannot run under a sandbox command; unset it or use exec")
        return self

    @model_validator(mode="after")
    def _api_keys_when_required(self) -> Settings:
        if self.require_api_keys and not self.api_keys:
            raise ValueError(
                "api_keys: NEURONSCOPE_REQUIRE_API_KEYS is true, so at least one API key is expected, but "
                "NEURONSCOPE_API_KEYS is empty; set it to KEY:TENANT[,KEY:TENANT...] (a key: python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'), or serve on a trusted network only "
                "with NEURONSCOPE_REQUIRE_API_KEYS=false"
            )
        return self

    # -- derived values -----------------------------------------------------------------------

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * _MIB

    @property
    def soft_time_limit_s(self) -> int:
        """Celery's soft limit: the job's own wall-clock limit plus room to record the outcome."""
        return self.job_time_limit_s + 60

    @property
    def hard_time_limit_s(self) -> int:
        return self.job_time_limit_s + 120

    @property
    def redelivery_after_s(self) -> int:
        """How long Redis waits for a job's acknowledgement before it hands the job to another
        worker: ``visibility_timeout_s`` where set, else 600 s above Celery's hard time limit. The
        API publishes and the workers consume with this one value."""
        return self.visibility_timeout_s or self.hard_time_limit_s + 600

    @property
    def restore_interval_s(self) -> int:
        """Seconds between a worker's sweeps for unacknowledged jobs past the redelivery time."""
        return max(1, min(60, self.redelivery_after_s // 5))

    @property
    def launch(self) -> Literal["fork", "exec"]:
        """How analysis processes start: exec under a sandbox command, else ``sandbox_launch``
        (default fork)."""
        if self.sandbox_command:
            return "exec"
        return self.sandbox_launch or "fork"

    @property
    def sandbox_prefix(self) -> list[str]:
        return shlex.split(self.sandbox_command)

    def to_env(self) -> dict[str, str]:
        """The environment variables that give a subprocess exactly these settings.

        API keys included: hand it only to the service's own processes (the analysis child gets a
        scrubbed environment).
        """
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            variable = "REDIS_URL" if name == "redis_url" else f"NEURONSCOPE_{name.upper()}"
            if isinstance(value, bool):
                env[variable] = "true" if value else "false"
            elif isinstance(value, dict):
                env[variable] = json.dumps(value)
            else:
                env[variable] = str(value)
        return env

    def require_redis_url(self) -> str:
        if self.redis_url is None:
            raise SettingsError(
                "REDIS_URL is not set: set it to a Redis server every API and worker process can reach "
                "(e.g. redis://localhost:6379/0), or run `neuronscope serve`, which starts a private one"
            )
        return self.redis_url

    def celery_config(self) -> dict[str, Any]:
        """Celery settings shared by the API (which only publishes) and the workers.

        At-least-once delivery: a task is acknowledged after it ran, requeued when the process
        running it dies, one task prefetched at a time, and Redis waits longer than the hard time
        limit before it redelivers an unacknowledged task. JSON only: payloads are ids.
        """
        url = self.require_redis_url()
        return {
            "broker_url": url,
            "broker_connection_retry_on_startup": True,
            "broker_transport_options": {
                "visibility_timeout": self.redelivery_after_s,
                "global_keyprefix": f"{self.key_prefix}:celery:",
            },
            "task_serializer": "json",
            "accept_content": ["json"],
            "result_serializer": "json",
            "result_backend": None,
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_default_queue": self.queue,
            "task_routes": {ANALYSIS_TASK: {"queue": self.queue}},
            "task_soft_time_limit": self.soft_time_limit_s,
            "task_time_limit": self.hard_time_limit_s,
            "task_publish_retry": True,
            "task_publish_retry_policy": {
                "max_retries": 2,
                "interval_start": 0.0,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
            "worker_hijack_root_logger": False,
            "worker_send_task_events": False,
            "enable_utc": True,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
