"""The analysis config: one JSON schema for the CLI's ``--config`` file and the API's ``config`` field.

Every key is optional; unknown keys are an error. Example::

    {"breakpoints": {"relu": [0.0], "layers.3": [-1.0, 1.0]},
     "pairs": {"count": 1000, "seed": 0},
     "transition_density": {"pairs": {"count": 50, "seed": 0}, "points": 512}}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from neuronscope.contracts.post_space import out_of_range, post_breakpoints

#: Canonical activation op types, shared by the ONNX and the TorchScript front ends.
OpType = Literal[
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "relu6",
    "hardtanh",
    "clip",
    "hardswish",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
]

#: Default breakpoints Γ per canonical op type in pre-activation space (the paper's Section VI-B
#: choices, extended to the kinks of the piecewise activations, HardSigmoid's included). ``clip``
#: layers with other bounds than (0, 6) or (-1, 1) default to their own ``[min, max]``. In post
#: space the defaults are their images through the activation
#: (:func:`neuronscope.contracts.post_space.post_breakpoints`).
DEFAULT_BREAKPOINTS: dict[str, list[float]] = {
    "relu": [0.0],
    "leaky_relu": [0.0],
    "prelu": [0.0],
    "elu": [0.0],
    "selu": [0.0],
    "celu": [0.0],
    "gelu": [0.0],
    "silu": [0.0],
    "mish": [0.0],
    "softplus": [0.0],
    "relu6": [0.0, 6.0],
    "hardtanh": [-1.0, 1.0],
    "hardswish": [-3.0, 3.0],
    "sigmoid": [-0.5, 0.0, 0.5],
    "hard_sigmoid": [-3.0, 3.0],
    "tanh": [-0.5, 0.0, 0.5],
}

MAX_BREAKPOINTS = 255
MAX_EXPLICIT_PAIRS = 1_000_000
#: The largest sample index a pair may name: the engine holds indices as int64.
MAX_SAMPLE_INDEX = 2**63 - 1


def default_lambdas() -> list[float]:
    """The λ grid of PS_D(λ): 0.00, 0.01, …, 1.00."""
    return [round(i / 100, 2) for i in range(101)]


class PairSample(BaseModel):
    """A random sample of ``count`` index pairs, reproducible by ``seed``.

    For pattern similarity, ``count`` pairs are drawn for each pair kind (random, same label,
    different label); for transition density, ``count`` random pairs are drawn in total.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: Annotated[int, Field(gt=0, le=10_000_000)]
    seed: int = 0


#: ``"all"`` distinct unordered pairs, a random ``PairSample``, or an explicit list of ``[i, j]``.
PairSpec = Literal["all"] | PairSample | list[tuple[int, int]]


def _short(index: int) -> str:
    """An index as text, with only its length shown when it is too long to quote whole."""
    text = str(index)
    return text if len(text) <= 24 else f"{text[:12]}… ({len(text)} digits)"


def _check_explicit_pairs(pairs: PairSpec) -> PairSpec:
    if isinstance(pairs, list):
        if not pairs:
            raise ValueError("expected at least one [i, j] pair, got an empty list")
        if len(pairs) > MAX_EXPLICIT_PAIRS:
            raise ValueError(f"expected at most {MAX_EXPLICIT_PAIRS} explicit pairs, got {len(pairs)}")
        for n, (i, j) in enumerate(pairs):
            if not (0 <= i <= MAX_SAMPLE_INDEX and 0 <= j <= MAX_SAMPLE_INDEX):
                raise ValueError(
                    f"pair {n}: expected sample indices in [0, 2**63 - 1], got [{_short(i)}, {_short(j)}]"
                )
            if i == j:
                raise ValueError(f"pair {n}: expected two different sample indices, got [{i}, {j}]")
    return pairs


