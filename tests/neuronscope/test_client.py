"""The Python client: against an in-memory fake of the documented API (fast, every error path),
and against the real API app (``service.main``) on uvicorn with a real Redis, with the worker's
side of a job played by the job store and storage the worker uses."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ns_testlib import FakeApi, LiveService, play_worker

from neuronscope.client import (
    Artifact,
    Client,
    ClientConnectionError,
    ClientError,
    JobCancelledError,
    JobFailedError,
    JobInfo,
    JobTimeoutError,
    ServerError,
)
from neuronscope.contracts.config import AnalysisConfig, PairSample
from neuronscope.contracts.report import Report
from neuronscope.errors import InvalidInput


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model, dataset = tmp_path / "m.onnx", tmp_path / "d.npz"
    model.write_bytes(b"onnx-bytes")
    dataset.write_bytes(b"npz-bytes")
    return model, dataset


def make_client(api: FakeApi, **kwargs: Any) -> Client:
    return Client("http://neuronscope.test", transport=api.transport(), **kwargs)


def test_analyze_uploads_files_config_and_key(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    fake_api.api_key = "s3cret"
    with make_client(fake_api, api_key="s3cret") as client:
        job = client.analyze(*files, config={"pairs": {"count": 10}, "transition_density": None})
    assert job.job_id == "job1"
    request = fake_api.requests[-1]
    assert request.url.path == "/v1/analyze" and request.headers["Authorization"] == "Bearer s3cret"
    body = request.content
    assert b'name="model"; filename="m.onnx"' in body and b"onnx-bytes" in body
    assert b'name="dataset"; filename="d.npz"' in body and b"npz-bytes" in body
    # Only what was set goes over the wire; the server fills in the same defaults.
    assert b'{"pairs":{"count":10},"transition_density":null}' in body


def test_analyze_reuses_uploaded_artifacts(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    with make_client(fake_api) as client:
        model = client.upload_model(files[0])
        dataset = client.upload_dataset(files[1])
        assert model == Artifact(id="a" * 64, kind="model", format="onnx", size=3)
        client.analyze(model, dataset, config=AnalysisConfig(pairs=PairSample(count=5)))
    body = fake_api.requests[-1].content
    assert b'name="model_id"' in body and b'name="dataset_id"' in body and b"filename=" not in body


def test_wait_reports_progress_then_fetches_report(
    fake_api: FakeApi, files: tuple[Path, Path], sample_report: Report
) -> None:
    seen: list[tuple[str, float]] = []
    with make_client(fake_api) as client:
        job = client.analyze(*files)
        final = job.wait(
            poll_interval=0.001,
            timeout=10,
            on_progress=lambda i: seen.append((i.status, i.progress.fraction)),
        )
        assert final.status == "succeeded"
        assert seen == [("queued", 0.0), ("running", 0.5), ("running", 0.5), ("succeeded", 1.0)]
        assert job.report() == sample_report
        assert job.report_html().startswith("<!DOCTYPE html>")


def test_failed_job_carries_the_job_error(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    fake_api.script = ["running", "failed"]
    fake_api.error = {"code": "dataset_shape_mismatch", "message": "expected x of shape [N, 64], got [N, 32]"}
    with make_client(fake_api) as client, pytest.raises(JobFailedError) as info:
        client.analyze(*files).wait(poll_interval=0.001)
    assert info.value.code == "dataset_shape_mismatch"
    assert info.value.detail == "expected x of shape [N, 64], got [N, 32]"
    assert isinstance(info.value.job, JobInfo) and info.value.job.status == "failed"
    assert isinstance(info.value, ClientError)


def test_cancel_and_cancelled(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    fake_api.script = ["running"]
    with make_client(fake_api) as client:
        job = client.analyze(*files)
        assert job.cancel().status == "cancelled"
        with pytest.raises(JobCancelledError):
            job.wait(poll_interval=0.001)


def test_wait_timeout(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    fake_api.script = ["running"]
    with make_client(fake_api) as client:
        job = client.analyze(*files)
        start = time.monotonic()
        with pytest.raises(JobTimeoutError, match=r"did not finish within 0\.05 s"):
            job.wait(poll_interval=0.01, timeout=0.05)
        assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("status", "body", "code", "detail"),
    [
        (
            422,
            {"error": "invalid_config", "detail": "config: pairs: bad"},
            "invalid_config",
            "config: pairs: bad",
        ),
        (
            413,
            {"error": "upload_too_large", "detail": "at most 2048 MiB"},
            "upload_too_large",
            "at most 2048 MiB",
        ),
        (503, {"error": "service_unavailable", "detail": "Redis down"}, "service_unavailable", "Redis down"),
        (500, "Internal Server Error", "http_error", "Internal Server Error"),
        (422, {"detail": [{"loc": ["body", "x"], "msg": "bad"}]}, "http_error", '[{"loc"'),
    ],
)
def test_server_errors(
    fake_api: FakeApi, files: tuple[Path, Path], status: int, body: Any, code: str, detail: str
) -> None:
    fake_api.analyze_error = (status, body)
    with make_client(fake_api) as client, pytest.raises(ServerError) as info:
        client.analyze(*files)
    assert info.value.status_code == status and info.value.code == code
    assert info.value.detail.startswith(detail) and f"HTTP {status}" in info.value.detail


def test_wrong_api_key(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    fake_api.api_key = "right"
    with make_client(fake_api, api_key="wrong") as client, pytest.raises(ServerError) as info:
        client.analyze(*files)
    assert info.value.status_code == 401 and info.value.code == "unauthorized"


def test_connection_refused() -> None:
    with socket_port() as port, Client(f"http://127.0.0.1:{port}", timeout=2) as client:
        with pytest.raises(ClientConnectionError, match="cannot reach"):
            client.job("x").status()
        assert client.ready() is False


def test_wait_survives_brief_connection_loss(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    drops = {"left": 2}

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and drops["left"] > 0:
            drops["left"] -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return fake_api(request)

    with Client("http://x.test", transport=httpx.MockTransport(flaky)) as client:
        assert client.analyze(*files).wait(poll_interval=0.001).status == "succeeded"


def test_invalid_config_is_a_client_error(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    with make_client(fake_api) as client, pytest.raises(ClientError) as info:
        client.analyze(*files, config={"pairs": {"count": 0}, "bogus": 1})
    assert info.value.code == "invalid_config" and "bogus: unknown key" in info.value.detail
    assert not fake_api.requests  # nothing was sent


def test_report_schema_mismatch(fake_api: FakeApi, files: tuple[Path, Path]) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            return httpx.Response(200, json={"schema_version": "9"})
        return fake_api(request)

    with (
        Client("http://x.test", transport=httpx.MockTransport(broken)) as client,
        pytest.raises(ClientError) as info,
    ):
        client.job("job1").report()
    assert info.value.code == "report_invalid"


# ---------------------------------------------------------------------------------------------
# Against the real API app


class socket_port:
    """A loopback port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.integration
