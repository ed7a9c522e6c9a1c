"""A worker's cache of uploads, with the S3 store: data_dir/uploads/<kind>/<id>/ (a teacher's files, a dataset),
fetched from the store when a job needs it and kept for the next job. Without a bound it grows with every
teacher and dataset ever used, so before each job it is cut back to settings.worker_cache_max_gb, least
recently used entry first.

Several worker processes on one machine (one per GPU) share the data_dir, so "in use" is a lock, not a list
in memory: a job holds a shared flock on each of its entries' lock files (uploads/.locks/<kind>-<id>.lock)
from before it fetches them until it ends, and eviction removes an entry only while holding the exclusive
lock, which it never waits for. An entry in use by any job on this machine is therefore never removed, and a
job that starts while its entry is being removed waits, then fetches it again. The lock file's mtime is the
entry's last use. Lock files are never deleted: a process could be waiting on the old inode.

With the local store the uploads directory is the store itself; nothing here runs then.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.store import Store, fetch_inputs, store_inputs

log = logging.getLogger("distillery.worker")
KINDS = ("datasets", "models")
LOCKS = ".locks"


def entry_of(key: str) -> str | None:
    """uploads/<kind>/<id> for a store key inside an upload; None for anything else."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "uploads" and parts[1] in KINDS and parts[2] and not parts[2].startswith("."):
        return "/".join(parts[:3])
    return None


def _lock_path(data_dir: Path, entry: str) -> Path:
    _, kind, upload_id = entry.split("/")
    return data_dir / "uploads" / LOCKS / f"{kind}-{upload_id}.lock"


@contextmanager
def hold(data_dir: Path, keys: Iterable[str]) -> Iterator[set[str]]:
    """Shared locks on the entries of these store keys, for as long as the block runs (a job's run); yields the
    entries. Each lock file's mtime is set now: these are the most recently used."""
    entries = sorted({e for e in map(entry_of, keys) if e is not None})
    with ExitStack() as stack:
        for entry in entries:
            path = _lock_path(data_dir, entry)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while another process evicts this entry
            os.utime(fd)
        yield set(entries)


@dataclass
class Entry:
    key: str  # uploads/<kind>/<id>
    size: int
    last_used: float


def _size(path: Path) -> int:
    # Other processes change the cache meanwhile (an evictor removes an entry, a fetch renames a .part file into
    # place): os.walk skips a directory that has gone, and a file that has gone counts for nothing.
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def entries(data_dir: Path) -> list[Entry]:
    found = []
    for kind in KINDS:
        base = data_dir / "uploads" / kind
        for path in sorted(base.iterdir()) if base.is_dir() else []:
            if not path.is_dir() or path.is_symlink() or path.name.startswith("."):
                continue
            key = f"uploads/{kind}/{path.name}"
            lock = _lock_path(data_dir, key)
            try:
                used = lock.stat().st_mtime if lock.exists() else path.stat().st_mtime
            except FileNotFoundError:
                continue  # removed by another process since the listing
            found.append(Entry(key, _size(path), used))
    return found


def _try_remove(data_dir: Path, entry: Entry) -> bool:
    path = _lock_path(data_dir, entry.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a job on this machine uses it now
        shutil.rmtree(data_dir / entry.key, ignore_errors=True)
        return True
    finally:
        os.close(fd)  # releases the lock


def evict(data_dir: Path, max_bytes: int, keep: set[str] = frozenset()) -> list[str]:
    """Remove least recently used entries until the cache holds at most max_bytes; never one in `keep` or held
    by any job. Returns the removed entries (uploads/<kind>/<id>)."""
    cached = sorted(entries(data_dir), key=lambda e: e.last_used)
    total = sum(e.size for e in cached)
    removed = []
    for entry in cached:
        if total <= max_bytes:
            break
        if entry.key in keep or not _try_remove(data_dir, entry):
            continue
        total -= entry.size
        removed.append(entry.key)
    if removed:
        log.info("input cache: removed %d least recently used upload(s) to stay under %d bytes: %s",
                 len(removed), max_bytes, ", ".join(removed))
    return removed


def _incoming(store: Store, data_dir: Path, recipe: dict) -> int:
    """Bytes the fetch of a job's inputs will add here: what the store holds less the right-sized local copies."""
    total = 0
    for key, is_dir in store_inputs(recipe):
        listed = store.list(key.rstrip("/") + "/") if is_dir else [(key, store.size(key) or 0, None)]
        for sub, size, _ in listed:
            try:
                total += 0 if (data_dir / sub).stat().st_size == size else size
            except OSError:
                total += size
    return total


@contextmanager
def _one_evictor(data_dir: Path) -> Iterator[None]:
    """One evictor at a time on this machine. Waiting is safe and short: an evictor never waits for an entry's
    lock, so it cannot deadlock with a job, and the next evictor then sees what the first removed."""
    path = data_dir / "uploads" / LOCKS / "evict.lock"  # no entry's lock file: those are named <kind>-<id>
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare(store: Store, data_dir: Path, recipe: dict, max_bytes: int, keep: set[str]) -> None:
    """Fetch a job's inputs into data_dir. With a cap (max_bytes > 0) the cache is cut back first, leaving room
    for what the fetch adds: evicting after it would let a big new teacher fill the disk first. `keep`: this
    job's entries, which the caller holds."""
    if max_bytes > 0:
        room = max(0, max_bytes - _incoming(store, data_dir, recipe))
        try:
            with _one_evictor(data_dir):
                evict(data_dir, room, keep)
        except OSError as exc:  # the cache is an optimisation: never a reason to fail the job
            log.warning("input cache: eviction failed, the job goes on: %s", exc)
    fetch_inputs(store, data_dir, recipe)
