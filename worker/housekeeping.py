"""What a worker's main process does besides running jobs: at start, remove the job directories
of attempts that were killed (:mod:`worker.stale_dirs`); then, every
``NEURONSCOPE_RETENTION_SWEEP_S``, remove uploads and reports past their TTL
(:func:`neuronscope.retention.sweep_expired`). Every worker sweeps; sweeps are idempotent and
take each artifact's lock, so several at once are harmless.
"""

from __future__ import annotations

import logging
import threading

from neuronscope.jobs import connect
from neuronscope.ownership import ArtifactOwnership
from neuronscope.retention import sweep_expired
from neuronscope.settings import Settings
from neuronscope.storage import open_storage
from worker.stale_dirs import UNLOCKED_MAX_AGE_S, remove_stale_workdirs

log = logging.getLogger("neuronscope.worker")


def clean_up_at_start(settings: Settings) -> None:
    """Remove job directories no live attempt holds (lock-less ones only past any attempt's time)."""
    remove_stale_workdirs(unlocked_max_age_s=max(UNLOCKED_MAX_AGE_S, settings.hard_time_limit_s))


def sweep_once(settings: Settings) -> None:
    client = connect(settings.require_redis_url())
    try:
        sweep_expired(
            open_storage(settings.storage_backend, settings.data_dir),
            ArtifactOwnership(client, prefix=settings.key_prefix),
            artifact_ttl_s=settings.artifact_ttl_s,
            report_ttl_s=settings.report_ttl_s,
        )
    finally:
        client.close()


class RetentionSweeper:
    """A daemon thread that runs :func:`sweep_once` now and then every ``retention_sweep_s``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neuronscope-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sweep_once(self._settings)
            except Exception:  # Redis away for a moment: the next sweep tries again
                log.warning(
                    "retention sweep failed; retrying in %d s",
                    self._settings.retention_sweep_s,
                    exc_info=True,
                )
            self._stop.wait(self._settings.retention_sweep_s)
