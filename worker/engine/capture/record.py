"""The ``neuronscope_capture::record`` op: TorchScript graphs call it to hand a tensor to Python.

``record(Tensor x, int model, int slot, bool copy) -> ()`` appends ``x`` (a copy when ``copy``) to
slot ``slot`` of the ``Recorder`` registered under ``model``. Its alias analysis is conservative,
so the graph executor neither drops it nor moves it across writes to ``x``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

import torch

OP_NAME = "neuronscope_capture::record"

_lock = threading.Lock()
_library: Any = None
_ids = itertools.count(1)
_recorders: weakref.WeakValueDictionary[int, Recorder] = weakref.WeakValueDictionary()


class Recorder:
    """Per-model buffers: ``values[slot]`` holds the tensors recorded into ``slot`` during one call."""

    def __init__(self, slots: int) -> None:
        register_op()
        self.id = next(_ids)
        self.values: list[list[torch.Tensor]] = [[] for _ in range(slots)]
        _recorders[self.id] = self

    def clear(self) -> None:
        for bucket in self.values:
            bucket.clear()


def _record(x: torch.Tensor, model: int, slot: int, copy: bool) -> None:
    recorder = _recorders.get(model)
    if recorder is not None:
        recorder.values[slot].append(x.detach().clone() if copy else x.detach())


def register_op() -> None:
    """Define ``neuronscope_capture::record`` once per process."""
    global _library
    with _lock:
        if _library is not None:
            return
        library_type: Any = torch.library.Library
        library = library_type("neuronscope_capture", "DEF")
        library.define(
            "record(Tensor x, int model, int slot, bool copy) -> ()", alias_analysis="CONSERVATIVE"
        )
        library.impl("record", _record, "CompositeExplicitAutograd")
        _library = library
