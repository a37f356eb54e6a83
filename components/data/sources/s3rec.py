"""S3-Rec's preprocessed sequences (Beauty, Sports_and_Outdoors, Toys_and_Games, Yelp, LastFM).

`<name>.txt`: one user a line, `user item item ...` in time order (integer ids, 5-core);
`<name>_item2attributes.json`: `{item: [attribute ids]}` (attribute names are not published), which
become categories "attr:<id>". There are no timestamps: each interaction gets its position in the
user's line as a synthetic timestamp, in seconds from 1970-01-01, so the order is kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from components.config import IngestConfig
from components.data.sources.cleaning import clean_interactions
from components.data.sources.readers import find_file, read_json_document, read_lines
from components.data.sources.sink import SourceInfo, TableSink
from components.errors import RecloopError

_LINE = r"^\d+(\s+\d+)+$"


def _sequence_file(cfg: IngestConfig) -> Path:
    path = Path(cfg.path)
    if path.is_file():
        return path
    if cfg.dataset:
        return find_file(path, [f"{cfg.dataset}.txt"], f"S3-Rec sequence file for ingest.dataset={cfg.dataset!r}")
    found = sorted(p.name for p in path.glob("*.txt") if not p.name.endswith("_sample.txt"))
    if len(found) == 1:
        return path / found[0]
    raise RecloopError(f"{path} holds {', '.join(found) or 'no <name>.txt file'}: "
                       "set ingest.dataset to the one to read (e.g. Beauty)")


def read(cfg: IngestConfig, sink: TableSink) -> SourceInfo:
    """Ingest one S3-Rec dataset: sequences, and item attributes as categories when the JSON is there."""
    sequences = _sequence_file(cfg)
    name = sequences.name.removesuffix(".txt")
    for lines in read_lines(sequences, sink=sink, table="interactions", chunk_rows=cfg.chunk_rows):
        lines = pc.utf8_trim_whitespace(lines)
        ok = pc.match_substring_regex(lines, _LINE)
        if not pc.all(ok).as_py():
            sink.quarantine("interactions", "not a line of integer ids `user item item ...`",
                            lines.filter(pc.invert(ok)).to_pylist())
        tokens = pc.utf8_split_whitespace(lines.filter(ok))
        items = pc.list_slice(tokens, 1)
        lengths = pc.list_value_length(items).to_numpy()
        # Position in the line: the synthetic timestamp.
        position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = pd.DataFrame({"user_id": pc.list_element(tokens, 0).take(pc.list_parent_indices(items)).to_pandas(),
                             "item_id": pc.list_flatten(items).to_pandas(), "timestamp": position})
        sink.interactions(clean_interactions(rows, sink=sink, table="interactions", sep=" ", event="interaction"))
    info = SourceInfo(dataset=name, synthetic_timestamps=True, notes=[
        "timestamps are synthetic: each interaction's position in its user's line, in seconds from 1970-01-01 "
        "(the source keeps only the order; set validate.min_timestamp=0)."])
    attributes = sequences.with_name(f"{name}_item2attributes.json")
    if not attributes.is_file():
        info.notes.append(f"{attributes.name} is missing: items have no categories.")
        return info
    mapping = read_json_document(attributes)
    if not isinstance(mapping, dict):
        raise RecloopError(f"{attributes} should hold an object {{item: [attribute ids]}}")
    ids = [str(k) for k in mapping]
    # Distinct attributes in their order (LastFM lists tags repeatedly).
    categories = [list(dict.fromkeys(f"attr:{a}" for a in (v if isinstance(v, list) else [v])))
                  for v in mapping.values()]
    sink.items(pd.DataFrame({"item_id": ids, "title": ids, "text": "", "categories": categories}))
    info.counts["attributes"] = len({c for cats in categories for c in cats})
    return info
