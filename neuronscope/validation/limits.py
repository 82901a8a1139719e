"""Resource limits applied to untrusted uploads before any payload is decompressed or allocated."""

from __future__ import annotations

from dataclasses import dataclass, fields

_KIB = 1024
_MIB = 1024 * _KIB
_GIB = 1024 * _MIB


@dataclass(frozen=True)
class Limits:
    """Upper bounds for datasets and model files. Every field must be positive.

    Dataset bounds: ``max_array_bytes`` is the declared size of one array (shape × itemsize),
    ``max_total_bytes`` the sum over all arrays of one dataset, ``max_members`` the number of
    arrays in an ``.npz``. A zip member whose uncompressed size is more than
    ``max_compression_ratio`` times its compressed size is refused once its declared size is above
    ``compression_ratio_min_bytes`` (tiny members cannot bomb anything). ``max_header_bytes`` bounds
    an ``.npy`` header (numpy's own default), ``max_rank`` the number of dimensions of an array.

    Model bounds: ``max_model_bytes`` is the size of the uploaded ONNX file or TorchScript archive,
    ``max_model_uncompressed_bytes`` the declared uncompressed size of a TorchScript archive's
    members together, ``max_model_members`` their number. ``max_name_bytes`` bounds a zip member's
    name in either kind of upload.

    >>> Limits().max_members
    64
    >>> Limits(max_members=0)
    Traceback (most recent call last):
    ...
    ValueError: Limits.max_members: expected a positive number, got 0
    """

    max_array_bytes: int = 2 * _GIB
    max_total_bytes: int = 4 * _GIB
    max_members: int = 64
    max_compression_ratio: float = 200.0
    compression_ratio_min_bytes: int = 1 * _MIB
    max_header_bytes: int = 10_000
    max_rank: int = 32
    max_model_bytes: int = 2 * _GIB
    max_model_uncompressed_bytes: int = 4 * _GIB
    max_model_members: int = 65_536
    max_name_bytes: int = 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"Limits.{field.name}: expected a positive number, got {value!r}")


#: The limits used when a caller passes none.
DEFAULT_LIMITS = Limits()
