"""Datasets: JSONL or CSV files of three kinds, recognised by their columns.

- text:            {"text": ...}                          unlabelled transfer, calibration or eval text
- classification:  {"text": ..., "label": ...}            label is an int or a string
- similarity:      {"text_a": ..., "text_b": ..., "score": ...}
- retrieval:       {"query": ..., "positive": ...}        the positives of the whole set are the corpus
- multiple-choice: {"context": ..., "choices": [...], "label": i}   label: the index of the right choice

Every row is checked; a bad row is an error naming the file, the line and the problem. Nothing is
silently dropped: a column outside the file's kind (a typo such as `lable`, or a `label` in a text set)
is an error too, as is a row whose columns differ from the first row's. Each row keeps its line number,
so that later checks (labels against the model's) name the line as well.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import DataError
from .references import sha256_file

DatasetKind = Literal["text", "classification", "similarity", "retrieval", "multiple-choice"]
_COLUMNS: dict[DatasetKind, tuple[str, ...]] = {
    "multiple-choice": ("context", "choices", "label"),
    "retrieval": ("query", "positive"),
    "similarity": ("text_a", "text_b", "score"),
    "classification": ("text", "label"),
    "text": ("text",),
}
MAX_ROWS = 5_000_000
MAX_ROW_BYTES = 1024**2  # one JSONL line or CSV record; the service passes DISTILLERY_MAX_DATASET_ROW_BYTES
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Dataset:
    path: Path
    kind: DatasetKind
    rows: list[dict]
    sha256: str
    lines: tuple[int, ...] = ()  # each row's line in the file (1-based; blank lines and a CSV header count)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        """Where row i came from, for messages: file:line, or the row's number in a set built in memory."""
        if i < len(self.lines):
            return f"{self.path.name}:{self.lines[i]}"
        return f"{self.path.name}: row {i + 1}"

    def texts(self) -> list[str]:
        """Every text in the set, for distillation from unlabelled text (pairs give both sides)."""
        if self.kind == "similarity":
            return [t for r in self.rows for t in (r["text_a"], r["text_b"])]
        if self.kind == "retrieval":
            return [t for r in self.rows for t in (r["query"], r["positive"])]
        if self.kind == "multiple-choice":
            return [r["context"] for r in self.rows]
        return [r["text"] for r in self.rows]

    def labels(self) -> list[int | str]:
        return [r["label"] for r in self.rows]

    def schema(self) -> dict:
        return {"kind": self.kind, "columns": list(_COLUMNS[self.kind]), "rows": len(self.rows)}


def _names(columns) -> str:
    return ", ".join(repr(c) for c in columns)


def _kind_of(row: object, where: str) -> DatasetKind:
    """The kind the first row (or a CSV header) sets for the whole file; a column no kind has is refused."""
    keys = set(row) if isinstance(row, dict) else set()
    for kind, cols in _COLUMNS.items():  # most specific first
        if set(cols) <= keys:
            extra = sorted(keys - set(cols))
            if extra:
                raise DataError(f"{where}: unknown column{'s' if len(extra) > 1 else ''} {_names(extra)}; "
                                f"a {kind} set has only {_names(cols)}")
            return kind
    raise DataError(f"{where}: cannot tell the kind of set; rows need text, text+label, "
                    "text_a+text_b+score, query+positive or context+choices+label"
                    + (f" (found {_names(sorted(keys))})" if keys else ""))


def _finite(value: int | float) -> bool:
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 2**1023  # a float holds that int


def _check_row(row: object, kind: DatasetKind, where: str, first: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with {', '.join(_COLUMNS[kind])}")
    missing = [c for c in _COLUMNS[kind] if c not in row]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (this file is a {kind} set)")
    extra = sorted(set(row) - set(_COLUMNS[kind]))
    if extra:
        raise DataError(f"{where}: unexpected column{'s' if len(extra) > 1 else ''} {_names(extra)}: {first} made "
                        f"this file a {kind} set, whose rows have only {_names(_COLUMNS[kind])}")
    out: dict = {}
    for col in _COLUMNS[kind]:
        value = row[col]
        if col.startswith("text") or col in ("query", "positive", "context"):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {col} must be a non-empty string")
        elif col == "choices":
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c for c in value):
                raise DataError(f"{where}: choices must be a list of at least two non-empty strings")
        elif col == "label" and kind == "multiple-choice":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(row["choices"]):
                raise DataError(f"{where}: label must be the index of the right choice (0..{len(row['choices']) - 1})")
        elif col == "label":
            if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
                raise DataError(f"{where}: label must be an integer or a non-empty string")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise DataError(f"{where}: label is an integer too large to be a class index")
        elif col == "score":
            if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
                raise DataError(f"{where}: score must be a finite number")
            value = float(value)
        out[col] = value
    return out


