"""Region indices, bit packing and the pattern store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.errors import AnalysisError
from worker.engine.metrics import PatternStore, pack_bits, region_indices, unpack_bits


def _reference_regions(values: np.ndarray, breakpoints: np.ndarray) -> np.ndarray:
    """Number of breakpoints strictly below each value, compared in float64."""
    out = np.zeros(values.shape, dtype=np.uint8)
    for gamma in breakpoints:
        out += values.astype(np.float64) > gamma
    return out


@pytest.mark.parametrize("n_breakpoints", [1, 3, 16, 20, 255])
def test_region_indices_match_brute_force_including_exact_breakpoints(n_breakpoints: int) -> None:
    gen = torch.Generator().manual_seed(n_breakpoints)
    breakpoints = torch.sort(torch.randn(n_breakpoints, generator=gen) * 2).values
    values = torch.randn(40, 30, generator=gen) * 2
    values.view(-1)[:n_breakpoints] = breakpoints
    got = region_indices(values, breakpoints)
    assert got.dtype == torch.uint8 and got.shape == values.shape
    np.testing.assert_array_equal(
        got.numpy(), _reference_regions(values.numpy(), breakpoints.double().numpy())
    )


def test_value_equal_to_breakpoint_goes_to_lower_region() -> None:
    breakpoints = torch.tensor([-1.0, 0.0, 2.5])
    values = torch.tensor([[-1.0, 0.0, 2.5, -1.5, 1e-30, 3.0]])
    assert region_indices(values, breakpoints).tolist() == [[0, 1, 2, 0, 2, 3]]
    assert region_indices(values, torch.tensor([0.0])).tolist() == [[0, 0, 1, 0, 1, 1]]


def test_bucketize_path_agrees_with_comparison_path_at_breakpoints_and_nan() -> None:
    few = torch.tensor([-1.0, 0.0, 1.0])
    many = torch.cat([few, torch.linspace(5.0, 6.0, 17)])
    values = torch.tensor([[-2.0, -1.0, 0.0, 0.5, 1.0, 5.0, float("nan"), float("inf"), -float("inf")]])
    assert region_indices(values, few).tolist() == [[0, 0, 1, 2, 2, 3, 0, 3, 0]]
    assert region_indices(values, many).tolist() == [[0, 0, 1, 2, 2, 3, 0, 20, 0]]


def test_float64_breakpoint_is_compared_exactly_against_float32_values() -> None:
    gamma = torch.tensor([0.1], dtype=torch.float64)
    at = torch.tensor(0.1, dtype=torch.float32)  # the float32 nearest 0.1 lies above 0.1
    below = torch.nextafter(at, torch.tensor(0.0))
    values = torch.stack([at, below]).reshape(1, 2)
    assert float(at) > 0.1
    assert region_indices(values, gamma).tolist() == [[1, 0]]
    assert region_indices(values.double(), gamma).tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("values", "breakpoints"),
    [
        (torch.zeros(3), torch.tensor([0.0])),
        (torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0.0])),
        (torch.zeros(2, 2), torch.tensor([1.0, 1.0])),
        (torch.zeros(2, 2), torch.tensor([float("nan")])),
        (torch.zeros(2, 2), torch.zeros(0)),
        (torch.zeros(2, 2), torch.zeros(256).cumsum(0)),
    ],
)
def test_region_indices_reject_bad_inputs(values: torch.Tensor, breakpoints: torch.Tensor) -> None:
    with pytest.raises(AnalysisError, match="expected"):
        region_indices(values, breakpoints)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 17, 64])
def test_pack_unpack_round_trip(width: int) -> None:
    bits = torch.randint(0, 2, (5, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    packed = pack_bits(bits)
    assert packed.shape == (5, (width + 7) // 8)
    assert torch.equal(unpack_bits(packed, width), bits)
    reference = np.packbits(bits.numpy(), axis=1, bitorder="little")
    np.testing.assert_array_equal(packed.numpy(), reference)


def _random_layers(n: int, neurons: list[int], regions: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, r, (n, m), generator=gen, dtype=torch.uint8)
        for m, r in zip(neurons, regions, strict=True)
    ]


@pytest.mark.parametrize("pack", [True, False])
def test_store_returns_what_was_appended(pack: bool) -> None:
    neurons, regions = [13, 5, 16], [2, 4, 2]
    layers = _random_layers(11, neurons, regions)
    store = PatternStore(11, neurons, regions, pack_bits=pack)
    for start, stop in [(0, 4), (4, 5), (5, 5), (5, 11)]:
        store.append([t[start:stop] for t in layers])
    assert store.complete and store.total_neurons == 34
    assert [store.is_packed(i) for i in range(3)] == [pack, False, pack]
    index = torch.tensor([10, 0, 3, 3])
    for layer, full in enumerate(layers):
        assert torch.equal(store.rows(layer, index), full[index])
        for start, stop in [(0, neurons[layer]), (1, 4), (3, neurons[layer]), (8, 9)]:
            if stop <= neurons[layer]:
                assert torch.equal(store.columns(layer, start, stop), full[:, start:stop])
                assert torch.equal(store.columns(layer, start, stop, first_sample=6), full[6:, start:stop])
    if pack:
        words = store.packed_rows(0, index)
        assert words.shape == (4, 8)
        assert torch.equal(words[:, :2], pack_bits(layers[0][index])) and not words[:, 2:].any()


def test_store_memory_is_one_bit_or_one_byte_per_neuron_sample() -> None:
    store = PatternStore(1000, [300_000, 4096], [2, 3])
    assert store.nbytes == 1000 * 300_032 // 8 + 1000 * 4096
    assert PatternStore(10, [9], [2], pack_bits=False).nbytes == 90
    assert PatternStore(10, [9], [2]).nbytes == 80


def test_store_rejects_misuse() -> None:
    store = PatternStore(3, [4], [3])
    with pytest.raises(AnalysisError, match=r"expected \[b, 4\] uint8"):
        store.append([torch.zeros(2, 5, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match="expected region indices below 3, got 3"):
        store.append([torch.full((1, 4), 3, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match="one tensor per layer"):
        store.append([])
    store.append([torch.zeros(2, 4, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match="at most 1 more samples, got 2"):
        store.append([torch.zeros(2, 4, dtype=torch.uint8)])
    with pytest.raises(AnalysisError, match=r"sample indices in \[0, 2\)"):
        store.rows(0, torch.tensor([2]))
    with pytest.raises(AnalysisError, match="bit-packed"):
        store.packed_rows(0, torch.tensor([0]))
    with pytest.raises(AnalysisError, match=r"layer: expected an index in \[0, 1\), got 1"):
        store.rows(1, torch.tensor([0]))
    with pytest.raises(AnalysisError, match="regions"):
        PatternStore(3, [4], [1])


def test_stored_rows_append_as_they_are_and_are_checked() -> None:
    """Joining stores moves their rows as kept (bit-packed stays packed), checked like append:
    region indices in range, a packed row's padding bits zero."""
    generator = torch.Generator().manual_seed(0)
    first = PatternStore(5, neurons=[11, 3], regions=[2, 4])
    first.append(
        [
            torch.randint(0, 2, (5, 11), dtype=torch.uint8, generator=generator),
            torch.randint(0, 4, (5, 3), dtype=torch.uint8, generator=generator),
        ]
    )
    index = torch.arange(5)
    joined = PatternStore(5, neurons=[11, 3], regions=[2, 4])
    joined.append_stored([first.stored_rows(0, index[:2]), first.stored_rows(1, index[:2])])
    joined.append_stored([first.stored_rows(0, index[2:]), first.stored_rows(1, index[2:])])
    for layer in (0, 1):
        assert torch.equal(joined.rows(layer, index), first.rows(layer, index))
    packed = first.stored_rows(0, index[:1]).clone()
    packed[0, 1] |= 1 << 3  # neuron 11 of an 11-neuron layer: a padding bit
    fresh = PatternStore(1, neurons=[11, 3], regions=[2, 4])
    with pytest.raises(AnalysisError, match="zero padding bits"):
        fresh.append_stored([packed, first.stored_rows(1, index[:1])])
    with pytest.raises(AnalysisError, match="region indices below 4"):
        fresh.append_stored([first.stored_rows(0, index[:1]), torch.full((1, 3), 4, dtype=torch.uint8)])
