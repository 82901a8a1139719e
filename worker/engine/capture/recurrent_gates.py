"""The gates of an LSTM, a GRU or an Elman RNN, recomputed exactly from the fused op's input,
initial state and output sequence, so that they are analysed as layers (``.pt2`` programs): the
output sequence holds every ``h_{t-1}``, so the gate pre-activations of all steps are two matrix
products (a GRU's candidate adds one elementwise product), and an LSTM's cell state one
elementwise pass over time.

Stacked and bidirectional ops (``stacked_gates``): the last layer's steps come from the output
sequence as above; an earlier layer's output sequence, the next layer's input, is recomputed with
the same cell recurrence step by step; a reverse direction is a forward one over the reversed
sequence. Their gates are named ``l<layer>:<gate>`` and ``l<layer>.reverse:<gate>`` after
PyTorch's parameter suffixes (``_l1``, ``_l1_reverse``); a one-layer, one-direction op keeps the
plain ``<gate>``.

Supported: ``aten.lstm.input`` (no projection), ``aten.gru.input``, ``aten.rnn_tanh.input`` and
``aten.rnn_relu.input``; other recurrent ops stay warnings (``worker.engine.capture.recurrent``).
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


def gate_names(op: str, layers: int, directions: int, numbered: bool | None = None) -> list[tuple[str, str]]:
    """Name and op type of every gate of an ``op`` with ``layers`` layers and ``directions``
    directions, layer by layer, forward before reverse (the order of ``stacked_gates``); the names
    carry the layer (and direction) when ``numbered``, by default when there is more than one.

    >>> [name for name, _ in gate_names("gru", 2, 1)][2:4]
    ['l0:new_gate', 'l1:reset_gate']
    >>> [name for name, _ in gate_names("rnn_tanh", 1, 2)]
    ['l0:hidden', 'l0.reverse:hidden']
    """
    if not (numbered if numbered is not None else layers > 1 or directions > 1):
        return list(RECURRENT_GATES[op])
    return [
        (f"l{layer}{'.reverse' if direction else ''}:{gate}", op_type)
        for layer in range(layers)
        for direction in range(directions)
        for gate, op_type in RECURRENT_GATES[op]
    ]


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
    layers: int = 1
    directions: int = 1

    @property
    def gates(self) -> list[tuple[str, str]]:
        return gate_names(self.op, self.layers, self.directions)


def find_recurrent(graph: fx.Graph) -> list[RecurrentSite]:
    """The supported recurrent nodes of ``graph`` whose output sequence is used (``getitem 0``)."""
    sites = []
    for node in graph.nodes:
        op = _OPS.get(node.target) if node.op == "call_function" else None
        if op is None:
            continue
        x, hx, params, has_biases, layers, _dropout, _train, bidirectional, batch_first = node.args[:9]
        states = list(hx) if isinstance(hx, list | tuple) else [hx]
        if not isinstance(layers, int) or layers < 1 or len(states) != (2 if op == "lstm" else 1):
            continue
        directions = 2 if bidirectional else 1
        if (
            not isinstance(params, list | tuple)
            or len(params) != (4 if has_biases else 2) * layers * directions
        ):
            continue
        if not all(isinstance(p, fx.Node) and p.op == "placeholder" for p in params):
            continue
        out = next((u for u in node.users if u.target is operator.getitem and u.args[1] == 0), None)
        if out is None or not isinstance(x, fx.Node) or not all(isinstance(h, fx.Node) for h in states):
            continue
        sites.append(
            RecurrentSite(
                node,
                op,
                [x, *states, out],
                [p.name for p in params],
                bool(batch_first),
                module_path(node),
                layers,
                directions,
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


def stacked_gates(
    op: str,
    values: list[torch.Tensor],
    weights: list[torch.Tensor],
    batch_first: bool,
    layers: int,
    directions: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(pre, post)`` ``[B, T, H]`` of each of ``gate_names(op, layers, directions)``.

    ``values``: the op's input ``[B, T, I]`` (``[T, B, I]`` unless ``batch_first``), ``h0`` (and
    for an LSTM ``c0``) ``[layers * directions, B, H]`` and output sequence ``[B, T, directions *
    H]`` (same layout as the input); ``weights``: PyTorch's flat order, layer by layer, forward
    before reverse, each ``w_ih, w_hh[, b_ih, b_hh]`` as in ``recurrent_gates``.

    >>> gru = torch.nn.GRU(3, 2, num_layers=2, bidirectional=True, batch_first=True)
    >>> x = torch.randn(4, 5, 3)
    >>> out, _ = gru(x)
    >>> gates = stacked_gates("gru", [x, torch.zeros(4, 4, 2), out], gru._flat_weights, True, 2, 2)
    >>> len(gates), tuple(gates[0][0].shape)
    (12, (4, 5, 2))
    """
    with torch.inference_mode():
        x, *states, out = values
        if not batch_first:
            x, out = x.transpose(0, 1), out.transpose(0, 1)
        per = len(weights) // (layers * directions)
        hidden = weights[1].shape[1]
        found: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in range(layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                given = weights[k * per : (k + 1) * per]
                initial = [state[k : k + 1] for state in states]
                inputs = x.flip(1) if direction else x
                if layer == layers - 1:
                    sequence = out[..., direction * hidden : (direction + 1) * hidden]
                    sequence = sequence.flip(1) if direction else sequence
                else:
                    sequence = _run(op, inputs, initial, given)
                gates = recurrent_gates(op, [inputs, *initial, sequence], given, batch_first=True)
                if direction:
                    gates = [(pre.flip(1), post.flip(1)) for pre, post in gates]
                    sequence = sequence.flip(1)
                found += gates
                outputs.append(sequence)
            x = torch.cat(outputs, dim=-1)
        return found


def _run(op: str, x: torch.Tensor, states: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """The output sequence ``[B, T, H]`` of one layer and direction stepped over ``x`` ``[B, T,
    I]`` from ``states`` (``[1, B, H]`` each) with the cell recurrence of ``op``."""
    from_x = x @ weights[0].T
    if len(weights) == 4:
        from_x = from_x + weights[2]
    h = states[0][0]
    c = states[1][0] if op == "lstm" else h
    steps = []
    for t in range(x.shape[1]):
        from_h = h @ weights[1].T
        if len(weights) == 4:
            from_h = from_h + weights[3]
        if op == "lstm":
            i, f, g, o = (from_x[:, t] + from_h).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif op == "gru":
            x_r, x_z, x_n = from_x[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = from_h.chunk(3, dim=-1)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + torch.sigmoid(x_r + h_r) * h_n)
            h = (1 - z) * n + z * h
        else:
            pre = from_x[:, t] + from_h
            h = torch.relu(pre) if op == "rnn_relu" else torch.tanh(pre)
        steps.append(h)
    return torch.stack(steps, dim=1)


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
