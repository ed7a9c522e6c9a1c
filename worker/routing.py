"""The guard that keeps a job needing a GPU off a worker without one.

Routing is by queue (device cuda -> the gpu queue), and nothing stops a worker without CUDA from consuming
that queue (a --gpus index that does not exist, CUDA_VISIBLE_DEVICES="", a driver that failed). Such a worker
hands the job back instead of failing it: the job row is left as it was (queued, attempts unchanged), one
event says why, the worker stops consuming the queue it came from, and the job is sent again to that queue
for a worker that can run it.

The check runs in the worker process that would run the job, never in the supervisor that starts it (which
must not initialise CUDA before its children pick their GPU).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from functools import lru_cache
from typing import Any

from worker.lease import aware

log = logging.getLogger("distillery.worker")
# The Celery consumer of this worker process, set when the worker is ready (worker/tasks.py). Under the solo
# pool a task runs in the consumer's own thread, so the task may tell it to stop consuming a queue.
CONSUMER: Any = None


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def needs_cuda(recipe: dict | None) -> bool:
    return (recipe or {}).get("device") == "cuda"


def claimable(status: str, cancel_requested: bool, lease_expires_at: datetime | None, now: datetime) -> bool:
    """What lease.claim would take: queued, or running/cancelling with a lapsed lease, and not being cancelled."""
    if cancel_requested:
        return False
    if status == "queued":
        return True
    expires = aware(lease_expires_at)
    return status in ("running", "cancelling") and (expires is None or expires < now)


def refusal() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = "unset" if visible is None else repr(visible)
    return (f"handed back: the job needs device cuda and this worker has no CUDA device (CUDA_VISIBLE_DEVICES "
            f"{seen}); it waits for a GPU worker")


def stop_consuming(queue: str) -> bool:
    """Stop this worker process taking jobs from `queue` (solo pool only). True when it did."""
    if CONSUMER is None:
        return False
    try:
        CONSUMER.cancel_task_queue(queue)
    except Exception as exc:  # never let the guard itself fail the hand-back
        log.warning("could not stop consuming the %s queue: %s", queue, exc)
        return False
    log.error("this worker has no CUDA device: it no longer takes jobs from the %s queue; start it with a GPU "
              "(distillery worker --queue gpu --gpus N) or on the cpu queue", queue)
    return True
