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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
    """The default store: a directory (data_dir) on this machine, or one shared by every machine."""

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

    # ---- the Store protocol (app/store.py): keys are paths relative to the root, today's layout ----

    def put_file(self, local: Path, key: str) -> None:
        dest = self.path(key)
        if Path(os.path.realpath(local)) == dest:
            return  # already in place: the common case (uploads and job outputs are written under the root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)

    def get_file(self, key: str, local: Path) -> Path:
        src = self.path(key)
        if not src.is_file():
            raise FileNotFoundError(key)
        if Path(os.path.realpath(local)) != src:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{secrets.token_hex(6)}.part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, local)
        return local

    def size(self, key: str) -> int | None:
        try:
            path = self.path(key)
        except StoreError:
            return None
        return path.stat().st_size if path.is_file() else None

    def open_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """[start, end) in chunks: a plain generator, pulled by StreamingResponse in a worker thread."""
        path = self.path(key)
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:
                    raise RuntimeError(f"{path} is shorter than its recorded size")
                remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self.discard(self.path(key))

    def list(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        base = self.root / prefix
        top = base if base.is_dir() else base.parent
        if not top.is_dir():
            return
        for p in sorted(top.rglob("*")):
            key = p.relative_to(self.root).as_posix()
            if p.is_file() and not p.is_symlink() and key.startswith(prefix):
                st = p.stat()
                yield key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)

    def presign(self, key: str, filename: str) -> str | None:
        return None  # served by the API itself

    def local_path(self, key: str) -> Path | None:
        return self.path(key)  # the store is this machine's directory: nothing to fetch or push

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, StoreError):
            return None

    def incomplete_uploads(self, initiated_before: datetime) -> list[tuple[str, str]]:
        return []  # a copy is renamed into place whole; partial uploads are .staging (gc removes those itself)

    def abort_incomplete_uploads(self, initiated_before: datetime) -> list[str]:
        return []
