"""Stacked and bidirectional LSTM / GRU / RNN gates are layers in every format that carries them,
equal to per-step cells with the same weights, named alike (``rnn:l1.reverse:input_gate``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import close, export_onnx, np_batch, save_exported, save_script
from torch import nn

from worker.engine.capture.base import CaptureModel
from worker.engine.capture.loader import open_model

_CELLS: dict[str, Callable[[int, int, bool], nn.RNNCellBase]] = {
    "LSTM": lambda i, h, bias: nn.LSTMCell(i, h, bias=bias),
    "GRU": lambda i, h, bias: nn.GRUCell(i, h, bias=bias),
    "RNN_TANH": lambda i, h, bias: nn.RNNCell(i, h, bias=bias, nonlinearity="tanh"),
    "RNN_RELU": lambda i, h, bias: nn.RNNCell(i, h, bias=bias, nonlinearity="relu"),
}


class _Encoder(nn.Module):
    """``rnn`` over ``x`` ``[B, T, I]`` whatever its layout, a ReLU head on the last step."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Sequential(nn.Linear(8 * (1 + rnn.bidirectional), 8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last: torch.Tensor = (
            self.rnn(x)[0][:, -1] if self.rnn.batch_first else self.rnn(x.transpose(0, 1))[0][-1]
        )
        out: torch.Tensor = self.head(last)
        return out


def _step_pre(
    mode: str, cell: nn.RNNCellBase, x: torch.Tensor, state: tuple[torch.Tensor, ...]
) -> list[torch.Tensor]:
    """The gate pre-activations ``[B, H]`` of one step (an LSTM's cell state left to the caller)."""
    bias = cell.bias_ih is not None
    from_x = x @ cell.weight_ih.T + (cell.bias_ih if bias else 0)
    from_h = state[0] @ cell.weight_hh.T + (cell.bias_hh if bias else 0)
    if mode == "LSTM":
        return list((from_x + from_h).chunk(4, dim=1))
    if mode == "GRU":
        x_r, x_z, x_n = from_x.chunk(3, dim=1)
        h_r, h_z, h_n = from_h.chunk(3, dim=1)
        return [x_r + h_r, x_z + h_z, x_n + torch.sigmoid(x_r + h_r) * h_n]
    return [from_x + from_h]


def _unrolled(rnn: nn.RNNBase, x: torch.Tensor) -> list[torch.Tensor]:
    """Every gate's pre-activation ``[B, T * H]``, layer by layer, forward before reverse, from
    per-step cells holding each layer's and direction's weights; the reverse direction steps over
    the reversed sequence and each layer's output (both directions concatenated) feeds the next."""
    found = []
    inputs = x
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            outputs = []
            for direction in range(1 + rnn.bidirectional):
                suffix = f"_l{layer}{'_reverse' if direction else ''}"
                cell = _CELLS[rnn.mode](inputs.shape[-1], rnn.hidden_size, rnn.bias)
                for name, _ in cell.named_parameters():
                    getattr(cell, name).copy_(getattr(rnn, name + suffix))
                h = torch.zeros(x.shape[0], rnn.hidden_size)
                state = (h, torch.zeros_like(h)) if rnn.mode == "LSTM" else (h,)
                steps: list[list[torch.Tensor]] = []
                hidden = []
                order = range(x.shape[1] - 1, -1, -1) if direction else range(x.shape[1])
                for t in order:
                    pre = _step_pre(rnn.mode, cell, inputs[:, t], state)
                    new = cell(inputs[:, t], state if rnn.mode == "LSTM" else state[0])
                    state = new if isinstance(new, tuple) else (new,)
                    steps.append(pre + list(state[1:]))
                    hidden.append(state[0])
                if direction:
                    steps, hidden = steps[::-1], hidden[::-1]
                for gate in zip(*steps, strict=True):
                    found.append(torch.stack(gate, dim=1).reshape(x.shape[0], -1))
                outputs.append(torch.stack(hidden, dim=1))
            inputs = torch.cat(outputs, dim=-1)
    return found


def _save(kind: str, net: nn.Module, x: torch.Tensor, path: Path) -> Path:
    if kind == "pt2":
        return save_exported(net, [x[:2]], path)
    if kind.startswith("onnx"):
        return export_onnx(net, [x[:2]], path, dynamo=kind == "onnx-dynamo", opset=18)
    return save_script(net, [x[:2]] if kind == "traced" else None, path)


