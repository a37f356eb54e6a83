"""Acknowledged feedback since the bundle was built, per user: what makes a user's next answer fresh.

Every worker (and every replica sharing the store) reads the same feedback log, so an event that
any of them acknowledged is in every one's next answer. `refresh` is cheap enough for every request:
the store's `FeedbackReader.changed()` says whether anything was committed since the last look
(SQLite's `data_version`: microseconds; PostgreSQL's highest id: one round trip); only then are the
rows after the last seen row id read, in one snapshot (row ids grow in commit order in both stores,
so none is skipped).

Which events count: what the user did to an item (click, like, rating, purchase, add to cart), as
continual training reads the log (`feedback_interactions`); impressions, dislikes and skips do not.
A rating enters the history as the training event `rate` with its value, the others with 1.0.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from components.serving.feedback import POSITIVE_EVENTS, FeedbackReader

FRESH_EVENTS = (*POSITIVE_EVENTS, "rating")
# The training data's name for an explicit rating (feedback_interactions maps it the same way).
RATING_EVENT = "rate"


@dataclass(frozen=True)
class FreshEvent:
    """One acknowledged event as a history entry."""

    item_id: str
    timestamp: int
    event: str
    value: float
    domain: str | None


class AcknowledgedEvents:
    """Client events acknowledged at or after `since` (seconds), per user, read incrementally from the
    feedback store (`location`: the SQLite file or a postgresql:// URL).

    `open()` reads what is there; `refresh()` adds what was committed since; `of(user)` is the
    user's events in acknowledgement order. Safe to call from several threads. A store that cannot
    be read raises `FeedbackStoreUnavailable` (what was read so far stays).
    """

    def __init__(self, location: Path | str, since: float):
        self.reader = FeedbackReader(location)
        self.since = since
        self._by_user: dict[str, list[FreshEvent]] = {}
        self._watermark = 0  # the highest row id read
        self._lock = threading.Lock()

    def open(self) -> AcknowledgedEvents:
        self.reader.open()
        with self._lock:
            # The first look before the read: a commit in between is read again by the next refresh, not lost.
            self.reader.changed()
            self._add(*self.reader.client_events(0, FRESH_EVENTS, logged_since=self.since))
        return self

    def close(self) -> None:
        self.reader.close()

    def refresh(self) -> None:
        """Read the events committed since the last call (nothing committed: one cheap look)."""
        with self._lock:
            if self.reader.changed():
                self._add(*self.reader.client_events(self._watermark, FRESH_EVENTS))

    def of(self, user_id: str) -> list[FreshEvent]:
        """The user's acknowledged events so far, oldest acknowledgement first (a copy)."""
        return list(self._by_user.get(user_id, ()))

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def _add(self, rows: list[tuple], watermark: int) -> None:
        for _, user, item, timestamp, event, value, domain in rows:
            rated = event == "rating"
            self._by_user.setdefault(str(user), []).append(FreshEvent(
                str(item), int(timestamp), RATING_EVENT if rated else event,
                float(value) if rated and value is not None else 1.0, domain))
        self._watermark = max(self._watermark, watermark)
