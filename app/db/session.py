"""The request-scoped session dependency."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from .base import _factory


def get_session(request: Request) -> Iterator[Session]:
    session = _factory(request.app.state.settings.sqlalchemy_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
