"""Job records in a real Redis: creation, the status machine, races, listing."""

from __future__ import annotations

import threading
import uuid

import pytest

from neuronscope.jobs import ArtifactRef, InvalidCursor, JobError, JobStore, TooManyActiveJobs, is_job_id

MODEL = ArtifactRef(id="a" * 64, format="onnx")
DATASET = ArtifactRef(id="b" * 64, format="npz")


def new(store: JobStore, config: str = "{}") -> str:
    return store.create(model=MODEL, dataset=DATASET, config=config).job_id


def test_create_and_read_back(job_store: JobStore) -> None:
    record = job_store.create(model=MODEL, dataset=DATASET, config='{"seed": 3}')
    assert is_job_id(record.job_id) and uuid.UUID(record.job_id).version == 4
    assert job_store.get(record.job_id) == record
    assert record.status == "queued" and record.attempts == 0 and record.error is None
    assert record.config == '{"seed": 3}' and record.model_format == "onnx"
    assert job_store.get(str(uuid.uuid4())) is None
    assert job_store.get("not-an-id") is None


def test_lifecycle(job_store: JobStore) -> None:
    job_id = new(job_store)
    running = job_store.start(job_id, max_attempts=3)
    assert running is not None and running.status == "running" and running.attempts == 1
    assert running.started_at is not None
    assert job_store.set_progress(job_id, "capture", 0.5)
    record = job_store.get(job_id)
    assert record is not None and (record.progress.stage, record.progress.fraction) == ("capture", 0.5)
    done = job_store.finish(job_id, "succeeded")
    assert done is not None and done.status == "succeeded" and done.finished_at is not None
    assert not job_store.set_progress(job_id, "late", 0.9)
    # Finished is final: neither a redelivery nor a cancel changes it.
    assert job_store.start(job_id, max_attempts=3) == done
    assert job_store.cancel(job_id) == (done, False)
    assert job_store.finish(job_id, "failed", JobError(code="x", message="y")) == done


def test_a_cancel_is_not_overwritten_by_the_worker(job_store: JobStore) -> None:
    job_id = new(job_store)
    job_store.start(job_id, max_attempts=3)
    cancelled, changed = job_store.cancel(job_id)
    assert changed and cancelled is not None and cancelled.status == "cancelled"
    assert not job_store.set_progress(job_id, "capture", 0.9)
    assert job_store.finish(job_id, "succeeded") == cancelled
    assert job_store.status(job_id) == "cancelled"


def test_redelivery_counts_attempts_up_to_the_limit(job_store: JobStore) -> None:
    job_id = new(job_store)
    for attempt in (1, 2):
        record = job_store.start(job_id, max_attempts=2)
        assert record is not None and record.status == "running" and record.attempts == attempt
    record = job_store.start(job_id, max_attempts=2)
    assert record is not None and record.status == "failed" and record.attempts == 2
    assert record.error is not None and record.error.code == "too_many_attempts"


def _race(store: JobStore, job_id: str) -> dict[str, bool]:
    results: dict[str, bool] = {}
    barrier = threading.Barrier(2)

    def cancel() -> None:
        barrier.wait()
        results["cancel"] = store.cancel(job_id)[1]

    def finish() -> None:
        barrier.wait()
        record = store.finish(job_id, "succeeded")
        results["finish"] = record is not None and record.status == "succeeded"

    threads = [threading.Thread(target=cancel), threading.Thread(target=finish)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_racing_cancel_and_finish_end_in_one_state(job_store: JobStore) -> None:
    for _ in range(20):
        job_id = new(job_store)
        job_store.start(job_id, max_attempts=3)
        results = _race(job_store, job_id)
        final = job_store.status(job_id)
        assert final in ("cancelled", "succeeded")
        assert results["cancel"] == (final == "cancelled")


def test_listing_pages_newest_first_and_skips_expired_records(job_store: JobStore) -> None:
    ids = [new(job_store) for _ in range(7)]
    job_store.delete(ids[3])
    # A record that expired in Redis but is still in the index is skipped and pruned.
    job_store._r.delete(job_store._key(ids[4]))
    expected = [i for i in reversed(ids) if i not in (ids[3], ids[4])]
    page, cursor = job_store.list(limit=3)
    assert [r.job_id for r in page] == expected[:3] and cursor is not None
    page2, cursor2 = job_store.list(limit=3, cursor=cursor)
    assert [r.job_id for r in page2] == expected[3:5]
    assert cursor2 is None
    assert job_store.list(limit=10)[0] == page + page2
    with pytest.raises(InvalidCursor):
        job_store.list(limit=3, cursor="0:../etc")


def test_ttl_applies_to_records(job_store: JobStore) -> None:
    store = JobStore(job_store._r, prefix=f"{job_store._prefix}-ttl", ttl_s=100)
    job_id = new(store)
    assert 0 < store._r.ttl(store._key(job_id)) <= 100


# -- tenants and the per-tenant count of unfinished jobs ------------------------------------------


def test_tenants_see_only_their_own_jobs(job_store: JobStore) -> None:
    alice = job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="alice").job_id
    bob = job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="bob").job_id
    assert job_store.get(alice, tenant="alice") is not None
    assert job_store.get(alice, tenant="bob") is None
    assert job_store.get(alice) is not None  # the worker's view: by id alone
    assert [r.job_id for r in job_store.list(limit=10, tenant="alice")[0]] == [alice]
    assert [r.job_id for r in job_store.list(limit=10, tenant="bob")[0]] == [bob]
    assert job_store.list(limit=10, tenant="carol") == ([], None)
    # Another tenant's cancel neither sees nor changes the job.
    assert job_store.cancel(alice, tenant="bob") == (None, False)
    assert job_store.status(alice) == "queued"
    record, changed = job_store.cancel(alice, tenant="alice")
    assert changed and record is not None and record.tenant == "alice"


def test_active_count_follows_every_way_a_job_ends(job_store: JobStore) -> None:
    def create() -> str:
        return job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="t", max_active=10).job_id

    ids = [create() for _ in range(5)]
    assert job_store.active_count("t") == 5
    job_store.start(ids[0], max_attempts=3)
    assert job_store.active_count("t") == 5  # running still counts
    job_store.finish(ids[0], "succeeded")
    job_store.start(ids[1], max_attempts=3)
    job_store.finish(ids[1], "failed", JobError(code="x", message="y"))
    job_store.cancel(ids[2])
    for _ in range(2):  # the worker died twice: the third start fails the job
        job_store.start(ids[3], max_attempts=1)
    assert job_store.status(ids[3]) == "failed"
    job_store._r.delete(job_store._key(ids[4]))  # a record that expired while queued
    assert job_store.active_count("t") == 0
    job_store.delete(create())
    assert job_store.active_count("t") == 0


def test_the_limit_holds_under_concurrent_creates(job_store: JobStore) -> None:
    barrier = threading.Barrier(12)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="busy", max_active=4)
            outcomes.append("created")
        except TooManyActiveJobs as exc:
            assert (exc.active, exc.limit) == (4, 4)
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] * 4 + ["refused"] * 8
    assert job_store.active_count("busy") == 4
    # Other tenants are not affected; a finished job frees a place.
    job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="calm", max_active=4)
    (first, *_), _ = job_store.list(limit=1, tenant="busy")
    job_store.cancel(first.job_id)
    job_store.create(model=MODEL, dataset=DATASET, config="{}", tenant="busy", max_active=4)
