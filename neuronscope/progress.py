"""Progress of an analysis on the command line: a tqdm bar on a terminal, plain lines elsewhere.

The engine and the client report progress as ``(stage, fraction)`` with ``fraction`` in [0, 1]
within the stage (``capture``, ``pattern_similarity``, ``transition_density``, …). On a terminal
:class:`ProgressBar` draws one tqdm bar that restarts at each stage and is erased when closed;
when the stream is not a terminal (CI logs, a pipe) it writes one line per stage and no control
characters.
"""

from __future__ import annotations

import os
import sys
from time import time
from typing import IO, TYPE_CHECKING, Never

if TYPE_CHECKING:
    from tqdm import tqdm

#: Steps of the bar: percent of the current stage.
_STEPS = 100
#: Seconds between two redraws within a stage (a new stage and 100% are drawn at once).
_MIN_INTERVAL_S = 0.1
_BAR_FORMAT = "{percentage:3.0f}% |{bar:28}| {desc}"
_MAX_STAGE = 48
_FALLBACK_SCREEN = (80, 24)


def _screen(stream: IO[str]) -> tuple[int, int]:
    """The terminal's columns and lines, 80 × 24 where it reports none: a pseudo-terminal that was
    never sized reports 0 × 0, and tqdm draws nothing on a screen without lines."""
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, lines = size.columns, size.lines
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        columns, lines = 0, 0
    return columns if columns > 0 else _FALLBACK_SCREEN[0], lines if lines > 0 else _FALLBACK_SCREEN[1]


class ProgressBar:
    """``update(stage, fraction)`` as the engine's ``progress`` callback; ``close()`` when done.

    ``stream`` defaults to ``sys.stderr``; ``enabled=False`` writes nothing (``--quiet``).
    """

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._stage: str | None = None
        self._bar: tqdm[Never] | None = None

    def update(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        fraction = min(1.0, max(0.0, fraction))
        if not self.tty:
            if stage != self._stage:
                self.stream.write(f"{stage} ({fraction * 100:.0f}%)\n")
                self.stream.flush()
            self._stage = stage
            return
        steps = round(fraction * _STEPS)
        if self._bar is None:
            self._stage, self._bar = stage, self._open(stage, steps)
            return
        bar = self._bar
        if stage != self._stage or (steps == _STEPS and bar.n != _STEPS):
            self._stage = stage
            bar.set_description_str(stage[:_MAX_STAGE], refresh=False)
            bar.n = bar.last_print_n = steps
            bar.last_print_t = time()  # the next redraw within the stage waits its interval
            bar.refresh()
        elif steps != bar.n:
            bar.update(steps - bar.n)  # redrawn at most every _MIN_INTERVAL_S

    def close(self) -> None:
        """Erase the bar (the summary follows on a clean line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage = None

    def _open(self, stage: str, steps: int) -> tqdm[Never]:
        """The bar, drawn at once at ``steps`` of ``stage``."""
        from tqdm import tqdm

        columns, lines = _screen(self.stream)
        return tqdm(
            total=_STEPS,
            initial=steps,
            desc=stage[:_MAX_STAGE],
            file=self.stream,
            leave=False,
            bar_format=_BAR_FORMAT,
            mininterval=_MIN_INTERVAL_S,
            miniters=1,
            ncols=columns,
            nrows=lines,
        )
