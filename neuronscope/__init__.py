"""neuronscope: how much of a neural network is really working.

Shared, framework-free pieces live here: the config and report contracts, the error base class,
input validation, artifact storage and job records. The analysis engine is in ``worker.engine``;
the REST API in ``service``.
"""

__version__ = "0.1.0"
