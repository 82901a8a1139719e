"""A model with a projected LSTM gets a visible warning in the report and its summary: the gates
are not analysed, and the figures cover the other layers only (the gates of an LSTM without
projection, a GRU or an RNN in a .pt2, stacked and bidirectional ones included, are analysed and
named in the report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuronscope.contracts import AnalysisConfig
from neuronscope.contracts.report import Report
from neuronscope.summary import summarize
from worker.engine import analyze


class _Encoder(nn.Module):
    def __init__(self, rnn: nn.RNNBase | None = None) -> None:
        super().__init__()
        self.rnn = rnn or nn.LSTM(4, 8, num_layers=2, proj_size=3, batch_first=True)
        width = (self.rnn.proj_size or self.rnn.hidden_size) * (1 + self.rnn.bidirectional)
        self.head = nn.Sequential(nn.Linear(width, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rnn.batch_first:
            return self.head(self.rnn(x)[0][:, -1])
        return self.head(self.rnn(x.transpose(0, 1))[0][-1])


def test_a_projected_lstm_model_is_reported_with_a_warning(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(24, 5, 4)
    model = tmp_path / "model.pt2"
    torch.export.save(
        torch.export.export(_Encoder().eval(), (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},)),
        str(model),
    )
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy(), y=np.arange(24) % 3)
    config = AnalysisConfig.model_validate(
        {"transition_density": {"pairs": {"count": 3}, "points": 8}, "device": "cpu"}
    )

    report = analyze(model, dataset, config, trusted_model=True)

    assert report.model.format == "pt2" and [layer.name for layer in report.model.layers] == ["head.1:relu"]
    (warning,) = report.model.warnings
    assert warning.startswith("LSTM 'rnn'") and "not analysed" in warning
    assert f"Warning: {warning}" in summarize(report).splitlines()
    assert Report.model_validate_json(report.to_json()).model.warnings == [warning]


def test_gru_and_rnn_gates_are_reported_as_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 5, 4)
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy(), y=np.arange(12) % 3)
    stacked = [
        f"l{k}{d}:{gate}"
        for k in range(2)
        for d in ("", ".reverse")
        for gate in ("reset_gate", "update_gate", "new_gate")
    ]
    for rnn, gates in (
        (nn.GRU(4, 8, batch_first=True), ["reset_gate", "update_gate", "new_gate"]),
        (nn.RNN(4, 8, nonlinearity="relu"), ["hidden"]),
        (nn.GRU(4, 8, num_layers=2, bidirectional=True), stacked),
    ):
        model = tmp_path / "model.pt2"
        torch.export.save(
            torch.export.export(
                _Encoder(rnn).eval(), (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},)
            ),
            str(model),
        )

        report = analyze(
            model, dataset, AnalysisConfig(device="cpu", transition_density=None), trusted_model=True
        )

        names = [layer.name for layer in report.model.layers]
        assert names == ["head.1:relu", *(f"rnn:{gate}" for gate in gates)], names
        assert report.model.warnings == []
        assert "not analysed" not in summarize(report)


def test_the_html_report_shows_the_warning(tmp_path: Path) -> None:
    from neuronscope.report_html import esc, render_html

    torch.manual_seed(0)
    x = torch.randn(12, 5, 4)
    model = tmp_path / "model.pt2"
    torch.export.save(
        torch.export.export(_Encoder().eval(), (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},)),
        str(model),
    )
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x=x.numpy(), y=np.arange(12) % 3)
    report = analyze(
        model, dataset, AnalysisConfig(device="cpu", transition_density=None), trusted_model=True
    )

    html = render_html(report)

    (warning,) = report.model.warnings
    assert esc(warning) in html
