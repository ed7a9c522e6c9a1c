"""Opaque cursors for list endpoints: `after` is the base64 of the last id seen; ids sort by creation."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Generic, TypeVar, get_args

from fastapi import Query
from pydantic import BaseModel, ConfigDict

from ..errors import BadRequest

T = TypeVar("T")

MAX_LIMIT = 200
After = Annotated[str | None, Query(description="the next_cursor of the previous page",
                                    examples=["bWRsXzAxamg4ejZrMnY5cWYzdzd0MGM1eDR5MWFi"])]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page", examples=[50])]


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


def _page_example(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    # A page of one item, from the item model's own example: each Page[X] documents itself.
    (item,) = get_args(cls.model_fields["data"].annotation)
    extra = getattr(item, "model_config", {}).get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    if examples:
        schema["examples"] = [{"data": examples[:1], "has_more": True,
                               "next_cursor": encode_cursor(examples[0]["id"])}]


class Page(BaseModel, Generic[T]):
    model_config = ConfigDict(json_schema_extra=_page_example)
    data: list[T]
    has_more: bool
    next_cursor: str | None = None
