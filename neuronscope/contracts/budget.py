"""A job's planned work, known before it runs, and the budget that refuses too much of it.

Everything here follows from the config, the dataset's sample count and the model's size in
bytes (what the API knows without torch). The amounts are upper bounds of what the engine does:

- pattern similarity compares ``N (N - 1) / 2`` pairs for ``"all"``, at most ``3 × count`` distinct
  pairs (random, same-label, different-label draws) for a sample, and the listed pairs otherwise;
- transition density runs ``pairs × points`` forward passes (``"all"``: every pair), and its
  converged count (``transition_density.converged``) up to ``points + converged_max_points`` more
  per pair;
- the capture runs one forward pass per sample, so a job makes ``N + TD points`` forward passes,
  each costing about the model's size (a model under 1 MiB counts as 1 MiB).

Example:
    >>> work = plan_work(AnalysisConfig.model_validate(
    ...     {"transition_density": {"pairs": {"count": 1_000_000}, "points": 100_000}}), 96, 2_000_000)
    >>> work.ps_pairs, work.td_pairs, work.td_points, work.forward_passes, work.model_mib
    (4560, 4560, 456000000, 456000096, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

from neuronscope.contracts.config import AnalysisConfig, PairSample, PairSpec
from neuronscope.errors import InvalidInput

_MIB = 1024 * 1024


@dataclass(frozen=True)
class PlannedWork:
    """What a job will compute: sample pairs compared, TD pairs and points, forward passes."""

    samples: int
    ps_pairs: int
    td_pairs: int
    points_per_pair: int
    td_points: int
    forward_passes: int
    model_mib: int

    @property
    def forward_cost(self) -> int:
        """Forward passes × model size in MiB."""
        return self.forward_passes * self.model_mib


@dataclass(frozen=True)
class Budget:
    """Upper bounds on a job's planned work; ``0`` is no limit. Each names its setting."""

    max_td_points: int
    max_ps_pairs: int
    max_forward_cost: int


class BudgetExceeded(InvalidInput):
    """A job plans more work than the server's budget allows (HTTP 422)."""

    code = "budget_exceeded"


def _every_pair(samples: int) -> int:
    return samples * (samples - 1) // 2


def _pairs_planned(spec: PairSpec, samples: int, *, kinds: int) -> int:
    every = _every_pair(samples)
    if isinstance(spec, PairSample):
        return min(every, kinds * spec.count)
    if isinstance(spec, list):
        return len(spec)
    return every


def check_pairs_in_range(config: AnalysisConfig, samples: int) -> None:
    """Refuse explicit pairs that name a sample the dataset does not have (``invalid_config``)."""
    lists: list[tuple[str, PairSpec]] = [("pairs", config.pairs)]
    if config.transition_density is not None:
        lists.append(("transition_density.pairs", config.transition_density.pairs))
    for where, spec in lists:
        if not isinstance(spec, list):
            continue
        for n, (i, j) in enumerate(spec):
            if i >= samples or j >= samples:
                raise InvalidInput(
                    f"config: {where}: pair {n} is [{i}, {j}]: expected sample indices in "
                    f"[0, {samples}) (the dataset has {samples} samples)",
                    code="invalid_config",
                )


def plan_work(config: AnalysisConfig, samples: int, model_bytes: int) -> PlannedWork:
    """The work ``config`` plans on ``samples`` samples with a model of ``model_bytes`` bytes."""
    td = config.transition_density
    td_pairs = 0 if td is None else _pairs_planned(td.pairs, samples, kinds=1)
    points = 0 if td is None else td.points
    if td is not None and td.converged:
        points += td.points + td.converged_max_points
    return PlannedWork(
        samples=samples,
        ps_pairs=_pairs_planned(config.pairs, samples, kinds=3),
        td_pairs=td_pairs,
        points_per_pair=points,
        td_points=td_pairs * points,
        forward_passes=samples + td_pairs * points,
        model_mib=max(1, -(-model_bytes // _MIB)),
    )


def check_budget(work: PlannedWork, budget: Budget) -> None:
    """Raise :class:`BudgetExceeded` naming the first limit ``work`` goes past, its setting and value."""
    checks = [
        (
            "NEURONSCOPE_MAX_TD_POINTS",
            budget.max_td_points,
            work.td_points,
            f"transition density plans {work.td_pairs:,} pairs × {work.points_per_pair:,} points = "
            f"{work.td_points:,} points",
            "lower transition_density.pairs or .points, or set transition_density to null",
        ),
        (
            "NEURONSCOPE_MAX_PS_PAIRS",
            budget.max_ps_pairs,
            work.ps_pairs,
            f"pattern similarity plans {work.ps_pairs:,} sample pairs ({work.samples:,} samples)",
            'sample pairs with "pairs": {"count": n} instead of "all"',
        ),
        (
            "NEURONSCOPE_MAX_FORWARD_COST",
            budget.max_forward_cost,
            work.forward_cost,
            f"the job plans {work.forward_passes:,} forward passes ({work.samples:,} samples + "
            f"{work.td_points:,} transition-density points) × {work.model_mib:,} MiB of model = "
            f"{work.forward_cost:,}",
            "use fewer samples or transition-density points, or a smaller model",
        ),
    ]
    for setting, limit, planned, what, advice in checks:
        if limit and planned > limit:
            raise BudgetExceeded(
                f"{what}; expected at most {limit:,} on this server ({setting}={limit}); {advice}"
            )
