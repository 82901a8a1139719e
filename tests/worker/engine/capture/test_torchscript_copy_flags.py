"""``copy_flags`` finds each in-place activation's twin in a copy of the graph by its position among
the nodes of its kind; checked against the brute-force reference (a full activation search in every
copy) on a scripted module with in-place activations in blocks, chained and followed by other
in-place writes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker.engine.capture.torchscript_graph import copy_flags, find_activations, inlined_graph


class _Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, flag: bool) -> torch.Tensor:
        a = torch.relu_(self.lin(x))
        b = torch.relu_(a)  # chained: writes a's memory again
        c = torch.sigmoid(self.lin(b))
        if flag:
            d = torch.relu_(self.lin(c))
            d.add_(1.0)  # another in-place write after the activation
        else:
            d = torch.tanh_(self.lin(c))
        e = torch.relu(d)
        for _ in range(2):
            e = torch.relu_(self.lin(e))
        return torch.tanh_(e * 2.0)


def _reference(graph: torch._C.Graph) -> list[tuple[bool, bool]]:
    """The search-per-copy definition of ``copy_flags``."""
    aliases: Any = graph.alias_db()
    flags = []
    for index, candidate in enumerate(find_activations(graph)):
        if not candidate.inplace:
            node = candidate.node
            flags.append((bool(aliases.has_writers(candidate.pre)), bool(aliases.has_writers(node.output()))))
            continue
        trial = graph.copy()
        node = find_activations(trial)[index].node
        functional = trial.create(node.kind().removesuffix("_"), list(node.inputs()), 1)
        functional.insertBefore(node)
        functional.output().setType(node.output().type())
        node.output().replaceAllUsesWith(functional.output())
        node.destroy()
        trial_aliases: Any = trial.alias_db()
        written = trial_aliases.has_writers(functional.inputsAt(0)) or trial_aliases.has_writers(
            functional.output()
        )
        flags.append((True, bool(written)))
    return flags


def test_copy_flags_match_the_search_per_copy_reference() -> None:
    scripted: Any = torch.jit.script(_Blocks().eval())
    graph = inlined_graph(scripted)
    candidates = find_activations(graph)
    assert sum(c.inplace for c in candidates) >= 5

    flags = copy_flags(graph)

    assert flags == _reference(graph)
    assert {written for (_, written), c in zip(flags, candidates, strict=True) if c.inplace} == {True, False}
