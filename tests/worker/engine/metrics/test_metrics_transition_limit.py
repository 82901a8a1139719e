"""The converged transition count against brute force at 200,000 points per path, and its
invariants: never below TD at k, a bounded walk that stops flagged, checked inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from worker.engine.errors import AnalysisError
from worker.engine.metrics.transition import TransitionCounter, interpolation_points
from worker.engine.metrics.transition_limit import ADAPTIVE, EXACT, MIXED, converged_transitions

BRUTE_POINTS = 200_000

Values = Callable[[torch.Tensor], list[torch.Tensor]]


def _coder(breakpoints: Sequence[np.ndarray]) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    bounds = [torch.as_tensor(g, dtype=torch.float32) for g in breakpoints]

    def code(values: list[torch.Tensor]) -> torch.Tensor:
        coded = [torch.bucketize(v, b, right=False) for v, b in zip(values, bounds, strict=True)]
        return torch.cat(coded, 1).to(torch.uint8)

    return code


def _evaluator(
    values: Values, ends: torch.Tensor, breakpoints: Sequence[np.ndarray]
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Points at ``t`` on the paths ``ends[p, 0] -> ends[p, 1]`` (the formula of
    ``interpolation_points``), through ``values``."""
    code = _coder(breakpoints)

    def evaluate(path: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, end = ends[torch.from_numpy(path), 0], ends[torch.from_numpy(path), 1]
        w = torch.from_numpy(t).to(start.dtype).reshape(-1, *([1] * (start.ndim - 1)))
        points = torch.where(w < 0.5, start + w * (end - start), end - (end - start) * (1 - w))
        with torch.no_grad():
            layers = values(points)
        flat = [v.reshape(v.shape[0], -1) for v in layers]
        return torch.cat(flat, 1).double().numpy(), code(flat).numpy()

    return evaluate


def _brute_force(
    values: Values, ends: torch.Tensor, breakpoints: Sequence[np.ndarray], points: int
) -> tuple[list[int], list[int]]:
    code = _coder(breakpoints)
    td, changes = [], []
    for start, end in ends:
        counter = TransitionCounter()
        for first in range(0, points, 50_000):
            chunk = interpolation_points(start, end, points, first, min(first + 50_000, points))
            with torch.no_grad():
                counter.update([code([v.reshape(v.shape[0], -1) for v in values(chunk)])])
        td.append(counter.transitions)
        changes.append(counter.neuron_changes)
    return td, changes


def _mlp(activation: type[nn.Module], seed: int = 0) -> tuple[nn.Sequential, Values]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 24), activation(), nn.Linear(24, 24), activation(), nn.Linear(24, 3))

    def values(x: torch.Tensor) -> list[torch.Tensor]:
        first = net[0](x)
        return [first, net[2](net[1](first))]

    return net, values


def _paths(shape: tuple[int, ...], count: int, scale: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 2, *shape, generator=generator) * scale


def test_the_exact_walk_on_a_relu_mlp_equals_brute_force_at_200000_points() -> None:
    _, values = _mlp(nn.ReLU)
    ends = _paths((8,), 4, 3.0)
    gamma = [np.array([0.0])] * 2
    result = converged_transitions(_evaluator(values, ends, gamma), 4, gamma, [24, 24], exact=True, grid=64)

    td, changes = _brute_force(values, ends, gamma, BRUTE_POINTS)
    assert result.td.tolist() == td and result.neuron_changes.tolist() == changes
    assert min(td) > 10  # paths that cross many boundaries
    assert result.complete.all() and result.unresolved.sum() == 0
    assert (result.methods == EXACT).all() and result.exact_steps.sum() == sum(td)
    assert result.points.max() < BRUTE_POINTS // 100  # a few points per boundary


def test_the_exact_walk_on_a_leaky_relu_relu6_conv_net_equals_brute_force() -> None:
    torch.manual_seed(3)
    conv1, conv2 = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv2.weight.mul_(20.0)  # pre-activations reach ReLU6's upper kink

    def values(x: torch.Tensor) -> list[torch.Tensor]:
        first = conv1(x)
        return [first, conv2(nn.functional.leaky_relu(first, 0.1))]

    ends = _paths((1, 6, 6), 3, 2.0)
    gamma = [np.array([0.0]), np.array([0.0, 6.0])]
    result = converged_transitions(_evaluator(values, ends, gamma), 3, gamma, [48, 8], exact=True, grid=32)

    td, changes = _brute_force(values, ends, gamma, BRUTE_POINTS)
    assert result.td.tolist() == td and result.neuron_changes.tolist() == changes
    assert result.complete.all() and (result.methods == EXACT).all()
    with torch.no_grad():
        top = conv2(nn.functional.leaky_relu(conv1(interpolation_points(ends[0, 0], ends[0, 1], 512)), 0.1))
    assert bool((top > 6).any()) and bool((top < 6).any())  # the path crosses the kink at 6


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.Tanh])
def test_adaptive_refinement_on_a_smooth_net_equals_brute_force(activation: type[nn.Module]) -> None:
    _, values = _mlp(activation, seed=2)
    ends = _paths((8,), 3, 3.0)
    gamma = [np.array([-0.5, 0.0, 0.5])] * 2
    result = converged_transitions(_evaluator(values, ends, gamma), 3, gamma, [24, 24], exact=False, grid=64)

    td, changes = _brute_force(values, ends, gamma, BRUTE_POINTS)
    assert result.td.tolist() == td and result.neuron_changes.tolist() == changes
    assert (result.methods == ADAPTIVE).all() and result.exact_steps.sum() == 0


