"""The analysis report: the JSON that pipelines read. Paths here are a versioned contract.

Undefined statistics (no pairs of a kind, no labels) are ``null``; NaN and ±Inf never reach JSON:
any non-finite float given to a report field becomes ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from neuronscope.contracts.config import AnalysisConfig
from neuronscope.errors import InvalidInput

#: 1.1 added ``pattern_similarity.chance_corrected``, ``pattern_similarity.per_layer[].chance_corrected``
#: and ``layers[].label_agreement``; ``layers[].flat`` and ``dataset.dead_data_points`` /
#: ``dataset.living_fraction`` (``null`` in reports made before them). 1.2 added
#: ``provenance.config.capture_points`` (tensors analysed as layers with op type ``identity``;
#: ``[]`` when absent from an older report's config), ``transition_density.converged`` (TD as
#: k -> infinity), ``transition_density.saturated`` and ``.warnings``,
#: ``transition_density.samples[].td_converged`` / ``.neuron_changes_converged``,
#: ``timings.transition_density_passes``, ``prediction_distance.probabilities``; ``layers[].death``
#: (ReDo's τ-dormant units, DeepXplore's neuron coverage, rarely positive neurons and, for every
#: listed dead or dying neuron, the region it is stuck in, its value range and its distance to the
#: nearest breakpoint), ``neuron_death`` (the same over the whole network) and
#: ``model.layers[].params``, ``null`` in older reports.
REPORT_SCHEMA_VERSION = "1.2"

#: Dead and dying neuron indices one report lists, over every layer and both lists together (the
#: config's ``max_neuron_indices`` caps each list too). Counts and fractions stay exact; each
#: layer says how many indices its lists left out. This bounds the report's size and the memory
#: of whatever reads it, whatever the model.
MAX_LISTED_NEURONS = 100_000

#: Stuck neurons (``layers[].death.stuck_neurons``) one report lists over every layer, a fair
#: share each: an entry takes about 200 bytes of JSON, 20 times an index.
MAX_STUCK_NEURONS = 2_000

#: Largest report JSON :func:`load_report` parses. Parsing costs about 8 bytes of memory per byte
#: of JSON; a report within the caps (lists, per-pair rows, a config the API accepts) is a few
#: MB, plus about 2 KB per layer.
MAX_REPORT_BYTES = 16 * 1024 * 1024


def fair_shares(wanted: Sequence[int], total: int) -> list[int]:
    """Split ``total`` slots over lists that want ``wanted`` items each: every list gets what it
    wants or an equal share of what is left, whichever is smaller (max-min fairness).

    >>> fair_shares([5, 100, 100], 45)
    [5, 20, 20]
    >>> fair_shares([3, 4], 100)
    [3, 4]
    """
    shares = [0] * len(wanted)
    left, lists_left = total, len(wanted)
    for index in sorted(range(len(wanted)), key=lambda i: wanted[i]):
        shares[index] = min(wanted[index], left // lists_left)
        left -= shares[index]
        lists_left -= 1
    return shares


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool) and not math.isfinite(float(value)):
        return None
    return value


#: A float that is ``null`` when undefined or non-finite.
Stat = Annotated[float | None, BeforeValidator(_finite_or_none)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputInfo(_Model):
    name: str
    shape: list[int | str | None] = Field(
        description="Per-input shape as the model declares it; strings are symbolic."
    )
    dtype: str


class LayerInfo(_Model):
    name: str = Field(description="Unique layer name (ONNX node name, or PyTorch module path and op).")
    op_type: str = Field(description="Canonical activation op type, e.g. 'relu', 'sigmoid', 'gelu'.")
    neurons: int = Field(description="Neurons per sample: every element of the activation map.")
    shape: list[int] = Field(description="Per-sample shape of the activation map.")
    breakpoints: list[float] = Field(description="The breakpoints Γ used for this layer.")
    params: dict[str, float] | None = Field(
        None,
        description="The layer's own parameters behind its default Γ and value range (HardSigmoid "
        "alpha/beta, Softplus beta/threshold, LeakyReLU/ELU/CELU alpha); schema 1.2, null when none.",
    )


class ModelSection(_Model):
    format: Literal["onnx", "torchscript", "pt2"]
    sha256: str | None = None
    inputs: list[InputInfo]
    layers: list[LayerInfo]
    neurons: int = Field(description="Total neurons analysed (sum over layers).")
    warnings: list[str] = Field(
        default_factory=list,
        description="What the analysis of this model does not cover, e.g. recurrent layers (LSTM, GRU) "
        "whose gate activations are not analysed.",
    )


class DatasetSection(_Model):
    samples: int
    labels_source: Literal["dataset", "predicted"] = Field(
        description="Where the labels used for same/different-label pairs came from."
    )
    classes: int | None = Field(None, description="Number of distinct labels.")
    accuracy: Stat = Field(None, description="Top-1 accuracy when dataset labels and class outputs exist.")
    dead_data_points: int | None = Field(
        None,
        description="Inputs for which some layer has every neuron in a flat region of its activation "
        "(Rister & Rubin's dead data points); null in older reports.",
    )
    living_fraction: Stat = Field(None, description="Share of inputs that are not dead data points.")
    sha256: str | None = None


class PsCurve(_Model):
    lambda_: list[float] = Field(alias="lambda")
    value: list[Stat] = Field(description="PS_D(λ) = P(PS > λ) over the pairs of this kind.")


class PairKindStats(_Model):
    pairs: int
    mean: Stat = Field(description="PS_E: the mean pattern similarity.")
    std: Stat
    ps_d: PsCurve


class PairKindSummary(_Model):
    pairs: int
    mean: Stat
    std: Stat


class ChanceCorrected(_Model):
    """PS against what the region occupancy of each neuron alone gives, over every distinct pair
    (whatever ``pairs`` selected): comparable across activations and breakpoints Γ."""

    chance: Stat = Field(
        description="Expected PS of a pair if patterns were independent of labels given each neuron's "
        "region occupancy (= PS_E of all random pairs)."
    )
    same_label: Stat = Field(description="PS_E over every same-label pair.")
    different_label: Stat = Field(description="PS_E over every different-label pair.")
    lift_same: Stat = Field(
        description="(same_label - chance) / (1 - chance): 0 when labels tell nothing about patterns, "
        "1 when same-label inputs share their whole pattern; 0 when chance is 1 (every neuron dead)."
    )
    lift_different: Stat = Field(
        description="(different_label - chance) / (1 - chance); at most 0 if classes separate."
    )
    separation: Stat = Field(
        description="lift_same - lift_different = (same_label - different_label) / (1 - chance): the "
        "class separation beyond chance, the headline figure."
    )


class ChanceCorrectedNetwork(ChanceCorrected):
    pairs: int = Field(description="Distinct pairs behind the figures: N(N-1)/2.")
    same_label_pairs: int


class LayerSimilarity(_Model):
    name: str
    random: PairKindSummary
    same_label: PairKindSummary
    different_label: PairKindSummary
    chance_corrected: ChanceCorrected | None = None


class PatternSimilaritySection(_Model):
    pair_selection: str = Field(description="'all', 'sample' or 'explicit'.")
    random: PairKindStats
    same_label: PairKindStats
    different_label: PairKindStats
    per_layer: list[LayerSimilarity]
    chance_corrected: ChanceCorrectedNetwork | None = Field(
        None, description="The whole network's PS beyond chance (schema 1.1; null in older reports)."
    )


class TdKindStats(_Model):
    pairs: int
    mean: Stat
    median: Stat
    neuron_changes_mean: Stat = Field(description="Mean count of neuron-region changes along the path.")


class PairSampleRow(_Model):
    """One analysed pair, kept for plots (capped in number)."""

    i: int
    j: int
    same_label: bool
    ps: float
    prediction_distance: float
    td: int | None = None
    neuron_changes: int | None = None
    td_converged: int | None = Field(None, description="Converged TD of the pair (null when not computed).")
    neuron_changes_converged: int | None = None


class ConvergedTransitionDensity(_Model):
    """TD in the limit k -> infinity: every activation-region boundary each path crosses."""

    mean: Stat
    median: Stat
    std: Stat
    neuron_changes_mean: Stat
    per_pair_kind: dict[Literal["same_label", "different_label"], TdKindStats]
    complete: bool = Field(
        description="Every path was followed to its end; false: some reached max_points_per_pair and "
        "their counts are lower bounds."
    )
    pairs_complete: int
    methods: dict[Literal["exact", "adaptive", "mixed"], int] = Field(
        description="Paths counted by the verified region-to-region walk (piecewise-linear networks), "
        "by adaptive bisection only (smooth activations), or by the walk with bisected steps where its "
        "verification failed."
    )
    points_evaluated: int = Field(description="Points pushed through the model, the TD-at-k grid included.")
    bisected_steps: int = Field(
        description="Boundaries resolved by bisection rather than by the verified walk (all of them "
        "for adaptive paths)."
    )
    unresolved_steps: int = Field(
        description="Steps at the tolerance whose ends differ in several neurons, each counted once."
    )
    tolerance: float = Field(description="Shortest bisected step, as a share of the path.")
    max_points_per_pair: int = Field(description="Points a path may evaluate beyond the TD-at-k grid.")


class TransitionDensitySection(_Model):
    pairs: int
    points: int = Field(description="Points per segment, both endpoints included (k + 1).")
    mean: Stat
    median: Stat
    std: Stat
    neuron_changes_mean: Stat
    per_pair_kind: dict[Literal["same_label", "different_label"], TdKindStats]
    samples: list[PairSampleRow] = Field(description="Per-pair values (capped) for the TD/PS/distance plot.")
    space: Literal["inputs", "embedding"] = Field(
        "inputs",
        description="Where the paths run: between the inputs, or, for a model with integer inputs "
        "(token ids), in its embedding space (the first floating tensors computed from them).",
    )
    interpolated: list[str] = Field(
        default_factory=list,
        description="The tensors interpolated: input names, or the embedding tensors (module path and "
        "node); integer inputs take the nearer endpoint's value.",
    )
    converged: ConvergedTransitionDensity | None = Field(
        None, description="TD as k -> infinity; null when transition_density.converged is off."
    )
    saturated: bool | None = Field(
        None,
        description="The mean TD at k is within 10 % of k = points - 1, its most: it measures k more "
        "than the network.",
    )
    warnings: list[str] = Field(default_factory=list)


class LabelAgreement(_Model):
    """Per-neuron agreement between inputs of different labels: the paper's dying neuron keeps them
    in one region."""

    different_label_mean: Stat = Field(
        description="Mean over neurons of the share of different-label pairs that share the neuron's region."
    )
    label_dying_count: int = Field(
        description="Neurons whose different-label agreement is >= dying_threshold (dead included)."
    )
    label_dying_fraction: float
    neuron_lift_mean: Stat = Field(
        description="Mean over living neurons of (same-label agreement - chance) / (1 - chance)."
    )


class LayerFlat(_Model):
    """Death in the flat regions of a piecewise-linear activation (pre space, the op's own kinks)."""

    flat_regions: list[int] = Field(
        description="Region indices on which the activation is constant (ReLU's (-inf, 0], ...); empty "
        "for smooth activations and in post space."
    )
    rarely_active_count: int = Field(description="Neurons outside the flat regions for < 1% of inputs.")
    rarely_active_fraction: float
    never_active_count: int = Field(description="Neurons in a flat region for every input.")


class DormantShare(_Model):
    tau: float = Field(description="ReDo's threshold τ: a unit is dormant when its score is <= τ.")
    count: int
    fraction: float


class CoverageShare(_Model):
    threshold: float = Field(description="DeepXplore's t: a unit is covered when its scaled output > t.")
    covered: int
    fraction: float


class StuckNeuron(_Model):
    """A listed dead or dying neuron: where it is stuck and how far from coming back."""

    neuron: int = Field(description="Flat neuron index in the layer.")
    dead: bool = Field(description="True when every input puts it in one region (else dying).")
    region: int = Field(description="Its dominant region (γ_{r-1}, γ_r] of the layer's breakpoints.")
    region_share: float = Field(description="Share of inputs in that region (1 for a dead neuron).")
    pre_min: Stat = Field(description="Smallest pre-activation value over the inputs.")
    pre_max: Stat = Field(description="Largest pre-activation value over the inputs.")
    breakpoint_distance: Stat = Field(
        description="Gap between its values (in the analysis space) and the nearer end of its region: "
        "how far the inputs are from moving it to another region; 0 when they reach an end."
    )


class LayerDeath(_Model):
    """Every kind of neuron death, as its authors define it (see docs/paper.md)."""

    units: int = Field(description="Units: neurons, or channels of a convolutional map (one unit each).")
    dormant_fraction: float = Field(description="Share of units ReDo-dormant at τ = 0.025 (the gate figure).")
    coverage_fraction: float = Field(description="Neuron coverage at t = 0.25 (the gate figure).")
    dormant: list[DormantShare] = Field(
        description="ReDo (Sokar et al. 2023): units whose mean |output| over the layer's mean is <= τ."
    )
    coverage: list[CoverageShare] = Field(
        description="Neuron coverage (Pei et al. 2017): units whose per-input min-max scaled output "
        "exceeds t for at least one input."
    )
    rarely_positive_count: int = Field(description="Neurons with output > 0 on fewer than 1% of inputs.")
    rarely_positive_fraction: float
    never_positive_count: int = Field(description="Neurons with output > 0 on no input.")
    stuck_neurons: list[StuckNeuron] = Field(
        description="The neurons listed in dead_neurons or dying_neurons, lowest index first, at most "
        "MAX_STUCK_NEURONS over all layers (a fair share each)."
    )
    stuck_neurons_omitted: int = Field(
        0, description="Listed dead or dying neurons left out of stuck_neurons; 0 when complete."
    )


class NetworkDeath(_Model):
    """The whole network's death: units and neurons of every layer together."""

    units: int
    dormant_fraction: float = Field(description="Share of units ReDo-dormant at τ = 0.025.")
    coverage_fraction: float = Field(description="Neuron coverage at t = 0.25.")
    dormant: list[DormantShare]
    coverage: list[CoverageShare]
    rarely_positive_count: int
    rarely_positive_fraction: float


class LayerHealth(_Model):
    name: str
    op_type: str
    neurons: int
    dead_fraction: float = Field(description="Share of neurons whose region is the same for every sample.")
    dying_fraction: float = Field(
        description="Share of neurons whose dominant region holds >= dying_threshold of samples "
        "(dead included)."
    )
    dead_count: int
    dying_count: int
    dead_neurons: list[int] = Field(
        description="Flat indices of dead neurons, lowest first (capped: see dead_neurons_omitted)."
    )
    dying_neurons: list[int] = Field(
        description="Flat indices of dying neurons, lowest first (capped: see dying_neurons_omitted)."
    )
    dead_neurons_omitted: int = Field(
        0,
        description="Dead neurons not in dead_neurons (the per-layer max_neuron_indices or the report's "
        "MAX_LISTED_NEURONS over all layers); 0 when the list is complete.",
    )
    dying_neurons_omitted: int = Field(0, description="Dying neurons not in dying_neurons; 0 when complete.")
    region_occupancy: list[float] = Field(description="Share of (sample, neuron) values in each region.")
    post_activation_mean: Stat
    post_activation_var: Stat
    pre_activation_mean: Stat
    pre_activation_var: Stat
    label_agreement: LabelAgreement | None = Field(None, description="Schema 1.1; null in older reports.")
    flat: LayerFlat | None = Field(None, description="Schema 1.1; null in older reports.")
    death: LayerDeath | None = Field(None, description="Schema 1.2; null in older reports.")


class PredictionDistanceKind(_Model):
    pairs: int
    mean: Stat
    std: Stat


class ProbabilityDistanceSection(_Model):
    """Prediction distance between softmax probabilities (the outputs as they are when each row is
    already a probability vector)."""

    softmax_applied: bool
    random: PredictionDistanceKind
    same_label: PredictionDistanceKind
    different_label: PredictionDistanceKind
    spearman_vs_ps: Stat
    spearman_vs_td: Stat


class PredictionDistanceSection(_Model):
    random: PredictionDistanceKind
    same_label: PredictionDistanceKind
    different_label: PredictionDistanceKind
    spearman_vs_ps: Stat = Field(
        description="Rank correlation of prediction distance with PS over the PS pairs."
    )
    spearman_vs_td: Stat = Field(
        description="Rank correlation of prediction distance with TD over the TD pairs."
    )
    correlation_pairs: int = Field(
        description="Random pairs behind spearman_vs_ps (every pair up to a cap, else a seeded sample)."
    )
    samples: list[PairSampleRow] = Field(
        description="Per-pair PS and distance (capped) for the PS/distance plot."
    )
    probabilities: ProbabilityDistanceSection | None = Field(
        None, description="The same on probabilities; null for outputs that are not [N, classes >= 2]."
    )


class Provenance(_Model):
    neuronscope_version: str
    python_version: str
    torch_version: str | None = None
    onnx_version: str | None = None
    onnxruntime_version: str | None = None
    device: str = Field(description="Where the analysis ran, e.g. 'cpu' or 'cuda:0 (NVIDIA H100)'.")
    runtime: str = Field(description="Execution runtime, e.g. 'onnxruntime CPUExecutionProvider'.")
    seed: int
    created_at: str = Field(description="ISO 8601 UTC time the report was made.")
    config: AnalysisConfig


class Timings(_Model):
    load_s: float
    capture_s: float
    pattern_similarity_s: float
    transition_density_s: float
    total_s: float
    transition_density_passes: int | None = Field(
        None, description="Forward passes of the converged TD count (more when the job was split)."
    )


class Report(_Model):
    schema_version: str = REPORT_SCHEMA_VERSION
    model: ModelSection
    dataset: DatasetSection
    pattern_similarity: PatternSimilaritySection
    transition_density: TransitionDensitySection | None
    transition_density_skipped: str | None = Field(
        None,
        description="Why transition_density is null although the config asked for it (e.g. token-id "
        "inputs of a model that cannot be run from its embedding); null otherwise.",
    )
    layers: list[LayerHealth]
    neuron_death: NetworkDeath | None = Field(None, description="Schema 1.2; null in older reports.")
    prediction_distance: PredictionDistanceSection
    provenance: Provenance
    timings: Timings

    @model_validator(mode="after")
    def _listed_neurons_capped(self) -> Report:
        listed = sum(len(layer.dead_neurons) + len(layer.dying_neurons) for layer in self.layers)
        if listed > MAX_LISTED_NEURONS:
            raise ValueError(
                f"layers: expected at most {MAX_LISTED_NEURONS} dead and dying neuron indices listed "
                f"over all layers, got {listed}"
            )
        return self

    @property
    def neurons_omitted(self) -> int:
        """Dead and dying neuron indices the report's lists left out, over all layers."""
        return sum(layer.dead_neurons_omitted + layer.dying_neurons_omitted for layer in self.layers)

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)


def load_report(data: bytes) -> Report:
    """A stored report parsed and validated, refused unread when larger than
    :data:`MAX_REPORT_BYTES` (``InvalidInput``, code ``report_too_large``), so reading one never
    holds more than a bounded amount of memory."""
    if len(data) > MAX_REPORT_BYTES:
        raise InvalidInput(
            f"report: expected at most {MAX_REPORT_BYTES} bytes of JSON, got {len(data)}",
            code="report_too_large",
        )
    return Report.model_validate_json(data)
