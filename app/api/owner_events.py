"""GET /v1/events: every event of every job of the caller's owner, as JSON pages or Server-Sent Events.

One stream for all of an owner's jobs, so a dashboard follows any number of jobs over one connection
(browsers allow six HTTP/1.1 connections per origin; a stream per running job would exhaust them).
The cursor is the event's `id`, unique across jobs; `job_id` and `seq` say which job's event it is.

Event ids come from one sequence but transactions commit in any order on PostgreSQL: a worker can commit
id 100 after another worker's id 101 has been read. A live stream therefore re-reads a trailing window
(ids seen in the last SETTLE_S seconds) and sends what it has not sent yet, so an event that commits late
is still delivered (after higher ids). SQLite serialises writers, so there ids commit in order.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..db.base import session_scope
from ..repositories import owner_events as repo
from .deps import AppSettings, Db, Owner
from .docs import JOB_ID, problems
from .events import MAX_CURSOR, parse_last_event_id
from .routing import api_router
from .schemas_jobs import EVENT_EXAMPLE, EventOut

router = api_router(tags=["jobs"])

POLL_S = 0.3  # how often a stream looks for new events
HEARTBEAT_S = 15.0  # a comment this often keeps proxies from closing an idle stream
BATCH = 500  # events read per query
SETTLE_S = 10.0  # PostgreSQL: how long after a higher id was seen a lower one may still commit


OWNER_EVENT_EXAMPLE = {"id": 9041, "job_id": JOB_ID, **EVENT_EXAMPLE}
SSE_EXAMPLE = ('retry: 2000\n\nid: 9041\nevent: progress\ndata: {"id": 9041, "job_id": "' + JOB_ID + '", "seq": 42, '
               '"time": "2025-11-29T10:01:00Z", "stage": "0:distill", "message": "training", "step": 120, '
               '"total": 300, "loss": 0.042}\n\n: keep-alive\n\n')


class OwnerEventOut(EventOut):
    """A job's event, with which job it belongs to and a cursor across all of the owner's jobs."""

    model_config = ConfigDict(json_schema_extra={"examples": [OWNER_EVENT_EXAMPLE]})
    id: int = Field(description="unique across jobs, increasing: the SSE id and the page cursor")
    job_id: str

    @classmethod
    def from_row(cls, e: Any) -> OwnerEventOut:
        return cls(id=e.id, job_id=e.job_id, **EventOut.from_row(e).model_dump())


class OwnerEventPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"data": [OWNER_EVENT_EXAMPLE], "has_more": False, "next_cursor": 9041}]})
    data: list[OwnerEventOut]
    has_more: bool
    next_cursor: int = Field(description="the id to pass as `after` next (`after` itself on an empty page)")


def _read(url: str, owner: str, after: int) -> list[OwnerEventOut]:
    # Everything after `after`, in batches: the window may hold more than one batch after a burst.
    out: list[OwnerEventOut] = []
    with session_scope(url) as session:
        while True:
            rows = repo.owner_events_after(session, owner, after, BATCH)
            out.extend(OwnerEventOut.from_row(r) for r in rows)
            if len(rows) < BATCH:
                return out
            after = rows[-1].id


def _newest(url: str) -> int:
    with session_scope(url) as session:
        return repo.newest_event_id(session)


class Window:
    """Which ids were sent: everything <= floor, plus `sent` (id -> when first seen) above it. The floor
    moves up to the highest id seen at least `settle` seconds ago; lower ids are not expected any more."""

    def __init__(self, floor: int, settle: float) -> None:
        self.floor, self.settle, self.sent = floor, settle, {}

    def fresh(self, events: list[OwnerEventOut], now: float) -> list[OwnerEventOut]:
        new = [e for e in events if e.id > self.floor and e.id not in self.sent]
        for e in new:
            self.sent[e.id] = now
        settled = [i for i, seen in self.sent.items() if now - seen >= self.settle]
        if settled:
            self.floor = max(self.floor, *settled)
            self.sent = {i: t for i, t in self.sent.items() if i > self.floor}
        return new


async def _stream(url: str, owner: str, after: int | None) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    if after is None:
        after = await anyio.to_thread.run_sync(_newest, url)
    window = Window(after, 0.0 if url.startswith("sqlite") else SETTLE_S)
    quiet_since = time.monotonic()
    while True:
        events = await anyio.to_thread.run_sync(_read, url, owner, window.floor)
        for event in window.fresh(events, time.monotonic()):
            yield f"id: {event.id}\nevent: progress\ndata: {event.model_dump_json()}\n\n"
            quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_S)


@router.get(
    "/events", response_model=OwnerEventPage, summary="All of my jobs' progress events (pages or SSE)",
    description="JSON pages of the caller's events (every job) with id > `after`, in id order. With `Accept: "
    "text/event-stream`, a Server-Sent Events stream instead, which never ends: each event as `id: <id>`, "
    "`event: progress`, `data: <json with job_id and seq>`, and a `: keep-alive` comment every 15 s. The "
    "stream starts after `Last-Event-ID` or `after` when given, otherwise with the next event (history is in "
    "the pages). On PostgreSQL an event that commits late is still sent, after higher ids; `(job_id, seq)` "
    "identifies an event.",
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}}},
               **problems(401, 422)},
)
def owner_events(owner: Owner, db: Db, settings: AppSettings,
                 after: Annotated[int | None, Query(ge=0, le=MAX_CURSOR, description="an event id",
                                                    examples=[9040])] = None,
                 limit: Annotated[int, Query(ge=1, le=1000, examples=[100])] = 100,
                 accept: Annotated[str | None, Header(description="text/event-stream for a stream",
                                                      examples=["text/event-stream"])] = None,
                 last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", examples=["9040"],
                                                             description="SSE: resume after this id")] = None):
    if accept and "text/event-stream" in accept.lower():
        if last_event_id is not None:
            after = parse_last_event_id(last_event_id, "an event id")
        db.commit()  # end the request's transaction now: the stream may stay open for hours
        return StreamingResponse(_stream(settings.sqlalchemy_url, owner, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    after = after or 0
    rows = repo.owner_events_after(db, owner, after, limit + 1)
    data = [OwnerEventOut.from_row(r) for r in rows[:limit]]
    return OwnerEventPage(data=data, has_more=len(rows) > limit, next_cursor=data[-1].id if data else after)
