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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
        elif col == "score":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise DataError(f"{where}: score must be a finite number")
            value = float(value)
        out[col] = value
    return out


def _jsonl_rows(path: Path):
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not rows
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path.name}:{lineno}: not valid JSON ({exc.msg})") from None


def _csv_rows(path: Path):
    """(line a record starts on, its fields by column); the header is checked as the file's first row."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        while True:
            lineno = reader.line_num + 1  # a quoted field may span lines: name the record's first
            fields = next(reader, None)
            if fields is None:
                return
            if not fields:
                continue  # a blank line
            if header is None:
                header = fields
                dupes = sorted({c for c in header if header.count(c) > 1})
                if dupes:
                    raise DataError(f"{path.name}:{lineno}: column {_names(dupes)} appears twice in the header")
                _kind_of(dict.fromkeys(header), f"{path.name}:{lineno} (the header)")
                continue
            if len(fields) != len(header):
                more = "more" if len(fields) > len(header) else "fewer"
                raise DataError(f"{path.name}:{lineno}: {more} fields than the header has")
            parsed: dict = dict(zip(header, fields, strict=True))
            if "label" in parsed and parsed["label"].lstrip("-").isdigit():
                parsed["label"] = int(parsed["label"])
            if "score" in parsed:
                try:
                    parsed["score"] = float(parsed["score"])
                except ValueError:
                    raise DataError(f"{path.name}:{lineno}: score {parsed['score']!r} is not a number") from None
            yield lineno, parsed


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".json"):
        raise DataError(f"{path.name}: expected a .jsonl or .csv file")
    rows: list[dict] = []
    lines: list[int] = []
    kind: DatasetKind | None = None
    first = ""
    try:
        source = _csv_rows(path) if suffix == ".csv" else _jsonl_rows(path)
        for lineno, raw in source:
            where = f"{path.name}:{lineno}"
            if kind is None:
                kind, first = _kind_of(raw, where), ("the header" if suffix == ".csv" else f"line {lineno}")
            rows.append(_check_row(raw, kind, where, first))
            lines.append(lineno)
            if len(rows) > MAX_ROWS:
                raise DataError(f"{path.name}: more than {MAX_ROWS} rows")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path.name}: malformed CSV ({exc})") from None
    if kind is None or not rows:
        raise DataError(f"{path.name}: the file has no rows")
    return Dataset(path=path, kind=kind, rows=rows, sha256=sha256_file(path), lines=tuple(lines))
