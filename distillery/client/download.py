"""Downloads that resume and verify, shared by Client and AsyncClient.

The bytes go to `<dest>.part`. A retry, or a later call with resume=True, asks for the rest with
`Range: bytes=<size of the part>-` and `If-Range: "<sha256>"`: the service answers 206 with the rest when the
content is still the same, or 200 with all of it when it changed (the part is then rewritten from the start),
so two versions are never spliced. At the end the whole file's sha256 must equal the artifact's (the ETag);
otherwise the file is removed and ChecksumMismatch raised. The finished file is renamed into place.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .errors import ChecksumMismatch, DistilleryError
from .types import Artifact

CHUNK = 1024 * 1024
ProgressCallback = Callable[[int, int | None], None]  # (bytes on disk so far, total bytes or None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_name(name: str, fallback: str) -> str:
    """A base name to write under: a name from the service never reaches outside the chosen directory."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return fallback if base in ("", ".", "..") else base


@dataclass
class Target:
    """Where one artifact goes: `dest`, written through `part`."""

    artifact: Artifact
    dest: Path

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    @classmethod
    def of(cls, artifact: Artifact, to: str | os.PathLike | None) -> Target:
        """`to` a directory (existing, or ending in a separator) puts the file in it under the artifact's
        name; any other path is the file itself; None is the working directory."""
        raw = str(to) if to is not None else "."
        path = Path(raw)
        if path.is_dir() or raw.endswith(("/", os.sep)):
            path = path / safe_name(artifact.name, artifact.id)
        return cls(artifact, path)

    def already_done(self) -> bool:
        """The destination exists with the right content (a rerun downloads nothing)."""
        return (self.dest.is_file() and self.dest.stat().st_size == self.artifact.size_bytes
                and sha256_file(self.dest) == self.artifact.sha256)

    def start(self, resume: bool) -> int:
        """Prepare the part file; returns the offset to ask for (0: the whole content)."""
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        if not resume or not self.part.exists():
            self.part.write_bytes(b"")
            return 0
        have = self.part.stat().st_size
        if have > self.artifact.size_bytes:  # not a prefix of this content
            self.part.write_bytes(b"")
            return 0
        return have

    def part_is_whole(self, offset: int) -> bool:
        """The part already holds as many bytes as the artifact: nothing to ask for if they are right."""
        if offset != self.artifact.size_bytes or offset == 0:
            return False
        if sha256_file(self.part) == self.artifact.sha256:
            return True
        self.part.write_bytes(b"")  # the right size but other bytes: start over
        return False

    def request_headers(self, offset: int) -> dict[str, str]:
        if offset == 0:
            return {}
        return {"Range": f"bytes={offset}-", "If-Range": f'"{self.artifact.sha256}"'}

    def open_for(self, response: httpx.Response, offset: int):
        """The part file opened where this response's bytes go: appended after a 206 that starts at the
        offset, rewritten after a 200 (the whole content)."""
        if response.status_code == 206:
            content_range = response.headers.get("content-range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DistilleryError(f"the service answered the range {content_range!r}, not bytes {offset}-")
            return open(self.part, "ab")
        return open(self.part, "wb")

    def finish(self) -> Path:
        """Verify the part's sha256 and move it into place; remove it and raise on a mismatch."""
        actual = sha256_file(self.part)
        if actual != self.artifact.sha256:
            self.part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{self.artifact.name}: sha256 {actual} does not match the artifact's "
                                   f"{self.artifact.sha256}; the file was removed", expected=self.artifact.sha256,
                                   actual=actual, path=str(self.dest))
        os.replace(self.part, self.dest)
        return self.dest
