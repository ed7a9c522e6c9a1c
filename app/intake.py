"""Checks on what users register or upload, done with the engine's own validators so that the API
accepts exactly what the worker will later accept. Synchronous and potentially slow (hashing,
unpacking, reading every row): endpoints call these in a worker thread.

The engine is imported inside the functions: it pulls in torch, which the API needs only here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .disk import insufficient_storage
from .errors import Unprocessable
from .settings import Settings

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
DATASET_SUFFIXES = (".jsonl", ".csv")


@contextmanager
def engine_errors(field: str) -> Iterator[None]:
    """Turn the engine's errors into a 422 problem naming the request field they are about."""
    from worker.engine.errors import EngineError

    try:
        yield
    except EngineError as exc:
        raise Unprocessable(exc.message, errors=[{"field": field, "message": exc.message,
                                                  "code": exc.code}]) from None


@dataclass(frozen=True)
class CheckedModel:
    source: dict  # the engine's model reference, as the worker will resolve it
    size_bytes: int | None
    sha256: str | None


def check_local_model(path: str, roots: Sequence[Path]) -> CheckedModel:
    """Read the folder through the no-follow reader (worker/engine/safe_files.py), as every later read of it is:
    a link anywhere inside (to a file or a folder, even one under the roots), a hard link, a device or pipe, or
    a Python file in any sub-folder is refused, naming the file relative to the folder. The checks and the hash
    read the same opened files, so nothing can be swapped between them. The digest recorded here is what a job
    later verifies its copy of the folder against."""
    from worker.engine.model_checks import check_model_files
    from worker.engine.references import open_model_folder
    from worker.engine.safe_files import manifest_digest

    if not os.path.isabs(path):
        raise Unprocessable(f"model path {path!r} must be absolute",
                            errors=[{"field": "source.path", "message": "must be an absolute path"}])
    with engine_errors("source.path"):
        real, folder = open_model_folder(path, roots, Path("/"))
        with folder:
            check_model_files(folder.files, folder.open_file, path)
            digest = manifest_digest(folder.hashes())
    return CheckedModel({"source": "local", "path": str(real)}, sum(folder.files.values()), digest)


def check_bundled_model(name: str) -> CheckedModel:
    """The bundled model is a package's files, not a user's: hashed by path (a package manager may hard-link
    them from its cache, which the no-follow reader would refuse)."""
    from worker.engine.references import bundled_model_dir, hash_dir
    from worker.engine.safe_files import manifest_digest

    with engine_errors("source.name"):
        path = bundled_model_dir(name)
        files = hash_dir(path)
    return CheckedModel({"source": "bundled", "name": name}, sum((path / n).stat().st_size for n in files),
                        manifest_digest(files))


def check_engine_reference(source: dict) -> None:
    """The stored reference must parse as the engine's ModelRef, or the worker would reject it later."""
    from pydantic import TypeAdapter, ValidationError

    from worker.engine.recipe import ModelRef

    try:
        TypeAdapter(ModelRef).validate_python(source)
    except ValidationError as exc:  # a drift between the API's schema and the engine's; say so plainly
        raise Unprocessable(f"the engine does not accept this model reference: {exc.errors()[0]['msg']}",
                            errors=[{"field": "source", "message": str(exc.errors()[0]["msg"])}]) from None


def unpack_model(archive: Path, work: Path, settings: Settings) -> Path:
    """Unpack safely into `work` and check the model directory; return the directory holding config.json.
    The caps are the settings' (bytes written, ratio to the archive's size, free disk left), counted while
    writing; a full disk is the server's 507, anything else about the archive a 422 naming it."""
    from worker.engine.archive import ArchiveLimits, DiskSpaceError, unpack_archive
    from worker.engine.references import check_model_dir

    limits = ArchiveLimits(max_total_bytes=settings.max_unpacked_bytes, max_ratio=settings.max_compression_ratio,
                           min_free_bytes=settings.min_free_disk_bytes)
    with engine_errors("archive"):
        try:
            unpacked = unpack_archive(archive, work, limits)
        except DiskSpaceError:
            raise insufficient_storage(settings.min_free_disk_bytes) from None
        check_model_dir(unpacked, "the archive")
    return unpacked


@dataclass(frozen=True)
class CheckedDataset:
    kind: str
    rows: int
    columns: list[str]


def check_dataset(path: Path, max_row_bytes: int) -> CheckedDataset:
    """Check every row with the engine's reader, one row in memory at a time (each at most max_row_bytes); a bad
    file is a 422 naming the file and the line."""
    from worker.engine.data import scan_dataset

    with engine_errors("file"):
        schema = scan_dataset(path, max_row_bytes)
    return CheckedDataset(schema["kind"], schema["rows"], schema["columns"])
