"""How a model's inputs are described to the dataset checks."""

from __future__ import annotations

from typing import NamedTuple

#: One dimension as a model declares it: a fixed size, a symbolic name, or ``None`` (unknown).
Dim = int | str | None


class ModelInput(NamedTuple):
    """One model input.

    ``shape`` includes the batch dimension; a ``str`` or ``None`` dimension is dynamic and a
    ``None`` shape means the rank itself is unknown. ``dtype`` is a numpy-style name
    (``"float32"``, ``"int64"``, ``"bool"``); ONNX (``"tensor(float)"``, ``"float"``) and torch
    (``"torch.float32"``) spellings are understood too. A plain ``(name, shape, dtype)`` tuple works
    wherever a ``ModelInput`` is expected.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str


def format_shape(shape: tuple[Dim, ...] | tuple[int, ...]) -> str:
    """A shape as Python prints a tuple, with symbolic dimensions bare and unknown ones as ``?``.

    >>> format_shape((1, 28, 28)), format_shape((784,)), format_shape(("batch", None, 3))
    ('(1, 28, 28)', '(784,)', '(batch, ?, 3)')
    """
    parts = ["?" if dim is None else str(dim) for dim in shape]
    if len(parts) == 1:
        return f"({parts[0]},)"
    return "(" + ", ".join(parts) + ")"
