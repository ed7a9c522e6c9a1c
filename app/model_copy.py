"""A teacher registered by local path, copied into the artifact store (store s3).

Workers on other machines read teachers from the store, not from the API machine's disk, and a path read
later, on each worker, could hold other weights than the ones checked here. So with a remote store the
registration copies the directory, with the checks a local registration makes (the path absolute and under
the model roots after resolving links, every file too, no custom code, no pickles that run code) plus a size
cap, into the upload layout (uploads/models/<id>/), where jobs materialise it like an uploaded archive. The
copy is what is checked and hashed, so the recorded sha256 is that of the files workers will read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .errors import Unprocessable
from .intake import CheckedModel, engine_errors
from .storage import LocalStore


def _refuse(message: str, code: str) -> Unprocessable:
    return Unprocessable(message, errors=[{"field": "source.path", "message": message, "code": code}])


def _copy_tree(src: Path, dest: Path, roots: Sequence[Path], max_bytes: int) -> int:
    """Copy the regular files under src (links resolved, each checked under the roots) into dest; the total size
    is capped before anything is copied and again while copying (a file may grow meanwhile)."""
    from worker.engine.references import check_under_roots

    files = []
    try:
        for path in sorted(src.rglob("*")):  # like the engine's hash_dir: links to directories are not followed
            if path.is_file():
                files.append((path.relative_to(src), check_under_roots(path, roots, "model file")))
        total = sum(real.stat().st_size for _, real in files)
    except OSError as exc:  # the registrant's directory (permissions, a file gone): a 422, not a 500
        raise _unreadable(exc) from None
    if total > max_bytes:
        raise _refuse(f"the model directory holds {total} bytes, more than the {max_bytes} that may be copied "
                      "into the artifact store", "too_large")
    copied = 0
    for rel, real in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fin = open(real, "rb")  # noqa: SIM115 (closed below; a failure to open is the source's, not ours)
        except OSError as exc:
            raise _unreadable(exc) from None
        with fin, open(target, "xb") as fout:
            while chunk := fin.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise _refuse(f"the model directory grew past {max_bytes} bytes while it was copied", "too_large")
                fout.write(chunk)
    return copied


def _unreadable(exc: OSError) -> Unprocessable:
    return _refuse(f"cannot read {exc.filename or 'the model directory'}: {exc.strerror or exc}", "unreadable")


def _digest(directory: Path) -> str:
    """The sha256 of the directory's manifest, as a local registration records it (intake._dir_digest)."""
    from worker.engine.references import hash_dir

    manifest = "".join(f"{name} {digest}\n" for name, digest in hash_dir(directory).items())
    return hashlib.sha256(manifest.encode()).hexdigest()


def copy_local_model(path: str, model_id: str, data_dir: Path, roots: Sequence[Path],
                     max_bytes: int) -> tuple[CheckedModel, Path]:
    """Check and copy a local model directory to data_dir/uploads/models/<id> (staged, then one rename); return
    its store reference and the directory, which the caller puts into the store."""
    from worker.engine.references import check_model_dir, check_under_roots

    if not os.path.isabs(path):
        raise _refuse(f"model path {path!r} must be absolute", "invalid_path")
    store = LocalStore(data_dir)
    staging = store.staging(model_id)
    try:
        with engine_errors("source.path"):
            real = check_under_roots(Path(path), roots, "model path")
            if not real.is_dir():
                raise _refuse(f"model path {path} is not a directory", "not_a_directory")
            check_model_dir(real)  # fail fast, before copying gigabytes
            size = _copy_tree(real, staging / "copy", roots, max_bytes)
            check_model_dir(staging / "copy")  # the copy is what workers read
        digest = _digest(staging / "copy")
        final = store.promote(staging / "copy", store.uploads / "models" / model_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prefix = f"{store.relative(final)}/"
    return CheckedModel({"source": "store", "prefix": prefix, "copied_from": str(real)}, size, digest), final
