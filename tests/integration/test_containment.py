"""Hostile TorchScript models against ``neuronscope serve`` with its default settings.

Each test uploads a model whose ``forward`` attacks the host (reads a secret, writes outside its
job, overwrites what other jobs use, plants a ``.pth`` that would run at the next Python start,
smuggles text out through its exception) and checks, from the outside, that the attack was
stopped. Controls run the same models against what they *may* touch (their own job directory),
so a stopped attack is the confinement's doing, not a broken test model. The last tests serve on
a host without Landlock: PyTorch uploads are refused (fail closed) unless the operator opts in,
and then the same attack goes through, which shows the attacks are real.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_models import FileReader, FileWriter, Raiser, decode, save, save_exported_reader
from test_standalone import free_port, serving, stop, wait_ready

pytestmark = pytest.mark.integration

SMALL = {"transition_density": {"pairs": {"count": 4}, "points": 16}, "device": "cpu"}
WITHOUT_LANDLOCK = (sys.executable, str(Path(__file__).with_name("without_landlock.py")))


@dataclass
class Service:
    base: str
    data_dir: Path
    models: Path
    dataset: bytes

    def submit(self, model: bytes, dataset: bytes | None = None, **form: str) -> httpx.Response:
        files = {"model": ("m.pt", model)}
        if "dataset_id" not in form:
            files["dataset"] = ("d.npz", dataset if dataset is not None else self.dataset)
        data = {"config": json.dumps(SMALL), **form}
        return httpx.post(self.base + "/v1/analyze", files=files, data=data, timeout=60)

    def run(self, model: bytes, **form: str) -> dict[str, Any]:
        """Submit ``model`` with the dataset and wait until the job ends; the job's record."""
        response = self.submit(model, **form)
        assert response.status_code == 202, response.text
        job_url = self.base + response.headers["Location"]
        deadline = time.monotonic() + 120
        while (job := httpx.get(job_url, timeout=10).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        return dict(job)

    def report(self, job: dict[str, Any]) -> dict[str, Any]:
        response = httpx.get(self.base + job["report_url"], timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def attack(self, module: Any, name: str) -> dict[str, Any]:
        return self.run(save(module, self.models / f"{name}.pt"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("containment")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(root / "data", port) as proc:
        wait_ready(base, proc, timeout_s=120)
        models = root / "models"
        models.mkdir()
        yield Service(base, root / "data", models, tiny_model.dataset.read_bytes())
        stop(proc)


def test_readyz_says_the_analysis_processes_are_confined(service: Service) -> None:
    ready = httpx.get(service.base + "/readyz", timeout=10).json()
    assert ready["confined"] is True
    assert ready["confinement"].startswith("landlock-abi") and "seccomp" in ready["confinement"]


def test_a_model_reads_its_own_job_files_and_the_report_carries_them(service: Service) -> None:
    """The control: the reading model works, and what it reads reaches the report."""
    model = save(FileReader("model.pt"), service.models / "reads-itself.pt")
    job = service.run(model)
    assert job["status"] == "succeeded", job
    (layer,) = service.report(job)["layers"]
    assert decode(layer["dead_neurons"]) == model[:16]


def _secrets(service: Service) -> dict[str, Path]:
    home_secret = Path.home() / f".neuronscope-test-secret-{secrets.token_hex(4)}"
    home_secret.write_bytes(secrets.token_bytes(32))
    return {
        "/etc/passwd": Path("/etc/passwd"),
        "the standalone redis password": service.data_dir / "redis" / "redis.conf",
        "a file in the home directory": home_secret,
    }


def test_a_model_cannot_read_host_files(service: Service) -> None:
    targets = _secrets(service)
    try:
        for what, path in targets.items():
            secret = path.read_bytes()[:16]
            job = service.attack(FileReader(str(path)), f"read-{path.name}")
            assert job["status"] == "failed", (what, job)
            text = json.dumps(job)
            assert secret.decode("latin-1") not in text and secret.hex() not in text, what
            assert httpx.get(f"{service.base}/v1/jobs/{job['job_id']}/report", timeout=10).status_code != 200
    finally:
        for path in targets.values():
            if path.name.startswith(".neuronscope-test-secret-"):
                path.unlink()


def test_a_model_writes_only_inside_its_job(service: Service, tmp_path: Path) -> None:
    control = service.attack(FileWriter("scratch.bin"), "writes-in-its-job")
    assert control["status"] == "succeeded", control
    report_path = service.data_dir / "reports" / f"{control['job_id']}.json"
    stored_report = report_path.read_bytes()
    dataset_id = hashlib.sha256(service.dataset).hexdigest()
    stored_dataset = service.data_dir / "artifacts" / "dataset" / dataset_id[:2] / f"{dataset_id}.bin"
    site_packages = Path(sysconfig.get_paths()["purelib"])
    planted = {
        "a new file outside the job": tmp_path / "planted.bin",
        "a .pth file in site-packages": site_packages / "neuronscope_attack.pth",
        "a file in the home directory": Path.home() / f".neuronscope-planted-{secrets.token_hex(4)}",
    }
    overwritten = {"another job's stored report": report_path, "a stored dataset": stored_dataset}
    for what, path in {**planted, **overwritten}.items():
        job = service.attack(FileWriter(str(path)), f"write-{abs(hash(what))}")
        assert job["status"] == "failed", (what, job)
    for what, path in planted.items():
        assert not path.exists(), what
    assert report_path.read_bytes() == stored_report
    assert service.report(control) == json.loads(stored_report)
    assert hashlib.sha256(stored_dataset.read_bytes()).hexdigest() == dataset_id
    again = service.attack(FileWriter("scratch.bin"), "writes-in-its-job-again")
    assert again["status"] == "succeeded", again


def test_a_pt2_model_is_confined_like_torchscript(service: Service) -> None:
    """A ``.pt2`` whose graph maps a file with ``aten.from_file``: its own job's dataset reaches
    the report (the attack is real), a host file does not."""
    control = service.run(save_exported_reader("dataset.npz", service.models / "pt2-reads-its-dataset.pt2"))
    assert control["status"] == "succeeded", control
    (layer,) = service.report(control)["layers"]
    assert service.report(control)["model"]["format"] == "pt2"
    assert decode(layer["dead_neurons"]) == service.dataset[:16]
    secret = Path("/etc/passwd").read_bytes()[:16]
    job = service.run(save_exported_reader("/etc/passwd", service.models / "pt2-reads-passwd.pt2"))
    assert job["status"] == "failed", job
    text = json.dumps(job)
    assert secret.decode("latin-1") not in text and secret.hex() not in text
    assert httpx.get(f"{service.base}/v1/jobs/{job['job_id']}/report", timeout=10).status_code != 200


def test_a_models_own_exception_text_is_not_echoed(service: Service) -> None:
    marker = f"SMUGGLED-{secrets.token_hex(8)}"
    job = service.attack(Raiser(marker), "raises")
    assert job["status"] == "failed", job
    assert marker not in json.dumps(job)
    assert len(job["error"]["message"]) <= 500


def test_without_landlock_pytorch_uploads_are_refused_and_onnx_runs(tmp_path: Path, tiny_model: Any) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(tmp_path / "data", port, prefix=WITHOUT_LANDLOCK) as proc:
        wait_ready(base, proc, timeout_s=120)
        ready = httpx.get(base + "/readyz", timeout=10).json()
        assert ready["confined"] is False and ready["confinement"] == "none"
        service = Service(base, tmp_path / "data", tmp_path, tiny_model.dataset.read_bytes())
        refused = service.submit(save(FileReader("/etc/passwd"), tmp_path / "reader.pt"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "sandbox_unavailable"
        job = service.run(tiny_model.model.read_bytes())
        assert job["status"] == "succeeded", job
        stop(proc)


def test_the_operators_opt_in_runs_pytorch_unconfined_and_the_attack_is_real(
    tmp_path: Path, tiny_model: Any
) -> None:
    """With NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED on a host without Landlock, the reading model
    gets its file into the report: what the confined service stops is a working attack."""
    secret_file = tmp_path / "secret.bin"
    secret_file.write_bytes(secrets.token_bytes(16))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"NEURONSCOPE_SANDBOX_ALLOW_UNCONFINED": "true"}
    with serving(tmp_path / "data", port, env, prefix=WITHOUT_LANDLOCK) as proc:
        wait_ready(base, proc, timeout_s=120)
        service = Service(base, tmp_path / "data", tmp_path, tiny_model.dataset.read_bytes())
        job = service.attack(FileReader(str(secret_file)), "reads-a-secret")
        assert job["status"] == "succeeded", job
        (layer,) = service.report(job)["layers"]
        assert decode(layer["dead_neurons"]) == secret_file.read_bytes()
        stop(proc)
