"""GET /v1/jobs/{id}/events over real HTTP: JSON pages, and Server-Sent Events that follow events as a
writer inserts them, resume from Last-Event-ID and end once the job is terminal."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import update

from app.api import events as events_api
from app.db.base import new_id, session_scope
from app.db.models import Event, Job

SSE = {"Accept": "text/event-stream"}


def insert_job(settings, owner: str = "team-a", status: str = "running") -> str:
    with session_scope(settings.sqlalchemy_url) as s:
        job = Job(id=new_id("job"), owner=owner, status=status, queue="cpu", request={}, recipe={})
        s.add(job)
    return job.id


def add_events(settings, job_id: str, seqs, status: str | None = None) -> None:
    with session_scope(settings.sqlalchemy_url) as s:
        for seq in seqs:
            s.add(Event(job_id=job_id, seq=seq, stage="0:distill", message="training", step=seq, total=100,
                        loss=1.0 / seq))
        if status:
            s.execute(update(Job).where(Job.id == job_id).values(status=status))


def read_sse(response, stop_after: str | None = None) -> list[dict]:
    """Parse a stream into messages ({id, event, data} or {comment}) until it ends or `stop_after` shows up."""
    messages, current = [], {}
    for line in response.iter_lines():
        if line == "":
            if current:
                messages.append(current)
                if stop_after and (current.get("event") == stop_after or current.get("comment") == stop_after):
                    break
            current = {}
        elif line.startswith(":"):
            current["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            current[name] = value.strip()
    return messages


def progress(messages: list[dict]) -> list[int]:
    return [int(m["id"]) for m in messages if m.get("event") == "progress"]


def test_event_pages(client, settings):
    job_id = insert_job(settings)
    add_events(settings, job_id, range(1, 8))
    page = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 3}).json()
    assert [e["seq"] for e in page["data"]] == [1, 2, 3] and page["has_more"] and page["next_cursor"] == 3
    first = page["data"][0]
    assert first["stage"] == "0:distill" and first["step"] == 1 and first["total"] == 100 and first["loss"] == 1.0
    assert first["time"].endswith("Z") or "+00:00" in first["time"]
    page = client.get(f"/v1/jobs/{job_id}/events", params={"after": 3, "limit": 3}).json()
    assert [e["seq"] for e in page["data"]] == [4, 5, 6] and page["has_more"]
    page = client.get(f"/v1/jobs/{job_id}/events", params={"after": 6}).json()
    assert [e["seq"] for e in page["data"]] == [7] and not page["has_more"] and page["next_cursor"] == 7
    page = client.get(f"/v1/jobs/{job_id}/events", params={"after": 7}).json()
    assert page == {"data": [], "has_more": False, "next_cursor": 7}
    for params, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"after": -1}, "after")):
        r = client.get(f"/v1/jobs/{job_id}/events", params=params)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field


def test_stream_follows_a_writer_and_ends(client, settings):
    job_id = insert_job(settings)
    add_events(settings, job_id, range(1, 4))

    def writer() -> None:
        for seq in range(4, 9):
            time.sleep(0.1)
            add_events(settings, job_id, [seq])
        add_events(settings, job_id, [9], status="succeeded")  # the last event and the end, in one commit

    thread = threading.Thread(target=writer)
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=SSE, timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        thread.start()
        messages = read_sse(r)
    thread.join()
    assert progress(messages) == list(range(1, 10))
    data = json.loads(next(m for m in messages if m.get("id") == "5")["data"])
    assert data["seq"] == 5 and data["step"] == 5 and data["message"] == "training"
    assert messages[-1] == {"event": "end", "data": '{"status": "succeeded"}'}


def test_stream_resumes_from_last_event_id(client, settings):
    job_id = insert_job(settings)
    add_events(settings, job_id, range(1, 6), status="failed")
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**SSE, "Last-Event-ID": "3"}, timeout=20) as r:
        messages = read_sse(r)
    assert progress(messages) == [4, 5] and messages[-1]["event"] == "end"
    assert json.loads(messages[-1]["data"]) == {"status": "failed"}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", params={"after": 4}, headers=SSE, timeout=20) as r:
        assert progress(read_sse(r)) == [5]
    for bad in (b"x", "²".encode("latin-1"), str(2**63).encode(), b"-1"):  # "²" passes str.isdigit()
        r = client.get(f"/v1/jobs/{job_id}/events", headers={**SSE, "Last-Event-ID": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID", bad
    r = client.get(f"/v1/jobs/{job_id}/events", params={"after": 2**63})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"


def test_stream_sends_heartbeats_and_stops_when_the_client_leaves(client, settings, monkeypatch: pytest.MonkeyPatch):
    # the server runs in this process, so its module can be patched: quick heartbeats, and a spy on polls
    monkeypatch.setattr(events_api, "HEARTBEAT_S", 0.3)
    polls: list[float] = []
    real_poll = events_api._poll

    def spy(*args):
        polls.append(time.monotonic())
        return real_poll(*args)

    monkeypatch.setattr(events_api, "_poll", spy)
    job_id = insert_job(settings, status="queued")
    started = time.monotonic()
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=SSE, timeout=20) as r:
        messages = read_sse(r, stop_after="keep-alive")
    left = time.monotonic()
    assert messages[-1] == {"comment": "keep-alive"} and progress(messages) == []
    assert left - started < 5 and len(polls) >= 2
    time.sleep(1.0)
    assert [t for t in polls if t > left + 0.5] == []  # the disconnect cancelled the stream's polling
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200


def test_another_owner_cannot_stream(other_client, settings):
    job_id = insert_job(settings)
    add_events(settings, job_id, [1])
    for headers in ({}, SSE):
        r = other_client.get(f"/v1/jobs/{job_id}/events", headers=headers)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