def _lines(fh: BinaryIO, name: str, max_row_bytes: int) -> Iterator[tuple[int, str, int]]:
    """(line number, text, bytes) of each line, read with a bounded readline: a line longer than the cap is
    refused after max_row_bytes + 1 bytes, never held whole."""
    lineno = 0
    while raw := fh.readline(max_row_bytes + 1):
        lineno += 1
        if len(raw) > max_row_bytes and not raw.endswith(b"\n"):
            raise DataError(f"{name}:{lineno}: the line is longer than {max_row_bytes} bytes; rows are at most "
                            f"{max_row_bytes} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not UTF-8 text on line {lineno} ({exc.reason} at byte {exc.start} of the "
                            "line)") from None
        yield lineno, text, len(raw)


def _jsonl_rows(fh: BinaryIO, name: str, max_row_bytes: int) -> Iterator[tuple[int, object]]:
    for lineno, line, _ in _lines(fh, name, max_row_bytes):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are not rows
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}:{lineno}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"{name}:{lineno}: the JSON is nested too deeply") from None
        except ValueError as exc:  # an integer of thousands of digits (Python's int-string conversion limit)
            raise DataError(f"{name}:{lineno}: not usable JSON ({str(exc).split(':')[0]})") from None


def _csv_label(value: str, where: str) -> int | str:
    """A label that is an ASCII integer becomes an int (a class index); other text stays a class name."""
    if not _INTEGER.fullmatch(value):
        return value
    if len(value.lstrip("-")) > 18:
        raise DataError(f"{where}: label {value[:40]!r}... has more than 18 digits; not a class index")
    return int(value)


def _csv_rows(fh: BinaryIO, name: str, max_row_bytes: int) -> Iterator[tuple[int, object]]:
    """(line a record starts on, its fields by column); the header is checked as the file's first row.
    A record may span lines (a quoted newline): its lines together are held to the row cap."""
    pending = 0  # bytes fed to the CSV reader since the last record it returned
    start = 1

    def lines() -> Iterator[str]:
        nonlocal pending
        for _, text, size in _lines(fh, name, max_row_bytes):
            pending += size
            if pending > max_row_bytes:
                raise DataError(f"{name}:{start}: the record is longer than {max_row_bytes} bytes")
            yield text

    reader = csv.reader(lines())
    header: list[str] | None = None
    while True:
        start = lineno = reader.line_num + 1  # a quoted field may span lines: name the record's first
        try:
            fields = next(reader, None)
        except csv.Error as exc:
            raise DataError(f"{name}:{reader.line_num}: malformed CSV ({exc})") from None
        pending = 0
        if fields is None:
            return
        if not fields:
            continue  # a blank line
        if header is None:
            header = fields
            dupes = sorted({c for c in header if header.count(c) > 1})
            if dupes:
                raise DataError(f"{name}:{lineno}: column {_names(dupes)} appears twice in the header")
            _kind_of(dict.fromkeys(header), f"{name}:{lineno} (the header)")
            continue
        if len(fields) != len(header):
            more = "more" if len(fields) > len(header) else "fewer"
            raise DataError(f"{name}:{lineno}: {more} fields than the header has")
        parsed: dict = dict(zip(header, fields, strict=True))
        if "label" in parsed:
            parsed["label"] = _csv_label(parsed["label"], f"{name}:{lineno}")
        if "score" in parsed:
            try:
                parsed["score"] = float(parsed["score"])
            except ValueError:
                raise DataError(f"{name}:{lineno}: score {parsed['score'][:40]!r} is not a number") from None
        yield lineno, parsed


def checked_rows(path: str | Path, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[tuple[DatasetKind, int, dict]]:
    """(the file's kind, line, row) for each row, checked as it is read: one row in memory at a time."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".json"):
        raise DataError(f"{path.name}: expected a .jsonl or .csv file")
    kind: DatasetKind | None = None
    first = ""
    count = 0
    with open(path, "rb") as fh:
        source = _csv_rows(fh, path.name, max_row_bytes) if suffix == ".csv" else \
            _jsonl_rows(fh, path.name, max_row_bytes)
        for lineno, raw in source:
            where = f"{path.name}:{lineno}"
            if kind is None:
                kind, first = _kind_of(raw, where), ("the header" if suffix == ".csv" else f"line {lineno}")
            count += 1
            if count > MAX_ROWS:
                raise DataError(f"{path.name}: more than {MAX_ROWS} rows")
            yield kind, lineno, _check_row(raw, kind, where, first)
    if kind is None:
        raise DataError(f"{path.name}: the file has no rows")


def load_dataset(path: str | Path, max_row_bytes: int = MAX_ROW_BYTES) -> Dataset:
    path = Path(path)
    rows: list[dict] = []
    lines: list[int] = []
    kind: DatasetKind = "text"
    for row_kind, lineno, row in checked_rows(path, max_row_bytes):
        kind = row_kind
        rows.append(row)
        lines.append(lineno)
    return Dataset(path=path, kind=kind, rows=rows, sha256=sha256_file(path), lines=tuple(lines))


def scan_dataset(path: str | Path, max_row_bytes: int = MAX_ROW_BYTES) -> dict:
    """What Dataset.schema() says, from one streaming pass that keeps no rows (the service's upload check)."""
    kind: DatasetKind = "text"
    rows = 0
    for row_kind, _, _ in checked_rows(path, max_row_bytes):
        kind, rows = row_kind, rows + 1
    return {"kind": kind, "columns": list(_COLUMNS[kind]), "rows": rows}
