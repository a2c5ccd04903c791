"""The rich progress bar of a collector run, fed by the collector's progress callback."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from ..teacher.collect import CollectProgress, ProgressCallback


@contextmanager
def collect_progress(enabled: bool, console: Optional[Console] = None) -> Iterator[Optional["ProgressCallback"]]:
    """A callback that draws the run's bar (calls/min, tokens, cost, failures); None when disabled."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[cpm]:.0f} calls/min"), TimeRemainingColumn(),
        TextColumn("{task.fields[tokens]} tokens ${task.fields[cost]:.4f} failed {task.fields[failed]}"),
        console=console or Console(stderr=True),
    )
    started = time.monotonic()
    shown: dict[str, int] = {}

    def draw(event: "CollectProgress") -> None:
        if event.kind not in shown:
            shown[event.kind] = bar.add_task(event.kind, total=event.total, cpm=0.0, tokens=0, cost=0.0, failed=0)
        minutes = max((time.monotonic() - started) / 60, 1e-9)
        bar.update(shown[event.kind], completed=event.handled, total=event.total, cpm=event.calls / minutes,
                   tokens=event.tokens, cost=event.cost_usd, failed=event.failed)

    with bar:
        yield draw
