"""How one analysis is cut into blocks that can run as parallel tasks (torch-free).

An analysis is one staged pipeline (:mod:`worker.engine.stages`)::

    prepare -> capture blocks -> gather -> PS row blocks, TD pair blocks -> merge -> report

``prepare`` opens the model and records what the report says about it. **Capture blocks** push
ranges of the dataset's samples through the model; ``gather`` joins them (patterns, layer
health, outputs) and settles the labels. **PS blocks** count equal neurons over row blocks of
the all-pairs matrix; **TD blocks** walk blocks of the transition-density pairs. ``merge``
assembles the report, once. :func:`worker.engine.analyze` is the plan with one block of each,
run in one process; :func:`plan_chunks` decides from the config and the sample count alone how a
large job is split, and a part that fits in one block runs inside the stage before it (capture
in ``prepare``, TD in ``prepare`` when the capture is not split, PS in ``merge``).

The result is the report a single analysis gives, number for number (timings aside).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from neuronscope.contracts.config import AnalysisConfig, PairSample

ChunkKind = Literal["capture", "ps", "td"]
Stage = Literal["prepare", "capture", "gather", "ps", "td", "merge"]

#: Files of a split analysis, by role (the same names in the shared scratch directory and in the
#: analysis process's working directory).
PLAN_FILE = "plan.json"
FACTS_FILE = "facts.json"
DATASET_LABELS_FILE = "dataset-labels.npz"
CAPTURED_FILE = "captured.npz"
TD_PAIRS_FILE = "td-pairs.npz"
TD_PREPARED_FILE = "td-prepared.npz"
#: The most chunks of one kind a job is split into.
MAX_CHUNKS = 512


def chunk_file(kind: ChunkKind, index: int) -> str:
    """The result file of chunk ``index`` of ``kind``."""
    return f"{kind}-{index:04d}.npz"


class ChunkPlan(BaseModel):
    """Which parts of one analysis run as blocks, and the ranges each block covers.

    ``capture_ranges``: ``[start, stop)`` samples per capture block, whole batches of
    ``batch_size`` each (empty: ``prepare`` captures the dataset). ``ps_rows``: ``[start, stop)``
    sample rows of the all-pairs PS matrix per block (empty: ``merge`` computes PS).
    ``td_ranges``: ``[start, stop)`` positions in the TD pair list per block (empty: TD runs in
    ``prepare``; never empty with capture blocks and a TD config).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int
    td_pairs: int
    ps_rows: list[tuple[int, int]]
    td_ranges: list[tuple[int, int]]
    capture_ranges: list[tuple[int, int]] = []

    @property
    def split(self) -> bool:
        return bool(self.capture_ranges or self.ps_rows or self.td_ranges)

    def capture_chunks(self) -> list[tuple[ChunkKind, int]]:
        """The first wave of blocks, before ``gather``: every capture block."""
        return [("capture", i) for i in range(len(self.capture_ranges))]

    def pair_chunks(self) -> list[tuple[ChunkKind, int]]:
        """The second wave, after the capture: every TD and PS block, TD first (they take longest)."""
        return [("td", i) for i in range(len(self.td_ranges))] + [("ps", i) for i in range(len(self.ps_rows))]

    def chunks(self) -> list[tuple[ChunkKind, int]]:
        """Every block as ``(kind, index)``, in the order the waves run."""
        return self.capture_chunks() + self.pair_chunks()


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


def plan_chunks(
    config: AnalysisConfig, samples: int, *, td_points: int, ps_pairs: int, capture_samples: int = 0
) -> ChunkPlan:
    """Split the capture into blocks of about ``capture_samples`` samples, TD into blocks of about
    ``td_points`` points and all-pairs PS into row blocks of about ``ps_pairs`` pairs; a part that
    fits in one block (or whose size is 0) is not split.

    Capture blocks hold whole batches of ``batch_size`` samples and TD blocks whole model batches
    of paths (a multiple of ``batch_size // points`` pairs when a batch holds several paths), so
    every forward pass sees the same batch as in a single analysis and the numbers cannot differ.
    With capture blocks, TD runs as at least one block (the labels its pairs need come after the
    capture).

    Example:
        >>> config = AnalysisConfig.model_validate(
        ...     {"transition_density": {"pairs": {"count": 10}, "points": 100}, "batch_size": 256})
        >>> plan_chunks(config, 50, td_points=500, ps_pairs=0).td_ranges
        [(0, 6), (6, 10)]
        >>> plan = plan_chunks(config, 1000, td_points=0, ps_pairs=0, capture_samples=400)
        >>> plan.capture_ranges, plan.td_ranges
        ([(0, 512), (512, 1000)], [(0, 10)])
    """
    capture_ranges = _capture_blocks(samples, config.batch_size, capture_samples)
    pairs = td_pair_count(config, samples)
    td_ranges: list[tuple[int, int]] = []
    if config.transition_density is not None and pairs > 0:
        points = config.transition_density.points
        per_batch = config.batch_size // points if points <= config.batch_size else 1
        step = pairs
        if td_points > 0:
            step = max(1, td_points // points, -(-pairs // MAX_CHUNKS))
            step = -(-step // per_batch) * per_batch
        if step < pairs:
            td_ranges = [(start, min(start + step, pairs)) for start in range(0, pairs, step)]
        elif capture_ranges:
            td_ranges = [(0, pairs)]
    ps_rows: list[tuple[int, int]] = []
    every = samples * (samples - 1) // 2
    if ps_pairs > 0 and config.pairs == "all" and every > ps_pairs:
        ps_rows = _row_blocks(samples, max(ps_pairs, -(-every // MAX_CHUNKS)))
    return ChunkPlan(
        samples=samples, td_pairs=pairs, ps_rows=ps_rows, td_ranges=td_ranges, capture_ranges=capture_ranges
    )


def _capture_blocks(samples: int, batch_size: int, capture_samples: int) -> list[tuple[int, int]]:
    """Sample ranges of whole batches, about ``capture_samples`` each (rounded up to a batch);
    none when the dataset fits in one."""
    if capture_samples <= 0 or samples <= capture_samples:
        return []
    batches = -(-samples // batch_size)
    per_block = max(-(-capture_samples // batch_size), -(-batches // MAX_CHUNKS))
    step = per_block * batch_size
    if step >= samples:
        return []
    return [(start, min(start + step, samples)) for start in range(0, samples, step)]


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
