"""The trend over training checkpoints: the JSON ``neuronscope trend`` writes and gates read.

Dying is a process: one report per checkpoint, in training order, becomes one series per figure.
Every series has one value per checkpoint, ``null`` where a checkpoint's report does not have the
figure (an older schema, a layer that checkpoint does not have, no labels).
"""

from __future__ import annotations

from pydantic import Field

from neuronscope.contracts.report import Stat, _Model

#: 1.0: ``checkpoints``, ``network``, ``layers``, ``change``, ``warnings``.
TREND_SCHEMA_VERSION = "1.0"

#: Checkpoints one trend joins; beyond it the trend is refused (the size of the JSON, the HTML and
#: the memory of reading the reports stay bounded).
MAX_CHECKPOINTS = 500


class Checkpoint(_Model):
    label: str = Field(description="The checkpoint's name: given, or the report file's stem.")
    model_sha256: str | None
    dataset_sha256: str | None
    samples: int
    created_at: str


class NetworkSeries(_Model):
    """The whole network at each checkpoint."""

    accuracy: list[Stat] = Field(description="Top-1 accuracy on the dataset labels.")
    dead_fraction: list[Stat] = Field(description="Dead neurons over all neurons (Def. 1: one region).")
    dying_fraction: list[Stat] = Field(description="Dying neurons (dead included) over all neurons.")
    never_active_fraction: list[Stat] = Field(
        description="Neurons in a flat region of their activation for every input, over the neurons of "
        "layers with flat regions."
    )
    label_dying_fraction: list[Stat] = Field(
        description="Neurons that keep inputs of different labels in one region (the paper's dying), "
        "over all neurons."
    )
    dormant_fraction: list[Stat] = Field(
        description="Units ReDo-dormant at τ = 0.025 (neuron_death; null for reports before schema 1.2)."
    )
    coverage_fraction: list[Stat] = Field(description="Neuron coverage at t = 0.25 (neuron_death).")
    separation: list[Stat] = Field(
        description="Class separation of the patterns beyond chance (pattern_similarity.chance_corrected)."
    )
    chance: list[Stat] = Field(description="The PS a pair has by chance, given the region occupancy.")
    living_fraction: list[Stat] = Field(description="Share of inputs that are not dead data points.")
    transition_density: list[Stat] = Field(description="Mean transition density (k points).")


class LayerSeries(_Model):
    """One layer (matched by name) at each checkpoint."""

    name: str
    op_type: str
    dead_fraction: list[Stat]
    dying_fraction: list[Stat]
    label_dying_fraction: list[Stat]
    dormant_fraction: list[Stat]
    separation: list[Stat]


class NetworkChange(_Model):
    """Last checkpoint minus first, per network figure (``null`` when either is)."""

    accuracy: Stat
    dead_fraction: Stat
    dying_fraction: Stat
    never_active_fraction: Stat
    label_dying_fraction: Stat
    dormant_fraction: Stat
    coverage_fraction: Stat
    separation: Stat
    chance: Stat
    living_fraction: Stat
    transition_density: Stat


class Trend(_Model):
    schema_version: str = TREND_SCHEMA_VERSION
    checkpoints: list[Checkpoint]
    network: NetworkSeries
    layers: list[LayerSeries] = Field(description="Every layer of any checkpoint, in first-seen order.")
    change: NetworkChange
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes checkpoints less comparable: other datasets, other breakpoints Γ or value "
        "space, layers missing from some checkpoints.",
    )

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)
