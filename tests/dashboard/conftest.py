"""The dashboard in a real browser: the API in uvicorn (SQLite, Redis database 12), a real Celery worker
subprocess, a tiny teacher and datasets registered through the API, and headless Debian Chromium driven by
Playwright (never a browser Playwright downloads itself)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from app.db.migrate import upgrade
from app.settings import Settings
from tests import fixtures
from tests.app.conftest import Server, make_key
from tests.worker.conftest import WorkerProc

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own: other suites use 9, 10 and 11
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "dashboard"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Stack:
    settings: Settings
    url: str
    key: str
    other_key: str
    client: httpx.Client
    model: dict
    train: dict
    eval: dict
    worker: WorkerProc


@pytest.fixture(scope="session")
def stack(tmp_path_factory, tiny_bert) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'distillery.db'}",
                        redis_url=REDIS_URL, model_roots=[root / "models"], lease_seconds=10, reconcile_seconds=2)
    shutil.copytree(tiny_bert, root / "models" / "tiny-bert")
    data = fixtures.make_data(root / "src")
    upgrade(settings.sqlalchemy_url)
    from app.api.main import create_app

    with Server(create_app(settings)) as srv:
        worker = WorkerProc(settings)
        key = make_key(settings, "team-a")
        client = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        try:
            r = client.post("/v1/models", json={"name": "tiny-bert", "source": {
                "source": "local", "path": str(root / "models" / "tiny-bert")}})
            assert r.status_code == 201, r.text
            model = r.json()
            ids = {}
            for name in ("train", "eval_text"):
                r = client.post("/v1/datasets", files={"file": (f"{name}.jsonl", data[name].read_bytes())})
                assert r.status_code == 201, r.text
                ids[name] = r.json()
            yield Stack(settings, srv.url, key, make_key(settings, "team-b"), client, model, ids["train"],
                        ids["eval_text"], worker)
        finally:
            client.close()
            worker.stop()


@pytest.fixture(scope="session")
def browser():
    required = bool(os.environ.get("DISTILLERY_TEST_REQUIRE_CHROMIUM"))  # CI (.ci/run): missing is a failure
    if required:
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    path = chromium_path()
    if path is None:
        if required:
            pytest.fail("chromium is required (DISTILLERY_TEST_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap installs it as root: "
                    "apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, stack):
    """A fresh tab (its own sessionStorage) at 1280 px; any console error or uncaught exception (a CSP
    violation is one) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # nothing from another origin at run time: every request goes to the API that served the page
    foreign: list[str] = []
    local = (stack.url + "/", "blob:", "data:")
    tab.on("request", lambda r: None if r.url.startswith(local) else foreign.append(r.url))
    tab.problems = problems
    yield tab
    context.close()
    assert not [p for p in problems if "status of 401" not in p and "status of 422" not in p], problems
    assert not foreign, foreign


def sign_in(page, stack: Stack, key: str | None = None) -> None:
    page.goto(stack.url + "/")
    page.fill("#api-key", key or stack.key)
    page.click("button[type=submit]")


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
