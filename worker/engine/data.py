"""Datasets: JSONL or CSV files of three kinds, recognised by their columns.

- text:            {"text": ...}                          unlabelled transfer, calibration or eval text
- classification:  {"text": ..., "label": ...}            label is an int or a string
- similarity:      {"text_a": ..., "text_b": ..., "score": ...}

Every row is checked; a bad row is an error naming the file, the line and the problem. Nothing is
silently dropped.
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

DatasetKind = Literal["text", "classification", "similarity"]
_COLUMNS: dict[DatasetKind, tuple[str, ...]] = {
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

    def __len__(self) -> int:
        return len(self.rows)

    def texts(self) -> list[str]:
        """Every text in the set, for distillation from unlabelled text (pairs give both sides)."""
        if self.kind == "similarity":
            return [t for r in self.rows for t in (r["text_a"], r["text_b"])]
        return [r["text"] for r in self.rows]

    def labels(self) -> list[int | str]:
        return [r["label"] for r in self.rows]

    def schema(self) -> dict:
        return {"kind": self.kind, "columns": list(_COLUMNS[self.kind]), "rows": len(self.rows)}


def _kind_of(keys: set[str]) -> DatasetKind | None:
    for kind, cols in _COLUMNS.items():  # most specific first
        if set(cols) <= keys:
            return kind
    return None


def _check_row(row: object, kind: DatasetKind, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with {', '.join(_COLUMNS[kind])}")
    missing = [c for c in _COLUMNS[kind] if c not in row]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (this file is a {kind} set)")
    out: dict = {}
    for col in _COLUMNS[kind]:
        value = row[col]
        if col.startswith("text"):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: {col} must be a non-empty string")
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
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            lineno = reader.line_num
            if None in row:
                raise DataError(f"{path.name}:{lineno}: more fields than the header has")
            if any(v is None for v in row.values()):
                raise DataError(f"{path.name}:{lineno}: fewer fields than the header has")
            parsed: dict = dict(row)
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
    kind: DatasetKind | None = None
    try:
        source = _csv_rows(path) if suffix == ".csv" else _jsonl_rows(path)
        for lineno, raw in source:
            where = f"{path.name}:{lineno}"
            if kind is None and (not isinstance(raw, dict) or (kind := _kind_of(set(raw))) is None):
                raise DataError(
                    f"{where}: cannot tell the kind of set; rows need text, text+label, or text_a+text_b+score"
                )
            rows.append(_check_row(raw, kind, where))
            if len(rows) > MAX_ROWS:
                raise DataError(f"{path.name}: more than {MAX_ROWS} rows")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path.name}: malformed CSV ({exc})") from None
    if kind is None or not rows:
        raise DataError(f"{path.name}: the file has no rows")
    return Dataset(path=path, kind=kind, rows=rows, sha256=sha256_file(path))
