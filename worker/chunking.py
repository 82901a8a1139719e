"""How a large analysis is split into chunks that run as parallel tasks (torch-free, Celery-free).

A split analysis runs in stages, each in its own sandboxed analysis process:

1. ``prepare``: load the model, capture the dataset once, compute everything that is cheap
   (layer health, prediction distance, the PS-distance correlation, and whatever part is not
   split), and save a base report plus the arrays the chunks need.
2. chunks, in parallel on any worker: ``ps`` chunks count equal neurons over row blocks of the
   all-pairs pattern-similarity matrix (exact histograms, merged by addition); ``td`` chunks run
   transition density over blocks of the TD pairs (they need the model again).
3. ``merge``: add the chunks up and complete the base report.

The result is the report a single analysis gives, number for number (timings aside).
:func:`plan_chunks` decides the split from the config and the sample count alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from neuronscope.contracts.config import AnalysisConfig, PairSample

ChunkKind = Literal["ps", "td"]
Stage = Literal["prepare", "ps", "td", "merge"]

#: Files of a split analysis, by role (the same names in the shared scratch directory and in the
#: analysis process's working directory).
PLAN_FILE = "plan.json"
BASE_REPORT_FILE = "base-report.json"
PATTERNS_FILE = "patterns.npz"
TD_PAIRS_FILE = "td-pairs.npz"
#: The most chunks of one kind a job is split into.
MAX_CHUNKS = 512


def chunk_file(kind: ChunkKind, index: int) -> str:
    """The result file of chunk ``index`` of ``kind``."""
    return f"{kind}-{index:04d}.npz"


class ChunkPlan(BaseModel):
    """Which parts of one analysis run as chunks, and the ranges each chunk covers.

    ``ps_rows``: ``[start, stop)`` sample rows of the all-pairs PS matrix per chunk (empty: PS runs
    in ``prepare``). ``td_ranges``: ``[start, stop)`` positions in the TD pair list per chunk
    (empty: TD runs in ``prepare``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int
    td_pairs: int
    ps_rows: list[tuple[int, int]]
    td_ranges: list[tuple[int, int]]

    @property
    def split(self) -> bool:
        return bool(self.ps_rows or self.td_ranges)

    def chunks(self) -> list[tuple[ChunkKind, int]]:
        """Every chunk as ``(kind, index)``, TD first (they take longest)."""
        return [("td", i) for i in range(len(self.td_ranges))] + [("ps", i) for i in range(len(self.ps_rows))]


def td_pair_count(config: AnalysisConfig, samples: int) -> int:
    """How many pairs transition density runs on, from the config and the sample count."""
    td = config.transition_density
    if td is None:
        return 0
    every = samples * (samples - 1) // 2
    if isinstance(td.pairs, PairSample):
        return min(td.pairs.count, every)
    if isinstance(td.pairs, list):
        return len(td.pairs)
    return every


def plan_chunks(config: AnalysisConfig, samples: int, *, td_points: int, ps_pairs: int) -> ChunkPlan:
    """Split TD into blocks of about ``td_points`` points and all-pairs PS into row blocks of
    about ``ps_pairs`` pairs; a part that fits in one block (or whose size is 0) is not split.

    TD blocks hold whole model batches of paths (a multiple of ``batch_size // points`` pairs
    when a batch holds several paths), so every forward pass sees the same batch as in a single
    analysis and the numbers cannot differ.

    Example:
        >>> config = AnalysisConfig.model_validate(
        ...     {"transition_density": {"pairs": {"count": 10}, "points": 100}, "batch_size": 256})
        >>> plan_chunks(config, 50, td_points=500, ps_pairs=0).td_ranges
        [(0, 6), (6, 10)]
    """
    pairs = td_pair_count(config, samples)
    td_ranges: list[tuple[int, int]] = []
    if td_points > 0 and config.transition_density is not None and pairs > 0:
        points = config.transition_density.points
        per_batch = config.batch_size // points if points <= config.batch_size else 1
        step = max(1, td_points // points, -(-pairs // MAX_CHUNKS))
        step = -(-step // per_batch) * per_batch
        if step < pairs:
            td_ranges = [(start, min(start + step, pairs)) for start in range(0, pairs, step)]
    ps_rows: list[tuple[int, int]] = []
    every = samples * (samples - 1) // 2
    if ps_pairs > 0 and config.pairs == "all" and every > ps_pairs:
        ps_rows = _row_blocks(samples, max(ps_pairs, -(-every // MAX_CHUNKS)))
    return ChunkPlan(samples=samples, td_pairs=pairs, ps_rows=ps_rows, td_ranges=td_ranges)


def _row_blocks(samples: int, pairs_per_block: int) -> list[tuple[int, int]]:
    """Row ranges of the upper triangle (row ``r`` holds ``samples - 1 - r`` pairs) with about
    ``pairs_per_block`` pairs each."""
    blocks = []
    start, held = 0, 0
    for row in range(samples - 1):
        held += samples - 1 - row
        if held >= pairs_per_block:
            blocks.append((start, row + 1))
            start, held = row + 1, 0
    if start < samples - 1:
        blocks.append((start, samples - 1))
    return blocks
