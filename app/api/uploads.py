"""Streaming multipart intake: one file part is written straight to disk as it arrives.

Starlette's form parser spools the whole body (to memory, then /tmp) before the endpoint runs, so it
could only refuse an oversized upload after receiving all of it. This reader feeds the request stream
to python-multipart's push parser and hands the file part's bytes to a SizedWriter, which counts,
hashes and stops with 413 at the cap; small text fields are capped too (part headers by python-multipart).
A Content-Length that already exceeds the cap is refused before any of the body is read. The disk keeps its
reserve (DISTILLERY_MIN_FREE_DISK_BYTES): checked against Content-Length up front and before each write (507).
The boundary must be what RFC 2046 allows (1 to 70 characters of its set), or the body is a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.exceptions import HTTPException

from ..disk import require_free_space
from ..errors import BadRequest, PayloadTooLarge, Unprocessable
from ..storage import SizedWriter, StoredFile
from .deps import get_settings_dep

FORM_OVERHEAD = 64 * 1024  # boundaries, part headers and the small text fields around the file
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,./:=?-]([0-9A-Za-z'()+_,./:=? -]{0,68}[0-9A-Za-z'()+_,./:=?-])?")


@dataclass
class ReceivedForm:
    fields: dict[str, str]
    filename: str  # sanitised: what the file is stored as
    original_filename: str
    file: StoredFile


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def unsupported_media_type(expected: str) -> HTTPException:
    return HTTPException(415, f"send the body as {expected}")


def safe_filename(raw: str, suffixes: tuple[str, ...], field: str = "file") -> str:
    """A base name of safe characters that keeps its (lower-cased) suffix; refused without one."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    lower = base.lower()
    suffix = next((s for s in sorted(suffixes, key=len, reverse=True) if lower.endswith(s)), None)
    if suffix is None:
        raise Unprocessable(f"the file {base!r} must end with one of {', '.join(suffixes)}",
                            errors=[{"field": field, "message": f"expected one of {', '.join(suffixes)}"}])
    stem = _UNSAFE.sub("_", base[: -len(suffix)]).strip("._")[:100] or "upload"
    return stem + suffix


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class _Reader:
    """python-multipart callbacks (synchronous); file bytes are queued and written off the event loop."""

    def __init__(self, file_field: str, dest_dir: Path, max_bytes: int, suffixes: tuple[str, ...],
                 min_free: int) -> None:
        self.file_field, self.dest_dir, self.max_bytes, self.suffixes = file_field, dest_dir, max_bytes, suffixes
        self.min_free = min_free
        self.fields: dict[str, str] = {}
        self.writer: SizedWriter | None = None
        self.original: str = ""
        self.file_done = False
        self.pending: list[bytes] = []
        self._parts = 0
        self._part = _Part()
        self._hname = self._hvalue = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]  # python-multipart bounds a part's headers (MultipartParseError)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._hname.lower()] = self._hvalue
        self._hname = self._hvalue = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise BadRequest("a form part has no name in its Content-Disposition")
        part = self._part
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            return
        part.filename = options[b"filename"].decode("utf-8", "replace")
        if part.name != self.file_field:
            raise Unprocessable(f"unexpected file field {part.name!r}; send the file as {self.file_field!r}",
                                errors=[{"field": part.name, "message": "unexpected file field"}])
        if self.writer is not None:
            raise Unprocessable(f"send one file in {self.file_field!r}",
                                errors=[{"field": self.file_field, "message": "more than one file"}])
        self.original = part.filename
        name = safe_filename(part.filename, self.suffixes, self.file_field)
        self.writer = SizedWriter(self.dest_dir / name, self.max_bytes)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.filename is not None:
            self.pending.append(bytes(data[start:end]))
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise Unprocessable(f"the form field {self._part.name!r} is longer than {MAX_FIELD_BYTES} bytes",
                                errors=[{"field": self._part.name, "message": "too long"}])

    def on_part_end(self) -> None:
        if self._part.filename is not None:
            self.file_done = True
        else:
            self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")

    def write_pending(self) -> None:
        chunks, self.pending = self.pending, []
        if self.writer is not None:
            require_free_space(self.dest_dir, sum(map(len, chunks)), self.min_free)
            for chunk in chunks:
                self.writer.write(chunk)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


async def receive_upload(request: Request, *, file_field: str, dest_dir: Path, max_bytes: int,
                         suffixes: tuple[str, ...]) -> ReceivedForm:
    """Stream a multipart/form-data body: the part named `file_field` goes to `dest_dir` under the cap."""
    if media_type(request) != "multipart/form-data":
        raise unsupported_media_type("multipart/form-data")
    min_free = get_settings_dep(request).min_free_disk_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise PayloadTooLarge(f"the upload ({declared} bytes) is larger than the limit of {max_bytes} bytes")
    _, params = parse_options_header(request.headers["content-type"])
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadRequest("the multipart boundary must be 1 to 70 letters, digits or '()+_,-./:=? (RFC 2046)")
    if declared.isdigit():  # before reading anything: the whole body may land on this disk
        await anyio.to_thread.run_sync(require_free_space, dest_dir, int(declared), min_free)
    reader = _Reader(file_field, dest_dir, max_bytes, suffixes, min_free)
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if reader.pending:
                await anyio.to_thread.run_sync(reader.write_pending)
        parser.finalize()
        if parser.state != MultipartState.END:  # the body stopped before the closing boundary
            raise FormParserError("truncated")
        if reader.writer is None or not reader.file_done:
            raise Unprocessable(f"the form has no file in {file_field!r}",
                                errors=[{"field": file_field, "message": "a file is required"}])
        stored = await anyio.to_thread.run_sync(reader.writer.commit)
    except FormParserError as exc:
        reader.abort()
        first = (str(exc).splitlines() or [""])[0][:200]
        raise BadRequest(f"the multipart body is malformed ({first})" if first else "the multipart body is "
                         "malformed") from None
    except BaseException:
        reader.abort()  # covers 413, a client that went away, and cancellation
        raise
    return ReceivedForm(reader.fields, stored.path.name, reader.original, stored)
