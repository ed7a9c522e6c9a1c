"""The README's settings table (section "Production") documents every setting, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def env_name(field: str) -> str:
    """The variable a setting is read from: its first alias (DATABASE_URL), else DISTILLERY_<NAME>."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{Settings.model_config['env_prefix']}{field}".upper()


def table_variables() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Production"):]
    section = section[:section.index("\n## ")]
    header = section.index("| variable | default | meaning |")
    rows = []
    for line in section[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [m.group(1) for row in rows if (m := re.match(r"\| `([A-Z0-9_]+)` \|", row))]


def test_every_setting_has_a_row_in_the_readme_table():
    documented = table_variables()
    assert len(documented) >= 10
    expected = {env_name(f) for f in Settings.model_fields}
    assert sorted(expected - set(documented)) == []  # add a row to README's table for each
    assert sorted(set(documented) - expected) == []  # a row for a setting that does not exist
    assert len(documented) == len(set(documented))
