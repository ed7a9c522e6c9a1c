"""The reconciler: the database says which jobs should be in the broker; send those that may not be.

- queued jobs older than a grace period whose message may be lost (an enqueue that failed after the
  commit, a broker that restarted empty);
- running or cancelling jobs whose lease lapsed (their worker died; the acks_late message waits in the
  broker's unacked set until the visibility timeout, hours away).

Sending twice is safe: the worker's claim is a compare-and-set. The enqueue marker (worker/celery_app.py)
keeps a job that simply waits its turn from being sent again on every tick.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from app.db.base import session_scope, utcnow
from app.db.models import Job
from app.settings import Settings
from worker.celery_app import enqueue_if_needed
from worker.lease import ACTIVE, aware

log = logging.getLogger("distillery.reconciler")
GRACE_S = 10  # a job committed a moment ago is being enqueued by the API right now
BATCH = 500


def reconcile(settings: Settings, grace_s: float = GRACE_S) -> list[str]:
    """One pass; returns the ids sent."""
    now = utcnow()
    lapsed = and_(Job.status.in_(ACTIVE), or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))
    waiting = and_(Job.status == "queued", Job.created_at < now - timedelta(seconds=grace_s))
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(select(Job.id, Job.queue, Job.status, Job.lease_expires_at)
                               .where(or_(waiting, lapsed)).order_by(Job.id).limit(BATCH)).all()
    sent = []
    for job_id, queue, status, lease_expires_at in rows:
        stale_before = None if status == "queued" else (aware(lease_expires_at) or now)
        if enqueue_if_needed(settings, job_id, queue, stale_before=stale_before):
            sent.append(job_id)
    if sent:
        log.info("reconciler: sent %d job(s) again: %s", len(sent), ", ".join(sent[:10]))
    return sent


def expire_leases_of(settings: Settings, pid: int, host: str | None = None) -> int:
    """Let the leases of a worker process that is known to be dead (its supervisor reaped it) lapse now, so that
    the next pass sends its job again at once rather than lease_seconds later. Lease owners read
    "<host>:<pid>:<nonce>" (worker.lease.new_owner); returns how many jobs it held."""
    prefix = f"{host or socket.gethostname()}:{pid}:"
    with session_scope(settings.sqlalchemy_url) as session:
        result = session.execute(update(Job)
                                 .where(Job.status.in_(ACTIVE), Job.lease_owner.startswith(prefix, autoescape=True))
                                 .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    if result.rowcount:
        log.info("reconciler: the %d lease(s) of dead worker %s lapse now", result.rowcount, prefix.rstrip(":"))
    return result.rowcount


def start_reconciler(settings: Settings, stop: threading.Event,
                     wake: threading.Event | None = None) -> threading.Thread:
    """Run reconcile() every settings.reconcile_seconds in a daemon thread until `stop` is set. Setting `wake`
    runs a pass now (after a broker restart, say); set it after `stop` to end the loop at once."""
    timer = wake if wake is not None else stop

    def loop() -> None:
        while True:  # a first pass at once: jobs left queued by a previous run are sent on start
            try:
                reconcile(settings)
            except Exception as exc:  # the database or broker is away; try again next tick
                log.warning("reconciler: %s: %s", type(exc).__name__, exc)
            timer.wait(settings.reconcile_seconds)
            if stop.is_set():
                return
            if wake is not None:
                wake.clear()

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()
    return thread
