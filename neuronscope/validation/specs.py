"""How a model's inputs are described to the dataset checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

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


class InputLike(Protocol):
    """Anything describing a model input by attributes: :class:`ModelInput`, the engine's
    ``InputSpec``, the report's ``InputInfo``."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[Dim] | None: ...

    @property
    def dtype(self) -> str: ...


#: A model input as an object with ``name``/``shape``/``dtype`` or a plain ``(name, shape, dtype)``.
InputDescription = InputLike | tuple[str, Sequence[Dim] | None, str]


def as_model_input(spec: InputDescription) -> ModelInput:
    """Normalise either form of input description to a :class:`ModelInput`.

    >>> as_model_input(("x", ["N", 784], "float32"))
    ModelInput(name='x', shape=('N', 784), dtype='float32')
    """
    if isinstance(spec, ModelInput):
        return spec
    if isinstance(spec, tuple):
        name, shape, dtype = spec
    else:
        name, shape, dtype = spec.name, spec.shape, spec.dtype
    return ModelInput(str(name), None if shape is None else tuple(shape), str(dtype))


def format_shape(shape: tuple[Dim, ...] | tuple[int, ...]) -> str:
    """A shape as Python prints a tuple, with symbolic dimensions bare and unknown ones as ``?``.

    >>> format_shape((1, 28, 28)), format_shape((784,)), format_shape(("batch", None, 3))
    ('(1, 28, 28)', '(784,)', '(batch, ?, 3)')
    """
    parts = ["?" if dim is None else str(dim) for dim in shape]
    if len(parts) == 1:
        return f"({parts[0]},)"
    return "(" + ", ".join(parts) + ")"