def test_real_api_round_trip(live_service: LiveService, tiny_model: Any, sample_report: Report) -> None:
    with Client(live_service.url, timeout=30) as client:
        assert client.ready() in (True, False)  # no worker here: /readyz may say not ready
        model = client.upload_model(tiny_model.model)
        dataset = client.upload_dataset(tiny_model.dataset)
        assert len(model.id) == 64 and model.kind == "model" and dataset.kind == "dataset"
        assert client.upload_model(tiny_model.model).id == model.id  # content-addressed
        job = client.analyze(model, dataset, config={"pairs": {"count": 4}, "transition_density": None})
        info = job.status()
        assert info.status == "queued" and info.model_id == model.id
        with pytest.raises(ServerError) as not_ready:
            job.report()
        assert not_ready.value.status_code == 404
        stages: list[str] = []
        worker = threading.Thread(target=play_worker, args=(live_service.settings, job.job_id, sample_report))
        worker.start()
        job.wait(poll_interval=0.02, timeout=20, on_progress=lambda i: stages.append(i.status))
        worker.join()
        assert stages[-1] == "succeeded"
        assert job.report() == sample_report
        assert "<!DOCTYPE html>" in job.report_html()


@pytest.mark.integration
def test_real_api_files_failure_cancel_and_unknown(
    live_service: LiveService, tiny_model: Any, sample_report: Report
) -> None:
    with Client(live_service.url, timeout=30) as client:
        job = client.analyze(tiny_model.model, tiny_model.dataset)
        play_worker(live_service.settings, job.job_id, sample_report, fail=True)
        with pytest.raises(JobFailedError) as failed:
            job.wait(poll_interval=0.02, timeout=20)
        assert failed.value.code == "dataset_shape_mismatch" and "7 features" in failed.value.detail

        queued = client.analyze(tiny_model.model, tiny_model.dataset)
        assert queued.cancel().status == "cancelled"
        with pytest.raises(JobCancelledError):
            queued.wait(poll_interval=0.02, timeout=20)

        with pytest.raises(ServerError) as unknown:
            client.job("0" * 32).status()
        assert unknown.value.status_code in (404, 422)


def test_trend_fetches_each_jobs_report_in_order(fake_api: FakeApi) -> None:
    fake_api.script, fake_api.polls = ["succeeded"], 1
    with make_client(fake_api) as client:
        trend = client.trend(["job1", "job1"], labels=["epoch 1", "epoch 2"])
        with pytest.raises(InvalidInput, match="distinct checkpoint labels"):
            client.trend(["job1", "job1"])
    fetched = [r.url.path for r in fake_api.requests if r.url.path.endswith("/report")]
    assert fetched == ["/v1/jobs/job1/report"] * 4
    assert [c.label for c in trend.checkpoints] == ["epoch 1", "epoch 2"]
    assert trend.change.dead_fraction == 0.0
