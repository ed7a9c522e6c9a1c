"""Conditional and partial GETs of a stored file (RFC 9110 §13 and §14), streamed in constant memory.

Starlette's FileResponse was not used: it answers 416 and malformed ranges as text/plain (this API
answers every error as problem+json), has no If-None-Match/304, and adds a Last-Modified that If-Range
would also match. The rules here:
- `ETag` is strong: the sha256 of the content. `If-None-Match` (weak comparison, `*` allowed) -> 304.
- One byte range (`a-b`, `a-`, `-n`) -> 206 with Content-Range; one that starts past the end, or a
  zero-length suffix, -> 416 with `Content-Range: bytes */size`.
- A Range that is not one well-formed byte range, including a request for several ranges, is ignored
  and the full body is sent with 200 (RFC 9110 §14.2 lets a server ignore Range).
- `If-Range` honours the Range only when it equals the strong ETag exactly; otherwise 200 and the whole.
- HEAD gets the same status and headers without the body.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse

from ..errors import RangeNotSatisfiable

# At most 19 digits: int() of a longer string is slow or refused, and no file is that large anyway.
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE)
_ASCII_SAFE = re.compile(r"[^\x20-\x7e]|[\"\\]")


def content_disposition(filename: str) -> str:
    """RFC 6266: a quoted ASCII fallback, plus filename* (RFC 8187) when the name is not plain ASCII."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "download"
    fallback = _ASCII_SAFE.sub("_", name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The half-open [start, end) a single-range header asks for; None to ignore it (send it all)."""
    match = _RANGE.match(header)
    if match is None:
        return None  # several ranges, another unit or malformed: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return size - min(n, size), size
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range-spec is ignored, not refused
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(int(last) + 1, size) if last else size


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"the range starts beyond the end of the {size}-byte content",
                               headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an (empty) async generator


def file_response(*, method: str, headers: Mapping[str, str], read: Callable[[int, int], Iterator[bytes]], size: int,
                  sha256: str, media_type: str, filename: str) -> Response:
    """The response to a GET or HEAD of a stored file, given the request's (case-insensitive) headers.

    `read(start, end)` yields [start, end) in chunks (the store's open_range): a plain generator, which
    StreamingResponse pulls in a worker thread, so reads never block the event loop, and it stops pulling
    when the client goes away."""
    etag = f'"{sha256}"'
    common = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private",
              "Content-Disposition": content_disposition(filename)}
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and {"*", etag} & set(_tags(if_none_match)):
        return Response(status_code=304, headers=common)
    status, start, end = 200, 0, size
    requested = headers.get("range")
    if_range = headers.get("if-range")
    if requested is not None and (if_range is None or if_range.strip() == etag):
        span = byte_range(requested, size)
        if span is not None:
            status, (start, end) = 206, span
            common["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    common["Content-Length"] = str(end - start)
    body = _nothing() if method == "HEAD" else read(start, end)
    return StreamingResponse(body, status_code=status, headers=common, media_type=media_type)
