"""Prometheus counters bumped from the event loop in sums, once a second, instead of once per request.

BentoML keeps metrics in multiprocess mode: every `inc` takes a lock, calls `getpid` (a system call)
and writes the mmapped file, and `labels` takes another lock: under py-spy about 30 us of the event loop per
feedback + recommend pair (docs/benchmarks.md). `Tally.add` only adds to a dict; the
first add after a flush schedules the next flush `every` seconds later on the running loop, which
makes one `inc` per counter and label. So /metrics lags the answers by at most `every` seconds, and
what is added in the last second before a worker stops is not counted.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Tally:
    """Sums of counter increments, keyed by (counter, label value or None), flushed every `every` seconds."""

    def __init__(self, every: float = 1.0):
        self.every = every
        self._sums: dict[tuple[object, str | None], float] = {}
        self._scheduled = False

    @staticmethod
    def declare(counter, values: Iterable[str]) -> None:
        """Create the counter's labelled series at 0, so /metrics lists them before the first flush."""
        for value in values:
            counter.labels(value)

    def add(self, counter, label: str | None = None, amount: float = 1) -> None:
        """Count `amount` for `counter` (with the one label value `label`); call on the event loop."""
        key = (counter, label)
        self._sums[key] = self._sums.get(key, 0) + amount
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.every, self.flush)

    def flush(self) -> None:
        sums, self._sums, self._scheduled = self._sums, {}, False
        for (counter, label), amount in sums.items():
            (counter if label is None else counter.labels(label)).inc(amount)
