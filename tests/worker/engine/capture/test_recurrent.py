"""Recurrent layers whose gates are not analysed are named in ``model.warnings`` by every front end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from worker.engine.capture.base import CaptureModel, CaptureResult
from worker.engine.capture.loader import open_model


class _Recurrent(nn.Module):
    """An LSTM, GRU or RNN encoder (``rnn`` when given) with a ReLU head; ``x`` is ``[B, T, I]``
    whatever the encoder's layout."""

    def __init__(self, kind: str, rnn: nn.RNNBase | None = None) -> None:
        super().__init__()
        self.rnn = rnn or (
            nn.LSTM(4, 8, batch_first=True) if kind == "LSTM" else nn.GRU(4, 8, batch_first=True)
        )
        self.head = nn.Sequential(nn.Linear(8 * (1 + self.rnn.bidirectional), 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.sequence(x)[:, -1])

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output sequence ``[B, T, H]``."""
        if self.rnn.batch_first:
            return self.rnn(x)[0]
        return self.rnn(x.transpose(0, 1))[0].transpose(0, 1)


@pytest.mark.parametrize("kind", ["pt2", "scripted", "traced"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(4, 8, proj_size=3, batch_first=True),
        lambda: nn.LSTM(4, 8, num_layers=2, proj_size=3, bidirectional=True, batch_first=True),
    ],
    ids=["lstm-projected", "lstm-projected-2-layers-bidirectional"],
)
def test_projected_lstm_gates_are_reported_as_not_analysed(
    make: Callable[[], nn.RNNBase], kind: str, tmp_path: Path
) -> None:
    """An LSTM with ``proj_size`` (which neither ONNX exporter writes) keeps its warning; stacked
    and bidirectional layers without projection are analysed (``test_recurrent_stacked``)."""
    torch.manual_seed(0)
    net = _Recurrent("", make())
    net.head[0] = nn.Linear(3 * (1 + net.rnn.bidirectional), 8)
    net = net.eval()
    x = torch.randn(6, 5, 4)
    model = open_model(_save(kind, net, x, tmp_path / "model"), device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == ["relu"]
    assert len(model.warnings) == 1 and model.warnings[0].startswith("LSTM 'rnn'"), model.warnings
    assert "gates" in model.warnings[0] and "not analysed" in model.warnings[0]
    with torch.no_grad():
        hidden = net.head[0](net.sequence(x)[:, -1])
    assert close(result.pre[0], hidden, atol=1e-4)


def _unrolled_gates(net: _Recurrent, x: torch.Tensor) -> list[torch.Tensor]:
    """Pre-activations of the input, forget, cell and output gates and of the cell state's tanh,
    ``[B, T * H]`` each, from an ``nn.LSTMCell`` with the LSTM's weights stepped over time."""
    lstm = net.rnn
    assert isinstance(lstm, nn.LSTM)
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
    with torch.no_grad():
        cell.weight_ih.copy_(lstm.weight_ih_l0)
        cell.weight_hh.copy_(lstm.weight_hh_l0)
        cell.bias_ih.copy_(lstm.bias_ih_l0)
        cell.bias_hh.copy_(lstm.bias_hh_l0)
        h = torch.zeros(x.shape[0], lstm.hidden_size)
        c = torch.zeros_like(h)
        steps: list[list[torch.Tensor]] = [[], [], [], [], []]
        for t in range(x.shape[1]):
            gates = x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            for k, gate in enumerate(gates.chunk(4, dim=1)):
                steps[k].append(gate)
            h, c = cell(x[:, t], (h, c))
            steps[4].append(c)
    return [torch.stack(step, dim=1).reshape(x.shape[0], -1) for step in steps]


def test_lstm_gates_of_a_pt2_are_layers(tmp_path: Path) -> None:
    """A one-layer LSTM in a ``.pt2``: its four gates and its cell state are layers (Γ of sigmoid
    and tanh), recomputed exactly from the op's input and output; no warning is left."""
    torch.manual_seed(0)
    net = _Recurrent("LSTM").eval()
    x = torch.randn(6, 5, 4)
    model = open_model(
        save_exported(net, [x[:2]], tmp_path / "lstm.pt2"), device="cpu", example=np_batch(x=x[:2])
    )

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type, layer.shape) for layer in model.layers] == [
        ("head.1:relu", "relu", (8,)),
        ("rnn:input_gate", "sigmoid", (5, 8)),
        ("rnn:forget_gate", "sigmoid", (5, 8)),
        ("rnn:cell_gate", "tanh", (5, 8)),
        ("rnn:output_gate", "sigmoid", (5, 8)),
        ("rnn:cell", "tanh", (5, 8)),
    ]
    assert model.warnings == []
    expected = _unrolled_gates(net, x)
    for k, pre in enumerate(expected, start=1):
        assert close(result.pre[k], pre, atol=1e-5), model.layers[k].name
        activation = torch.tanh if model.layers[k].op_type == "tanh" else torch.sigmoid
        assert close(result.post[k], activation(pre), atol=1e-5), model.layers[k].name
    only = open_model(
        tmp_path / "lstm.pt2", device="cpu", example=np_batch(x=x[:2]), layer_names=["rnn:forget_gate"]
    )
    assert close(only.capture(np_batch(x=x)).pre[0], expected[1], atol=1e-5)


