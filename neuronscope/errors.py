"""The error base class every layer derives its own error type from."""

from __future__ import annotations


class NeuronscopeError(Exception):
    """An error a person can act on.

    ``code`` is a stable, machine-readable identifier (``snake_case``) that pipelines and the
    API's ``{"error": CODE, "detail": MESSAGE}`` body carry; ``message`` says what was expected
    and what came in.
    """

    code: str = "neuronscope_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(NeuronscopeError):
    """An uploaded model, dataset or config that cannot be analysed as it is (HTTP 422)."""

    code = "invalid_input"