@pytest.mark.parametrize("exact", [True, False])
def test_converged_td_is_never_below_td_at_k(exact: bool) -> None:
    _, values = _mlp(nn.ReLU, seed=4)
    ends = _paths((8,), 5, 4.0, seed=5)
    gamma = [np.array([0.0])] * 2
    result = converged_transitions(_evaluator(values, ends, gamma), 5, gamma, [24, 24], exact=exact, grid=16)

    for points in (16, 64):
        td, changes = _brute_force(values, ends, gamma, points)
        assert (result.td >= np.array(td)).all() and (result.neuron_changes >= np.array(changes)).all()
    assert (result.td > np.array(_brute_force(values, ends, gamma, 16)[0])).any()  # k = 15 misses some


def test_a_step_that_is_not_affine_falls_back_to_bisection() -> None:
    # The hidden layer's ReLU is not analysed: its kinks bend the analysed values between
    # breakpoint crossings, so the walk's affine check fails and those steps are bisected. Regions
    # are then no longer convex: a neuron that leaves and re-enters within one grid step is missed,
    # so the count lies between TD at k and brute force, and meets brute force on a finer grid.
    torch.manual_seed(6)
    hidden, out = nn.Linear(8, 24), nn.Linear(24, 12)

    def values(x: torch.Tensor) -> list[torch.Tensor]:
        return [out(torch.relu(hidden(x)))]

    ends = _paths((8,), 3, 3.0, seed=7)
    gamma = [np.array([0.0])]
    evaluate = _evaluator(values, ends, gamma)
    coarse = converged_transitions(evaluate, 3, gamma, [12], exact=True, grid=64)
    fine = converged_transitions(evaluate, 3, gamma, [12], exact=True, grid=512)

    brute = np.array(_brute_force(values, ends, gamma, BRUTE_POINTS)[0])
    assert (coarse.methods == MIXED).any() and coarse.bisected_steps.sum() > 0
    assert (np.array(_brute_force(values, ends, gamma, 64)[0]) <= coarse.td).all()
    assert (coarse.td <= brute).all()
    assert fine.td.tolist() == brute.tolist()


def test_a_path_that_reaches_its_bound_stops_flagged_with_a_lower_bound() -> None:
    _, values = _mlp(nn.ReLU)
    ends = _paths((8,), 2, 3.0)
    gamma = [np.array([0.0])] * 2
    evaluate = _evaluator(values, ends, gamma)
    full = converged_transitions(evaluate, 2, gamma, [24, 24], exact=True, grid=8)
    bounded = converged_transitions(evaluate, 2, gamma, [24, 24], exact=True, grid=8, max_points=12)

    assert full.complete.all() and not bounded.complete.any()
    assert (bounded.points <= 12).all() and (bounded.td <= full.td).all()


@pytest.mark.parametrize("exact", [True, False])
def test_paths_refined_in_windows_give_the_whole_paths_counts(
    exact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.engine.metrics import transition_limit

    _, values = _mlp(nn.ReLU, seed=8)
    ends = _paths((8,), 3, 3.0, seed=9)
    gamma = [np.array([0.0])] * 2
    evaluate = _evaluator(values, ends, gamma)
    whole = converged_transitions(evaluate, 3, gamma, [24, 24], exact=exact, grid=64)
    monkeypatch.setattr(transition_limit, "HOLD_BYTES", 10 * 5 * 48)  # windows of 10 grid points
    windowed = converged_transitions(evaluate, 3, gamma, [24, 24], exact=exact, grid=64)

    assert windowed.passes > whole.passes
    for name in ("td", "neuron_changes", "points", "exact_steps", "bisected_steps"):
        assert getattr(windowed, name).tolist() == getattr(whole, name).tolist(), name


def test_a_path_without_boundaries_costs_its_grid_only() -> None:
    def evaluate(path: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.ones((len(t), 3))
        return z, (z > 0).astype(np.uint8)

    result = converged_transitions(evaluate, 2, [np.array([0.0])], [3], exact=True, grid=5)
    assert result.td.tolist() == [0, 0] and result.points.tolist() == [5, 5] and result.passes == 1


def test_arguments_and_evaluations_are_checked() -> None:
    def evaluate(path: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(t), 2)), np.zeros((len(t), 3), dtype=np.uint8)

    def evaluate2(path: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(t), 3)), np.zeros((len(t), 3), dtype=np.uint8)

    with pytest.raises(AnalysisError, match=r"expected \[5, M\] values and regions"):
        converged_transitions(evaluate, 1, [np.array([0.0])], [3], exact=True, grid=5)
    with pytest.raises(AnalysisError, match="expected 2 neurons from evaluate, got 3"):
        converged_transitions(evaluate2, 1, [np.array([0.0])], [2], exact=True, grid=5)
    with pytest.raises(AnalysisError, match="max_points >= grid"):
        converged_transitions(evaluate, 1, [np.array([0.0])], [3], exact=True, grid=5, max_points=4)
    with pytest.raises(AnalysisError, match="tolerance < 1 / \\(grid - 1\\)"):
        converged_transitions(evaluate, 1, [np.array([0.0])], [3], exact=True, grid=5, tolerance=0.5)
