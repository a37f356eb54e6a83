"""Amazon reviews (McAuley lab): 2014 and 2018 5-core JSON lines, and the 2023 JSONL layout, with metadata.

Reviews (plain or .gz, one JSON object a line):
- 2014 `reviews_<Cat>_5.json` and 2018 `<Cat>_5.json`: reviewerID, asin, overall, unixReviewTime (s);
- 2023 `<Cat>.jsonl`: user_id, parent_asin (else asin), rating, timestamp (ms).
Metadata beside them, `meta_<Cat>.json(l)(.gz)`: 2014 lines are Python literals (single quotes), not
JSON; titles of 2018 are sometimes broken HTML, and are then replaced by the description's first
sentence (else brand, else the last category). Each review is event "review" with the star rating as value.
A review of an item the metadata lacks is an unknown item (quarantined unless `ingest.unknown_items`).
"""
from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from components.config import IngestConfig
from components.data.sources.cleaning import clean_interactions, row_text
from components.data.sources.readers import INVALID_RECORD, open_binary, read_json_fields, read_records
from components.data.sources.sink import SourceInfo, TableSink
from components.errors import RecloopError

SUFFIXES = (".json.gz", ".jsonl.gz", ".json", ".jsonl")
# Per layout: canonical column <- (source field, its JSON type), and the timestamp unit.
LAYOUTS = {
    "2014/2018": ({"user_id": ("reviewerID", pa.string()), "item_id": ("asin", pa.string()),
                   "value": ("overall", pa.float64()), "timestamp": ("unixReviewTime", pa.int64())}, "s"),
    "2023": ({"user_id": ("user_id", pa.string()), "item_id": ("parent_asin", pa.string()),
              "asin": ("asin", pa.string()), "value": ("rating", pa.float64()),
              "timestamp": ("timestamp", pa.int64())}, "ms"),
}
_TAG = re.compile(r"<[^>]*>")
_MARKUP = re.compile(r'[<>]|="')
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def _stem(name: str) -> str | None:
    return next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), None)


def review_file(cfg: IngestConfig) -> Path:
    """`cfg.path` itself when it is a file, else the one review file in that folder (of `cfg.dataset`)."""
    path = Path(cfg.path)
    if path.is_file():
        return path
    found = sorted(p for p in path.iterdir() if p.is_file() and _stem(p.name) and not p.name.startswith("meta_")
                   and (cfg.dataset is None or cfg.dataset in p.name))
    if len(found) == 1:
        return found[0]
    if not found:
        which = f" for ingest.dataset={cfg.dataset!r}" if cfg.dataset else ""
        raise RecloopError(f"no Amazon review file in {path}{which}: expected <Category>_5.json(.gz) (2018), "
                           "reviews_<Category>_5.json(.gz) (2014) or <Category>.jsonl(.gz) (2023)")
    raise RecloopError(f"{path} holds several review files ({', '.join(p.name for p in found)}): "
                       "set ingest.dataset to the category to read")


def category(review: Path) -> str:
    """`Magazine_Subscriptions` from Magazine_Subscriptions_5.json.gz, reviews_Beauty_5.json, All_Beauty.jsonl."""
    return (_stem(review.name) or review.stem).removeprefix("reviews_").removesuffix("_5")


def meta_file(review: Path) -> Path | None:
    return next((p for s in SUFFIXES if (p := review.parent / f"meta_{category(review)}{s}").is_file()), None)


def clean_html(text: Any, cut_unclosed: bool = False) -> str:
    """Text without tags and entities, whitespace collapsed; `cut_unclosed` drops all after a dangling '<'."""
    text = _TAG.sub(" ", str(text))
    if cut_unclosed:
        text = text.split("<", 1)[0]
    return " ".join(html.unescape(text).split())


