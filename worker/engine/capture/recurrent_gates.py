"""The gates of an LSTM, a GRU or an Elman RNN, recomputed exactly from the fused op's input,
initial state and output sequence, so that they are analysed as layers (``.pt2`` programs): the
output sequence holds every ``h_{t-1}``, so the gate pre-activations of all steps are two matrix
products (a GRU's candidate adds one elementwise product), and an LSTM's cell state one
elementwise pass over time.

Supported: ``aten.lstm.input`` (no projection), ``aten.gru.input``, ``aten.rnn_tanh.input`` and
``aten.rnn_relu.input``, each with one layer and one direction; other recurrent ops stay warnings
(``worker.engine.capture.recurrent``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx

from worker.engine.capture.exported_graph import module_path

#: The layers of one LSTM: gate name and canonical op type (Γ defaults as for that op).
LSTM_GATES: list[tuple[str, str]] = [
    ("input_gate", "sigmoid"),
    ("forget_gate", "sigmoid"),
    ("cell_gate", "tanh"),
    ("output_gate", "sigmoid"),
    ("cell", "tanh"),
]

#: The layers of one GRU, in PyTorch's packed order (r, z, n).
GRU_GATES: list[tuple[str, str]] = [
    ("reset_gate", "sigmoid"),
    ("update_gate", "sigmoid"),
    ("new_gate", "tanh"),
]

#: Per supported op (``aten.<op>.input``), its layers in order.
RECURRENT_GATES: dict[str, list[tuple[str, str]]] = {
    "lstm": LSTM_GATES,
    "gru": GRU_GATES,
    "rnn_tanh": [("hidden", "tanh")],
    "rnn_relu": [("hidden", "relu")],
}

_OPS: dict[object, str] = {
    torch.ops.aten.lstm.input: "lstm",
    torch.ops.aten.gru.input: "gru",
    torch.ops.aten.rnn_tanh.input: "rnn_tanh",
    torch.ops.aten.rnn_relu.input: "rnn_relu",
}


@dataclass(frozen=True)
class RecurrentSite:
    """One fused recurrent node of kind ``op`` (a key of ``RECURRENT_GATES``): ``exposed`` its
    input, initial state(s) (``h0``, and ``c0`` for an LSTM) and output sequence nodes (in that
    order), ``params`` its weight placeholders (``w_ih, w_hh[, b_ih, b_hh]``)."""

    node: fx.Node
    op: str
    exposed: list[fx.Node]
    params: list[str]
    batch_first: bool
    path: str

    @property
    def gates(self) -> list[tuple[str, str]]:
        return RECURRENT_GATES[self.op]


def find_recurrent(graph: fx.Graph) -> list[RecurrentSite]:
    """The supported recurrent nodes of ``graph`` whose output sequence is used (``getitem 0``)."""
    sites = []
    for node in graph.nodes:
        op = _OPS.get(node.target) if node.op == "call_function" else None
        if op is None:
            continue
        x, hx, params, has_biases, layers, _dropout, _train, bidirectional, batch_first = node.args[:9]
        states = list(hx) if isinstance(hx, list | tuple) else [hx]
        if layers != 1 or bidirectional or len(states) != (2 if op == "lstm" else 1):
            continue
        if not isinstance(params, list | tuple) or len(params) != (4 if has_biases else 2):
            continue
        if not all(isinstance(p, fx.Node) and p.op == "placeholder" for p in params):
            continue
        out = next((u for u in node.users if u.target is operator.getitem and u.args[1] == 0), None)
        if out is None or not isinstance(x, fx.Node) or not all(isinstance(h, fx.Node) for h in states):
            continue
        sites.append(
            RecurrentSite(
                node, op, [x, *states, out], [p.name for p in params], bool(batch_first), module_path(node)
            )
        )
    return sites


def recurrent_gates(
    op: str, values: list[torch.Tensor], weights: list[torch.Tensor], batch_first: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(pre, post)`` ``[B, T, H]`` of each of ``RECURRENT_GATES[op]``.

    ``values``: the op's input ``[B, T, I]`` (``[T, B, I]`` unless ``batch_first``), ``h0`` (and
    for an LSTM ``c0``) ``[1, B, H]`` and output sequence (same layout as the input);
    ``weights``: ``w_ih [G*H, I]``, ``w_hh [G*H, H]`` and optionally ``b_ih``, ``b_hh`` ``[G*H]``
    (``G`` = 4 for an LSTM, 3 for a GRU, 1 for an RNN).

    >>> rnn = torch.nn.RNN(3, 2, batch_first=True)
    >>> x = torch.randn(4, 5, 3)
    >>> out, _ = rnn(x)
    >>> weights = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    >>> [(pre, post)] = recurrent_gates("rnn_tanh", [x, torch.zeros(1, 4, 2), out], weights, True)
    >>> bool(torch.allclose(post, out, atol=1e-6))
    True
    """
    with torch.inference_mode():
        x, *states, out = values
        if not batch_first:
            x, out = x.transpose(0, 1), out.transpose(0, 1)
        h_prev = torch.cat([states[0][0].unsqueeze(1), out[:, :-1]], dim=1)
        from_x, from_h = x @ weights[0].T, h_prev @ weights[1].T
        if len(weights) == 4:
            from_x, from_h = from_x + weights[2], from_h + weights[3]
        if op == "lstm":
            return _lstm(from_x + from_h, states[1])
        if op == "gru":
            return _gru(from_x, from_h)
        pre = from_x + from_h
        return [(pre, torch.relu(pre) if op == "rnn_relu" else torch.tanh(pre))]


def _lstm(gates: torch.Tensor, c0: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    i, f, g, o = gates.chunk(4, dim=-1)
    cells = []
    cell = c0[0]
    for t in range(gates.shape[1]):
        cell = torch.sigmoid(f[:, t]) * cell + torch.sigmoid(i[:, t]) * torch.tanh(g[:, t])
        cells.append(cell)
    c = torch.stack(cells, dim=1)
    return [
        (i, torch.sigmoid(i)),
        (f, torch.sigmoid(f)),
        (g, torch.tanh(g)),
        (o, torch.sigmoid(o)),
        (c, torch.tanh(c)),
    ]


def _gru(from_x: torch.Tensor, from_h: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """PyTorch's GRU: ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` likewise, and
    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``."""
    x_r, x_z, x_n = from_x.chunk(3, dim=-1)
    h_r, h_z, h_n = from_h.chunk(3, dim=-1)
    r, z = x_r + h_r, x_z + h_z
    n = x_n + torch.sigmoid(r) * h_n
    return [(r, torch.sigmoid(r)), (z, torch.sigmoid(z)), (n, torch.tanh(n))]
