"""Transition density in the limit k → ∞ (eq. 24): every activation-region boundary a segment crosses.

TD at ``k + 1`` equidistant points (:mod:`worker.engine.metrics.transition`) counts the steps
whose end patterns differ, so it can never exceed ``k`` and, on trained networks, mostly measures
``k``. This module counts the boundaries themselves, from forward passes of the model alone (any
front end): a callable maps positions ``t ∈ [0, 1]`` on paths to the coded values of every
analysed neuron and their region indices.

Each path starts from a grid of equidistant points (the TD-at-k grid, so the converged count is
never below TD at k); every grid step whose end patterns differ is then refined on its own, all
steps of a group of paths in lockstep rounds, one batched evaluation per round:

* **exact walk** (every analysed layer piecewise linear, every kink a breakpoint): the network
  is affine inside one activation region and each region meets a segment in one interval (it is a
  convex polyhedron), so equal end patterns mean no boundary between them. From two points of the
  current region the values are ``z(t) = z_a + (t - t_a) s`` and the next boundary is the smallest
  ``t`` at which some neuron reaches a breakpoint of its layer, in closed form. The walk evaluates
  a point just before it (it must lie on the line and in the region), one just past it (its
  pattern must differ from the region's by exactly the predicted neurons, in the predicted
  regions) and one further on (a point of the next region, or a tighter bracket); a step that
  fails verification is resolved by bisection instead.
* **adaptive refinement** (smooth activations, and failed exact steps): bisect every step whose
  end patterns differ until they differ in at most one neuron, or the step is shorter than
  ``tolerance``; a step at the tolerance that changes several neurons counts once and is reported
  as unresolved.

Every path's work is bounded (``max_points`` evaluations); a path that reaches the bound stops,
flagged incomplete, with the boundaries found so far (a lower bound).

Example (one ReLU neuron ``z = 2t - 1`` on one path: one boundary)::

    def line(path, t):
        z = (2 * t - 1)[:, None]
        return z, (z > 0).astype(np.uint8)

    result = converged_transitions(line, 1, [np.array([0.0])], [1], exact=True, grid=4)
    assert result.td.tolist() == [1] and result.complete.all()
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.engine.errors import AnalysisError

#: Op types whose activation is affine between consecutive kinks (their default Γ holds the kinks).
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu", "prelu", "relu6", "hardtanh", "clip", "hard_sigmoid"})

#: ``evaluate(path, t)``: ``[Q]`` int64 path indices and ``[Q]`` float64 positions in ``[0, 1]`` to
#: (``[Q, M]`` coded values, ``[Q, M]`` uint8 region indices) over all analysed neurons.
Evaluate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

#: Method codes per path: every step found by the verified walk, adaptive refinement only, both.
EXACT, ADAPTIVE, MIXED = 0, 1, 2
METHOD_NAMES = ("exact", "adaptive", "mixed")

#: Largest deviation from the region's line, relative to the point's largest value, at which a
#: value still counts as affine (float32 models extrapolate their own rounding up to ~1e-5).
AFFINE_RTOL = 1e-3
#: Bytes of grid values (float32) and regions (uint8) held at once: the grid points of whole paths
#: up to this size are refined together, longer paths in windows of it.
HOLD_BYTES = 64 * 2**20
#: Value error of a float32 model, relative to the largest value of a point: a step must move the
#: crossing neuron past its breakpoint by more than this to be seen there.
_NOISE = 64 * float(np.finfo(np.float32).eps)
#: Walk steps in a row that land short of the predicted boundary before the step is bisected.
_RETRIES = 4


@dataclass(frozen=True)
class LimitResult:
    """Per path (``[P]`` arrays): converged TD, neuron changes, steps at the tolerance that changed
    several neurons, steps found by the walk and by bisection, points evaluated, whether the walk
    finished within its bound; and the forward passes (evaluate calls) over all paths."""

    td: np.ndarray
    neuron_changes: np.ndarray
    unresolved: np.ndarray
    exact_steps: np.ndarray
    bisected_steps: np.ndarray
    points: np.ndarray
    complete: np.ndarray
    exact: bool
    passes: int

    @property
    def methods(self) -> np.ndarray:
        """``[P]`` int8 :data:`EXACT` / :data:`ADAPTIVE` / :data:`MIXED` per path."""
        if not self.exact:
            return np.full(self.td.shape, ADAPTIVE, dtype=np.int8)
        return np.where(self.bisected_steps > 0, MIXED, EXACT).astype(np.int8)


@dataclass
class _Point:
    t: float
    z: np.ndarray
    p: np.ndarray


@dataclass
class _Counts:
    td: int = 0
    changes: int = 0
    unresolved: int = 0
    exact: int = 0
    bisected: int = 0
    points: int = 0
    refined: int = 0


@dataclass
class _Segment:
    """One grid step being refined: the current region's first known point ``a``, a second point
    ``b`` of the same region (or None), a right bracket ``r`` in another region, the step's end;
    in bisection, the pending intervals and where the walk resumes after them."""

    path: int
    a: _Point
    r: _Point
    end: _Point
    b: _Point | None = None
    retries: int = 0
    stack: list[tuple[_Point, _Point]] = field(default_factory=list)
    resume: tuple[_Point, _Point] | None = None
    done: bool = False


@dataclass
class _Request:
    segment: _Segment
    tag: str
    t: float


class _Bounds:
    """Per-neuron breakpoint lookups: ``lower(r)`` / ``upper(r)`` of region ``r`` (±inf at the ends)."""

    def __init__(self, breakpoints: Sequence[np.ndarray], widths: Sequence[int]) -> None:
        padded = [np.concatenate([[-np.inf], np.asarray(g, dtype=np.float64), [np.inf]]) for g in breakpoints]
        starts = np.cumsum([0, *[len(p) for p in padded[:-1]]])
        self.flat = np.concatenate(padded)
        self.base = np.repeat(starts, widths).astype(np.int64)

    def lower(self, regions: np.ndarray) -> np.ndarray:
        values: np.ndarray = self.flat[self.base + regions.astype(np.int64)]
        return values

    def upper(self, regions: np.ndarray) -> np.ndarray:
        values: np.ndarray = self.flat[self.base + regions.astype(np.int64) + 1]
        return values


def converged_transitions(
    evaluate: Evaluate,
    paths: int,
    breakpoints: Sequence[np.ndarray],
    widths: Sequence[int],
    *,
    exact: bool,
    grid: int = 512,
    tolerance: float = 1e-6,
    max_points: int = 200_000,
    batch: int = 4096,
    progress: Callable[[float], None] | None = None,
) -> LimitResult:
    """Converged TD and neuron changes of ``paths`` paths (see the module docstring).

    Args:
        evaluate: :data:`Evaluate`; called with at most ``batch`` points at a time.
        paths: number of paths ``P``.
        breakpoints: Γ per analysed layer, strictly increasing.
        widths: neurons per layer (``M = sum(widths)``).
        exact: walk region to region (piecewise-linear networks) rather than bisect only.
        grid: equidistant starting points per path (``k + 1 >= 2``).
        tolerance: shortest step bisection makes, as a share of the path.
        max_points: evaluations per path (grid included) after which the path stops, incomplete.
        batch: most points per evaluate call.
        progress: called with the share of grid points done after each group of them.

    Returns:
        :class:`LimitResult`.

    Raises:
        AnalysisError: arguments out of range, or ``evaluate`` returning other shapes.
    """
    layer_widths = list(widths)
    _check(paths, breakpoints, layer_widths, grid, tolerance, max_points, batch)
    walker = _Walker(evaluate, breakpoints, layer_widths, exact, grid, tolerance, max_points, batch)
    counts = [_Counts() for _ in range(paths)]
    complete = np.ones(paths, dtype=bool)
    chunks = _chunks(paths, grid, max(2, HOLD_BYTES // (5 * max(sum(layer_widths), 1))))
    carried: dict[int, _Point] = {}
    for done, chunk in enumerate(chunks, 1):
        walker.run(chunk, carried, counts, complete)
        if progress is not None:
            progress(done / len(chunks))
    return LimitResult(
        td=np.array([c.td for c in counts], dtype=np.int64),
        neuron_changes=np.array([c.changes for c in counts], dtype=np.int64),
        unresolved=np.array([c.unresolved for c in counts], dtype=np.int64),
        exact_steps=np.array([c.exact for c in counts], dtype=np.int64),
        bisected_steps=np.array([c.bisected for c in counts], dtype=np.int64),
        points=np.array([c.points for c in counts], dtype=np.int64),
        complete=complete,
        exact=exact,
        passes=walker.passes,
    )


def _chunks(paths: int, grid: int, hold: int) -> list[list[tuple[int, int, int]]]:
    """Windows ``(path, first, last)`` of grid indices refined together: whole paths, as many as
    fit in ``hold`` grid points, or one path's windows of ``hold`` points (sharing their ends)."""
    if grid <= hold:
        per = hold // grid
        return [[(p, 0, grid - 1) for p in range(s, min(s + per, paths))] for s in range(0, paths, per)]
    return [
        [(p, first, min(first + hold - 1, grid - 1))]
        for p in range(paths)
        for first in range(0, grid - 1, hold - 1)
    ]


