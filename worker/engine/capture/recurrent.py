"""Recurrent layers whose gates are not analysed: fused LSTM / GRU / RNN ops compute their gate
activations (sigmoid, tanh) inside one kernel, so no front end sees those pre-activations. Each
front end lists such layers, and the report carries a warning for each (``model.warnings``), so a
summary never describes "the network" from the other layers alone without saying so. Except:
LSTMs without projection, GRUs and RNNs (any layers and directions) in ``.pt2``, TorchScript and
ONNX, whose gates are recomputed exactly (``worker.engine.capture.recurrent_gates``) and analysed
as layers."""

from __future__ import annotations

#: Fused recurrent aten ops (TorchScript ``aten::<op>``, ``.pt2`` ``aten.<op>``), to a label.
ATEN_RECURRENT: dict[str, str] = {
    "lstm": "LSTM",
    "gru": "GRU",
    "rnn_tanh": "RNN",
    "rnn_relu": "RNN",
    "lstm_cell": "LSTMCell",
    "gru_cell": "GRUCell",
    "rnn_tanh_cell": "RNNCell",
    "rnn_relu_cell": "RNNCell",
}

#: Recurrent ONNX ops, to a label.
ONNX_RECURRENT: dict[str, str] = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN"}


def recurrent_warning(kind: str, where: str) -> str:
    """The report's warning for one recurrent layer ``kind`` (``"LSTM"``) at ``where`` (its module
    path or node name; empty when unknown).

    >>> recurrent_warning("LSTM", "encoder.lstm").split(":")[0]
    "LSTM 'encoder.lstm'"
    """
    at = f" {where!r}" if where else ""
    return (
        f"{kind}{at}: its gates (sigmoid and tanh inside the fused op) are not analysed; the figures cover "
        "the other activation layers only"
    )