def _check_breakpoints(key: str, points: list[float]) -> None:
    if not points:
        raise ValueError(f"breakpoints for {key!r}: expected at least one value, got []")
    if len(points) > MAX_BREAKPOINTS:
        raise ValueError(f"breakpoints for {key!r}: expected at most {MAX_BREAKPOINTS}, got {len(points)}")
    if any(b <= a for a, b in itertools.pairwise(points)):
        raise ValueError(f"breakpoints for {key!r}: expected strictly increasing values, got {points}")
    if any(p != p or p in (float("inf"), float("-inf")) for p in points):
        raise ValueError(f"breakpoints for {key!r}: expected finite values, got {points}")


#: The op type of a capture point's layer: its values are the named tensor's, before and after.
CAPTURE_OP_TYPE = "identity"
MAX_CAPTURE_POINTS = 1_000


class CapturePoint(BaseModel):
    """A tensor of the model analysed as a layer with explicit breakpoints Γ, e.g. a Linear's
    output before its BatchNorm: ``{"tensor": "0", "breakpoints": [0.0]}``.

    ``tensor`` is a PyTorch module path (its output: the last tensor computed inside the module
    and used outside it; TorchScript, ``.pt2``, ONNX from the dynamo exporter), or a value name
    (an ONNX value or node name, a ``.pt2`` graph node, a TorchScript value's debug name). The
    layer is named ``name``, else ``tensor``; its op type is ``"identity"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensor: Annotated[str, Field(min_length=1, max_length=1_000)]
    breakpoints: list[float]
    name: Annotated[str, Field(min_length=1, max_length=1_000)] | None = None

    @property
    def layer_name(self) -> str:
        return self.name if self.name is not None else self.tensor

    @model_validator(mode="after")
    def _breakpoints_valid(self) -> CapturePoint:
        _check_breakpoints(f"capture point {self.layer_name}", self.breakpoints)
        return self


#: Whether ``transition_density.converged`` is on by default: off, since on trained nets it costs
#: 25-50 times TD at 512 points (digits, 9 × 256 + BatchNorm: ~1.2 s a ReLU pair, docs/paper.md);
#: a saturated TD at k warns and points at it.
CONVERGED_DEFAULT = False


class TransitionDensityConfig(BaseModel):
    """Transition density along straight lines between pairs of inputs (Novak et al. 2018).

    ``points`` is the number of equidistant points on each segment, both endpoints included
    (the paper's k + 1; the paper uses 512).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs: PairSpec = PairSample(count=100, seed=0)
    points: Annotated[int, Field(ge=2, le=100_000)] = 512
    converged: bool = Field(
        CONVERGED_DEFAULT,
        description="Also count TD in the limit k -> infinity (every region boundary a path crosses), "
        "refining the points grid: an exact region-to-region walk for piecewise-linear networks, "
        "adaptive bisection otherwise.",
    )
    converged_tolerance: Annotated[float, Field(gt=0.0, le=1e-3)] = Field(
        1e-6, description="Shortest step the converged count bisects to, as a share of the path."
    )
    converged_max_points: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        20_000,
        description="Points evaluated per path beyond the points grid, after which its converged count "
        "stops, flagged incomplete (a lower bound).",
    )

    _check_pairs = field_validator("pairs")(_check_explicit_pairs)

    @model_validator(mode="after")
    def _converged_limits(self) -> TransitionDensityConfig:
        if self.converged_tolerance >= 1.0 / (self.points - 1):
            raise ValueError(
                f"converged_tolerance: expected less than one step of the grid (1 / {self.points - 1}), "
                f"got {self.converged_tolerance}"
            )
        return self


