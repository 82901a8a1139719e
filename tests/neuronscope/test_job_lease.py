"""Job leases in a real Redis: one holder at a time, renewal only by the holder, expiry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from neuronscope.job_lease import JobLeases, new_owner
from neuronscope.jobs import connect
from neuronscope.settings import Settings


@pytest.fixture
def leases(settings: Settings) -> Iterator[JobLeases]:
    client = connect(settings.require_redis_url())
    yield JobLeases(client, prefix=settings.key_prefix, ttl_s=0.4)
    client.close()


def test_one_holder_at_a_time(leases: JobLeases) -> None:
    job, first, second = str(uuid.uuid4()), new_owner(), new_owner()

    assert first != second
    assert leases.acquire(job, first)
    assert not leases.acquire(job, second) and leases.holder(job) == first
    assert leases.acquire(job, first), "the holder taking it again renews it"
    assert leases.acquire(str(uuid.uuid4()), second), "leases are per job"


def test_only_the_holder_renews_or_releases(leases: JobLeases) -> None:
    job, holder, other = str(uuid.uuid4()), new_owner(), new_owner()
    leases.acquire(job, holder)

    assert not leases.renew(job, other)
    leases.release(job, other)
    assert leases.holder(job) == holder

    leases.release(job, holder)
    assert leases.holder(job) is None and leases.acquire(job, other)


def test_a_lease_expires_unless_renewed(leases: JobLeases) -> None:
    job, holder, other = str(uuid.uuid4()), new_owner(), new_owner()
    leases.acquire(job, holder)
    for _ in range(4):
        time.sleep(0.2)
        assert leases.renew(job, holder)
    assert not leases.acquire(job, other), "renewed past its first time to live"

    time.sleep(0.6)
    assert leases.holder(job) is None and not leases.renew(job, holder)
    assert leases.acquire(job, other)


def test_time_to_live_must_be_positive(settings: Settings) -> None:
    client = connect(settings.require_redis_url())
    with pytest.raises(ValueError, match="above 0 s"):
        JobLeases(client, ttl_s=0)
    client.close()
