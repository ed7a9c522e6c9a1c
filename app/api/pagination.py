"""Opaque cursors for list endpoints: `after` is the base64 of the last id seen; ids sort by creation."""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

from pydantic import BaseModel

from ..errors import BadRequest

T = TypeVar("T")

MAX_LIMIT = 200


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("the 'after' cursor is not one this API issued") from None
    if not raw.isascii() or "_" not in raw or len(raw) > 40:
        raise BadRequest("the 'after' cursor is not one this API issued")
    return raw


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None = None
