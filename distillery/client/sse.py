"""A Server-Sent Events decoder (the WHATWG event-stream format), fed one line at a time, so that the sync
and async clients share it over `iter_lines` / `aiter_lines`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str  # "message" when the stream names none
    data: str
    id: str | None


class SSEDecoder:
    """`feed(line)` returns an event when a blank line completes one; comments (`: keep-alive`) and `retry:`
    are absorbed. `last_id` is what to send as Last-Event-ID on reconnecting."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._has_fields = False

    def feed(self, line: str) -> ServerSentEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event, self._has_fields = value, True
        elif name == "data":
            self._data.append(value)
            self._has_fields = True
        elif name == "id" and "\0" not in value:
            self.last_id = value
            self._has_fields = True
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_fields:
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self.last_id)
        self._event, self._data, self._has_fields = "", [], False
        return event
