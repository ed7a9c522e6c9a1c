"""Reading a model folder that its owner may still change, without following links out of it.

A folder registered by path stays writable by whoever put it there: a file checked at registration may be
swapped for a link to a file outside every root before a job reads it. So a folder is read here the way
`openat` with `O_NOFOLLOW` allows: opened one path component at a time from a trusted root, every file opened
relative to its folder, and only regular files with a single link are read. A symbolic link (to a file or a
directory, even one inside the roots), a hard link, a device, pipe or socket is refused, naming the file
relative to the folder (never a server path).

A registered folder is then copied, through this reader, into a content-addressed snapshot
(<cache>/<sha256 of the manifest>/) whose digest must equal the one recorded at registration; what loads, and
what lands in any artifact, is that copy. The digest is the one `references.hash_dir` gives: the sha256 of
"<relative name> <sha256>\n" lines, in path order.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from .errors import ModelReferenceError, UnsafeInputError

MAX_FILES = 10_000  # a Hugging Face model folder holds tens of files; this bounds the walk, not real models
MAX_DEPTH = 16  # folders within the model folder
CHUNK = 1 << 20
STALE_PART_S = 24 * 3600  # a half-made snapshot untouched this long belongs to a process that died
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a named pipe must not wait for a writer; it is refused just after, by its type
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
CHANGED = "model files changed since registration"


class UnreadableFileError(ModelReferenceError):
    """A file of the folder the service may not read (permissions): the registrant's to fix."""

    code = "unreadable"


def manifest_digest(files: Mapping[str, str]) -> str:
    """sha256 of the manifest of {relative name: sha256}, in the order `hash_dir` lists files (by path parts)."""
    lines = "".join(f"{name} {files[name]}\n" for name in sorted(files, key=lambda n: n.split("/")))
    return hashlib.sha256(lines.encode()).hexdigest()


def _refuse(name: str, why: str) -> UnsafeInputError:
    return UnsafeInputError(f"model file {name} {why}")


def _os_error(exc: OSError, name: str) -> ModelReferenceError | UnsafeInputError:
    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link (EMLINK on some BSDs)
        return _refuse(name, "is a symbolic link (links may point outside the allowed roots, so none are followed)")
    if exc.errno == errno.ENOTDIR:
        return _refuse(name, "is not a folder (or is a link to one)")
    if exc.errno == errno.ENOENT:
        return ModelReferenceError(f"model file {name} disappeared while the folder was read")
    return UnreadableFileError(f"cannot read model file {name}: {exc.strerror or exc}")


def _open_dir_at(dir_fd: int, part: str, shown: str) -> int:
    try:
        return os.open(part, _DIR, dir_fd=dir_fd)
    except OSError as exc:
        raise _os_error(exc, shown) from None