def _check(
    paths: int,
    breakpoints: Sequence[np.ndarray],
    widths: list[int],
    grid: int,
    tolerance: float,
    max_points: int,
    batch: int,
) -> None:
    problems = []
    if paths < 0:
        problems.append(f"paths >= 0, got {paths}")
    if not breakpoints or len(widths) != len(breakpoints):
        problems.append(f"one Γ per layer (at least one), got {len(breakpoints)} for widths {widths}")
    if grid < 2 or not 0.0 < tolerance < 1.0 / (grid - 1) or batch < 1:
        problems.append(
            f"grid >= 2, 0 < tolerance < 1 / (grid - 1), batch >= 1; got {grid=}, {tolerance=}, {batch=}"
        )
    if max_points < grid:
        problems.append(f"max_points >= grid ({grid}), got {max_points}")
    if problems:
        raise AnalysisError("converged transition density: expected " + "; ".join(problems))


class _Walker:
    def __init__(
        self,
        evaluate: Evaluate,
        breakpoints: Sequence[np.ndarray],
        widths: list[int],
        exact: bool,
        grid: int,
        tolerance: float,
        max_points: int,
        batch: int,
    ) -> None:
        self.evaluate = evaluate
        self.breakpoints = breakpoints
        self.widths = widths
        self.bounds = _Bounds(breakpoints, widths)
        self.exact = exact
        self.grid = grid
        self.tolerance = tolerance
        self.max_points = max_points
        self.batch = batch
        self.passes = 0
        self.steps = np.arange(grid, dtype=np.float64) / (grid - 1)

    def _index(self, point: _Point) -> int:
        return round(point.t * (self.grid - 1))

    def run(
        self,
        windows: list[tuple[int, int, int]],
        carried: dict[int, _Point],
        counts: list[_Counts],
        complete: np.ndarray,
    ) -> None:
        """Refine the grid steps of ``windows`` to the end (or their paths' bound); ``carried``
        holds each path's last grid point of its previous window, and is updated."""
        windows = [w for w in windows if complete[w[0]]]
        held = {path: self._index(point) for path, point in carried.items()}
        asked = [
            (path, i) for path, first, last in windows for i in range(first, last + 1) if held.get(path) != i
        ]
        if not asked:
            return
        values, regions = self._points(
            np.array([path for path, _ in asked], dtype=np.int64), self.steps[[i for _, i in asked]]
        )
        found: dict[tuple[int, int], _Point] = {}
        for row, (path, i) in enumerate(asked):
            counts[path].points += 1
            found[path, i] = _Point(float(self.steps[i]), values[row], regions[row])
        segments: list[_Segment] = []
        for path, first, last in windows:
            points = [
                carried[path] if (path, i) not in found else found[path, i] for i in range(first, last + 1)
            ]
            if last < self.grid - 1:
                carried[path] = points[-1]
            else:
                carried.pop(path, None)
            for left, right in itertools.pairwise(points):
                if np.array_equal(left.p, right.p):
                    continue
                segment = _Segment(path, left, right, right)
                if not self.exact:
                    segment.stack.append((left, right))
                segments.append(segment)
        active = [s for s in segments if not s.done]
        while active:
            requests = [r for s in active for r in self._propose(s, counts[s.path])]
            requests = self._within_bounds(requests, counts, complete)
            if requests:
                values, regions = self._points(
                    np.array([r.segment.path for r in requests], dtype=np.int64),
                    np.array([r.t for r in requests], dtype=np.float64),
                )
                answers: dict[int, dict[str, _Point]] = {}
                for row, request in enumerate(requests):
                    counts[request.segment.path].points += 1
                    counts[request.segment.path].refined += 1
                    point = _Point(request.t, values[row], regions[row])
                    answers.setdefault(id(request.segment), {})[request.tag] = point
                for segment in {id(r.segment): r.segment for r in requests}.values():
                    self._advance(segment, answers[id(segment)], counts[segment.path])
            active = [s for s in active if not s.done and complete[s.path]]

    def _points(self, paths: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, regions = [], []
        for start in range(0, len(t), self.batch):
            chunk = t[start : start + self.batch]
            z, p = self.evaluate(paths[start : start + self.batch], chunk)
            self.passes += 1
            if z.shape != p.shape or z.ndim != 2 or z.shape[0] != len(chunk):
                raise AnalysisError(
                    f"converged transition density: expected [{len(chunk)}, M] values "
                    f"and regions from evaluate, got {list(z.shape)} and {list(p.shape)}"
                )
            values.append(
                np.asarray(z, dtype=np.float32) if self.exact else np.empty((len(chunk), 0), np.float32)
            )
            regions.append(np.asarray(p, dtype=np.uint8))
            if z.shape[1] != sum(self.widths):
                raise AnalysisError(
                    f"converged transition density: expected {sum(self.widths)} neurons from evaluate, "
                    f"got {z.shape[1]}"
                )
        if len(values) == 1:
            return values[0], regions[0]
        return np.concatenate(values), np.concatenate(regions)

    def _within_bounds(
        self, requests: list[_Request], counts: list[_Counts], complete: np.ndarray
    ) -> list[_Request]:
        """The requests of paths that stay within ``max_points``; the other paths stop, incomplete."""
        asked: dict[int, int] = {}
        for request in requests:
            asked[request.segment.path] = asked.get(request.segment.path, 0) + 1
        for path, number in asked.items():
            if counts[path].refined + number > self.max_points - self.grid:
                complete[path] = False
        return [r for r in requests if complete[r.segment.path]]

    # -- one round of one segment -------------------------------------------------------------

    def _propose(self, segment: _Segment, counts: _Counts) -> list[_Request]:
        if segment.stack:
            return self._bisect(segment, counts)
        a, r, b = segment.a, segment.r, segment.b
        if b is None:
            return [_Request(segment, "probe", (a.t + r.t) / 2)]
        crossing = self._crossings(a, b)
        t1 = float(crossing.min())
        if not t1 < r.t:
            self._fall_back(segment, b, r)
            return self._propose(segment, counts) if not segment.done else []
        later = crossing[crossing > t1 + self.tolerance]
        t2 = float(later.min()) if later.size else np.inf
        first = int(crossing.argmin())
        slope = abs(float(b.z[first]) - float(a.z[first])) / (b.t - a.t)
        noise = _NOISE * max(float(np.abs(a.z).max()), float(np.abs(b.z).max()))
        delta = max(self.tolerance, 1e-4 * (t1 - a.t), noise / slope)
        delta = min(delta, max((t2 - t1) / 2, self.tolerance / 2), (r.t - t1) / 2)
        after = t1 + delta
        requests = [_Request(segment, "after", after), _Request(segment, "further", (after + r.t) / 2)]
        before = t1 - delta
        if before > b.t:
            requests.append(_Request(segment, "before", before))
        return requests

    def _advance(self, segment: _Segment, answers: dict[str, _Point], counts: _Counts) -> None:
        if segment.stack:
            self._split(segment, answers)
            return
        a, r = segment.a, segment.r
        if "probe" in answers:
            probe = answers["probe"]
            if np.array_equal(probe.p, a.p):
                segment.b = probe
            else:
                segment.r = probe
            self._settle(segment, counts)
            return
        b = segment.b
        assert b is not None
        after, further = answers["after"], answers["further"]
        before = answers.get("before")
        slope = _slope(a, b)
        if before is not None:
            line = a.z.astype(np.float64) + (before.t - a.t) * slope
            scale = AFFINE_RTOL * max(float(np.abs(a.z).max()), float(np.abs(before.z).max()), 1e-12)
            if not np.array_equal(before.p, a.p) or float(np.abs(before.z - line).max()) > scale:
                self._fall_back(segment, a, after, resume=(after, further))
                return
            segment.b = b = before
        if np.array_equal(after.p, a.p):
            segment.retries += 1
            if segment.retries > _RETRIES:
                self._fall_back(segment, after, r)
                return
            segment.b = after if not np.array_equal(further.p, a.p) else further
            if not np.array_equal(further.p, a.p):
                segment.r = further
            self._settle(segment, counts)
            return
        slope = _slope(a, b)
        crossing = self._crossings(a, b)
        group = crossing <= after.t
        predicted = a.p.astype(np.int16)
        predicted[group] += np.where(slope[group] > 0, 1, -1).astype(np.int16)
        if not group.any() or not np.array_equal(after.p, predicted):
            self._fall_back(segment, b, after, resume=(after, further))
            return
        counts.td += 1
        counts.changes += int(group.sum())
        counts.exact += 1
        self._enter(segment, after, further, counts)

    def _enter(self, segment: _Segment, point: _Point, further: _Point, counts: _Counts) -> None:
        """Continue the walk from ``point``, the first known point of a region; ``further`` lies
        between it and the bracket."""
        segment.a, segment.b, segment.retries = point, None, 0
        if further.t > point.t and further.t < segment.r.t:
            if np.array_equal(further.p, point.p):
                segment.b = further
            else:
                segment.r = further
        self._settle(segment, counts)

    def _settle(self, segment: _Segment, counts: _Counts) -> None:
        """Skip brackets in the current region (convexity), finish at the step's end, and resolve a
        bracket narrower than the tolerance."""
        while True:
            a, r = segment.a, segment.r
            if np.array_equal(a.p, r.p):
                if r is segment.end or r.t >= segment.end.t:
                    segment.done = True
                    return
                segment.a, segment.b, segment.r = r, None, segment.end
                continue
            if r.t - a.t <= self.tolerance:
                self._count_step(a, r, counts)
                segment.a, segment.b = r, None
                if r is segment.end or r.t >= segment.end.t:
                    segment.done = True
                    return
                segment.r = segment.end
                continue
            return

    def _fall_back(
        self,
        segment: _Segment,
        left: _Point,
        right: _Point,
        resume: tuple[_Point, _Point] | None = None,
    ) -> None:
        """Resolve ``left → right`` by bisection, then walk on from ``right`` (or ``resume``)."""
        segment.stack.append((left, right))
        segment.resume = resume if resume is not None else (right, right)
        segment.b = None

    def _bisect(self, segment: _Segment, counts: _Counts) -> list[_Request]:
        pending: list[tuple[_Point, _Point]] = []
        for left, right in segment.stack:
            differ = int(np.count_nonzero(left.p != right.p))
            if differ == 0:
                continue
            if differ == 1 or right.t - left.t <= self.tolerance:
                self._count_step(left, right, counts)
                continue
            pending.append((left, right))
        segment.stack = pending
        if not pending:
            self._resume(segment, counts)
            return [] if segment.done or segment.stack else self._propose(segment, counts)
        return [
            _Request(segment, f"mid{k}", (left.t + right.t) / 2) for k, (left, right) in enumerate(pending)
        ]

    def _split(self, segment: _Segment, answers: dict[str, _Point]) -> None:
        halves: list[tuple[_Point, _Point]] = []
        for k, (left, right) in enumerate(segment.stack):
            middle = answers[f"mid{k}"]
            halves += [(left, middle), (middle, right)]
        segment.stack = halves

    def _resume(self, segment: _Segment, counts: _Counts) -> None:
        if segment.resume is None:
            segment.done = True
            return
        point, further = segment.resume
        segment.resume = None
        self._enter(segment, point, further, counts)

    def _count_step(self, left: _Point, right: _Point, counts: _Counts) -> None:
        differ = int(np.count_nonzero(left.p != right.p))
        counts.td += 1
        counts.changes += differ
        counts.bisected += 1
        counts.unresolved += int(differ > 1)

    def _crossings(self, a: _Point, b: _Point) -> np.ndarray:
        """``[M]`` where each neuron's line through ``a`` and ``b`` leaves its region (inf: never,
        or not after ``b``)."""
        slope = _slope(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = a.t + (self.bounds.upper(a.p) - a.z) / slope
            down = a.t + (self.bounds.lower(a.p) - a.z) / slope
        times = np.where(slope > 0, up, np.where(slope < 0, down, np.inf))
        times = np.where(np.isfinite(times) & (times >= b.t), times, np.inf)
        return times


def _slope(a: _Point, b: _Point) -> np.ndarray:
    """``[M]`` float64 slope of the line through ``a`` and ``b`` per unit of path."""
    slope: np.ndarray = (b.z.astype(np.float64) - a.z) / (b.t - a.t)
    return slope


__all__ = [
    "ADAPTIVE",
    "EXACT",
    "METHOD_NAMES",
    "MIXED",
    "PIECEWISE_LINEAR",
    "Evaluate",
    "LimitResult",
    "converged_transitions",
]
