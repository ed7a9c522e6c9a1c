"""SECURITY.md states the code's numbers: each setting in its caps table exists with the default the page gives,
and each fixed limit equals the constant the page names. Change one without the other and this fails."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices, SecretStr

from app.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "SECURITY.md"
UNITS = {"GiB": 1024**3, "MiB": 1024**2, "KiB": 1024, "s": 1, "": 1}
NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(GiB|MiB|KiB|s)?\b")


def table(heading: str) -> list[list[str]]:
    """The rows of the first table after `## heading`, as lists of cells."""
    text = DOC.read_text(encoding="utf-8")
    rows: list[str] = []
    for line in text[text.index(f"## {heading}\n"):].splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:  # the table has ended
            break
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def value(cell: str) -> float | None:
    """'20 GiB' -> 21474836480, '10 s' -> 10, '100' -> 100, 'unset' -> None; the first number in the cell."""
    if cell == "unset":
        return None
    match = NUMBER.search(cell)
    assert match, f"no number in {cell!r}"
    return float(match.group(1).replace(",", "")) * UNITS[match.group(2) or ""]


def env_names() -> dict[str, str]:
    """DISTILLERY_* variable -> Settings field."""
    out = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        out[str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"DISTILLERY_{field.upper()}"] = field
    return out


def default(field: str) -> float | None:
    got = Settings.model_fields[field].get_default(call_default_factory=True)
    if isinstance(got, SecretStr) or got is None:
        return None if got is None else 0
    return float(got)


def test_the_caps_table_names_real_settings_with_their_defaults():
    rows = table("Caps you can set")
    assert len(rows) >= 8
    names = env_names()
    for name_cell, default_cell, *_ in rows:
        name = name_cell.strip("`")
        assert name in names, f"SECURITY.md lists {name}, which is no setting"
        assert value(default_cell) == default(names[name]), f"{name}: SECURITY.md says {default_cell}"


@pytest.mark.parametrize("setting", ["DISTILLERY_MAX_UPLOAD_BYTES", "DISTILLERY_MAX_UNPACKED_BYTES",
                                     "DISTILLERY_MAX_COMPRESSION_RATIO", "DISTILLERY_MIN_FREE_DISK_BYTES",
                                     "DISTILLERY_MAX_DATASET_ROW_BYTES", "DISTILLERY_MAX_CONCURRENT_SLOW_PER_KEY",
                                     "DISTILLERY_HUB_TIMEOUT_SECONDS", "DISTILLERY_METRICS_TOKEN"])
def test_every_cap_on_hostile_input_is_in_the_table(setting):
    assert setting in [row[0].strip("`") for row in table("Caps you can set")]


def test_the_fixed_limits_are_the_constants_they_name():
    rows = table("Fixed limits")
    assert len(rows) >= 10
    for limit, stated, _, where in rows:
        module, _, attr = where.strip("`").rpartition(".")
        try:
            owner = importlib.import_module(module)
        except ModuleNotFoundError:  # a class attribute: module.Class.attr
            module, _, cls = module.rpartition(".")
            owner = getattr(importlib.import_module(module), cls)
        assert value(stated) == getattr(owner, attr), f"{limit}: SECURITY.md says {stated}, {where} is " \
                                                      f"{getattr(owner, attr)}"


def test_no_cap_is_stated_in_decimal_units():
    """The caps are binary: "20 GB" for 20 GiB was a doc that disagreed with the code (README's bench figures,
    measured sizes, keep their MB)."""
    readme = (DOC.parent / "README.md").read_text(encoding="utf-8")
    safety = readme[readme.index("## Safety\n"):]
    for text in (DOC.read_text(encoding="utf-8"), safety[:safety.index("\n## ", 3)]):
        assert not re.search(r"\b\d+ ?[GMK]B\b", text)
