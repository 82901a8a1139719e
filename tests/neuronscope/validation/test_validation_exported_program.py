"""``.pt2`` archives (torch.export.save) checked from their zip structure alone and told apart
from TorchScript archives by their entries."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from neuronscope.errors import InvalidInput
from neuronscope.validation import (
    ExportedProgramSummary,
    Limits,
    check_exported_program_archive,
    check_model_file,
    detect_model_format,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    path = tmp_path_factory.mktemp("pt2") / "model.pt"  # the name says nothing
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), str(path))
    return path


def test_a_real_export_is_pt2_and_passes(exported: Path, tmp_path: Path) -> None:
    summary = check_exported_program_archive(exported)
    assert isinstance(summary, ExportedProgramSummary)
    assert summary.prefix == "model" and summary.programs == 1 and summary.members > 3
    assert detect_model_format(exported) == "pt2"
    assert check_model_file(exported) == summary
    scripted = tmp_path / "model.pt2"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())).save(str(scripted))
    assert detect_model_format(scripted) == "torchscript"


def test_an_archive_without_a_program_is_invalid(exported: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped.pt2"
    with zipfile.ZipFile(exported) as source, zipfile.ZipFile(stripped, "w") as target:
        for info in source.infolist():
            if "/models/" not in info.filename:
                target.writestr(info, source.read(info))
    with pytest.raises(InvalidInput) as caught:
        check_exported_program_archive(stripped)
    assert caught.value.code == "model_invalid" and "models/*.json" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        check_model_file(stripped)  # without a program it is no .pt2, and no TorchScript either
    assert caught.value.code == "model_invalid"


def test_limits_apply_before_entries_are_trusted(exported: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_model_format(exported, Limits(max_model_members=2))
    assert caught.value.code == "model_zip_bomb"
    with pytest.raises(InvalidInput) as caught:
        check_model_file(exported, Limits(max_model_bytes=100))
    assert caught.value.code == "model_too_large"
