"""Progress of the long loops over subjects: a count and the time left, readable in a terminal and in CI logs.

Two forms, one wording: inside the ``monai.bundle`` workflows (inference, head fitting) log lines
``[k/N] ...; S s per subject, about M min left`` (:func:`progress_eta`, :class:`ProgressLog`); in the command-line
tools (synthesis, DICOM conversion) a tqdm bar on stderr (:func:`progress_bar`), redrawn at most every
:data:`LOG_INTERVAL_S` seconds when stderr is not a terminal so that a CI log gets a line now and then, not a flood.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: seconds between two progress lines written to a log (a file, a pipe, CI) rather than a terminal
LOG_INTERVAL_S = 10.0


def progress_eta(started: float, done: int, left: int, unit: str = "subject") -> str:
    """``"12 s per subject, about 3 min left"`` from the ``time.monotonic()`` the run ``started`` at, the items
    ``done`` since and the items ``left``."""
    per_item = (time.monotonic() - started) / max(done, 1)
    return f"{per_item:.0f} s per {unit}, about {per_item * left / 60:.0f} min left"


class ProgressLog:
    """Log ``[k/N] what; S s per subject, about M min left`` as a loop over ``total`` items advances, at most every
    ``interval_s`` seconds and for the last item (a loop of fast items must not write one line each).

    Args:
        log: the logger of the module running the loop (the workflow's log shows whose loop it is).
        total: items in the loop.
        what: what the loop does, e.g. ``"measure head: segmented the training subjects"``.
        unit: one item, for the rate.
        interval_s: least seconds between two lines.
    """

    def __init__(
        self, log: logging.Logger, total: int, what: str, unit: str = "subject", interval_s: float = LOG_INTERVAL_S
    ) -> None:
        self.log, self.total, self.what, self.unit, self.interval_s = log, total, what, unit, interval_s
        self.started = time.monotonic()
        self.done = 0
        self.last_line = self.started

    def step(self) -> None:
        """Count one item done; log a line if ``interval_s`` passed since the last one, or if it was the last item."""
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self.last_line >= self.interval_s:
            self.last_line = now
            eta = progress_eta(self.started, self.done, self.total - self.done, self.unit)
            self.log.info(f"[{self.done}/{self.total}] {self.what}; {eta}")


class _LogLines:
    """A text stream for tqdm that writes each redraw as a line of its own: tqdm redraws a bar in place with
    carriage returns, which a log file or a CI page shows as one ever longer line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        """Write ``text`` without tqdm's carriage return and blank padding, as one line (nothing if it is empty)."""
        line = text.strip("\r\n ")
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        """Flush the stream."""
        self.stream.flush()


def progress_bar(items: Iterable[T], total: int, what: str, unit: str = "subject") -> Iterable[T]:
    """``items`` with a progress line on stderr, ``what [k/N]  40% 00:12 elapsed, 00:18 left (1.20s/subject)``:
    redrawn in place on a terminal, a new line every :data:`LOG_INTERVAL_S` seconds (and at the end) elsewhere."""
    interactive = sys.stderr.isatty()
    return tqdm(
        items,
        total=total,
        desc=what,
        unit=unit,
        file=sys.stderr if interactive else _LogLines(sys.stderr),
        mininterval=0.5 if interactive else LOG_INTERVAL_S,
        # tqdm's automatic miniters would skip the redraw that falls due right after a slow item
        miniters=1,
        bar_format="{desc} [{n_fmt}/{total_fmt}] {percentage:3.0f}% {elapsed} elapsed, {remaining} left "
        "({rate_inv_fmt})",
    )