def _exported(
    net: _Recurrent, x: torch.Tensor, path: Path, layer_names: list[str] | None = None
) -> tuple[CaptureModel, CaptureResult]:
    """``net`` saved as a ``.pt2`` at ``path``, opened on ``x[:2]``, and its capture of ``x``."""
    example = np_batch(x=x[:2])
    model = open_model(
        save_exported(net, [x[:2]], path), device="cpu", example=example, layer_names=layer_names
    )
    return model, model.capture(np_batch(x=x))


@pytest.mark.parametrize("batch_first", [True, False])
def test_gru_gates_of_a_pt2_are_layers(batch_first: bool, tmp_path: Path) -> None:
    """A one-layer GRU in a ``.pt2``: its reset, update and new gates are layers, their
    pre-activations those of an ``nn.GRUCell`` with the GRU's weights stepped over time; no warning."""
    torch.manual_seed(1)
    net = _Recurrent("GRU", nn.GRU(4, 8, batch_first=batch_first)).eval()
    x = torch.randn(6, 5, 4)

    model, result = _exported(net, x, tmp_path / "gru.pt2")

    assert [(layer.name, layer.op_type, layer.shape) for layer in model.layers] == [
        ("head.1:relu", "relu", (8,)),
        ("rnn:reset_gate", "sigmoid", (5, 8)),
        ("rnn:update_gate", "sigmoid", (5, 8)),
        ("rnn:new_gate", "tanh", (5, 8)),
    ]
    assert model.warnings == []
    gru = net.rnn
    cell = nn.GRUCell(4, 8)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(gru, f"{name}_l0"))
        h = torch.zeros(6, 8)
        steps: list[list[torch.Tensor]] = [[], [], []]
        for t in range(5):
            w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
            w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
            b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
            b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
            r = x[:, t] @ w_ir.T + b_ir + h @ w_hr.T + b_hr
            z = x[:, t] @ w_iz.T + b_iz + h @ w_hz.T + b_hz
            n = x[:, t] @ w_in.T + b_in + torch.sigmoid(r) * (h @ w_hn.T + b_hn)
            following = cell(x[:, t], h)
            # the gates are those of the cell: they give its next state
            blended = (1 - torch.sigmoid(z)) * torch.tanh(n) + torch.sigmoid(z) * h
            assert close(blended, following, atol=1e-6)
            for k, gate in enumerate((r, z, n)):
                steps[k].append(gate)
            h = following
    expected = [torch.stack(step, dim=1).reshape(6, -1) for step in steps]
    for k, pre in enumerate(expected, start=1):
        assert close(result.pre[k], pre, atol=1e-5), model.layers[k].name
        activation = torch.tanh if model.layers[k].op_type == "tanh" else torch.sigmoid
        assert close(result.post[k], activation(pre), atol=1e-5), model.layers[k].name
    only, picked = _exported(net, x, tmp_path / "gru-only.pt2", layer_names=["rnn:new_gate"])
    assert [layer.name for layer in only.layers] == ["rnn:new_gate"]
    assert close(picked.pre[0], expected[2], atol=1e-5)


@pytest.mark.parametrize(
    ("nonlinearity", "bias", "batch_first"),
    [("tanh", True, True), ("relu", True, False), ("relu", False, True), ("tanh", False, False)],
)
def test_rnn_of_a_pt2_is_a_layer(nonlinearity: str, bias: bool, batch_first: bool, tmp_path: Path) -> None:
    """A one-layer ``nn.RNN`` in a ``.pt2``: its hidden state is a layer of its nonlinearity, the
    pre-activation ``W_ih x + b_ih + W_hh h + b_hh`` of a hand-written step; no warning."""
    torch.manual_seed(2)
    rnn = nn.RNN(4, 8, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first)
    net = _Recurrent("RNN", rnn).eval()
    x = torch.randn(6, 5, 4)

    model, result = _exported(net, x, tmp_path / "rnn.pt2")

    assert [(layer.name, layer.op_type, layer.shape) for layer in model.layers] == [
        ("head.1:relu", "relu", (8,)),
        ("rnn:hidden", nonlinearity, (5, 8)),
    ]
    assert model.warnings == []
    activation = torch.relu if nonlinearity == "relu" else torch.tanh
    with torch.no_grad():
        h = torch.zeros(6, 8)
        steps = []
        for t in range(5):
            pre = x[:, t] @ rnn.weight_ih_l0.T + h @ rnn.weight_hh_l0.T
            if bias:
                pre = pre + rnn.bias_ih_l0 + rnn.bias_hh_l0
            steps.append(pre)
            h = activation(pre)
        expected = torch.stack(steps, dim=1)
        assert close(activation(expected), net.sequence(x), atol=1e-5)
    assert close(result.pre[1], expected.reshape(6, -1), atol=1e-5)
    assert close(result.post[1], activation(expected).reshape(6, -1), atol=1e-5)


