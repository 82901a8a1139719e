"""How big each benchmark is: ``full`` (the issue's sizes), ``quick`` (a minute) and ``smoke``
(seconds, for the test that the suite runs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    #: Hidden width of the FCNN (the paper: 256, 9 layers) and channel base of the VGG net (64).
    fcnn_width: int
    vgg_width: int
    fcnn_batch: int
    vgg_batch: int
    #: Timed rounds per comparison (medians over them), for fast and for slow contenders.
    repeats: int
    slow_repeats: int
    #: Rounds of the multi-second comparisons (all-pairs PS and TD of the conv net).
    heavy_repeats: int
    #: Untimed calls of each contender before the timed rounds.
    warmup: int
    #: Batches pushed through ``capture_dataset`` (the full engine pass) per round.
    dataset_batches: int
    #: Samples of the all-pairs pattern similarity, and pairs the per-pair numpy loop is timed on.
    ps_samples_fcnn: int
    ps_samples_vgg: int
    loop_pairs: int
    #: Transition density: pairs and points per pair (batch = the network's batch).
    td_pairs_fcnn: int
    td_pairs_vgg: int
    td_points: int
    #: Memory growth: samples per child process, and TD pairs of the small and the 10× run.
    memory_samples: tuple[int, ...]
    memory_td_pairs: int
    memory_td_points: int
    #: One child process per memory measurement (clean peaks) or one child for all (smoke).
    child_per_measurement: bool = True


FULL = Sizes(
    name="full",
    fcnn_width=256,
    vgg_width=64,
    fcnn_batch=256,
    vgg_batch=64,
    repeats=15,
    slow_repeats=7,
    heavy_repeats=3,
    warmup=3,
    dataset_batches=4,
    ps_samples_fcnn=1000,
    ps_samples_vgg=1000,
    loop_pairs=2000,
    td_pairs_fcnn=16,
    td_pairs_vgg=1,
    td_points=512,
    memory_samples=(1000, 4000, 16000),
    memory_td_pairs=20,
    memory_td_points=128,
)

QUICK = Sizes(
    name="quick",
    fcnn_width=256,
    vgg_width=16,
    fcnn_batch=256,
    vgg_batch=32,
    repeats=4,
    slow_repeats=2,
    heavy_repeats=1,
    warmup=1,
    dataset_batches=2,
    ps_samples_fcnn=1000,
    ps_samples_vgg=200,
    loop_pairs=500,
    td_pairs_fcnn=4,
    td_pairs_vgg=1,
    td_points=256,
    memory_samples=(1000, 4000),
    memory_td_pairs=5,
    memory_td_points=64,
)

SMOKE = Sizes(
    name="smoke",
    fcnn_width=32,
    vgg_width=4,
    fcnn_batch=32,
    vgg_batch=8,
    repeats=1,
    slow_repeats=1,
    heavy_repeats=1,
    warmup=0,
    dataset_batches=2,
    ps_samples_fcnn=64,
    ps_samples_vgg=32,
    loop_pairs=20,
    td_pairs_fcnn=2,
    td_pairs_vgg=1,
    td_points=16,
    memory_samples=(64, 256),
    memory_td_pairs=2,
    memory_td_points=8,
    child_per_measurement=False,
)

PRESETS = {sizes.name: sizes for sizes in (FULL, QUICK, SMOKE)}
