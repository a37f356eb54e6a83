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

Memory stays bounded by what can change an answer. Once the recommender `attach`es its catalog and
`keep` (the encoder's max_len + 1: the oldest only gives the next its time gap), each user keeps only
their `keep` latest events of catalog items, by (timestamp, acknowledgement): any older one has `keep`
later events after it in the merged history, so the encoder never reads it. Of the older ones only
their catalog rows stay (4 bytes each, one array): an answer still excludes them as seen and counts
them in `history_used`. Events of items outside the catalog only count (the answer ignores them).
"""
from __future__ import annotations

import threading
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from components.serving.feedback import POSITIVE_EVENTS, FeedbackReader

FRESH_EVENTS = (*POSITIVE_EVENTS, "rating")
# The training data's name for an explicit rating (feedback_interactions maps it the same way).
RATING_EVENT = "rate"


@dataclass(frozen=True)
class FreshEvent:
    """One acknowledged event as a history entry (`row`: its catalog row once a catalog is attached)."""

    item_id: str
    timestamp: int
    event: str
    value: float
    domain: str | None
    row: int = -1


@dataclass
class UserEvents:
    """One user's acknowledged events: how many, the latest that the encoder can read, the rows of the rest."""

    count: int = 0  # every acknowledged event (a new one makes a cached state stale)
    recent: list[FreshEvent] = field(default_factory=list)  # acknowledgement order
    earlier: array = field(default_factory=lambda: array("i"))  # catalog rows of older events, dropped from `recent`


class AcknowledgedEvents:
    """Client events acknowledged at or after `since` (seconds), per user, read incrementally from the
    feedback store (`location`: the SQLite file or a postgresql:// URL).

    `open()` reads what is there; `refresh()` adds what was committed since; `of(user)` is the
    user's events. Safe to call from several threads. A store that cannot be read raises
    `FeedbackStoreUnavailable` (what was read so far stays).
    """

    def __init__(self, location: Path | str, since: float):
        self.reader = FeedbackReader(location)
        self.since = since
        self._by_user: dict[str, UserEvents] = {}
        self._catalog: Mapping[str, int] | None = None
        self._keep: int | None = None
        self._watermark = 0  # the highest row id read
        self._commits: int | None = None  # the own log's commit count at the last refresh
        self._lock = threading.Lock()

    def open(self) -> AcknowledgedEvents:
        self.reader.open()
        with self._lock:
            # The first look before the read: a commit in between is read again by the next refresh, not lost.
            self.reader.changed()
            self._add(*self.reader.client_events(0, FRESH_EVENTS, logged_since=self.since))
        return self

    def attach(self, catalog: Mapping[str, int], keep: int) -> None:
        """Keep only events of `catalog` items (item id -> row), at most `keep` per user in full (module docstring)."""
        with self._lock:
            users, self._by_user = self._by_user, {}
            self._catalog, self._keep = catalog, keep
            for user, events in users.items():
                mine = self._by_user[user] = UserEvents(events.count - len(events.recent))
                for event in events.recent:
                    self._put(mine, event)

    def close(self) -> None:
        self.reader.close()

    def refresh(self, commits: int | None = None) -> None:
        """Read the events committed since the last call (nothing committed: one cheap look).

        `commits`: how many commits this process's own feedback log has made. When that moved since the
        last call, something was committed for sure, and the rows are read without the look first (one
        statement instead of two; the next look then reports a change once more, which reads nothing new).
        """
        with self._lock:
            moved = commits is not None and commits != self._commits
            self._commits = commits
            if moved or self.reader.changed():
                self._add(*self.reader.client_events(self._watermark, FRESH_EVENTS))

    def of(self, user_id: str) -> UserEvents:
        """The user's acknowledged events so far (a snapshot: later events do not change it)."""
        with self._lock:
            events = self._by_user.get(user_id)
            if events is None:
                return UserEvents()
            return UserEvents(events.count, list(events.recent), array("i", events.earlier))

    def count(self, user_id: str) -> int:
        events = self._by_user.get(user_id)
        return 0 if events is None else events.count

    def _add(self, rows: list[tuple], watermark: int) -> None:
        for _, user, item, timestamp, event, value, domain in rows:
            rated = event == "rating"
            self._put(self._by_user.setdefault(str(user), UserEvents()), FreshEvent(
                str(item), int(timestamp), RATING_EVENT if rated else event,
                float(value) if rated and value is not None else 1.0, domain))
        self._watermark = max(self._watermark, watermark)

    def _put(self, events: UserEvents, event: FreshEvent) -> None:
        events.count += 1
        if self._catalog is None:  # not attached yet (loading): keep everything
            events.recent.append(event)
            return
        row = self._catalog.get(event.item_id)
        if row is None:
            return
        events.recent.append(FreshEvent(event.item_id, event.timestamp, event.event, event.value, event.domain, row))
        if len(events.recent) > self._keep:
            # The earliest by (timestamp, acknowledgement): index finds the first of equal timestamps. (A key
            # function per event cost a user's refresh 20 us at 51 events, on the event loop.)
            timestamps = [e.timestamp for e in events.recent]
            events.earlier.append(events.recent.pop(timestamps.index(min(timestamps))).row)
