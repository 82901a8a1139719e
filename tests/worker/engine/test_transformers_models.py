"""Small ``transformers`` configs (BERT with its erf ``gelu_python``, GPT-2 with its tanh
``gelu_new``), random weights: the same layers and numbers in ``.pt2`` and traced TorchScript,
and transition density in the embedding space, the same per pair in ``.pt2``, traced TorchScript
and the dynamo exporter's ONNX."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig
from worker.engine import analyze
from worker.engine.capture.loader import open_model

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 50, 8


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=SEQ,
        num_labels=3,
        hidden_act="gelu_python",
    )
    return transformers.BertForSequenceClassification(config)


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=SEQ, num_labels=3, pad_token_id=0
    )
    return transformers.GPT2ForSequenceClassification(config)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.m(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


CASES: dict[str, tuple[Callable[[], nn.Module], list[str], list[str]]] = {
    "bert": (
        _bert,
        [
            "m.bert.encoder.layer.0.intermediate.intermediate_act_fn:gelu",
            "m.bert.encoder.layer.1.intermediate.intermediate_act_fn:gelu",
            "m.bert.pooler.activation:tanh",
        ],
        ["m.bert.embeddings.word_embeddings:embedding"],
    ),
    "gpt2": (
        _gpt2,
        ["m.transformer.h.0.mlp.act:gelu", "m.transformer.h.1.mlp.act:gelu"],
        ["m.transformer.wte:embedding"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transformer_layers_agree_across_formats_and_td_runs_in_the_embedding(
    name: str, tmp_path: Path
) -> None:
    make, expected_layers, expected_embedding = CASES[name]
    torch.manual_seed(0)
    net = _Logits(make().eval()).eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (12, SEQ), generator=generator)
    mask = torch.ones(12, SEQ, dtype=torch.int64)
    mask[::3, -3:] = 0
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (ids[:2], mask[:2]), dynamic_shapes=({0: batch}, {0: batch}))
        torch.export.save(program, str(tmp_path / "model.pt2"))
        torch.jit.save(torch.jit.trace(net, (ids[:2], mask[:2]), strict=False), str(tmp_path / "model.pt"))
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    example = {key: value[:2] for key, value in feed.items()}
    results = []
    for path in (tmp_path / "model.pt2", tmp_path / "model.pt"):
        model = open_model(path, device="cpu", example=example)
        assert [layer.name for layer in model.layers] == expected_layers, path.suffix
        results.append(model.capture(feed))
    for exported, traced in zip(results[0].pre, results[1].pre, strict=True):
        assert torch.allclose(exported, traced, atol=1e-5)
    np.savez(tmp_path / "data.npz", **feed, y=np.arange(12) % 3)
    config = AnalysisConfig(device="cpu", transition_density={"pairs": {"count": 6}, "points": 32})

    report = analyze(tmp_path / "model.pt2", tmp_path / "data.npz", config, trusted_model=True)

    td = report.transition_density
    assert td is not None and td.space == "embedding" and td.pairs == 6
    assert td.interpolated[: len(expected_embedding)] == expected_embedding


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_transformer_td_in_the_embedding_is_the_same_in_every_format(name: str, tmp_path: Path) -> None:
    """Traced TorchScript and the dynamo exporter's ONNX cut at the embedding as the ``.pt2`` is:
    the same layers (ONNX included) and the same TD on every pair."""
    make, expected_layers, _ = CASES[name]
    torch.manual_seed(0)
    net = _Logits(make().eval()).eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (12, SEQ), generator=generator)
    mask = torch.ones(12, SEQ, dtype=torch.int64)
    mask[::3, -3:] = 0
    batch = torch.export.Dim("batch")
    shapes = ({0: batch}, {0: batch})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(
            torch.export.export(net, (ids[:2], mask[:2]), dynamic_shapes=shapes), str(tmp_path / "model.pt2")
        )
        torch.jit.save(torch.jit.trace(net, (ids[:2], mask[:2]), strict=False), str(tmp_path / "model.pt"))
        torch.onnx.export(
            net,
            (ids[:2], mask[:2]),
            str(tmp_path / "model.onnx"),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            dynamic_shapes=shapes,
            external_data=False,
        )
    np.savez(tmp_path / "data.npz", input_ids=ids.numpy(), attention_mask=mask.numpy(), y=np.arange(12) % 3)
    config = AnalysisConfig(device="cpu", transition_density={"pairs": {"count": 6}, "points": 32})

    reports = {
        suffix: analyze(tmp_path / f"model{suffix}", tmp_path / "data.npz", config, trusted_model=True)
        for suffix in (".pt2", ".pt", ".onnx")
    }

    for suffix, report in reports.items():
        assert [layer.name for layer in report.model.layers] == expected_layers, suffix
        td = report.transition_density
        assert td is not None and td.space == "embedding", (suffix, report.transition_density_skipped)
    expected = [(row.i, row.j, row.td) for row in reports[".pt2"].transition_density.samples]  # type: ignore[union-attr]
    for suffix in (".pt", ".onnx"):
        found = [(row.i, row.j, row.td) for row in reports[suffix].transition_density.samples]  # type: ignore[union-attr]
        assert found == expected, suffix
    assert any(td for _, _, td in expected)
