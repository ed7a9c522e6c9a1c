"""Errors about a job's inputs, said in the client's terms.

The service turns the ids a client sends into paths under the data directory before the engine reads them, so
the engine's messages name those paths. A client never sees them (they are the server's layout): each is said
back as the id it came from, and anything else under the data directory loses that prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import AppError


class InputNames:
    """Recipe path -> how the client named it ("dataset ds_...", "model mdl_...")."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.paths: dict[str, str] = {}

    def say(self, text: str) -> str:
        for key in sorted(self.paths, key=len, reverse=True):  # longest first: one key may prefix another
            full = self.data_dir / key
            for form in {str(full.resolve()), str(full.absolute()), str(full), key}:
                text = text.replace(form, self.paths[key])
        for root in {str(self.data_dir.resolve()), str(self.data_dir.absolute()), str(self.data_dir)}:
            text = text.replace(root + "/", "").replace(root, "the data directory")
        return text

    @contextmanager
    def speaking(self) -> Iterator[None]:
        """Rewrite the detail and messages of an error raised inside."""
        try:
            yield
        except AppError as exc:
            exc.detail = self.say(exc.detail)
            for error in exc.errors or []:
                error["message"] = self.say(str(error.get("message", "")))
            exc.args = (exc.detail,)
            raise
