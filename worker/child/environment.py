"""The environment of an analysis process, built from an allow-list, and the warm launcher that
starts with it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import worker
from worker.child.zygote import Zygote, get_zygote

#: Variables a model's process may see, by name; everything else in the worker's environment (its
#: Redis URL, API keys, cloud credentials, whatever the operator set) stays out.
_CHILD_ENV_PASSED = (
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
)


def child_env(workdir: Path, threads: int) -> dict[str, str]:
    """The analysis process's whole environment, built from an allow-list (never by removing
    known names): locale and GPU selection passed on, the rest fixed here."""
    env = {name: os.environ[name] for name in _CHILD_ENV_PASSED if name in os.environ}
    root = str(Path(worker.__file__).resolve().parent.parent)
    env |= {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": root,
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def launcher_env(threads: int) -> dict[str, str]:
    """The environment the zygote starts with: the analysis environment without a job's parts
    (the thread counts too, so the runtimes' thread pools are sized as in a fresh process)."""
    env = child_env(Path(tempfile.gettempdir()), threads=threads)
    env.pop("TMPDIR", None)
    env.pop("HOME", None)
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


def worker_zygote(threads: int) -> Zygote:
    """This worker process's zygote for jobs with ``threads`` threads (started on first use)."""
    return get_zygote(launcher_env(threads))
