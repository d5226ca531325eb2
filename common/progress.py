"""Long work as a generator: it yields progress events and returns its result.

>>> def work():
...     yield "half"
...     yield "all"
...     return 42
>>> seen = []
>>> drain(work(), seen.append), seen
(42, ['half', 'all'])
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

E = TypeVar("E")
R = TypeVar("R")


def drain(events: Generator[E, None, R], on_event: Callable[[E], None] | None = None) -> R:
    """Run ``events`` to the end, handing each event to ``on_event``; its return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if on_event:
            on_event(event)