class AnalysisConfig(BaseModel):
    """Everything an analysis can be told. Defaults are the paper's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    breakpoints: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Breakpoints Γ keyed by canonical op type (e.g. 'relu', 'sigmoid') or by layer "
        "name; a layer name wins over its op type, which wins over DEFAULT_BREAKPOINTS (in post space: "
        "their images through the activation). In post space a breakpoint outside the activation's "
        "range of values is an error.",
    )
    space: Literal["pre", "post"] = Field(
        "pre",
        description="Apply Γ to pre-activation values z(x; θ) (the paper) or to post-activation values "
        "(default Γ mapped through the activation, so a monotone one gives the same regions).",
    )
    layers: list[str] | None = Field(
        None,
        description="Analyse only these layers (activation layers found and capture points, by name); "
        "null means every one found and every capture point.",
    )
    capture_points: Annotated[list[CapturePoint], Field(max_length=MAX_CAPTURE_POINTS)] = Field(
        default_factory=list,
        description="Tensors analysed as layers besides the activations found, each with its own Γ "
        "(e.g. a Linear's output before BatchNorm), named by module path or value name.",
    )
    pairs: PairSpec = "all"
    transition_density: TransitionDensityConfig | None = Field(
        default_factory=TransitionDensityConfig, description="null skips transition density."
    )
    lambdas: list[float] = Field(default_factory=default_lambdas, description="The λ grid of PS_D(λ).")
    dying_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.9,
        description="A neuron is dying when its dominant region holds at least this share of samples; "
        "dead when it holds all of them.",
    )
    labels: Literal["dataset", "predicted"] = Field(
        "dataset",
        description="Use the dataset's y, or the model's predicted class (also used when y is absent).",
    )
    batch_size: Annotated[int, Field(gt=0, le=65_536)] = 256
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, description="Seed for every random choice the config does not seed itself.")
    max_neuron_indices: Annotated[int, Field(ge=0, le=100_000)] = Field(
        100, description="At most this many dead / dying neuron indices listed per layer."
    )

    @field_validator("breakpoints")
    @classmethod
    def _breakpoints_sorted(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for key, points in value.items():
            _check_breakpoints(key, points)
        return value

    @field_validator("lambdas")
    @classmethod
    def _lambdas_in_range(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("lambdas: expected at least one value, got []")
        if any(not 0.0 <= v <= 1.0 for v in value):
            raise ValueError(f"lambdas: expected values in [0, 1], got {value}")
        return sorted(value)

    _check_pairs = field_validator("pairs")(_check_explicit_pairs)

    @model_validator(mode="after")
    def _layers_unique(self) -> AnalysisConfig:
        if self.layers is not None:
            if not self.layers:
                raise ValueError("layers: expected null or at least one layer name, got []")
            if len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers: expected unique names, got {self.layers}")
        return self

    @model_validator(mode="after")
    def _capture_points_named_once(self) -> AnalysisConfig:
        names = [point.layer_name for point in self.capture_points]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"capture_points: expected unique layer names, got {repeated} more than once")
        if self.layers is not None:
            left_out = [name for name in names if name not in self.layers]
            if left_out:
                raise ValueError(
                    f"capture_points: expected every capture point among layers {self.layers} when "
                    f"layers is set, got {left_out} left out"
                )
        return self

    @model_validator(mode="after")
    def _post_breakpoints_in_range(self) -> AnalysisConfig:
        if self.space == "post":
            for key, points in self.breakpoints.items():
                problem = out_of_range(key, points)
                if problem is not None:
                    raise ValueError(f"breakpoints for {key!r}: {problem}")
        return self

    def breakpoints_for(
        self,
        layer_name: str,
        op_type: str,
        fallback: list[float] | None = None,
        params: Mapping[str, float] | None = None,
    ) -> list[float]:
        """Γ for one layer: by layer name, else by op type, else the default (``fallback``, the
        layer's own pre-space default, else :data:`DEFAULT_BREAKPOINTS`), mapped into post space
        when ``space`` is ``"post"`` through the activation with the layer's own ``params``."""
        if layer_name in self.breakpoints:
            return list(self.breakpoints[layer_name])
        if op_type in self.breakpoints:
            return list(self.breakpoints[op_type])
        default = list(fallback) if fallback is not None else list(DEFAULT_BREAKPOINTS.get(op_type, [0.0]))
        return post_breakpoints(op_type, default, params) if self.space == "post" else default
