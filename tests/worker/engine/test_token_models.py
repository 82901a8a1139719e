"""Token models: transition density interpolates in the embedding space of a ``.pt2`` model with
integer inputs (token ids and an attention mask), under the default config, and the report says
so; checked against a brute-force walk through the model's own modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig
from neuronscope.summary import summarize
from worker.engine import analyze

VOCAB, SEQ, DIM = 13, 6, 8


class TinyEncoder(nn.Module):
    """Token and position embeddings, one masked self-attention block with a GELU MLP, a ReLU head."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM)
        self.positions = nn.Embedding(SEQ, DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.head = nn.Sequential(nn.Linear(DIM, DIM), nn.ReLU(), nn.Linear(DIM, 3))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(ids)

    def tail(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = h + self.positions(torch.arange(h.shape[1], device=h.device))
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / DIM**0.5 + (1.0 - mask[:, None, :]) * -1e4
        h = h + torch.softmax(scores, dim=-1) @ v
        h = h + self.mlp(h)
        return self.head(h.mean(dim=1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tail(self.embed(input_ids), attention_mask.to(torch.float32))


def _dataset(samples: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (samples, SEQ), generator=generator)
    lengths = torch.randint(2, SEQ + 1, (samples,), generator=generator)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).to(torch.int64)
    return ids, mask


def _reference_td(
    net: TinyEncoder, ids: torch.Tensor, mask: torch.Tensor, i: int, j: int, points: int
) -> int:
    """TD by brute force: lerp the token embeddings and the float masks, run the tail, count the
    consecutive points whose sign pattern (Γ = {0} for GELU and ReLU) differs."""
    weights = torch.linspace(0, 1, points)[:, None, None]
    with torch.no_grad():
        e_i, e_j = net.embed(ids[i : i + 1]), net.embed(ids[j : j + 1])
        m_i, m_j = mask[i : i + 1].float(), mask[j : j + 1].float()
        h = torch.lerp(e_i.expand(points, -1, -1), e_j.expand(points, -1, -1), weights)
        m = torch.lerp(m_i.expand(points, -1), m_j.expand(points, -1), weights[:, :, 0])
        seen: list[torch.Tensor] = []
        hooks = [
            module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].reshape(points, -1) > 0))
            for module in (net.mlp[1], net.head[1])
        ]
        try:
            net.tail(h, m)
        finally:
            for hook in hooks:
                hook.remove()
    pattern = torch.cat(seen, dim=1)
    return int((pattern[1:] != pattern[:-1]).any(dim=1).sum())


@pytest.fixture(scope="module")
def token_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyEncoder, Path, Path]:
    torch.manual_seed(0)
    net = TinyEncoder().eval()
    ids, mask = _dataset()
    root = tmp_path_factory.mktemp("tokens")
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (ids[:2], mask[:2]), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(root / "model.pt2"))
    np.savez(root / "data.npz", input_ids=ids.numpy(), attention_mask=mask.numpy(), y=np.arange(20) % 3)
    return net, root / "model.pt2", root / "data.npz"


def test_td_interpolates_in_the_embedding_space_with_the_default_config(
    token_model: tuple[TinyEncoder, Path, Path],
) -> None:
    net, model, dataset = token_model
    report = analyze(model, dataset, AnalysisConfig(device="cpu"), trusted_model=True)

    td = report.transition_density
    assert td is not None and td.space == "embedding" and td.pairs == 100 and td.points == 512
    assert td.interpolated[0] == "tokens:embedding", td.interpolated
    assert len(td.interpolated) == 2, "the token embedding and the float attention mask"
    assert [layer.name for layer in report.model.layers] == ["mlp.1:gelu", "head.1:relu"]
    ids, mask = _dataset()
    for row in td.samples[:5]:
        assert row.td == _reference_td(net, ids, mask, row.i, row.j, 512), (row.i, row.j)
    assert any(row.td for row in td.samples), "some path crosses a region boundary"
    assert "in the embedding space" in summarize(report)


class _SideChannel(nn.Module):
    """A float MLP that also returns its integer input doubled: no floating tensor is computed
    from the integer input, so there is no embedding to interpolate in."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(SEQ, DIM), nn.ReLU(), nn.Linear(DIM, 3))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), input_ids * 2


def test_where_td_cannot_run_the_report_is_written_with_td_skipped_and_why(tmp_path: Path) -> None:
    """A traced model with an integer input that no floating tensor is computed from: capture and
    PS still report, TD is null with the reason, in the report and the summary."""
    torch.manual_seed(0)
    ids, _ = _dataset()
    x = torch.randn(20, SEQ)
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(_SideChannel().eval(), (x[:2], ids[:2])), str(scripted))
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy(), input_ids=ids.numpy(), y=np.arange(20) % 3)

    report = analyze(scripted, dataset, AnalysisConfig(device="cpu"), trusted_model=True)

    assert report.transition_density is None and report.transition_density_skipped is not None
    assert "'input_ids'" in report.transition_density_skipped
    assert "no floating per-sample tensor" in report.transition_density_skipped
    assert report.pattern_similarity.random.pairs == 190 and len(report.layers) == 1
    assert f"Transition density: skipped: {report.transition_density_skipped}" in summarize(report)
    without = analyze(
        scripted, dataset, AnalysisConfig(device="cpu", transition_density=None), trusted_model=True
    )
    assert without.transition_density is None and without.transition_density_skipped is None
