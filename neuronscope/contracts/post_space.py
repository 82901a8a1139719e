"""Breakpoints Γ in post-activation space: default Γ mapped through the activation, and the range
of values an activation can take, against which a user's post-space Γ is checked.

Region ``r`` is ``(γ_r, γ_{r+1}]``: a value's region is the number of breakpoints strictly below it.
For a non-decreasing activation ``f`` and a pre-space breakpoint ``γ``, ``z <= γ`` implies
``f(z) <= f(γ)``, and ``z > γ`` implies ``f(z) > f(γ)`` wherever ``f`` rises right of ``γ``; so the
image ``f(γ)`` splits post values exactly as ``γ`` splits pre values. Where ``f`` is constant right
of ``γ`` (ReLU6 at 6, Hardtanh and Clip at their max, HardSigmoid at 3) every ``z >= γ`` gives the
same ``f(γ)``; the post breakpoint is then the largest float below ``f(γ)``, so the saturated
region stays apart from the linear one (only ``z == γ`` exactly, a set of measure zero, moves up
one region). Monotone activations (ReLU, LeakyReLU, PReLU with a positive slope, ELU, SELU, CELU,
Softplus, Sigmoid, Tanh, HardSigmoid, ReLU6, Hardtanh, Clip) thus give the same regions in both
spaces.

Non-monotone activations: GELU, SiLU and Mish keep the sign of their input (``f(z) < 0`` for
``z < 0``, ``f(0) = 0``, ``f(z) > 0`` for ``z > 0``), so their default ``{0}`` maps to ``{0}`` and the
two regions are again the same in both spaces; a user's Γ with other values cannot match, since
the dip below 0 is reached from two sides. HardSwish's kinks ``{-3, 3}`` map to ``{0, 3}``: its
flat part (``z <= -3``, value 0) and its dip (``-3 < z <= 0``, values in ``[-0.375, 0]``) share
post region 0, since a post value alone cannot tell which side of the dip it came from; regions
1 and 2 (``z`` in ``(0, 3]`` and above 3) are the same as in pre space. A PReLU with a negative
learned slope is not monotone either; its ``{0}`` still maps to ``{0}``.

Example:
    >>> post_breakpoints("relu6", [0.0, 6.0])
    [0.0, 5.999999999999999]
    >>> [round(b, 4) for b in post_breakpoints("sigmoid", [-0.5, 0.0, 0.5])]
    [0.3775, 0.5, 0.6225]
    >>> VALUE_RANGES["sigmoid"].admits(0.0), VALUE_RANGES["relu"].admits(0.0)
    (False, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ValueRange:
    """The values an activation can take, from ``low`` to ``high`` (each end attained or not).

    A breakpoint splits these values only if some value lies at or below it and some above it:
    it must lie in ``[low, high)`` when ``low`` is attained, ``(low, high)`` otherwise.
    """

    low: float
    high: float
    low_attained: bool

    def admits(self, breakpoint: float) -> bool:
        above_low = breakpoint >= self.low if self.low_attained else breakpoint > self.low
        return above_low and breakpoint < self.high

    def describe(self) -> str:
        """The admissible breakpoints as an interval, e.g. ``(0, 1)`` or ``[0, inf)``."""
        return f"{'[' if self.low_attained else '('}{self.low:g}, {self.high:g})"


_INF = math.inf

#: The range of each op type whose range does not depend on parameters the config cannot see
#: (ELU's and CELU's alpha, LeakyReLU's and PReLU's slope, Clip's bounds are left out; a Clip
#: layer's bounds are known once the model is open). GELU, SiLU and Mish minima are rounded down
#: (GELU's covers its tanh approximation too).
VALUE_RANGES: dict[str, ValueRange] = {
    "relu": ValueRange(0.0, _INF, True),
    "relu6": ValueRange(0.0, 6.0, True),
    "hardtanh": ValueRange(-1.0, 1.0, True),
    "sigmoid": ValueRange(0.0, 1.0, False),
    "hard_sigmoid": ValueRange(0.0, 1.0, True),
    "tanh": ValueRange(-1.0, 1.0, False),
    "softplus": ValueRange(0.0, _INF, False),
    "selu": ValueRange(-1.0507009873554805 * 1.6732632423543772, _INF, False),
    "gelu": ValueRange(-0.1701, _INF, True),
    "silu": ValueRange(-0.2785, _INF, True),
    "mish": ValueRange(-0.3089, _INF, True),
    "hardswish": ValueRange(-0.375, _INF, True),
}


#: A layer's own parameters, as the capture front ends read them: ``alpha``/``beta`` of HardSigmoid
#: (``clamp(alpha·z + beta, 0, 1)``), ``beta``/``threshold`` of Softplus, ``alpha`` of LeakyReLU
#: (its negative slope), ELU and CELU. Missing keys take the op's usual defaults.
Params = Mapping[str, float]

#: PyTorch's and the pre-space defaults' HardSigmoid: kinks at -3 and 3.
_HARD_SIGMOID = {"alpha": 1.0 / 6.0, "beta": 0.5}


def hard_sigmoid_kinks(params: Params | None = None) -> list[float]:
    """HardSigmoid's two kinks ``(0 - beta) / alpha`` and ``(1 - beta) / alpha`` (ONNX's defaults
    alpha 0.2, beta 0.5 give ±2.5; PyTorch's ±3).

    >>> hard_sigmoid_kinks({"alpha": 0.2, "beta": 0.5}), hard_sigmoid_kinks()
    ([-2.5, 2.5], [-3.0, 3.0])
    """
    alpha, beta = _hard_sigmoid(params)
    return [(0.0 - beta) / alpha, (1.0 - beta) / alpha]


def _hard_sigmoid(params: Params | None) -> tuple[float, float]:
    given = params or {}
    return float(given.get("alpha", _HARD_SIGMOID["alpha"])), float(given.get("beta", _HARD_SIGMOID["beta"]))


def value_range(
    op_type: str, bounds: Sequence[float] | None = None, params: Params | None = None
) -> ValueRange | None:
    """The range of ``op_type``'s values; a ``clip`` layer's from its ``bounds`` ``(min, max)``, an
    ELU's or CELU's from its ``alpha``, a LeakyReLU's from its slope; ``None`` where it is not
    known."""
    if op_type == "clip":
        return ValueRange(bounds[0], bounds[-1], True) if bounds is not None and len(bounds) == 2 else None
    if params and op_type in ("elu", "celu") and "alpha" in params and params["alpha"] > 0:
        return ValueRange(-float(params["alpha"]), _INF, False)
    if params and op_type == "leaky_relu" and "alpha" in params:
        return VALUE_RANGES["relu"] if params["alpha"] == 0 else ValueRange(-_INF, _INF, False)
    return VALUE_RANGES.get(op_type)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _clamp(low: float, high: float) -> Callable[[float], float]:
    return lambda z: min(max(z, low), high)


#: Activations whose image of a default breakpoint is not the breakpoint itself (every other
#: op type maps its default ``{0}`` to ``{0}``), with the pre value right of which each is constant.
_IMAGES: dict[str, tuple[Callable[[float], float], float]] = {
    "sigmoid": (_sigmoid, _INF),
    "tanh": (math.tanh, _INF),
    "softplus": (_softplus, _INF),
    "hard_sigmoid": (lambda z: min(max(z / 6.0 + 0.5, 0.0), 1.0), 3.0),
    "relu6": (_clamp(0.0, 6.0), 6.0),
    "hardtanh": (_clamp(-1.0, 1.0), 1.0),
    "hardswish": (lambda z: z * min(max(z + 3.0, 0.0), 6.0) / 6.0, _INF),
}


def _parametrised(op_type: str, params: Params | None) -> tuple[Callable[[float], float], float] | None:
    """The image and flat-from point of an op whose ``params`` change them, else ``None``."""
    if not params:
        return None
    if op_type == "hard_sigmoid":
        alpha, beta = _hard_sigmoid(params)
        return (lambda z: min(max(alpha * z + beta, 0.0), 1.0)), (1.0 - beta) / alpha
    if op_type == "softplus":
        beta, threshold = float(params.get("beta", 1.0)), float(params.get("threshold", 20.0))
        return (lambda z: z if beta * z > threshold else _softplus(beta * z) / beta), _INF
    return None


def post_breakpoints(op_type: str, pre: Sequence[float], params: Params | None = None) -> list[float]:
    """Default pre-space breakpoints ``pre`` of ``op_type`` mapped into post space (see the module
    docstring); a ``clip`` layer's ``pre`` are its own bounds ``[min, max]``; ``params`` are the
    layer's own (HardSigmoid's alpha and beta, Softplus's beta and threshold), else PyTorch's
    defaults.

    Example:
        >>> post_breakpoints("softplus", [0.0]), post_breakpoints("gelu", [0.0])
        ([0.6931471805599453], [0.0])
        >>> post_breakpoints("clip", [-2.0, 3.0]), post_breakpoints("hard_sigmoid", [-3.0, 3.0])
        ([-2.0, 2.9999999999999996], [0.0, 0.9999999999999999])
    """
    custom = _parametrised(op_type, params)
    if op_type == "clip" and len(pre) == 2:
        image, flat_from = _clamp(pre[0], pre[1]), pre[1]
    elif custom is not None:
        image, flat_from = custom
    elif op_type in _IMAGES:
        image, flat_from = _IMAGES[op_type]
    else:
        return list(pre)
    mapped = [math.nextafter(image(b), -_INF) if b >= flat_from else image(b) for b in pre]
    return sorted(set(mapped))


def out_of_range(
    op_type: str,
    breakpoints: Sequence[float],
    bounds: Sequence[float] | None = None,
    params: Params | None = None,
) -> str | None:
    """Why ``breakpoints`` cannot split ``op_type``'s post-activation values, or ``None``."""
    allowed = value_range(op_type, bounds, params)
    if allowed is None:
        return None
    outside = [b for b in breakpoints if not allowed.admits(b)]
    if not outside:
        return None
    return (
        f"expected post-activation breakpoints of {op_type} in {allowed.describe()} (its range of "
        f"values), got {list(breakpoints)} ({outside} outside)"
    )
