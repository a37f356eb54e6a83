"""Source adapters: one module per family of raw formats, each a `read(cfg, sink) -> SourceInfo`.

An adapter streams what it reads into the `TableSink` (interactions first, then items and users)
and returns a `SourceInfo` with the dataset's name, notes and extra counts for the report.
`ADAPTERS` maps the `ingest.source` values to them.
"""
from __future__ import annotations

from collections.abc import Callable

from components.config import IngestConfig
from components.data.sources import amazon, generic, lastfm, movielens, recbole, s3rec, unisrec
from components.data.sources.sink import SourceInfo, TableSink

Adapter = Callable[[IngestConfig, TableSink], SourceInfo]

ADAPTERS: dict[str, Adapter] = {
    "movielens": movielens.read,
    "amazon": amazon.read,
    "recbole": recbole.read_atomic,
    "unisrec": unisrec.read,
    "s3rec": s3rec.read,
    "lastfm": lastfm.read,
    "generic": generic.read,
}
