"""Leases on running jobs: one attempt at a time, even when the broker delivers a job twice.

The Redis broker hands a task that is not acknowledged within its visibility timeout to another
worker, and a job can run for longer than that. The attempt that starts a job takes a lease, a
Redis key with a time to live that it renews while the job runs; another delivery that finds the
lease held does not run the job but checks again later. If the holder dies, its lease expires
after ``ttl_s`` and the next delivery runs the job.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_owner() -> str:
    """An owner name unique to one attempt: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class JobLeases:
    """Leases for the jobs of one key prefix; ``ttl_s`` is how long a lease outlives its last
    renewal."""

    def __init__(self, client: redis.Redis, *, prefix: str = "neuronscope", ttl_s: float = 60.0) -> None:
        if ttl_s <= 0:
            raise ValueError(f"expected a lease time to live above 0 s, got {ttl_s}")
        self._r = client
        self._prefix = prefix
        self.ttl_s = ttl_s
        self._renew: Any = client.register_script(_RENEW)
        self._release: Any = client.register_script(_RELEASE)

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}:lease"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def acquire(self, job_id: str, owner: str) -> bool:
        """Take the lease on ``job_id`` for ``owner``: True when it was free (or already
        ``owner``'s, then renewed), False while another owner holds it."""
        if self._r.set(self._key(job_id), owner, nx=True, px=self._ttl_ms):
            return True
        return self.renew(job_id, owner)

    def renew(self, job_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease by ``ttl_s``; False when ``owner`` does not hold it (any more)."""
        return bool(self._renew(keys=[self._key(job_id)], args=[owner, self._ttl_ms]))

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up; a lease another owner holds by now is left alone."""
        self._release(keys=[self._key(job_id)], args=[owner])

    def holder(self, job_id: str) -> str | None:
        value = self._r.get(self._key(job_id))
        return None if value is None else str(value)
