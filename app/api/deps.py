"""Shared dependencies: the caller's owner id and the request's database session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ..auth import current_owner
from ..db.session import get_session
from ..settings import Settings

Owner = Annotated[str, Depends(current_owner)]
Db = Annotated[Session, Depends(get_session, scope="function")]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


AppSettings = Annotated[Settings, Depends(get_settings_dep)]
