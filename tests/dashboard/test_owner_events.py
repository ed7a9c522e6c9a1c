"""GET /v1/events over real HTTP: every job of the caller's owner in one feed, as pages and as Server-Sent
Events (from now, or resumed from Last-Event-ID), never another owner's events; on PostgreSQL an event whose
transaction commits after a higher id was streamed is still delivered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.db.base import new_id, session_scope
from app.db.migrate import upgrade
from app.db.models import Event, Job
from app.settings import Settings
from tests.app.conftest import Server, make_key
from tests.databases import require_postgres, temporary_database

REDIS_URL = "redis://127.0.0.1:6379/12"  # the dashboard tests' own database
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(params=["sqlite", "postgres"])
def api(request, tmp_path) -> Iterator[tuple[Settings, httpx.Client, httpx.Client]]:
    if request.param == "postgres":
        require_postgres()
    redis.Redis.from_url(REDIS_URL).flushdb()
    with temporary_database(request.param, tmp_path, prefix="dashtest") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, redis_url=REDIS_URL)
        upgrade(settings.sqlalchemy_url)
        from app.api.main import create_app

        with Server(create_app(settings)) as srv:
            mine = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {make_key(settings, 'team-a')}"},
                                timeout=httpx.Timeout(20, read=20))
            theirs = httpx.Client(base_url=srv.url, timeout=httpx.Timeout(20, read=20),
                                  headers={"Authorization": f"Bearer {make_key(settings, 'team-b')}"})
            with mine, theirs:
                yield settings, mine, theirs


def insert_job(settings: Settings, owner: str) -> str:
    with session_scope(settings.sqlalchemy_url) as s:
        job = Job(id=new_id("job"), owner=owner, status="running", queue="cpu", request={}, recipe={})
        s.add(job)
    return job.id


def add_events(settings: Settings, job_id: str, seqs) -> None:
    with session_scope(settings.sqlalchemy_url) as s:
        for seq in seqs:
            s.add(Event(job_id=job_id, seq=seq, stage="0:distill", message="training", step=seq, total=10))


def collect(client: httpx.Client, want: int, headers: dict | None = None, params: dict | None = None,
            started: threading.Event | None = None, timeout: float = 15) -> list[dict]:
    """Progress messages of a stream (which never ends by itself) until `want` have come or `timeout`."""
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    current: dict = {}
    with client.stream("GET", "/v1/events", headers={**SSE, **(headers or {})}, params=params) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("retry:") and started is not None:
                started.set()
            if line == "":
                if current.get("event") == "progress":
                    out.append({"id": int(current["id"]), **json.loads(current["data"])})
                current = {}
                if len(out) >= want or time.monotonic() > deadline:
                    break
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.strip()
    return out


def test_pages_hold_only_my_jobs_events_in_id_order(api):
    settings, mine, theirs = api
    a1, a2, b1 = insert_job(settings, "team-a"), insert_job(settings, "team-a"), insert_job(settings, "team-b")
    add_events(settings, a1, [1, 2])
    add_events(settings, b1, [1, 2, 3])
    add_events(settings, a2, [1])
    add_events(settings, a1, [3])
    page = mine.get("/v1/events", params={"limit": 3}).json()
    assert [(e["job_id"], e["seq"]) for e in page["data"]] == [(a1, 1), (a1, 2), (a2, 1)]
    assert page["has_more"] and page["next_cursor"] == page["data"][-1]["id"]
    ids = [e["id"] for e in page["data"]]
    assert ids == sorted(ids)
    rest = mine.get("/v1/events", params={"after": page["next_cursor"]}).json()
    assert [(e["job_id"], e["seq"]) for e in rest["data"]] == [(a1, 3)] and not rest["has_more"]
    assert rest["data"][0]["stage"] == "0:distill" and rest["data"][0]["step"] == 3 and rest["data"][0]["total"] == 10
    empty = mine.get("/v1/events", params={"after": rest["next_cursor"]}).json()
    assert empty == {"data": [], "has_more": False, "next_cursor": rest["next_cursor"]}
    theirs_all = theirs.get("/v1/events", params={"limit": 1000}).json()["data"]
    assert [(e["job_id"], e["seq"]) for e in theirs_all] == [(b1, 1), (b1, 2), (b1, 3)]
    r = mine.get("/v1/events", params={"limit": 0})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"
    r = httpx.get(f"{mine.base_url}/v1/events")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_stream_starts_now_follows_every_job_and_never_shows_another_owners(api):
    settings, mine, theirs = api
    a1, a2, b1 = insert_job(settings, "team-a"), insert_job(settings, "team-a"), insert_job(settings, "team-b")
    add_events(settings, a1, [1, 2])  # history: not in a stream started without a cursor
    results: dict[str, list[dict]] = {}
    ready = [threading.Event(), threading.Event()]
    readers = [threading.Thread(target=lambda: results.__setitem__("mine", collect(mine, 4, started=ready[0]))),
               threading.Thread(target=lambda: results.__setitem__("theirs", collect(theirs, 2, started=ready[1])))]
    for t in readers:
        t.start()
    assert all(e.wait(10) for e in ready)
    time.sleep(0.5)  # the streams have read their starting point
    add_events(settings, b1, [1])
    add_events(settings, a2, [1])
    add_events(settings, a1, [3])
    add_events(settings, b1, [2])
    add_events(settings, a2, [2, 3])
    for t in readers:
        t.join(20)
    assert [(e["job_id"], e["seq"]) for e in results["mine"]] == [(a2, 1), (a1, 3), (a2, 2), (a2, 3)]
    assert [(e["job_id"], e["seq"]) for e in results["theirs"]] == [(b1, 1), (b1, 2)]
    assert all(e["message"] == "training" for e in results["mine"])


def test_stream_resumes_after_last_event_id(api):
    settings, mine, _ = api
    a1, b1 = insert_job(settings, "team-a"), insert_job(settings, "team-b")
    add_events(settings, a1, [1, 2])
    add_events(settings, b1, [1])
    add_events(settings, a1, [3, 4])
    first = mine.get("/v1/events").json()["data"]
    got = collect(mine, 2, headers={"Last-Event-ID": str(first[1]["id"])}, timeout=5)
    assert [(e["job_id"], e["seq"]) for e in got] == [(a1, 3), (a1, 4)]
    got = collect(mine, 3, params={"after": first[0]["id"]}, timeout=5)
    assert [e["seq"] for e in got] == [2, 3, 4]
    for bad in (b"x", "²".encode("latin-1"), str(2**63).encode(), b"-1"):
        r = mine.get("/v1/events", headers={**SSE, "Last-Event-ID": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID", bad
    r = mine.get("/v1/events", params={"after": 2**63})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"


def test_an_event_committed_late_is_still_streamed(api):
    settings, mine, _ = api
    if not settings.sqlalchemy_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: ids commit in order there")
    a1, a2 = insert_job(settings, "team-a"), insert_job(settings, "team-a")
    got: list[dict] = []
    ready = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(collect(mine, 2, started=ready)))
    reader.start()
    assert ready.wait(10)
    time.sleep(0.5)
    with session_scope(settings.sqlalchemy_url) as slow:
        slow.add(Event(job_id=a1, seq=1, stage="job", message="slow writer"))
        slow.flush()  # takes the lower id, not yet visible
        add_events(settings, a2, [1])  # a higher id, committed first
        time.sleep(1.0)  # the stream sends it meanwhile and moves on
    reader.join(20)
    assert [(e["job_id"], e["seq"]) for e in got] == [(a2, 1), (a1, 1)]
    assert got[1]["id"] < got[0]["id"]
