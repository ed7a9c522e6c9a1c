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


@pytest.mark.parametrize(("body", "message"), [
    # a row with a column its file's kind does not have: refused, not dropped
    ('{"text": "a"}\n{"text": "b", "label": 1}\n',
     r"bad.jsonl:2: unexpected column 'label': line 1 made this file a text set, whose rows have only 'text'"),
    ('{"text": "a", "label": 0}\n{"text": "b", "label": 1, "source": "web"}\n',
     r"bad.jsonl:2: unexpected column 'source': line 1 made this file a classification set"),
    # a typo in the first row is not taken for an unlabelled set
    ('{"text": "a", "lable": 1}\n', r"bad.jsonl:1: unknown column 'lable'; a text set has only 'text'"),
    ('{"text_a": "a", "text_b": "b", "score": 1, "id": 7}\n', r"bad.jsonl:1: unknown column 'id'"),
    ('{"txt": "a"}\n', r"bad.jsonl:1: cannot tell the kind of set.*found 'txt'"),
    # blank lines count: the line is the editor's line
    ('\n{"text": "a"}\n\n{"text": "b", "label": 1}\n', r"bad.jsonl:4: unexpected column 'label'"),
])
def test_columns_outside_the_files_kind_are_refused(tmp_path, body, message):
    with pytest.raises(DataError, match=message):
        load_dataset(write(tmp_path, "bad.jsonl", body))


def test_csv_header_is_line_one_and_its_columns_are_checked(tmp_path):
    with pytest.raises(DataError, match=r"g.csv:1 \(the header\): unknown column 'lable'"):
        load_dataset(write(tmp_path, "g.csv", "text,lable\nhello,1\n"))
    with pytest.raises(DataError, match=r"h.csv:1: column 'text' appears twice"):
        load_dataset(write(tmp_path, "h.csv", "text,text\na,b\n"))
    # a quoted field spanning lines: the next record's line is still the file's line
    with pytest.raises(DataError, match=r"i.csv:5: text must be a non-empty string"):
        load_dataset(write(tmp_path, "i.csv", 'text,label\n"two\nlines",1\n\n"",0\n'))


def test_rows_keep_their_line_numbers(tmp_path):
    ds = load_dataset(write(tmp_path, "l.jsonl", '\n{"text": "a"}\n\n\n{"text": "b"}\n'))
    assert ds.lines == (2, 5) and ds.where(1) == "l.jsonl:5"
    csv_ds = load_dataset(write(tmp_path, "l.csv", 'text\n"x\ny"\nz\n'))
    assert csv_ds.texts() == ["x\ny", "z"] and csv_ds.lines == (2, 4)


def test_labels_are_checked_by_the_dry_run_naming_the_line(tiny_bert_cls, data, tmp_path):
    from worker.engine import make_plan, parse_recipe

    bad = write(tmp_path, "topics.jsonl", '{"text": "a", "label": "food"}\n\n{"text": "b", "label": "music"}\n')
    recipe = {"teacher": {"source": "local", "path": str(tiny_bert_cls)}, "task": "sequence-classification",
              "data": {"train": str(data["train"]), "eval": {"topics": str(bad)}},
              "stages": [{"kind": "distill", "student": {"num_layers": 1}}]}
    with pytest.raises(DataError, match=r"topics.jsonl:3: label 'music' is not one of the model's labels") as err:
        make_plan(parse_recipe(recipe), base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "w")
    assert err.value.field == "data.eval.topics"
    # a training set's labels matter only to a hard-label loss; then they are checked too
    recipe["data"] = {"train": str(write(tmp_path, "train.jsonl", '{"text": "a", "label": 3}\n')),
                      "eval": {"topics": str(data["eval_cls"])}}
    make_plan(parse_recipe(recipe), base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "w")
    recipe["stages"][0]["hard_label_weight"] = 1.0
    with pytest.raises(DataError, match=r"train.jsonl:1: label 3 is outside the model's classes 0..2") as err:
        make_plan(parse_recipe(recipe), base_dir=tmp_path, roots=["/"], work_dir=tmp_path / "w")
    assert err.value.field == "data.train"