def _strings(value: Any) -> list[str]:
    """A str, a list of str, or (2014 categories) a list of lists, as a flat list of cleaned strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def _first_sentence(text: str, limit: int = 100) -> str:
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0]


def _item(record: dict) -> tuple[Any, ...] | None:
    """(item_id, title, text, categories, brand, title_replaced) from one metadata record, None without an id."""
    item_id = record.get("parent_asin") or record.get("asin")
    if not item_id:
        return None
    texts = [clean_html(t) for t in _strings(record.get("description")) + _strings(
        record.get("feature") or record.get("features"))]
    text = " ".join(t for t in texts if t)
    categories = list(dict.fromkeys(c for c in (clean_html(c) for c in _strings(
        record.get("categories", record.get("category")))) if c))
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    brand = clean_html(record.get("brand") or record.get("store") or details.get("Brand") or "") or None
    title = clean_html(record.get("title") or "", cut_unclosed=True)
    replaced = not title or bool(_MARKUP.search(title))
    if replaced:
        title = _first_sentence(text) or brand or (categories[-1] if categories else "") or str(item_id)
    return str(item_id), title, text, categories, brand, replaced


def _parse_meta(line: bytes) -> Any:
    """2018/2023 metadata is JSON; 2014 metadata is Python literals (single quotes), read safely."""
    try:
        return json.loads(line)
    except UnicodeDecodeError:
        raise
    except ValueError:
        return ast.literal_eval(line.decode("utf-8").strip())


def _layout(path: Path) -> str:
    """2023 reviews have `user_id`; 2014/2018 ones `reviewerID` (judged from the first JSON line)."""
    with open_binary(path, progress=False) as (stream, _):
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                return "2023" if "user_id" in record and "reviewerID" not in record else "2014/2018"
    return "2014/2018"


def _read_reviews(path: Path, cfg: IngestConfig, sink: TableSink) -> str:
    layout = _layout(path)
    fields, unit = LAYOUTS[layout]
    schema = pa.schema([pa.field(source, kind) for source, kind in fields.values()])
    for raw in read_json_fields(path, schema, sink=sink, table="interactions", chunk_rows=cfg.chunk_rows):
        raw = raw.rename(columns={source: name for name, (source, _) in fields.items()})
        if "asin" in raw:
            raw["item_id"] = raw["item_id"].where(raw["item_id"].notna() & (raw["item_id"] != ""), raw.pop("asin"))
        sink.interactions(clean_interactions(raw, sink=sink, table="interactions", sep=" ", event="review",
                                             unit=unit))
    return layout


def _read_meta(path: Path, cfg: IngestConfig, sink: TableSink) -> int:
    """Stream metadata into the items table; returns how many titles were replaced."""
    replaced = 0
    for records, lines in read_records(path, sink=sink, table="items", chunk_rows=cfg.chunk_rows, parse=_parse_meta):
        rows = [_item(r) for r in records]
        missing = [line for line, row in zip(lines, rows) if row is None]
        if missing:
            sink.quarantine("items", f"{INVALID_RECORD}: no asin", row_text(pd.DataFrame({"_row": missing}), " "))
        items = pd.DataFrame([r for r in rows if r is not None],
                             columns=["item_id", "title", "text", "categories", "brand", "replaced"])
        replaced += int(items.pop("replaced").sum())
        sink.items(items)
    return replaced


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest one Amazon category: its review file and, when present, its metadata."""
    reviews = review_file(cfg)
    layout = _read_reviews(reviews, cfg, sink)
    info = SourceInfo(dataset=category(reviews), notes=[f"Amazon {layout} layout ({reviews.name})."])
    meta = meta_file(reviews)
    if meta is None:
        info.notes.append(f"No metadata file meta_{category(reviews)}.json(l)(.gz) beside the reviews: "
                          "item titles are the ASINs.")
        return info
    replaced = _read_meta(meta, cfg, sink)
    # The metadata file lists the whole category; with only_interacted it is cut to the reviewed items.
    info.complete_catalog = not cfg.only_interacted
    info.counts["titles_replaced"] = replaced
    if replaced:
        info.notes.append(f"{replaced} metadata titles were empty or HTML fragments: replaced by the "
                          "description's first sentence (else brand, else category).")
    return info
