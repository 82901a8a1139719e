"""Leases on running jobs: one attempt at a time, even when the broker delivers a job twice.

The Redis broker hands a task that is not acknowledged within its visibility timeout to another
worker, and a job can run for longer than that. The attempt that starts a job takes a lease (a
:class:`redis.lock.Lock` whose token names the attempt) and holds it with a background heartbeat
(:meth:`JobLeases.held`) that renews it every third of its time to live, whatever the attempt is
doing meanwhile (waiting for a cold launcher, copying inputs, supervising the analysis process).
Another delivery that finds the lease held does not run the job but checks again later. If the
holder dies, its lease expires after ``ttl_s`` and the next delivery runs the job; if the holder
finds its lease gone or taken, :attr:`HeldLease.lost` is set and it must stop at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

log = logging.getLogger("neuronscope.lease")


def new_owner() -> str:
    """An owner name unique to one attempt: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class HeldLease:
    """A lease an attempt holds while its heartbeat runs; ``lost`` is set once another attempt
    may have it (taken over, expired, or not renewable for a whole time to live)."""

    def __init__(self, job_id: str, owner: str) -> None:
        self.job_id = job_id
        self.owner = owner
        self.lost = threading.Event()


class JobLeases:
    """Leases for the jobs of one key prefix; ``ttl_s`` is how long a lease outlives its last
    renewal."""

    def __init__(self, client: redis.Redis, *, prefix: str = "neuronscope", ttl_s: float = 60.0) -> None:
        if ttl_s <= 0:
            raise ValueError(f"expected a lease time to live above 0 s, got {ttl_s}")
        self._r = client
        self._prefix = prefix
        self.ttl_s = ttl_s

    def _lock(self, job_id: str, owner: str) -> Lock:
        lock = Lock(
            self._r,
            f"{self._prefix}:job:{job_id}:lease",
            timeout=self.ttl_s,
            blocking=False,
            thread_local=False,
        )
        lock.local.token = owner.encode()
        return lock

    def acquire(self, job_id: str, owner: str) -> bool:
        """Take the lease on ``job_id`` for ``owner``: True when it was free (or already
        ``owner``'s, then renewed), False while another owner holds it."""
        if self._lock(job_id, owner).acquire(blocking=False, token=owner):
            return True
        return self.renew(job_id, owner)

    def renew(self, job_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease to ``ttl_s`` from now; False when ``owner`` does not hold it
        (any more)."""
        try:
            return bool(self._lock(job_id, owner).reacquire())
        except LockNotOwnedError:
            return False

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up; a lease another owner holds by now is left alone."""
        with contextlib.suppress(LockError):
            self._lock(job_id, owner).release()

    def holder(self, job_id: str) -> str | None:
        value = self._r.get(f"{self._prefix}:job:{job_id}:lease")
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    @contextlib.contextmanager
    def held(self, job_id: str, owner: str) -> Iterator[HeldLease | None]:
        """Take the lease and hold it with a heartbeat thread while the block runs, then release
        it. Yields ``None`` (and holds nothing) when another owner has it."""
        if not self.acquire(job_id, owner):
            yield None
            return
        lease = HeldLease(job_id, owner)
        stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._beat, args=(lease, stop), name=f"lease-{job_id[:8]}", daemon=True
        )
        heartbeat.start()
        try:
            yield lease
        finally:
            stop.set()
            heartbeat.join()
            if not lease.lost.is_set():
                try:
                    self.release(job_id, owner)
                except redis.RedisError as exc:
                    log.warning("job %s: could not release its lease (it expires by itself): %s", job_id, exc)

    def _beat(self, lease: HeldLease, stop: threading.Event) -> None:
        """Renew ``lease`` every third of its time to live until ``stop``; set ``lease.lost`` when
        another owner has it or no renewal succeeded for a whole time to live."""
        every = self.ttl_s / 3
        last_renewed = time.monotonic()
        while not stop.wait(every):
            try:
                if self.renew(lease.job_id, lease.owner):
                    last_renewed = time.monotonic()
                    continue
                log.warning(
                    "job %s: its lease was lost (held now by %s); stopping this attempt",
                    lease.job_id,
                    self.holder(lease.job_id),
                )
            except redis.RedisError as exc:
                if time.monotonic() - last_renewed < self.ttl_s:
                    log.warning("job %s: could not renew its lease, retrying: %s", lease.job_id, exc)
                    continue
                log.warning(
                    "job %s: no lease renewal for %.1f s; stopping this attempt", lease.job_id, self.ttl_s
                )
            lease.lost.set()
            return