def _save(kind: str, net: nn.Module, x: torch.Tensor, path: Path) -> Path:
    if kind == "pt2":
        return save_exported(net, [x[:2]], path)
    if kind.startswith("onnx"):
        return export_onnx(net, [x[:2]], path, dynamo=kind == "onnx-dynamo", opset=18)
    return save_script(net, [x[:2]] if kind == "traced" else None, path)


@pytest.mark.parametrize("kind", ["scripted", "traced", "onnx-legacy", "onnx-dynamo"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTM(4, 8, batch_first=True),
        lambda: nn.LSTM(4, 8),
        lambda: nn.GRU(4, 8, batch_first=True),
        lambda: nn.GRU(4, 8, bias=False),
        lambda: nn.RNN(4, 8, nonlinearity="relu", batch_first=True),
    ],
    ids=["lstm", "lstm-time-first", "gru", "gru-no-bias", "rnn-relu"],
)
def test_torchscript_and_onnx_recurrent_gates_equal_the_pt2_ones(
    make: Callable[[], nn.RNNBase], kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The gates of a one-layer ``aten::lstm`` / ``gru`` / ``rnn_*`` in scripted and traced
    TorchScript, and of an ONNX ``LSTM`` / ``GRU`` / ``RNN``, are the ``.pt2``'s layers (checked
    exactly above against unrolled cells): same names (the legacy ONNX exporter's: node names),
    op types, shapes and values; no warning left."""
    if kind == "onnx-dynamo" and "rnn-relu" in request.node.name:
        pytest.skip("the dynamo exporter unrolls an nn.RNN into per-step ops: no RNN node")
    torch.manual_seed(4)
    net = _Recurrent("", make()).eval()
    x = torch.randn(6, 5, 4)
    results = []
    for flavour in ("pt2", kind):
        model = open_model(
            _save(flavour, net, x, tmp_path / flavour), device="cpu", example=np_batch(x=x[:2])
        )
        results.append((model, model.capture(np_batch(x=x))))
    (exported, expected), (scripted, found) = results

    assert [(layer.op_type, layer.shape) for layer in scripted.layers] == [
        (layer.op_type, layer.shape) for layer in exported.layers
    ]
    if kind != "onnx-legacy":
        assert [layer.name for layer in scripted.layers] == [layer.name for layer in exported.layers]
    assert len(scripted.layers) > 1 and scripted.warnings == []
    for k, layer in enumerate(scripted.layers):
        assert close(found.pre[k], expected.pre[k], atol=1e-5), layer.name
        assert close(found.post[k], expected.post[k], atol=1e-5), layer.name
    gate = scripted.layers[-1].name
    only = open_model(
        _save(kind, net, x, tmp_path / "again"), device="cpu", example=np_batch(x=x[:2]), layer_names=[gate]
    )
    assert close(only.capture(np_batch(x=x)).pre[0], expected.pre[-1], atol=1e-5)


@pytest.mark.parametrize("kind", ["onnx-legacy", "onnx-dynamo"])
def test_onnx_stacked_lstm_layers_are_analysed(kind: str, tmp_path: Path) -> None:
    """The exporters write a two-layer LSTM as two one-layer LSTM nodes: each node's gates are
    layers, equal to unrolled cells with that layer's weights on that layer's input."""
    torch.manual_seed(5)
    net = _Recurrent("", nn.LSTM(4, 8, num_layers=2, batch_first=True)).eval()
    x = torch.randn(6, 5, 4)
    model = open_model(_save(kind, net, x, tmp_path / "model"), device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == [
        "relu",
        *(["sigmoid"] * 2 + ["tanh", "sigmoid", "tanh"]) * 2,
    ]
    assert model.warnings == []
    layers = []
    inputs = x
    for index in range(2):
        single = _Recurrent("", nn.LSTM(inputs.shape[-1], 8, batch_first=True)).eval()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(single.rnn, f"{name}_l0").copy_(getattr(net.rnn, f"{name}_l{index}"))
            layers += _unrolled_gates(single, inputs)
            inputs = single.sequence(inputs)
    for k, pre in enumerate(layers, start=1):
        assert close(result.pre[k], pre, atol=1e-5), model.layers[k].name
