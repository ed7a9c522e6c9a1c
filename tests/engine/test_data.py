"""Datasets: kinds recognised by columns; every bad row named by file and line."""

from __future__ import annotations

import pytest

from worker.engine.data import load_dataset
from worker.engine.errors import DataError


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_kinds_are_recognised(tmp_path):
    assert load_dataset(write(tmp_path, "a.jsonl", '{"text": "x"}\n{"text": "y"}\n')).kind == "text"
    cls = load_dataset(write(tmp_path, "b.jsonl", '{"text": "x", "label": "pos"}\n'))
    assert cls.kind == "classification" and cls.labels() == ["pos"]
    sim = load_dataset(write(tmp_path, "c.jsonl", '{"text_a": "x", "text_b": "y", "score": 3}\n'))
    assert sim.kind == "similarity" and sim.rows[0]["score"] == 3.0 and sim.texts() == ["x", "y"]


def test_csv(tmp_path):
    ds = load_dataset(write(tmp_path, "d.csv", "text,label\nhello,1\n\"a, b\",0\n"))
    assert ds.kind == "classification" and ds.labels() == [1, 0] and ds.texts()[1] == "a, b"
    with pytest.raises(DataError, match=r"e.csv:3: more fields"):
        load_dataset(write(tmp_path, "e.csv", "text,label\nok,1\nx,1,extra\n"))
    with pytest.raises(DataError, match=r"f.csv:2: score 'high' is not a number"):
        load_dataset(write(tmp_path, "f.csv", "text_a,text_b,score\na,b,high\n"))


@pytest.mark.parametrize(("body", "message"), [
    ('{"text": "ok"}\n{"text": ""}\n', r"bad.jsonl:2: text must be a non-empty string"),
    ('{"text": "ok"}\n{not json}\n', r"bad.jsonl:2: not valid JSON"),
    ('{"text": "ok", "label": 1}\n{"text": "x"}\n', r"bad.jsonl:2: missing label"),
    ('{"text": "ok", "label": 1}\n{"text": "x", "label": 1.5}\n', r"bad.jsonl:2: label must be"),
    ('{"text_a": "a", "text_b": "b", "score": 1}\n{"text_a": "a", "text_b": "b", "score": NaN}\n',
     r"bad.jsonl:2: score must be a finite number"),
    ('{"foo": 1}\n', r"bad.jsonl:1: cannot tell the kind"),
    ('\n\n', r"no rows"),
    ('["text"]\n', r"bad.jsonl:1: cannot tell the kind"),
])
def test_bad_rows_name_file_and_line(tmp_path, body, message):
    with pytest.raises(DataError, match=message):
        load_dataset(write(tmp_path, "bad.jsonl", body))


def test_not_utf8_and_wrong_suffix(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset(p)
    with pytest.raises(DataError, match=r"expected a \.jsonl or \.csv"):
        load_dataset(write(tmp_path, "x.txt", "hello"))


def test_no_row_is_dropped(tmp_path):
    rows = "".join(f'{{"text": "row {i}"}}\n' for i in range(1000))
    ds = load_dataset(write(tmp_path, "many.jsonl", rows))
    assert len(ds) == 1000 and ds.schema() == {"kind": "text", "columns": ["text"], "rows": 1000}
