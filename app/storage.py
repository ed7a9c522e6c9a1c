"""The local store: everything the service keeps on disk lives under settings.data_dir.

Two rules keep readers safe from writers. A file is written under a temporary name and renamed into
place (os.replace) only when complete, so no half-written object is ever visible; and an upload is
staged in a directory of its own under uploads/.staging/ and promoted with one rename, on the same
file system, once it has been checked. Relative paths from the database are resolved under the root
and refused if they escape it (through `..` or a link).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import PayloadTooLarge

CHUNK = 1 << 20


class StoreError(Exception):
    """A stored path that does not lie under the store's root."""


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size_bytes: int
    sha256: str


class SizedWriter:
    """Writes chunks to a temporary name beside `dest`, counting bytes and hashing as it goes.

    Past `max_bytes` it raises PayloadTooLarge (413) and removes what it wrote; the caller never has to
    hold the body in memory. `commit()` renames the finished file into place."""

    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest, self.max_bytes = dest, max_bytes
        self.tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
        self.size = 0
        self._hash = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp, "xb")  # noqa: SIM115 - closed by commit() or abort()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise PayloadTooLarge(f"the upload is larger than the limit of {self.max_bytes} bytes")
        self._hash.update(chunk)
        self._fh.write(chunk)

    def commit(self) -> StoredFile:
        self._fh.flush()
        os.fsync(self._fh.fileno())  # the rename must not publish data still only in the page cache
        self._fh.close()
        os.replace(self.tmp, self.dest)
        return StoredFile(self.dest, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> SizedWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def path(self, relative: str | Path) -> Path:
        """The absolute path of a stored object, refusing absolute paths, `..` and links that escape."""
        rel = Path(relative)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise StoreError(f"{relative!s} is not a relative path inside the store")
        real = Path(os.path.realpath(self.root / rel))
        if not real.is_relative_to(self.root):
            raise StoreError(f"{relative!s} resolves outside the store")
        return real

    def relative(self, path: Path) -> str:
        return Path(os.path.realpath(path)).relative_to(self.root).as_posix()

    def staging(self, key: str) -> Path:
        """A fresh, empty directory for one upload; promote() or discard() it when done."""
        path = self.uploads / ".staging" / key
        path.mkdir(parents=True)
        return path

    def promote(self, src: Path, dest: Path) -> Path:
        """Move a checked file or directory into its final place with one atomic rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            raise StoreError(f"{dest} already exists")
        os.replace(src, dest)
        return dest

    @staticmethod
    def discard(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
