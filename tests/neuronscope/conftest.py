"""Fixtures for the CLI, gate, compare and HTML tests: plausible reports built from the contract.

The numbers are test data with the shape of a real analysis (dying neurons piling up in the deep
layers, same-label pairs more alike than different-label pairs), not engine output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from neuronscope.contracts.config import AnalysisConfig, TransitionDensityConfig
from neuronscope.contracts.report import Report

ReportFactory = Callable[..., Report]


def _ps_d(values: np.ndarray, lambdas: Sequence[float]) -> dict[str, Any]:
    if values.size == 0:
        return {"lambda": list(lambdas), "value": [None] * len(lambdas)}
    return {"lambda": list(lambdas), "value": [float((values > lam).mean()) for lam in lambdas]}


def build_report(
    *,
    layer_names: Sequence[str] | None = None,
    neurons: int = 64,
    dying: Sequence[float] | None = None,
    with_td: bool = True,
    samples: int = 120,
    seed: int = 0,
    shift: float = 0.0,
    extra_ps_rows: int = 0,
) -> Report:
    """A plausible report. ``shift`` moves the dying shares and PS up (a "worse" model version)."""
    rng = np.random.default_rng(seed)
    names = list(layer_names) if layer_names is not None else [f"/layers.{2 * i + 1}/Relu" for i in range(6)]
    n_layers = len(names)
    if dying is None:
        dying = [min(0.95, 0.02 + 0.12 * max(0, i - n_layers // 2) + shift) for i in range(n_layers)]
    config = AnalysisConfig(transition_density=TransitionDensityConfig() if with_td else None)
    lambdas = config.lambdas
    same_ps = np.clip(rng.normal(0.82 + shift / 2, 0.05, 400), 0, 1)
    diff_ps = np.clip(rng.normal(0.62 + shift, 0.07, 400), 0, 1)
    rand_ps = np.concatenate([same_ps[:40], diff_ps[:360]])

    def kind(values: np.ndarray) -> dict[str, Any]:
        return {
            "pairs": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "ps_d": _ps_d(values, lambdas),
        }

    def summary(values: np.ndarray) -> dict[str, Any]:
        return {"pairs": int(values.size), "mean": float(values.mean()), "std": float(values.std())}

    layers = []
    layer_infos = []
    per_layer = []
    for i, name in enumerate(names):
        dy = float(dying[i])
        dead = dy / 3
        dying_count = round(dy * neurons)
        dead_count = min(dying_count, round(dead * neurons))
        layer_infos.append(
            {"name": name, "op_type": "relu", "neurons": neurons, "shape": [neurons], "breakpoints": [0.0]}
        )
        layers.append(
            {
                "name": name,
                "op_type": "relu",
                "neurons": neurons,
                "dead_fraction": dead_count / neurons,
                "dying_fraction": dying_count / neurons,
                "dead_count": dead_count,
                "dying_count": dying_count,
                "dead_neurons": list(range(dead_count)),
                "dying_neurons": list(range(dying_count)),
                "region_occupancy": [0.5 + dy / 2, 0.5 - dy / 2],
                "post_activation_mean": 0.4 / (1 + i) + 0.05,
                "post_activation_var": 0.3 / (1 + i) ** 1.5,
                "pre_activation_mean": -0.1 * i,
                "pre_activation_var": 1.0 / (1 + i),
            }
        )
        per_layer.append(
            {
                "name": name,
                "random": summary(rand_ps + 0.01 * i),
                "same_label": summary(np.clip(same_ps + 0.015 * i, 0, 1)),
                "different_label": summary(np.clip(diff_ps + 0.02 * i, 0, 1)),
            }
        )
    rows = []
    for k in range(samples):
        same = k % 3 == 0
        ps = float(same_ps[k % 400] if same else diff_ps[k % 400])
        dist = float(max(0.0, (1 - ps) * 12 + rng.normal(0, 0.6)))
        td = int(max(0, (1 - ps) * 40 + rng.normal(0, 2))) if with_td else None
        rows.append(
            {
                "i": k,
                "j": k + 1,
                "same_label": same,
                "ps": ps,
                "prediction_distance": dist,
                "td": td,
                "neuron_changes": None if td is None else td * 7,
            }
        )
    ps_rows = [{**row, "td": None, "neuron_changes": None} for row in rows] + [
        {
            "i": k,
            "j": k + 2,
            "same_label": k % 4 == 0,
            "ps": float(same_ps[k % 400] if k % 4 == 0 else diff_ps[k % 400]),
            "prediction_distance": float(rng.uniform(0, 10)),
            "td": None,
            "neuron_changes": None,
        }
        for k in range(extra_ps_rows)
    ]
    tds = np.array([r["td"] for r in rows if r["td"] is not None], dtype=float)
    transition_density = (
        {
            "pairs": len(rows),
            "points": 512,
            "mean": float(tds.mean()),
            "median": float(np.median(tds)),
            "std": float(tds.std()),
            "neuron_changes_mean": float(tds.mean() * 7),
            "per_pair_kind": {
                "same_label": {"pairs": 40, "mean": 5.0, "median": 4.0, "neuron_changes_mean": 35.0},
                "different_label": {"pairs": 80, "mean": 14.0, "median": 13.0, "neuron_changes_mean": 98.0},
            },
            "samples": rows,
        }
        if with_td
        else None
    )
    data = {
        "model": {
            "format": "onnx",
            "sha256": "ab" * 32,
            "inputs": [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}],
            "layers": layer_infos,
            "neurons": neurons * n_layers,
        },
        "dataset": {"samples": samples + 1, "labels_source": "dataset", "classes": 10, "accuracy": 0.95},
        "pattern_similarity": {
            "pair_selection": "all",
            "random": kind(rand_ps),
            "same_label": kind(same_ps),
            "different_label": kind(diff_ps),
            "per_layer": per_layer,
        },
        "transition_density": transition_density,
        "layers": layers,
        "prediction_distance": {
            "random": {"pairs": 400, "mean": 5.0, "std": 1.0},
            "same_label": {"pairs": 400, "mean": 2.0, "std": 0.5},
            "different_label": {"pairs": 400, "mean": 6.0, "std": 1.2},
            "spearman_vs_ps": -0.7,
            "spearman_vs_td": 0.6 if with_td else None,
            "correlation_pairs": len(ps_rows),
            "samples": ps_rows,
        },
        "provenance": {
            "neuronscope_version": "0.1.0",
            "python_version": "3.11.9",
            "torch_version": "2.13.0",
            "onnx_version": "1.23.2",
            "onnxruntime_version": "1.32.0",
            "device": "cpu",
            "runtime": "onnxruntime CPUExecutionProvider",
            "seed": 0,
            "created_at": "2025-01-01T00:00:00Z",
            "config": config.model_dump(mode="json"),
        },
        "timings": {
            "load_s": 0.1,
            "capture_s": 0.2,
            "pattern_similarity_s": 0.05,
            "transition_density_s": 1.0,
            "total_s": 1.4,
        },
    }
    return Report.model_validate(data)


@pytest.fixture
def make_report() -> ReportFactory:
    """The factory, for tests that need several reports (compare) or special layer names."""
    return build_report


@pytest.fixture
def sample_report() -> Report:
    return build_report()
