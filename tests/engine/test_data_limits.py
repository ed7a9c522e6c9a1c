"""Datasets under hostile input: a per-row cap read with a bounded readline, JSON too deep or numbers too long
for Python named by file and line, and a streaming scan that keeps no rows."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from app.intake import check_dataset
from worker.engine.data import load_dataset, scan_dataset
from worker.engine.errors import DataError


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("name", "content", "message"), [
    ("deep.jsonl", b'{"text": "a"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", r"deep.jsonl:2: .*nested too deeply"),
    ("digits.jsonl", b'{"text": "a", "label": ' + b"7" * 5000 + b"}\n", r"digits.jsonl:1: .*4300 digits"),
    ("big.jsonl", b'{"text": "a", "label": ' + b"7" * 30 + b"}\n", r"big.jsonl:1: label is an integer too large"),
    ("score.jsonl", b'{"text_a": "a", "text_b": "b", "score": ' + b"9" * 400 + b"}\n",
     r"score.jsonl:1: score must be a finite number"),
    ("digits.csv", b"text,label\nhello," + b"7" * 5000 + b"\n", r"digits.csv:2: label '7+'\.\.\. has more than 18"),
    ("super.csv", "text,label\nhello,\u00b2\n".encode(), None),  # a Unicode digit is a class name, not an int
    ("nul.csv", b"text,label\nhel\0lo,1\n", None),
])
def test_parser_limits_are_data_errors_naming_the_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    if message is None:
        assert load_dataset(path).kind == "classification"
        return
    for read in (load_dataset, scan_dataset):
        with pytest.raises(DataError, match=message):
            read(path)


def test_a_line_over_the_row_cap_is_refused_without_reading_it_whole(tmp_path):
    line = b'{"text": "' + b"a" * (40 * 1024**2) + b'"}\n'
    path = write(tmp_path, "long.jsonl", b'{"text": "short"}\n' + line)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"long.jsonl:2: the line is longer than 1048576 bytes"):
            scan_dataset(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2, peak
    with pytest.raises(DataError, match=r"long.jsonl:2: the line is longer than 1000 bytes"):
        load_dataset(write(tmp_path, "long.jsonl", b'{"text": "short"}\n{"text": "' + b"a" * 1000 + b'"}\n'), 1000)
    exact = b'{"text": "' + b"a" * 988 + b'"}\n'  # 1000 bytes and its newline: at the cap, accepted
    assert len(load_dataset(write(tmp_path, "exact.jsonl", exact), 1000)) == 1


def test_a_csv_record_spanning_lines_is_held_to_the_cap(tmp_path):
    quoted = b'"' + b"word\n" * 400 + b'"'
    path = write(tmp_path, "multi.csv", b"text\nfine\n" + quoted + b"\n")
    assert len(load_dataset(path)) == 2
    with pytest.raises(DataError, match=r"multi.csv:3: the record is longer than 1000 bytes"):
        load_dataset(path, 1000)


def test_scan_keeps_no_rows_and_agrees_with_load(tmp_path):
    rows = b"".join(b'{"text": "row %d with some words in it", "label": %d}\n' % (i, i % 3) for i in range(100_000))
    path = write(tmp_path, "many.jsonl", rows)
    tracemalloc.start()
    try:
        checked = check_dataset(path, 1024**2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024**2, peak  # the rows as dicts would take tens of megabytes
    assert (checked.kind, checked.rows, checked.columns) == ("classification", 100_000, ["text", "label"])
    assert scan_dataset(path) == load_dataset(path).schema()
