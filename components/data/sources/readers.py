"""Streaming readers the source adapters share: files come in bounded chunks, bad rows go to quarantine.

Every reader takes the `TableSink` and the name of the table it reads, so that a line it cannot
parse (wrong number of fields, undecodable bytes, broken JSON, a truncated .gz) is kept in the
quarantine with its reason instead of stopping the run. A progress bar counts the bytes read from
disk (compressed bytes for .gz files).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from tqdm import tqdm

from components.config import IngestConfig
from components.data.sources.cleaning import line_text
from components.data.sources.sink import TableSink
from components.errors import RecloopError

WRONG_FIELDS = "wrong number of fields"
UNDECODABLE = "undecodable bytes"
TRUNCATED = "truncated or corrupt compressed file"
INVALID_JSON = "invalid JSON"
INVALID_RECORD = "invalid record"


def find_file(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of `names` that exists in `folder`, or one error that lists what was looked for."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise RecloopError(f"no {what} in {folder}: looked for {', '.join(names)}")


def dataset_files(cfg: IngestConfig, suffix: str) -> tuple[Path, str]:
    """The folder and the dataset name: `cfg.dataset`, else the one `<name><suffix>` in `cfg.path`."""
    path = Path(cfg.path)
    if path.is_file():
        return path.parent, path.name.removesuffix(suffix)
    if cfg.dataset:
        return path, cfg.dataset
    splits = (".train.inter", ".valid.inter", ".test.inter")
    names = sorted(p.name.removesuffix(suffix) for p in path.glob(f"*{suffix}")
                   if suffix in splits or not p.name.endswith(splits))
    if len(names) != 1:
        found = f"several ({', '.join(names)})" if names else "none"
        raise RecloopError(f"{path}: expected one <name>{suffix} file, found {found}; set ingest.dataset")
    return path, names[0]


def detect_encoding(path: Path) -> str:
    """utf-8 when the whole (small, metadata) file decodes as such, else ISO-8859-1, which never fails."""
    try:
        path.read_bytes().decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "latin-1"


@contextmanager
def open_binary(path: Path, progress: bool = True) -> Iterator[tuple[BinaryIO, Callable[[], None]]]:
    """A binary stream over `path` (gunzipped when it ends in .gz) and a callable that moves the progress bar."""
    raw = open(path, "rb")
    stream: BinaryIO = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw  # type: ignore[assignment]
    bar = tqdm(total=os.path.getsize(path), desc=path.name, unit="B", unit_scale=True, leave=False,
               disable=not progress)
    try:
        yield stream, lambda: bar.update(raw.tell() - bar.n)
    finally:
        bar.close()
        stream.close()
        raw.close()


# A batch of lines also ends at this many bytes: long JSON lines must not make a chunk huge.
MAX_BATCH_BYTES = 1 << 26


def _line_batches(path: Path, chunk_rows: int, sink: TableSink, table: str) -> Iterator[list[bytes]]:
    with open_binary(path) as (stream, progress):
        batch: list[bytes] = []
        size = 0
        try:
            for line in stream:
                batch.append(line)
                size += len(line)
                if len(batch) >= chunk_rows or size >= MAX_BATCH_BYTES:
                    progress()
                    yield batch
                    batch, size = [], 0
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            # Keep every line read before the damage; the damage itself is one quarantined row.
            sink.quarantine(table, TRUNCATED, [f"{path.name}: {e}"])
        progress()
        if batch:
            yield batch


def _decode(lines: list[bytes], encoding: str) -> tuple[list[str], list[bytes]]:
    """Decode a batch in one call; only a batch that fails is decoded line by line to find the bad lines."""
    try:
        text = b"".join(lines).decode(encoding)
    except UnicodeDecodeError:
        good, bad = [], []
        for line in lines:
            try:
                good.append(line.decode(encoding).rstrip("\n"))
            except UnicodeDecodeError:
                bad.append(line)
        return good, bad
    out = text.split("\n")
    if out and out[-1] == "" and text.endswith("\n"):
        out.pop()
    return out, []


def read_lines(path: Path, *, sink: TableSink, table: str, chunk_rows: int, encoding: str = "utf-8",
               skip_header: bool = False) -> Iterator[pa.Array]:
    """Decoded, non-blank lines of a text file (plain or .gz) as Arrow strings, `chunk_rows` at a time."""
    first = True
    for lines in _line_batches(path, chunk_rows, sink, table):
        text, bad = _decode(lines, encoding)
        if bad:
            sink.quarantine(table, UNDECODABLE, [line_text(b) for b in bad])
        if first and skip_header and text:
            text = text[1:]
        first = False
        text = pc.utf8_rtrim(pa.array(text, type=pa.string()), characters="\r")
        text = text.filter(pc.not_equal(pc.utf8_trim_whitespace(text), ""))
        if len(text):
            yield text


def split_fields(lines: pa.Array, sep: str, names: Sequence[str], *, sink: TableSink, table: str) -> pd.DataFrame:
    """Split lines on `sep` into exactly len(names) string columns; lines with another count are quarantined."""
    parts = pc.split_pattern(lines, sep)
    right = pc.equal(pc.list_value_length(parts), len(names))
    if not pc.all(right).as_py():
        sink.quarantine(table, WRONG_FIELDS, lines.filter(pc.invert(right)).to_pylist())
    good = parts.filter(right)
    return pd.DataFrame({name: pc.list_element(good, i).to_pandas() for i, name in enumerate(names)})


def csv_header(path: Path, sep: str = ",") -> list[str]:
    """Column names from the first line of a CSV file (quoted names allowed)."""
    with open_binary(path, progress=False) as (stream, _):
        first = stream.readline().decode("utf-8", errors="replace").lstrip("\ufeff")
    if not first.strip():
        raise RecloopError(f"{path} is empty: expected a header line with column names")
    return next(csv.reader([first], delimiter=sep))


def require_columns(path: Path, header: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise RecloopError(f"{path} has no column {', '.join(repr(c) for c in missing)} "
                           f"(its columns: {', '.join(header)})")


def _block_size(path: Path, chunk_rows: int) -> int:
    """Bytes pyarrow parses at once: about `chunk_rows` lines, judged from the first 64 KiB."""
    with open_binary(path, progress=False) as (stream, _):
        sample = stream.read(1 << 16)
    per_line = len(sample) / max(sample.count(b"\n"), 1)
    return int(min(max(chunk_rows * per_line * 1.2, 1 << 20), 1 << 30))


TEXT = pd.ArrowDtype(pa.string())


def _decode_columns(batch: pa.RecordBatch, sep: str) -> tuple[pd.DataFrame, list[str]]:
    """Binary columns to Arrow-backed str (no copy); rows with bytes that are not utf-8 come back as text."""
    try:
        return pd.DataFrame({n: pd.arrays.ArrowExtensionArray(batch.column(n).cast(pa.string()))
                             for n in batch.schema.names}), []
    except pa.ArrowInvalid:
        pass
    rows = list(zip(*(batch.column(n).to_pylist() for n in batch.schema.names)))
    good, bad = [], []
    for row in rows:
        try:
            good.append([v.decode("utf-8") for v in row])
        except UnicodeDecodeError:
            bad.append(sep.join(v.decode("utf-8", errors="backslashreplace") for v in row))
    return pd.DataFrame(good, columns=batch.schema.names, dtype=object).astype(TEXT), bad


def read_csv(path: Path, required: Sequence[str], optional: Sequence[str] = (), *, sink: TableSink,
             table: str, chunk_rows: int, sep: str = ",") -> Iterator[pd.DataFrame]:
    """Text columns `required` + those of `optional` present, from a CSV with a header, in chunks.

    Columns are Arrow-backed strings (`pd.ArrowDtype`): interaction columns stay in Arrow end to end;
    code doing per-item Python work on metadata converts them with `.astype(object)` first.

    Quoted fields are understood; rows with the wrong number of fields or non-utf-8 bytes are quarantined.
    """
    header = csv_header(path, sep)
    require_columns(path, header, required)
    wanted = [c for c in header if c in required or c in optional]
    bad: list[str] = []

    def on_invalid(row: Any) -> str:
        bad.append(row.text)
        return "skip"

    read_options = pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=_block_size(path, chunk_rows))
    parse_options = pacsv.ParseOptions(delimiter=sep, invalid_row_handler=on_invalid)
    # Binary columns: pyarrow would reject a whole block over one non-utf-8 byte; we decode per row instead.
    convert_options = pacsv.ConvertOptions(include_columns=wanted, column_types={c: pa.binary() for c in wanted})
    with open_binary(path) as (stream, progress):
        reader = pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options,
                                convert_options=convert_options)
        for batch in reader:
            progress()
            if bad:
                sink.quarantine(table, WRONG_FIELDS, bad.copy())
                bad.clear()
            for start in range(0, batch.num_rows, chunk_rows):
                frame, undecodable = _decode_columns(batch.slice(start, chunk_rows), sep)
                if undecodable:
                    sink.quarantine(table, UNDECODABLE, undecodable)
                if len(frame):
                    yield frame
    if bad:
        sink.quarantine(table, WRONG_FIELDS, bad)


def _parse_records(lines: list[bytes], parse: Callable[[bytes], Any], sink: TableSink,
                   table: str) -> tuple[list[dict], list[bytes]]:
    """Records (dicts) of the lines `parse` accepts, with those lines; the rest quarantined with why."""
    records, kept, reasons, rejected = [], [], [], []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = parse(line)
        except UnicodeDecodeError:
            reasons.append(UNDECODABLE)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            reasons.append(INVALID_JSON)
        else:
            if isinstance(record, dict):
                records.append(record)
                kept.append(line)
                continue
            reasons.append(INVALID_RECORD)
        rejected.append(line_text(line))
    sink.quarantine(table, reasons, rejected)
    return records, kept


def read_records(path: Path, *, sink: TableSink, table: str, chunk_rows: int,
                 parse: Callable[[bytes], Any] = json.loads) -> Iterator[tuple[list[dict], list[bytes]]]:
    """JSON-lines records (dicts) with their original lines, `chunk_rows` lines at a time.

    `parse` turns one line into a record; lines it rejects are quarantined as invalid JSON (or as
    undecodable bytes), and values that are not objects as invalid records.
    """
    for lines in _line_batches(path, chunk_rows, sink, table):
        records, kept = _parse_records(lines, parse, sink, table)
        if records:
            yield records, kept


def read_json_fields(path: Path, schema: pa.Schema, *, sink: TableSink, table: str,
                     chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The top-level fields of `schema` from JSON-lines records, as columns (None where absent), in chunks.

    Arrow parses a whole batch in C++; a batch it rejects (a broken line, a value of another type)
    is parsed again line by line, so that only the bad lines are quarantined. Column `_row` holds
    each record's original line.
    """
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    for lines in _line_batches(path, chunk_rows, sink, table):
        lines = [line if line.endswith(b"\n") else line + b"\n" for line in lines if line.strip()]
        try:
            parsed = pajson.read_json(io.BytesIO(b"".join(lines)), parse_options=options,
                                      read_options=pajson.ReadOptions(block_size=1 << 24))
            if parsed.num_rows != len(lines):  # several objects on one line: find them line by line
                raise pa.ArrowInvalid("row count differs from line count")
            frame = parsed.to_pandas(types_mapper={pa.string(): TEXT}.get)
        except pa.ArrowInvalid:
            records, lines = _parse_records(lines, json.loads, sink, table)
            frame = pd.DataFrame([tuple(r.get(f) for f in schema.names) for r in records], columns=schema.names)
        if len(frame):
            frame["_row"] = lines
            yield frame


def read_json_document(path: Path) -> Any:
    """A whole (small) JSON document; a broken one is a user error naming the file."""
    try:
        with open_binary(path) as (stream, _):
            return json.load(io.TextIOWrapper(stream, encoding="utf-8"))
    except (ValueError, EOFError, gzip.BadGzipFile) as e:
        raise RecloopError(f"{path} is not valid JSON ({e}): restore the file from its source") from None
