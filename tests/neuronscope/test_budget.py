"""The planned work the API budgets is an upper bound of what the engine really does."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from neuronscope.contracts import AnalysisConfig
from neuronscope.contracts.budget import Budget, BudgetExceeded, check_budget, plan_work
from worker.engine.metrics.pairs import PairLists, select_pairs
from worker.engine.plan import td_pair_count

MIB = 1024 * 1024


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"pairs": {"count": 5, "seed": 1}, "transition_density": {"pairs": {"count": 3}, "points": 7}},
        {"pairs": {"count": 10_000}, "transition_density": {"pairs": "all", "points": 2}},
        {"pairs": [[0, 1], [2, 3], [1, 0]], "transition_density": {"pairs": [[4, 5]], "points": 9}},
        {"transition_density": None},
    ],
)
@pytest.mark.parametrize("samples", [6, 9, 40])
def test_planned_pairs_bound_the_engines_pairs(config: dict[str, Any], samples: int) -> None:
    parsed = AnalysisConfig.model_validate(config)
    labels = torch.arange(samples) % 3
    work = plan_work(parsed, samples, 10)
    chosen = select_pairs(parsed.pairs, samples, labels)
    if isinstance(chosen, PairLists):
        distinct = {tuple(p) for kind in (chosen.random, chosen.same_label, chosen.different_label)
                    for p in kind.tolist()}  # fmt: skip
        assert len(distinct) <= work.ps_pairs
    else:
        assert work.ps_pairs == samples * (samples - 1) // 2
    assert work.td_pairs == td_pair_count(parsed, samples)
    points = parsed.transition_density.points if parsed.transition_density else 0
    assert work.td_points == work.td_pairs * points
    assert work.forward_passes == samples + work.td_points


def test_model_size_rounds_up_to_whole_mib_with_at_least_one() -> None:
    config = AnalysisConfig.model_validate({"transition_density": None})
    assert [plan_work(config, 10, size).model_mib for size in (0, 1, MIB, MIB + 1)] == [1, 1, 1, 2]
    assert plan_work(config, 10, 3 * MIB).forward_cost == 30


def test_each_limit_is_named_and_zero_is_none() -> None:
    config = AnalysisConfig.model_validate({"transition_density": {"pairs": "all", "points": 10}})
    work = plan_work(config, 100, 5 * MIB)  # 4,950 pairs; 49,500 points; 49,600 passes × 5 MiB
    check_budget(work, Budget(max_td_points=49_500, max_ps_pairs=4_950, max_forward_cost=248_000))
    check_budget(work, Budget(max_td_points=0, max_ps_pairs=0, max_forward_cost=0))
    cases = [
        (Budget(49_499, 0, 0), "NEURONSCOPE_MAX_TD_POINTS=49499", "4,950 pairs × 10 points = 49,500 points"),
        (Budget(0, 4_949, 0), "NEURONSCOPE_MAX_PS_PAIRS=4949", "4,950 sample pairs (100 samples)"),
        (Budget(0, 0, 247_999), "NEURONSCOPE_MAX_FORWARD_COST=247999", "× 5 MiB of model = 248,000"),
    ]
    for budget, setting, planned in cases:
        with pytest.raises(BudgetExceeded) as caught:
            check_budget(work, budget)
        assert caught.value.code == "budget_exceeded"
        assert setting in caught.value.message and planned in caught.value.message
