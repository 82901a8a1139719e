"""The gates of an LSTM, recomputed exactly from the fused op's input, initial state and output
sequence, so that they are analysed as layers (``.pt2`` programs): the output sequence holds every
``h_{t-1}``, so the gate pre-activations of all steps are two matrix products, and the cell state
one elementwise pass over time.

Supported: ``aten.lstm.input`` with one layer, one direction and no projection; other recurrent
ops stay warnings (``worker.engine.capture.recurrent``).
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


@dataclass(frozen=True)
class LstmSite:
    """One fused LSTM node: ``exposed`` its input, ``h0``, ``c0`` and output sequence nodes (in that
    order), ``params`` its weight placeholders (``w_ih, w_hh[, b_ih, b_hh]``)."""

    node: fx.Node
    exposed: list[fx.Node]
    params: list[str]
    batch_first: bool
    path: str


def find_lstms(graph: fx.Graph) -> list[LstmSite]:
    """The supported LSTM nodes of ``graph`` whose output sequence is used (``getitem 0``)."""
    sites = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.lstm.input:
            continue
        x, hx, params, has_biases, layers, _dropout, _train, bidirectional, batch_first = node.args[:9]
        if layers != 1 or bidirectional or not isinstance(hx, list | tuple) or len(hx) != 2:
            continue
        if not isinstance(params, list | tuple) or len(params) != (4 if has_biases else 2):
            continue
        if not all(isinstance(p, fx.Node) and p.op == "placeholder" for p in params):
            continue
        out = next((u for u in node.users if u.target is operator.getitem and u.args[1] == 0), None)
        if out is None or not isinstance(x, fx.Node) or not all(isinstance(h, fx.Node) for h in hx):
            continue
        sites.append(
            LstmSite(
                node, [x, hx[0], hx[1], out], [p.name for p in params], bool(batch_first), module_path(node)
            )
        )
    return sites


def lstm_gates(
    values: list[torch.Tensor], weights: list[torch.Tensor], batch_first: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(pre, post)`` ``[B, T, H]`` of each of ``LSTM_GATES``.

    ``values``: the op's input ``[B, T, I]`` (``[T, B, I]`` unless ``batch_first``), ``h0`` and
    ``c0`` ``[1, B, H]`` and output sequence ``[B, T, H]`` (same layout as the input);
    ``weights``: ``w_ih [4H, I]``, ``w_hh [4H, H]`` and optionally ``b_ih``, ``b_hh`` ``[4H]``.
    """
    with torch.inference_mode():
        return _gates(values, weights, batch_first)


def _gates(
    values: list[torch.Tensor], weights: list[torch.Tensor], batch_first: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, h0, c0, out = values
    if not batch_first:
        x, out = x.transpose(0, 1), out.transpose(0, 1)
    h_prev = torch.cat([h0[0].unsqueeze(1), out[:, :-1]], dim=1)
    gates = x @ weights[0].T + h_prev @ weights[1].T
    if len(weights) == 4:
        gates = gates + weights[2] + weights[3]
    i, f, g, o = gates.chunk(4, dim=-1)
    cells = []
    cell = c0[0]
    for t in range(x.shape[1]):
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
