"""Shared fixtures: tiny models and data built once per session, and a recipe writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests import fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("assets")


@pytest.fixture(scope="session")
def data(assets) -> dict[str, Path]:
    return fixtures.make_data(assets / "data")


@pytest.fixture(scope="session")
def tiny_bert(assets) -> Path:
    return fixtures.make_bert(assets / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bert_cls(assets) -> Path:
    return fixtures.make_bert(assets / "tiny-bert-cls", classifier=True)


@pytest.fixture(scope="session")
def tiny_gpt2(assets) -> Path:
    return fixtures.make_gpt2(assets / "tiny-gpt2")


@pytest.fixture
def write_recipe(tmp_path):
    def write(recipe: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def s3_endpoint():
    """One moto S3 server for the session (tests/s3.py); each test makes its own bucket with new_bucket."""
    from tests.s3 import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def two_tasks(assets) -> dict[str, Path]:
    return fixtures.make_two_tasks(assets / "two-tasks")


@pytest.fixture(scope="session")
def engine_reports(tiny_bert_cls, two_tasks, assets) -> dict[str, dict]:
    """Real reports of a multi-task (strategy both) run and of two search runs (tests/engine_reports.py)."""
    from tests.engine_reports import make_reports

    return make_reports(tiny_bert_cls, two_tasks, assets / "engine-reports")
