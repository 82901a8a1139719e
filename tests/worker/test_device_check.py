"""A GPU worker (``NEURONSCOPE_DEVICE=cuda``) refuses to start unless torch and onnxruntime both see
the device, and runs Celery's solo pool; other workers start unchecked. The runtimes' device queries
are replaced by absent or present devices (this machine has none)."""

from __future__ import annotations

from typing import Any

import onnxruntime
import pytest
import torch

import worker.device_check as device_check
from neuronscope.settings import Settings
from worker.celery_app import _on_worker_init, create_celery
from worker.device_check import CUDA_EP, DeviceCheckError, check_device, refuse_unless_device_ready


def _devices(monkeypatch: pytest.MonkeyPatch, *, torch_sees: bool, ort_lists: bool, ort_keeps: bool) -> None:
    providers = [CUDA_EP, "CPUExecutionProvider"] if ort_lists else ["CPUExecutionProvider"]
    kept = [CUDA_EP, "CPUExecutionProvider"] if ort_keeps else ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_sees)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    monkeypatch.setattr(device_check, "_probe_session_providers", lambda: kept)


def test_a_cuda_worker_without_any_cuda_runtime_is_refused_naming_both(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _devices(monkeypatch, torch_sees=False, ort_lists=False, ort_keeps=False)
    with pytest.raises(DeviceCheckError) as caught:
        check_device(make_settings(device="cuda"))
    message = str(caught.value)
    assert message.startswith("NEURONSCOPE_DEVICE=cuda: expected torch and onnxruntime to see a CUDA device")
    assert f"torch {torch.__version__} sees no CUDA device" in message
    assert f"has no {CUDA_EP}" in message and "'onnxruntime-gpu'" in message
    assert "scripts/install.sh --gpu" in message


def test_torch_alone_missing_the_device_is_refused(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _devices(monkeypatch, torch_sees=False, ort_lists=True, ort_keeps=True)
    with pytest.raises(DeviceCheckError, match="sees no CUDA device") as caught:
        check_device(make_settings(device="cuda"))
    assert CUDA_EP not in str(caught.value)


def test_an_onnxruntime_that_falls_back_to_the_cpu_is_refused(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu built for CUDA 12 next to CUDA-13 torch lists the provider but cannot load it."""
    _devices(monkeypatch, torch_sees=True, ort_lists=True, ort_keeps=False)
    with pytest.raises(DeviceCheckError, match="fell back to \\['CPUExecutionProvider'\\]") as caught:
        check_device(make_settings(device="cuda"))
    assert "libcublasLt.so.12" in str(caught.value)
    assert "sees no CUDA device" not in str(caught.value)


def test_a_cuda_worker_whose_runtimes_see_the_device_starts(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _devices(monkeypatch, torch_sees=True, ort_lists=True, ort_keeps=True)
    check_device(make_settings(device="cuda"))
    refuse_unless_device_ready(make_settings(device="cuda"))


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_other_workers_start_without_querying_the_device(
    device: str, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def queried() -> None:
        raise AssertionError("a non-GPU worker queried the device")

    monkeypatch.setattr(device_check, "device_problems", queried)
    check_device(make_settings(device=device))


def test_worker_start_up_exits_with_the_reason(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery logs and swallows an ``Exception`` from a signal handler; the worker must exit instead."""
    _devices(monkeypatch, torch_sees=False, ort_lists=False, ort_keeps=False)
    monkeypatch.setattr("worker.celery_app.get_settings", lambda: make_settings(device="cuda"))
    with pytest.raises(SystemExit) as caught:
        _on_worker_init()
    assert str(caught.value).startswith("neuronscope worker refused to start: NEURONSCOPE_DEVICE=cuda")


def test_the_device_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONSCOPE_DEVICE", "cuda")
    assert Settings().device == "cuda"
    monkeypatch.setenv("NEURONSCOPE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()


def test_a_gpu_worker_runs_the_solo_pool_and_others_keep_the_default(make_settings: Any) -> None:
    assert create_celery(make_settings(device="cuda")).conf.worker_pool == "solo"
    for device in ("auto", "cpu"):
        assert create_celery(make_settings(device=device)).conf.worker_pool == "prefork"


def test_the_session_probe_runs_on_this_machines_onnxruntime() -> None:
    """The probe model is valid; on a CPU-only onnxruntime the session keeps the CPU provider only."""
    if CUDA_EP in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu installed: the probe's result depends on the device")
    assert device_check._probe_session_providers() == ["CPUExecutionProvider"]
