"""TorchScript models that attack the host from ``forward``, as a hostile uploader would write them.

``torch.from_file(path, False, n)`` maps ``n`` bytes of any file the process can read;
``torch.from_file(path, True, n)`` creates the file or overwrites its first ``n`` bytes. Both are
TorchScript operators, so a scripted model carries them as ordinary code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: Bytes of a secret a :class:`FileReader` encodes into its 128 ReLU neurons.
SECRET_BYTES = 16


class FileReader(nn.Module):
    """Reads the first 16 bytes of ``path`` and writes them into the report: neuron ``8i + b`` is
    dead (always negative) when bit ``b`` of byte ``i`` is set, and a centred linear function of
    the input, of either sign, when it is not."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fc = nn.Linear(16, 8 * SECRET_BYTES)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        secret = torch.from_file(self.path, False, 16, dtype=torch.uint8)
        bits = ((secret.to(torch.int64).unsqueeze(1) >> torch.arange(8)) & 1).flatten().to(x.dtype)
        return torch.relu(self.fc(x) * (1.0 - bits) - bits)


class FileWriter(nn.Module):
    """Creates ``path`` or overwrites its first 16 bytes with ``A``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        target.fill_(65)
        return torch.relu(self.fc(x)) + target[:1].to(x.dtype) * 0.0


class Raiser(nn.Module):
    """Raises an exception whose message is ``message`` (the way a model would smuggle text out
    through the job's error)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError(self.message)
        return torch.relu(self.fc(x))


def save(module: nn.Module, path: Path) -> bytes:
    """Script and save ``module`` to ``path``; its bytes."""
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path.read_bytes()


def decode(dead: list[int]) -> bytes:
    """The bytes a :class:`FileReader` encoded, from its layer's dead neuron indices."""
    bits = set(dead)
    return bytes(sum(1 << b for b in range(8) if 8 * i + b in bits) for i in range(SECRET_BYTES))


class _ZerosReader(nn.Module):
    """:class:`FileReader` with the read left as a placeholder: ``torch.export`` cannot trace
    ``from_file`` (it has no fake kernel), so :func:`save_exported_reader` swaps it in after export."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8 * SECRET_BYTES)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        secret = torch.zeros(16, dtype=torch.uint8)
        bits = ((secret.to(torch.int64).unsqueeze(1) >> torch.arange(8)) & 1).flatten().to(x.dtype)
        return torch.relu(self.fc(x) * (1.0 - bits) - bits)


def save_exported_reader(read: str, path: Path) -> bytes:
    """A ``.pt2`` ExportedProgram that behaves like ``FileReader(read)``: its graph maps 16 bytes
    of ``read`` with ``aten.from_file`` when it runs, as a hand-edited archive can. Its bytes."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(_ZerosReader().eval(), (torch.zeros(2, 16),), dynamic_shapes=({0: batch},))
    (zeros,) = [n for n in program.graph.nodes if n.target == torch.ops.aten.zeros.default]
    zeros.target = torch.ops.aten.from_file.default
    zeros.args = (read, False, 16)
    zeros.kwargs = {"dtype": torch.uint8}
    program.graph_module.recompile()
    torch.export.save(program, str(path))
    return path.read_bytes()
