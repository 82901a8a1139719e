"""What the service promises about itself: the API process stays free of the engine's heavy
imports, the committed OpenAPI document matches the code, the deployment files are valid, and the
settings refuse unsafe values."""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from pydantic import ValidationError

from neuronscope.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_process_never_imports_the_engine() -> None:
    code = (
        "import sys\n"
        "import service.main, service.standalone\n"
        "app = service.main.create_app()\n"
        "app.openapi()\n"
        "heavy = [m for m in ('torch', 'onnxruntime') if m in sys.modules]\n"
        "heavy += [m for m in sys.modules if m == 'worker' or m.startswith('worker.')]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"the API imported {out.stdout.strip()}"


def test_openapi_document_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_openapi.py", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_openapi_lists_error_bodies_and_typed_bodies() -> None:
    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    report = doc["paths"]["/v1/jobs/{job_id}/report"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    assert report["schema"] == {"$ref": "#/components/schemas/Report"}
    analyze = doc["paths"]["/v1/analyze"]["post"]
    assert analyze["responses"].keys() >= {"202", "404", "413", "422", "503"}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("check_jsonschema")  # ships the Compose Specification's JSON schema
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(_compose())


def test_compose_services_share_redis_and_storage() -> None:
    services = _compose()["services"]
    assert {"redis", "api", "worker", "worker-cpu"} <= services.keys()
    for name in ("api", "worker", "worker-cpu"):
        service = services[name]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert (
            "artifacts:/data" in service["volumes"]
            and service["environment"]["NEURONSCOPE_DATA_DIR"] == "/data"
        )
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["build"]["target"] == "api"
    assert "worker.celery_app" in services["worker"]["command"]
    (gpu,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]
    assert "deploy" not in services["worker-cpu"] and services["worker-cpu"]["profiles"] == ["cpu"]
    assert "--appendonly" in services["redis"]["command"]


def test_compose_is_hardened_for_an_open_network() -> None:
    """Read-only containers without capabilities; the API never published without API keys (the
    compose file refuses to interpolate without them and the API refuses to start without them),
    on loopback by default; Redis and the workers on an internal network."""
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        writable = [v.split(":")[-1] for v in service.get("volumes", [])] + service.get("tmpfs", [])
        assert "/tmp" in writable, name
    published = [name for name, service in services.items() if service.get("ports")]
    assert published == ["api"]
    api = services["api"]
    keys = api["environment"]["NEURONSCOPE_API_KEYS"]
    assert re.fullmatch(r"\$\{NEURONSCOPE_API_KEYS:\?[^}]+\}", keys), keys
    assert api["environment"]["NEURONSCOPE_REQUIRE_API_KEYS"] == "true"
    assert api["ports"] == ["${API_PUBLISH_ADDRESS:-127.0.0.1}:8000:8000"]
    assert "service.server" in api["command"]
    assert compose["networks"]["backend"]["internal"] is True
    assert set(api["networks"]) == {"frontend", "backend"}
    for name in ("redis", "worker", "worker-cpu"):
        assert services[name]["networks"] == ["backend"], name
        assert "NEURONSCOPE_API_KEYS" not in services[name].get("environment", {}), name
    text = (ROOT / "docker-compose.yml").read_text()
    assert "landlock" in text.lower() and "seccomp" in text.lower()


def test_compose_refuses_to_start_without_api_keys(tmp_path: Path) -> None:
    """``docker compose config`` (where Docker is installed) stops on the missing variable."""
    import shutil

    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("docker compose is not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    compose_file = str(ROOT / "docker-compose.yml")
    refused = subprocess.run(
        [docker, "compose", "-f", compose_file, "config"], capture_output=True, text=True, env=env
    )
    assert refused.returncode != 0 and "NEURONSCOPE_API_KEYS" in refused.stderr
    env["NEURONSCOPE_API_KEYS"] = "k" * 32 + ":team"
    accepted = subprocess.run(
        [docker, "compose", "-f", compose_file, "config"], capture_output=True, text=True, env=env
    )
    assert accepted.returncode == 0, accepted.stderr


def test_dockerfile_keeps_the_engine_out_of_the_api_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", text, flags=re.M | re.S))
    assert stages.keys() == {"base", "api", "worker"}
    assert '".[api]"' in stages["api"] and "torch" not in stages["api"] and "engine" not in stages["api"]
    assert '".[engine]"' in stages["worker"] and "TORCH_SPEC" in stages["worker"]
    assert all("USER neuronscope" in stages[s] for s in ("api", "worker"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_url": "http://localhost:6379"},
        {"job_memory_limit_mb": 10},
        {"job_cpu_time_limit_s": 5},
        {"key_prefix": "has spaces"},
        {"job_time_limit_s": 0},
    ],
)
def test_settings_refuse_unusable_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("NEURONSCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEURONSCOPE_JOB_TIME_LIMIT_S", "600")
    monkeypatch.setenv("NEURONSCOPE_ALLOW_TORCHSCRIPT", "false")
    settings = Settings()
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.data_dir == tmp_path and not settings.allow_torchscript
    celery = settings.celery_config()
    assert celery["broker_url"] == "redis://example:6380/2"
    assert celery["broker_transport_options"]["visibility_timeout"] > celery["task_time_limit"] > 600


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        variable = "REDIS_URL" if name == "redis_url" else f"NEURONSCOPE_{name.upper()}"
        assert f"`{variable}`" in doc, f"{variable} is not in docs/configuration.md"
