"""The request-scoped session dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import Request
from sqlalchemy.orm import Session

from .base import session_factory


async def _blocking(fn) -> None:
    # Its own limiter, shielded: ending a session gives its connection back, so it must never queue behind
    # requests that are waiting for a connection (FastAPI exits sync dependencies the same way).
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(fn, limiter=anyio.CapacityLimiter(1))


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A unit of work per request: commit on success, roll back on error. Opening a session does no I/O
    (it connects on its first query), so it costs no trip to the threadpool; ending it is one trip."""
    session = session_factory(request.app.state.settings.sqlalchemy_url)()
    try:
        yield session
    except BaseException:
        await _blocking(lambda: _end(session, commit=False))
        raise
    await _blocking(lambda: _end(session, commit=True))


def _end(session: Session, *, commit: bool) -> None:
    try:
        session.commit() if commit else session.rollback()
    finally:
        session.close()
