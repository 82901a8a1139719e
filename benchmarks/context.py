"""What every section shares: the sizes, the two networks (built once) and a scratch directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.models import INPUT, Network, build
from benchmarks.sizes import Sizes
from neuronscope.contracts.config import AnalysisConfig
from worker.engine.capture.base import CaptureModel
from worker.engine.inputs import BoundInputs


@dataclass(frozen=True)
class Context:
    sizes: Sizes
    scratch: Path
    fcnn: Network
    vgg: Network

    @classmethod
    def create(cls, sizes: Sizes, scratch: Path) -> Context:
        return cls(
            sizes=sizes,
            scratch=scratch,
            fcnn=build("fcnn", scratch, batch=sizes.fcnn_batch, width=sizes.fcnn_width),
            vgg=build("vgg", scratch, batch=sizes.vgg_batch, width=sizes.vgg_width),
        )

    @property
    def networks(self) -> tuple[Network, Network]:
        return self.fcnn, self.vgg


def config_for(network: Network, **changes: object) -> AnalysisConfig:
    """The engine config the benchmarks use: CPU, the network's batch size, no TD unless given."""
    values: dict[str, object] = {
        "batch_size": network.batch.shape[0],
        "device": "cpu",
        "transition_density": None,
    }
    values.update(changes)
    return AnalysisConfig.model_validate(values)


def bound(inputs: np.ndarray) -> BoundInputs:
    """A dataset of ``inputs`` bound to the networks' single input ``x``."""
    return BoundInputs(arrays={INPUT: inputs}, samples=int(inputs.shape[0]))


def infer_all(model: CaptureModel, data: BoundInputs, batch_size: int) -> None:
    """Plain inference over every batch of ``data``: the baseline of the dataset-level rows."""
    for _, _, batch in data.batches(batch_size):
        model.infer(batch)
