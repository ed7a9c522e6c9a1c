"""Free disk space: no upload and no unpacking may fill the disk that holds data_dir.

The answer is 507 Insufficient Storage (RFC 4918), not 413: the request is within the documented caps and the
same upload succeeds once space is freed, so the condition is the server's (a 5xx, what operators alert on),
and a 413 would tell the client to shrink a request that is not too large. Retry-After says when to try again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import AppError

RETRY_AFTER_SECONDS = 60


class InsufficientStorage(AppError):
    status, code, title = 507, "insufficient_storage", "Insufficient storage"


def insufficient_storage(reserve: int) -> InsufficientStorage:
    return InsufficientStorage(f"the server's disk has too little free space for this upload (it keeps {reserve} "
                               "bytes free); try again later",
                               headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def require_free_space(directory: Path, incoming: int, reserve: int) -> None:
    """Refuse (507) writing `incoming` more bytes under `directory` if less than `reserve` would be left free."""
    if shutil.disk_usage(directory).free - incoming < reserve:
        raise insufficient_storage(reserve)
