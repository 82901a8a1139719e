"""Settings only the workers read: redelivery, the sandbox command and how large analyses are split.

They come from the same ``NEURONSCOPE_*`` environment as :class:`neuronscope.settings.Settings`
(which ignores them), validated once and cached by :func:`get_worker_settings`. Every variable is
documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from neuronscope.settings import Settings


class WorkerSettings(BaseSettings):
    """``NEURONSCOPE_VISIBILITY_TIMEOUT_S``, ``NEURONSCOPE_JOB_LEASE_S``, ``NEURONSCOPE_SANDBOX_*``,
    ``NEURONSCOPE_CHUNK_*``."""

    model_config = SettingsConfigDict(
        env_prefix="NEURONSCOPE_", env_file=None, extra="ignore", frozen=True, populate_by_name=True
    )

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

    @field_validator("sandbox_command")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"expected a shell-quoted command prefix, got {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _launch_fits(self) -> WorkerSettings:
        if self.sandbox_launch == "fork" and self.sandbox_command:
            raise ValueError("sandbox_launch: fork cannot run under a sandbox command; unset it or use exec")
        return self

    @property
    def launch(self) -> Literal["fork", "exec"]:
        """How analysis processes start: exec under a sandbox command, else the setting (fork)."""
        if self.sandbox_command:
            return "exec"
        return self.sandbox_launch or "fork"

    @property
    def sandbox_prefix(self) -> list[str]:
        return shlex.split(self.sandbox_command)

    def visibility_timeout_for(self, settings: Settings) -> int:
        """The visibility timeout in force: the override, else one above Celery's hard time limit."""
        return self.visibility_timeout_s or settings.visibility_timeout_s

    def restore_interval_for(self, settings: Settings) -> int:
        """Seconds between the worker's sweeps for unacknowledged jobs past the visibility timeout."""
        return max(1, min(60, self.visibility_timeout_for(settings) // 5))


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The worker settings from the environment, read on first use."""
    return WorkerSettings()
