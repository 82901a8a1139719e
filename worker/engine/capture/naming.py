"""One naming scheme for the layers of every front end.

A layer is named ``"<module path>:<op>"`` (``"net.4.act:relu"``) where the model carries the
PyTorch module path of the activation (TorchScript, ``.pt2``), with ``#k`` appended when that is
not unique; an activation outside any submodule is ``"aten::<op>#k"`` (k counting from 0 in
execution order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def module_layer_names(paths: Sequence[str], ops: Sequence[str]) -> list[str]:
    """Layer names for activations with module ``paths`` (``""``: none) and aten ``ops``.

    >>> module_layer_names(["net.1", "", "net.3", "net.3"], ["relu", "sigmoid", "relu", "relu"])
    ['net.1:relu', 'aten::sigmoid#0', 'net.3:relu#0', 'net.3:relu#1']
    """
    if len(paths) != len(ops):
        raise ValueError(f"expected one op per module path, got {len(paths)} paths and {len(ops)} ops")
    bases = [f"{path}:{op}" if path else f"aten::{op}" for path, op in zip(paths, ops, strict=True)]
    counts = Counter(bases)
    seen: Counter[str] = Counter()
    names = []
    for base, path in zip(bases, paths, strict=True):
        if counts[base] > 1 or not path:
            names.append(f"{base}#{seen[base]}")
            seen[base] += 1
        else:
            names.append(base)
    return names
