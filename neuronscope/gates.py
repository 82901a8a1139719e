"""Quality gates: small, safe expressions over a report that fail a pipeline step.

A gate *fails* when its expression is true, e.g. ``max(layers.dead_fraction) > 0.2``.

Grammar (no ``eval``; a hand-written tokenizer and parser)::

    gate   := term OP NUMBER
    term   := PATH | AGG "(" PATH ")" | "delta" "(" PATH ")"
            | "delta" "(" AGG "(" PATH ")" ")" | AGG "(" "delta" "(" PATH ")" ")"
    AGG    := "max" | "min" | "mean"
    OP     := ">" | ">=" | "<" | "<=" | "==" | "!="
    PATH   := NAME ("." (NAME | INDEX))*          e.g. pattern_similarity.different_label.mean
    NUMBER := a decimal number, optionally signed, optionally with an exponent (1e-3)

A ``PATH`` walks the report's JSON. Through a list it maps over the elements
(``layers.dead_fraction`` is one value per layer) unless the next part is an index
(``layers.0.dead_fraction``); a path that ends on a list of numbers (``…ps_d.value``) yields its
elements. A path that yields several values must be wrapped in ``max``, ``min`` or ``mean``;
``null`` elements (undefined statistics) are skipped by the aggregates, and a ``null`` scalar is an
error.

``delta(…)`` exists only when comparing two reports: ``new − old``. ``delta(max(P))`` is
``max(P)`` of the new report minus that of the old; ``max(delta(P))`` takes the per-element
deltas, matching list elements by their ``name`` (layers, per-layer similarity) or by index, and
aggregates them. Outside ``delta``, a compare gate reads the new report.

Wrong paths and ``null`` values raise :class:`GatePathError`, which names the path and the valid
keys at the point where it went wrong; malformed expressions raise :class:`GateSyntaxError`.

>>> gate = parse_gate("max(layers.dead_fraction) > 0.2")
>>> data = {"layers": [{"name": "fc1", "dead_fraction": 0.1}, {"name": "fc2", "dead_fraction": 0.3}]}
>>> outcome = evaluate_gate(gate, data)
>>> outcome.failed, outcome.value, outcome.where
(True, 0.3, "layers 'fc2'")
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel

from neuronscope.contracts.report import Report
from neuronscope.errors import NeuronscopeError

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Func = Literal["max", "min", "mean", "delta"]
AGGREGATES: tuple[str, ...] = ("max", "min", "mean")
OPS: tuple[str, ...] = (">=", "<=", "==", "!=", ">", "<")

_OP_WORDS: dict[str, str] = {
    ">": "above",
    ">=": "at or above",
    "<": "below",
    "<=": "at or below",
    "==": "equal to",
    "!=": "different from",
}


class GateError(NeuronscopeError):
    """A gate that cannot be evaluated: the CLI exits with its usage error code."""

    code = "gate_invalid"


class GateSyntaxError(GateError):
    """An expression that does not follow the gate grammar."""

    code = "gate_syntax"


class GatePathError(GateError):
    """A path that does not exist in the report, or that leads to ``null`` or to text."""

    code = "gate_path"


@dataclass(frozen=True)
class Gate:
    """One parsed gate. ``funcs`` are applied innermost last: ``("delta", "max")`` is delta(max(P))."""

    text: str
    funcs: tuple[Func, ...]
    path: str
    op: Op
    threshold: float

    @property
    def uses_delta(self) -> bool:
        return "delta" in self.funcs

    @property
    def segments(self) -> list[str]:
        return self.path.split(".")


@dataclass(frozen=True)
class GateOutcome:
    """The gate's value and whether the gate failed (its expression is true)."""

    gate: Gate
    value: float
    failed: bool
    where: str | None = None

    @property
    def margin(self) -> float:
        """How far the value is from the threshold (absolute)."""
        return abs(self.value - self.gate.threshold)

    def describe(self) -> str:
        """One line: the gate, its value, the threshold and by how much it passed or failed."""
        at = f" (at {self.where})" if self.where else ""
        value, threshold = _fmt(self.value), _fmt(self.gate.threshold)
        if self.failed:
            word = _OP_WORDS[self.gate.op]
            if self.gate.op == "==":
                how = f"equals the threshold {threshold}"
            else:
                how = f"is {word} the threshold {threshold} by {_fmt(self.margin)}"
            return f"FAILED gate `{self.gate.text}`: value {value}{at} {how}"
        return f"passed gate `{self.gate.text}`: value {value}{at}, threshold {threshold}"


