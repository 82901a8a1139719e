"""The layer rules, checked by import-linter on the real import graph (``[tool.importlinter]`` in
pyproject.toml): ``worker.engine`` imports neither FastAPI, Celery nor the rest of ``worker/``;
``service`` imports neither torch, onnxruntime nor ``worker/``; the shared package (``neuronscope``
but its command line) imports neither ``service/``, ``worker/`` nor the command line; the command
line (``neuronscope.cli``) is the application layer, imported by neither; inside the worker control
goes one way (tasks → jobs → child → engine). Imports inside functions count too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {
    "engine": "worker.engine imports neither FastAPI, Celery nor the rest of worker/",
    "api": "service imports neither torch, onnxruntime nor worker/",
    "shared": "the shared package imports neither service/, worker/ nor the command line",
    "application": "the command line is the application layer: neither service/ nor worker/ imports it",
    "worker-layers": "control in the worker goes one way: tasks, then job use cases, then the analysis "
    "process, then the engine",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the tree at ``root`` (its pyproject.toml, its packages first on the path)."""
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run(
        [*command, "--no-cache", "--no-logo"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in output, f"expected contract {name!r} to be checked and kept:\n{output}"
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output, output


def test_each_contract_catches_a_planted_import(tmp_path: Path) -> None:
    """A copy of the tree with one forbidden import per layer, two of them indirect or inside a
    function: every contract breaks and names the import that breaks it."""
    for package in ("neuronscope", "service", "worker"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "worker" / "engine" / "planted.py").write_text("from worker import tasks\n")
    (tmp_path / "worker" / "child" / "planted.py").write_text(
        "def back() -> object:\n    from worker.jobs import run\n\n    return run\n"
    )
    (tmp_path / "service" / "planted.py").write_text("import neuronscope.planted_helper\n")
    (tmp_path / "neuronscope" / "planted_helper.py").write_text(
        "def load() -> object:\n    import torch\n\n    return torch\n"
    )
    (tmp_path / "neuronscope" / "contracts" / "planted.py").write_text(
        "def app() -> object:\n    from service.main import create_app\n\n    return create_app\n"
    )
    (tmp_path / "worker" / "jobs" / "planted.py").write_text("from neuronscope.cli import main\n")

    result = lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for name in CONTRACTS.values():
        assert f"{name} BROKEN" in output, f"expected contract {name!r} to break:\n{output}"
    assert "worker.engine.planted -> worker.tasks" in output, output
    assert "worker.child.planted -> worker.jobs.run" in output, output
    assert "service.planted -> neuronscope.planted_helper" in output, output
    assert "neuronscope.planted_helper -> torch" in output, output
    assert "neuronscope.contracts.planted -> service.main" in output, output
    assert "worker.jobs.planted -> neuronscope.cli" in output, output


def test_the_shared_contract_lists_every_module_but_the_command_line() -> None:
    """The shared contract names its modules one by one (the command line sits inside the same
    package): a new module must be added to it, or it would escape the rule."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}
    listed = set(contracts["shared"]["source_modules"])
    package = ROOT / "neuronscope"
    present = {
        f"neuronscope.{path.stem if path.is_file() else path.name}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert present - {"neuronscope.cli"} == listed
