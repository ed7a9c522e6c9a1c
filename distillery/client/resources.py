"""Request building shared by Client and AsyncClient: bodies, list parameters, and packing a model directory
into an archive. Nothing here does I/O over the network."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
DEFAULT_PAGE = 100


def model_body(name: str, *, path: str | os.PathLike | None, hf: str | None, revision: str | None,
               bundled: bool) -> dict[str, Any]:
    """The JSON of POST /v1/models for one of: a local directory on the service's machine, a hub id at a
    pinned revision, or the bundled all-MiniLM-L6-v2."""
    given = [path is not None, hf is not None, bundled]
    if sum(given) != 1:
        raise ValueError("register exactly one of path=, hf= (with revision=) or bundled=True")
    if path is not None:
        source: dict[str, Any] = {"source": "local", "path": os.path.abspath(os.fspath(path))}
    elif hf is not None:
        if not revision:
            raise ValueError("a hub model needs revision= (a full 40-character commit sha)")
        source = {"source": "hf", "id": hf, "revision": revision}
    else:
        source = {"source": "bundled"}
    return {"name": name, "source": source}


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def job_list_params(*, status: str | Iterable[str] | None, created_after: datetime | str | None,
                    created_before: datetime | str | None, page_size: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": page_size}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if created_after is not None:
        params["created_after"] = _iso(created_after)
    if created_before is not None:
        params["created_before"] = _iso(created_before)
    return params


def dir_manifest_sha256(directory: str | os.PathLike) -> str:
    """The sha256 the service records for a local model directory: of its sorted "relative-path sha256\\n"
    lines. Lets a caller see that a directory is already registered."""
    root = Path(directory)
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            digest = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1024 * 1024):
                    digest.update(chunk)
            lines.append(f"{p.relative_to(root)} {digest.hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def pack_model_dir(directory: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """An uncompressed tar of a model directory (weights barely compress), under one top folder `model/`.

    The archive is deterministic (sorted entries, no times or owners), so the same directory always packs to
    the same bytes and sha256: the service records that sha256, which tells a client the model is already
    uploaded. Links are followed (a Hugging Face cache links to blobs); the service refuses links inside."""
    root = Path(directory)
    if not (root / "config.json").is_file():
        raise ValueError(f"{root} is not a model directory (no config.json)")
    if dest is None:
        fd, name = tempfile.mkstemp(prefix="distillery-model-", suffix=".tar")
        os.close(fd)
        dest = name
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT, dereference=True) as tf:
        tf.add(root, arcname="model", recursive=False, filter=_normalised)
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=f"model/{p.relative_to(root).as_posix()}", recursive=False, filter=_normalised)
    return Path(dest)


def archive_name(path: Path) -> str:
    lower = path.name.lower()
    if not lower.endswith(ARCHIVE_SUFFIXES):
        raise ValueError(f"{path} must be a directory or end with one of {', '.join(ARCHIVE_SUFFIXES)}")
    return path.name