# ---------------------------------------------------------------------------------------------
# Parsing

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*)
      | (?P<op>>=|<=|==|!=|>|<)
      | (?P<lparen>\()
      | (?P<rparen>\))
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise GateSyntaxError(
                f"gate {text!r}: unexpected {stripped[pos:].strip()[:20]!r} at position {pos}; "
                "expected e.g. 'max(layers.dead_fraction) > 0.2'"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def parse_gate(text: str) -> Gate:
    """Parse one gate expression (see the module docstring for the grammar)."""
    if len(text) > 1000:
        raise GateSyntaxError(f"gate expression too long: expected at most 1000 characters, got {len(text)}")
    tokens = _tokenize(text)
    example = "expected PATH OP NUMBER, e.g. 'pattern_similarity.different_label.mean > 0.9'"
    if not tokens:
        raise GateSyntaxError(f"empty gate: {example}")
    funcs: list[str] = []
    pos = 0
    # Leading "func(" pairs.
    while pos + 1 < len(tokens) and tokens[pos][0] == "path" and tokens[pos + 1][0] == "lparen":
        name = tokens[pos][1]
        if name not in (*AGGREGATES, "delta"):
            raise GateSyntaxError(
                f"gate {text!r}: unknown function {name!r}; expected one of max, min, mean, delta"
            )
        funcs.append(name)
        pos += 2
    if pos >= len(tokens) or tokens[pos][0] != "path":
        raise GateSyntaxError(
            f"gate {text!r}: expected a report path after {''.join(f + '(' for f in funcs)!r}"
        )
    path = tokens[pos][1]
    pos += 1
    for _ in funcs:
        if pos >= len(tokens) or tokens[pos][0] != "rparen":
            raise GateSyntaxError(f"gate {text!r}: expected ')' after {path!r}")
        pos += 1
    if pos >= len(tokens) or tokens[pos][0] != "op":
        got = repr(tokens[pos][1]) if pos < len(tokens) else "the end"
        raise GateSyntaxError(f"gate {text!r}: expected a comparison (> >= < <= == !=), got {got}")
    op = tokens[pos][1]
    pos += 1
    if pos >= len(tokens) or tokens[pos][0] != "number":
        got = repr(tokens[pos][1]) if pos < len(tokens) else "the end"
        raise GateSyntaxError(f"gate {text!r}: expected a number after {op!r}, got {got}")
    threshold = float(tokens[pos][1])
    pos += 1
    if pos != len(tokens):
        raise GateSyntaxError(f"gate {text!r}: unexpected {tokens[pos][1]!r} after the number")
    if not math.isfinite(threshold):
        raise GateSyntaxError(f"gate {text!r}: expected a finite threshold, got {threshold}")
    aggs = [f for f in funcs if f in AGGREGATES]
    if len(aggs) > 1 or funcs.count("delta") > 1:
        raise GateSyntaxError(
            f"gate {text!r}: expected at most one of max/min/mean and at most one delta, "
            f"got {'('.join(funcs)}("
        )
    return Gate(
        text=text.strip(),
        funcs=tuple(cast(Func, f) for f in funcs),
        path=path,
        op=cast(Op, op),
        threshold=threshold,
    )


def parse_gates(
    texts: Iterable[str], *, compare: bool = False, document: type[BaseModel] = Report
) -> list[Gate]:
    """Parse and check gates against the schema of ``document`` (a report, or a trend), before any
    analysis runs."""
    gates = [parse_gate(t) for t in texts]
    for gate in gates:
        if gate.uses_delta and not compare:
            raise GateSyntaxError(
                f"gate {gate.text!r}: delta() compares two reports; use it with 'neuronscope compare'"
            )
        check_path_in_schema(gate.path, document)
    return gates


# ---------------------------------------------------------------------------------------------
# Static check against the report schema


@functools.cache
def _schema(document: type[BaseModel]) -> dict[str, Any]:
    return document.model_json_schema(by_alias=True, mode="serialization")


def _deref(node: Mapping[str, Any], defs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The concrete schema alternatives of a node (``$ref`` resolved, ``anyOf`` split, null dropped)."""
    if "$ref" in node:
        return _deref(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        out: list[Mapping[str, Any]] = []
        for alt in node["anyOf"]:
            out.extend(_deref(alt, defs))
        return out
    if node.get("type") == "null":
        return []
    return [node]


def _schema_keys(node: Mapping[str, Any]) -> list[str]:
    if "properties" in node:
        return list(node["properties"])
    names = node.get("propertyNames", {}).get("enum")
    return [str(n) for n in names] if names else []


def check_path_in_schema(path: str, document: type[BaseModel] = Report) -> None:
    """Raise :class:`GatePathError` unless ``path`` can lead to numbers in some ``document``."""
    schema = _schema(document)
    defs = schema.get("$defs", {})
    nodes: list[Mapping[str, Any]] = [schema]
    walked: list[str] = []
    for seg in path.split("."):
        nxt: list[Mapping[str, Any]] = []
        keys: list[str] = []
        for node in nodes:
            for alt in _deref(node, defs):
                while alt.get("type") == "array" and not seg.isdigit():
                    items = alt.get("items")
                    if not isinstance(items, Mapping):
                        break
                    derefed = _deref(items, defs)
                    if not derefed:
                        break
                    alt = derefed[0]
                if alt.get("type") == "array" and seg.isdigit():
                    if isinstance(alt.get("items"), Mapping):
                        nxt.append(alt["items"])
                    continue
                if "properties" in alt and seg in alt["properties"]:
                    nxt.append(alt["properties"][seg])
                elif isinstance(alt.get("additionalProperties"), Mapping):
                    allowed = _schema_keys(alt)
                    if not allowed or seg in allowed:
                        nxt.append(alt["additionalProperties"])
                keys.extend(_schema_keys(alt))
        if not nxt:
            raise _unknown_key(path, walked, seg, keys)
        nodes = nxt
        walked.append(seg)
    leaf_types: set[str] = set()
    leaf_keys: list[str] = []
    for node in nodes:
        for alt in _deref(node, defs):
            while alt.get("type") == "array" and isinstance(alt.get("items"), Mapping):
                derefed = _deref(alt["items"], defs)
                if not derefed:
                    break
                alt = derefed[0]
            leaf_types.add(str(alt.get("type", "")))
            leaf_keys.extend(_schema_keys(alt))
    if not leaf_types & {"number", "integer", "boolean"}:
        if leaf_keys:
            raise GatePathError(
                f"path {path!r} leads to an object, not a number; continue it with one of: "
                + ", ".join(f"{path}.{k}" for k in dict.fromkeys(leaf_keys))
            )
        raise GatePathError(f"path {path!r} leads to text, not a number")


def _unknown_key(path: str, walked: Sequence[str], seg: str, keys: Sequence[str]) -> GatePathError:
    where = ".".join(walked) if walked else "the report"
    valid = list(dict.fromkeys(keys))
    hint = difflib.get_close_matches(seg, valid, n=1)
    did_you_mean = f" (did you mean {'.'.join([*walked, hint[0]])!r}?)" if hint else ""
    listing = ", ".join(valid) if valid else "none"
    return GatePathError(
        f"unknown path {path!r}: {where} has no {seg!r}{did_you_mean}; valid keys there: {listing}"
    )


# ---------------------------------------------------------------------------------------------
# Evaluation


def report_data(report: BaseModel) -> dict[str, Any]:
    """A report (or trend) as the JSON data gates walk (aliases such as ``ps_d.lambda`` applied)."""
    return report.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class _Values:
    items: list[tuple[str, Any]]
    many: bool


def _element_label(prefix: str, index: int, element: Any) -> str:
    if isinstance(element, Mapping) and isinstance(element.get("name"), str):
        return f"{prefix} {element['name']!r}"
    return f"{prefix}[{index}]"


def _resolve(data: Mapping[str, Any], path: str) -> _Values:
    segs = path.split(".")
    items: list[tuple[str, Any]] = [("", data)]
    many = False
    for depth, seg in enumerate(segs):
        prefix = ".".join(segs[:depth]) or "the report"
        nxt: list[tuple[str, Any]] = []
        for label, cur in items:
            if isinstance(cur, Mapping):
                if seg not in cur:
                    raise _unknown_key(path, segs[:depth], seg, list(cur))
                nxt.append((label, cur[seg]))
            elif isinstance(cur, list):
                if seg.isdigit():
                    idx = int(seg)
                    if idx >= len(cur):
                        raise GatePathError(
                            f"path {path!r}: index {idx} is out of range; {prefix} has {len(cur)} elements"
                        )
                    nxt.append((_element_label(f"{label or prefix}", idx, cur[idx]), cur[idx]))
                    continue
                many = True
                for k, element in enumerate(cur):
                    if not isinstance(element, Mapping):
                        raise GatePathError(f"path {path!r}: {prefix} is a list of values; it has no {seg!r}")
                    if seg not in element:
                        raise _unknown_key(path, segs[:depth], seg, list(element))
                    nxt.append((_element_label(label or prefix, k, element), element[seg]))
            elif cur is None:
                raise GatePathError(f"path {path!r}: {prefix} is null in this report{_null_hint(prefix)}")
            else:
                raise GatePathError(f"path {path!r}: {prefix} is a single value; it has no {seg!r}")
        items = nxt
    final: list[tuple[str, Any]] = []
    for label, cur in items:
        if isinstance(cur, list):
            many = True
            final.extend((f"{label or path}[{k}]", el) for k, el in enumerate(cur))
        elif isinstance(cur, Mapping):
            raise GatePathError(
                f"path {path!r} leads to an object, not a number; continue it with one of: "
                + ", ".join(f"{path}.{k}" for k in cur)
            )
        else:
            final.append((label, cur))
    for _label, value in final:
        if value is not None and not isinstance(value, int | float):
            raise GatePathError(f"path {path!r} leads to text ({value!r}), not a number")
    return _Values(final, many)


def _null_hint(prefix: str) -> str:
    if prefix.startswith("transition_density"):
        return " (transition density was skipped: the config set transition_density to null)"
    return ""


def _scalar(values: _Values, gate: Gate, which: str = "") -> float:
    if values.many:
        raise GatePathError(
            f"gate {gate.text!r}: path {gate.path!r} yields {len(values.items)} values{which}; "
            f"wrap it in max(), min() or mean(), e.g. 'max({gate.path}) {gate.op} {_fmt(gate.threshold)}'"
        )
    (_label, value) = values.items[0]
    if value is None:
        raise GatePathError(
            f"gate {gate.text!r}: {gate.path!r} is null in this report{which} (the statistic is undefined, "
            f"e.g. no pairs of that kind){_null_hint(gate.path)}"
        )
    return float(value)


def _aggregate(
    func: str, items: Sequence[tuple[str, Any]], gate: Gate, which: str = ""
) -> tuple[float, str | None]:
    present = [(label, float(v)) for label, v in items if v is not None]
    if not present:
        raise GatePathError(
            f"gate {gate.text!r}: {gate.path!r} has no values in this report{which} "
            f"({len(items)} elements, all null)"
        )
    if func == "mean":
        return math.fsum(v for _, v in present) / len(present), None
    pick = max if func == "max" else min
    label, value = pick(present, key=lambda lv: lv[1])
    return value, label or None


def evaluate_gate(gate: Gate, data: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> GateOutcome:
    """Evaluate one gate on report data (``old`` given: compare mode, where ``delta`` is allowed)."""
    funcs = gate.funcs
    where: str | None = None
    if not gate.uses_delta:
        values = _resolve(data, gate.path)
        if funcs:
            value, where = _aggregate(funcs[0], values.items, gate)
        else:
            value = _scalar(values, gate)
    else:
        if old is None:
            raise GateSyntaxError(f"gate {gate.text!r}: delta() needs two reports (neuronscope compare)")
        new_values, old_values = _resolve(data, gate.path), _resolve(old, gate.path)
        if funcs == ("delta",):
            value = _scalar(new_values, gate, " (new report)") - _scalar(old_values, gate, " (old report)")
        elif funcs[0] == "delta":  # delta(agg(P))
            new_v, _ = _aggregate(funcs[1], new_values.items, gate, " (new report)")
            old_v, _ = _aggregate(funcs[1], old_values.items, gate, " (old report)")
            value = new_v - old_v
        else:  # agg(delta(P)): per-element deltas matched by label
            old_map = dict(old_values.items)
            deltas = [
                (label, None if v is None or old_map[label] is None else float(v) - float(old_map[label]))
                for label, v in new_values.items
                if label in old_map
            ]
            if not deltas:
                raise GatePathError(
                    f"gate {gate.text!r}: no element of {gate.path!r} is in both reports (matched by name)"
                )
            value, where = _aggregate(funcs[0], deltas, gate, " (in both reports)")
    return GateOutcome(gate=gate, value=value, failed=_compare(value, gate.op, gate.threshold), where=where)


def evaluate_gates(
    gates: Iterable[Gate], data: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> list[GateOutcome]:
    """Evaluate every gate; raises on the first gate that cannot be evaluated."""
    return [evaluate_gate(g, data, old) for g in gates]


def _compare(value: float, op: str, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    if op == "<=":
        return value <= threshold
    if op == "==":
        return math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)
    return not math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def _fmt(value: float) -> str:
    return f"{value:.6g}"
