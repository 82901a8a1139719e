"""Which tenant uploaded which artifact: :class:`neuronscope.ownership.ArtifactOwnership`, which the
workers' retention sweep uses too (the API never imports the worker, nor the worker the API)."""

from __future__ import annotations

from neuronscope.ownership import ArtifactOwnership

__all__ = ["ArtifactOwnership"]