def _check_file(st: os.stat_result, name: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _os_error(OSError(errno.ELOOP, "link"), name)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(name, "is not a regular file (a device, pipe or socket); refused")
    if st.st_nlink > 1:
        raise _refuse(name, f"has {st.st_nlink} hard links; a model file may have only one (copy it instead)")


class ModelFolder:
    """A model folder opened for reading: listed once, each file then opened without following links.

    Use as a context manager; `files` maps each relative name ("a/b.json") to its size when listed."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        try:
            self.files = self._walk()
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(cls, folder: Path, root: Path, shown: str) -> ModelFolder:
        """`folder` and `root`: real paths (links resolved), the folder under the root; `shown`: the path as the
        user gave it, for messages. Every component below the root is opened without following links, so a
        component swapped for a link since the paths were resolved is refused."""
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root is configuration: trusted
        try:
            for part in folder.relative_to(root).parts:
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    raise UnsafeInputError(f"model path {shown} changed while it was opened "
                                           f"({exc.strerror or exc})") from None
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ModelFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _walk(self) -> dict[str, int]:
        found: dict[str, int] = {}
        stack = [(os.dup(self._fd), "", 0)]
        try:
            while stack:
                fd, prefix, depth = stack.pop()
                try:
                    for name in sorted(os.listdir(fd)):
                        rel = prefix + name
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            if depth >= MAX_DEPTH:
                                raise _refuse(rel, f"is nested more than {MAX_DEPTH} folders deep; refused")
                            stack.append((_open_dir_at(fd, name, rel), rel + "/", depth + 1))
                            continue
                        _check_file(st, rel)
                        found[rel] = st.st_size
                        if len(found) > MAX_FILES:
                            raise UnsafeInputError(f"the model folder holds more than {MAX_FILES} files; refused")
                except OSError as exc:
                    raise _os_error(exc, prefix.rstrip("/") or ".") from None
                finally:
                    os.close(fd)
        finally:
            for fd, _, _ in stack:
                os.close(fd)
        return found

    def open_file(self, name: str) -> BinaryIO:
        """One listed file, opened component by component without following links; a regular file with one link."""
        *dirs, last = name.split("/")
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(dirs):
                nxt = _open_dir_at(fd, part, "/".join(dirs[: i + 1]))
                os.close(fd)
                fd = nxt
            try:
                file_fd = os.open(last, _FILE, dir_fd=fd)
            except OSError as exc:
                raise _os_error(exc, name) from None
        finally:
            os.close(fd)
        try:
            _check_file(os.fstat(file_fd), name)
            os.set_blocking(file_fd, True)
        except BaseException:
            os.close(file_fd)
            raise
        return os.fdopen(file_fd, "rb")

    def _read(self, name: str, sink) -> str:
        """Stream one file into sink (a callable, or None), returning its sha256; it may not outgrow its listing."""
        digest = hashlib.sha256()
        read = 0
        with self.open_file(name) as fh:
            while True:
                try:  # only the reads: a failure to write the copy is ours, not the folder's
                    chunk = fh.read(CHUNK)
                except OSError as exc:
                    raise _os_error(exc, name) from None
                if not chunk:
                    return digest.hexdigest()
                read += len(chunk)
                if read > self.files[name]:
                    raise ModelReferenceError(f"model file {name} grew while it was read")
                digest.update(chunk)
                if sink is not None:
                    sink(chunk)

    def hashes(self) -> dict[str, str]:
        return {name: self._read(name, None) for name in self.files}

    def copy_into(self, dest: Path) -> dict[str, str]:
        """Copy every listed file into dest (an empty folder we own), hashing as it goes; returns the hashes."""
        need = sum(self.files.values())
        free = shutil.disk_usage(dest).free
        if need > free:
            raise ModelReferenceError(f"the model folder holds {need} bytes and only {free} are free to copy it")
        out: dict[str, str] = {}
        for name in self.files:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as fout:
                out[name] = self._read(name, fout.write)
        return out


def _remove_stale_parts(cache: Path) -> None:
    now = time.time()
    for part in cache.glob(".part-*"):
        try:
            if now - part.stat().st_mtime > STALE_PART_S:
                shutil.rmtree(part, ignore_errors=True)
        except FileNotFoundError:
            continue


def cached_snapshot(cache: Path, digest: str) -> Path | None:
    """The verified snapshot of this digest, if one was made (by the dry run, or an earlier job)."""
    if not _DIGEST.match(digest):
        raise ModelReferenceError("a registered model's sha256 must be 64 hexadecimal digits")
    path = cache / digest
    return path if path.is_dir() else None


def snapshot(folder: ModelFolder, cache: Path, digest: str) -> Path:
    """Copy the folder into cache/<digest> through the no-follow reader; the copy must hash to `digest` (the
    registration's), else nothing is kept. Several processes may race to make one: the first rename wins."""
    if (done := cached_snapshot(cache, digest)) is not None:
        return done
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(cache)
    part = Path(tempfile.mkdtemp(prefix=".part-", dir=cache))
    try:
        got = manifest_digest(folder.copy_into(part))
        if got != digest:
            raise ModelReferenceError(f"{CHANGED}: the files' sha256 is now {got[:12]}..., registered "
                                      f"{digest[:12]}... (a file was edited, added or removed); register the "
                                      "folder again")
        try:
            os.rename(part, cache / digest)
        except OSError:
            if not (cache / digest).is_dir():
                raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return cache / digest
