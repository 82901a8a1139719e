"""One naming scheme for the layers of every front end.

A layer is named ``"<module path>:<op type>"`` (``"net.4.act:relu"``, the canonical op type) where
the model carries the PyTorch module path of the activation (TorchScript scripted or traced,
``.pt2``, ONNX from the dynamo exporter), with ``#k`` appended when that is not unique; an
activation outside any submodule is ``"aten::<op type>#k"`` (k counting from 0 in execution
order). A model without module paths (the legacy ONNX exporter) keeps its node names.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

#: The dynamo exporter's record of a node's module scopes: ``"['', 'features', 'features.1', 'relu']"``
#: (the root, each enclosing module's path, then the FX node's name).
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_MAX_SCOPES_CHARS = 16_384


def module_layer_names(paths: Sequence[str], ops: Sequence[str]) -> list[str]:
    """Layer names for activations with module ``paths`` (``""``: none) and canonical op types
    ``ops``.

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


def resolve_path(path: str, modules: Collection[str], containers: Collection[str]) -> str:
    """``path`` as a qualified name among ``modules`` (``named_modules()``), re-inserting the
    ``containers`` (``ModuleList`` / ``ModuleDict`` names) a TorchScript call stack leaves out, as
    they have no forward of their own: ``encoder.0.act`` is ``encoder.layer.0.act``. Unchanged
    where no single module fits.

    >>> resolve_path("enc.0.1", ["enc", "enc.layer", "enc.layer.0", "enc.layer.0.1"], ["enc.layer"])
    'enc.layer.0.1'
    """
    if not path or not modules:
        return path
    known = set(modules)
    resolved = ""
    for part in path.split("."):
        direct = f"{resolved}.{part}" if resolved else part
        if direct in known:
            resolved = direct
            continue
        depth = direct.count(".") + 1
        prefix = f"{resolved}." if resolved else ""
        inside = [
            name
            for name in known
            if name.count(".") == depth
            and name.endswith(f".{part}")
            and name.startswith(prefix)
            and name.rsplit(".", 1)[0] in containers
        ]
        if len(inside) != 1:
            return path
        resolved = inside[0]
    return resolved


def scope_path(node: onnx.NodeProto) -> str | None:
    """The innermost module path of an ONNX node from its ``pkg.torch.onnx.name_scopes`` metadata
    (``""`` for the root module), None when the node carries none or it does not parse.

    >>> import onnx
    >>> node = onnx.helper.make_node("Relu", ["x"], ["y"])
    >>> _ = node.metadata_props.add(key=NAME_SCOPES, value="['', 'features', 'features.1', 'relu']")
    >>> scope_path(node)
    'features.1'
    """
    text = next((entry.value for entry in node.metadata_props if entry.key == NAME_SCOPES), None)
    if text is None or len(text) > _MAX_SCOPES_CHARS:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return None
    return scopes[-2].split("@", 1)[0] if len(scopes) >= 2 else ""


def scope_modules(node: onnx.NodeProto) -> list[str]:
    """Every module path enclosing an ONNX node by its ``pkg.torch.onnx.name_scopes`` metadata
    (the root left out), outermost first; empty when it carries none.

    >>> import onnx
    >>> node = onnx.helper.make_node("Relu", ["x"], ["y"])
    >>> _ = node.metadata_props.add(key=NAME_SCOPES, value="['', 'features', 'features.1', 'relu']")
    >>> scope_modules(node)
    ['features', 'features.1']
    """
    text = next((entry.value for entry in node.metadata_props if entry.key == NAME_SCOPES), None)
    if text is None or len(text) > _MAX_SCOPES_CHARS:
        return []
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return []
    return [path for s in scopes[1:-1] if (path := s.split("@", 1)[0])]