def _open(kind: str, net: nn.Module, x: torch.Tensor, path: Path, **options: object) -> CaptureModel:
    return open_model(_save(kind, net, x, path), device="cpu", example=np_batch(x=x[:2]), **options)  # type: ignore[arg-type]


_GATES = {
    "LSTM": ["input_gate", "forget_gate", "cell_gate", "output_gate", "cell"],
    "GRU": ["reset_gate", "update_gate", "new_gate"],
    "RNN_TANH": ["hidden"],
    "RNN_RELU": ["hidden"],
}

_RNNS: dict[str, Callable[[], nn.RNNBase]] = {
    "lstm-2-layers-bidirectional": lambda: nn.LSTM(4, 8, num_layers=2, bidirectional=True, batch_first=True),
    "gru-3-layers-time-first": lambda: nn.GRU(4, 8, num_layers=3),
    "gru-bidirectional-no-bias": lambda: nn.GRU(4, 8, bidirectional=True, bias=False, batch_first=True),
    "rnn-relu-2-layers-bidirectional": lambda: nn.RNN(
        4, 8, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True
    ),
}


@pytest.mark.parametrize("make", list(_RNNS.values()), ids=list(_RNNS))
def test_stacked_and_bidirectional_gates_of_a_pt2_are_the_unrolled_cells(
    make: Callable[[], nn.RNNBase], tmp_path: Path
) -> None:
    torch.manual_seed(7)
    net = _Encoder(make()).eval()
    x = torch.randn(6, 5, 4)
    model = _open("pt2", net, x, tmp_path / "model.pt2")

    result = model.capture(np_batch(x=x))

    rnn = net.rnn
    names = [
        f"rnn:l{layer}{'.reverse' if direction else ''}:{gate}"
        for layer in range(rnn.num_layers)
        for direction in range(1 + rnn.bidirectional)
        for gate in _GATES[rnn.mode]
    ]
    assert [layer.name for layer in model.layers] == ["head.1:relu", *names]
    assert all(layer.shape == (5, 8) for layer in model.layers[1:])
    assert model.warnings == []
    for k, pre in enumerate(_unrolled(rnn, x), start=1):
        assert close(result.pre[k], pre, atol=1e-5), model.layers[k].name
        op = model.layers[k].op_type
        post = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[op](pre)
        assert close(result.post[k], post, atol=1e-5), model.layers[k].name


@pytest.mark.parametrize("kind", ["scripted", "traced", "onnx-legacy", "onnx-dynamo"])
@pytest.mark.parametrize("make", list(_RNNS.values()), ids=list(_RNNS))
def test_torchscript_and_onnx_stacked_and_bidirectional_gates_equal_the_pt2_ones(
    make: Callable[[], nn.RNNBase], kind: str, tmp_path: Path
) -> None:
    """Same layers (names: the module path, except the legacy ONNX exporter's node names), op
    types, shapes and values as the ``.pt2`` (checked against unrolled cells above); no warning
    left, and one gate can be chosen by name."""
    torch.manual_seed(8)
    net = _Encoder(make()).eval()
    if kind == "onnx-dynamo" and net.rnn.mode.startswith("RNN"):
        pytest.skip("the dynamo exporter unrolls an nn.RNN into per-step ops: no RNN node")
    x = torch.randn(6, 5, 4)
    exported = _open("pt2", net, x, tmp_path / "model.pt2")
    saved = _save(kind, net, x, tmp_path / "model")
    model = open_model(saved, device="cpu", example=np_batch(x=x[:2]))

    expected, found = exported.capture(np_batch(x=x)), model.capture(np_batch(x=x))

    assert [(layer.op_type, layer.shape) for layer in model.layers] == [
        (layer.op_type, layer.shape) for layer in exported.layers
    ]
    if kind != "onnx-legacy":
        assert [layer.name for layer in model.layers] == [layer.name for layer in exported.layers]
    assert model.warnings == []
    for k, layer in enumerate(model.layers):
        assert close(found.pre[k], expected.pre[k], atol=1e-5), layer.name
        assert close(found.post[k], expected.post[k], atol=1e-5), layer.name
    middle = len(model.layers) // 2
    only = open_model(saved, device="cpu", example=np_batch(x=x[:2]), layer_names=[model.layers[middle].name])
    assert close(only.capture(np_batch(x=x)).pre[0], expected.pre[middle], atol=1e-5)
