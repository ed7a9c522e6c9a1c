"""The pieces under the worker, against the real databases and Redis: the compare-and-set claim, the
heartbeat, the progress writer, the reconciler, and the deterministic tar."""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
from datetime import timedelta

import pytest
import redis

from app.db.base import session_scope, utcnow
from app.db.models import Event
from worker.artifacts_out import build_tar
from worker.celery_app import clear_marker, enqueue_job
from worker.engine import ProgressEvent
from worker.engine.context import StageBoundary
from worker.lease import Claim, Lease, claim, release
from worker.progress_db import JobProgress
from worker.reconciler import reconcile

from .conftest import get_job, job_events, make_job, update_job, wait_until

PAST = timedelta(seconds=30)


def _claim(settings, job_id: str, owner: str = "me") -> Claim:
    with session_scope(settings.sqlalchemy_url) as session:
        return claim(session, settings, job_id, owner)


def test_only_one_of_many_concurrent_claims_wins(settings):
    job_id = make_job(settings)
    results: list[Claim] = []
    barrier = threading.Barrier(6)

    def take(i: int) -> None:
        barrier.wait()
        results.append(_claim(settings, job_id, f"w{i}"))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.value for r in results) == ["claimed"] + ["not_claimable"] * 5
    job = get_job(settings, job_id)
    assert job.status == "running" and job.attempts == 1 and job.lease_owner.startswith("w")


def test_claim_rules(settings):
    live = make_job(settings, status="running", attempts=1, lease_owner="a", lease_expires_at=utcnow() + PAST)
    assert _claim(settings, live) is Claim.NOT_CLAIMABLE

    started = utcnow() - timedelta(hours=1)
    lapsed = make_job(settings, status="running", attempts=1, lease_owner="a", lease_expires_at=utcnow() - PAST,
                      started_at=started)
    assert _claim(settings, lapsed, "b") is Claim.CLAIMED
    job = get_job(settings, lapsed)
    assert (job.lease_owner, job.attempts, job.started_at) == ("b", 2, started)
    assert job.lease_expires_at > utcnow() + timedelta(seconds=settings.lease_seconds - 2)

    with session_scope(settings.sqlalchemy_url) as session:  # handed back: claimable at once, attempt not counted
        assert release(session, lapsed, "b") and not release(session, lapsed, "b")
    assert _claim(settings, lapsed, "c") is Claim.CLAIMED and get_job(settings, lapsed).attempts == 2

    cancelled = make_job(settings, status="cancelled", cancel_requested=True)
    done = make_job(settings, status="succeeded", attempts=1)
    assert _claim(settings, cancelled) is _claim(settings, done) is Claim.NOT_CLAIMABLE

    worn = make_job(settings, attempts=settings.max_attempts)
    assert _claim(settings, worn) is Claim.EXHAUSTED
    assert get_job(settings, worn).failure_code == "too_many_attempts"

    orphan = make_job(settings, status="cancelling", cancel_requested=True, attempts=1, lease_owner="a",
                      lease_expires_at=utcnow() - PAST)
    held = make_job(settings, status="cancelling", cancel_requested=True, attempts=1, lease_owner="a",
                    lease_expires_at=utcnow() + PAST)
    assert _claim(settings, orphan) is Claim.CANCEL_FINALISED and get_job(settings, orphan).status == "cancelled"
    assert _claim(settings, held) is Claim.NOT_CLAIMABLE and get_job(settings, held).status == "cancelling"


def test_heartbeat_extends_the_lease_and_raises_the_flags(settings):
    job_id = make_job(settings)
    assert _claim(settings, job_id, "me") is Claim.CLAIMED
    first = get_job(settings, job_id).lease_expires_at
    with Lease(settings, job_id, "me") as lease:
        wait_until(lambda: get_job(settings, job_id).lease_expires_at > first, timeout=5, what="a renewal")
        assert not lease.should_cancel()
        update_job(settings, job_id, status="cancelling", cancel_requested=True)
        wait_until(lease.should_cancel, timeout=5, what="the cancel flag")
        assert lease.cancel_requested.is_set() and not lease.lost.is_set()
        update_job(settings, job_id, lease_owner="someone-else")
        wait_until(lease.lost.is_set, timeout=5, what="the lost flag")

    short = settings.model_copy(update={"job_soft_time_limit": 1, "job_time_limit": 2})
    other = make_job(settings)
    assert _claim(settings, other, "me") is Claim.CLAIMED
    hard = threading.Event()
    with Lease(short, other, "me", on_hard_limit=hard.set) as lease:
        wait_until(lease.timed_out.is_set, timeout=5, what="the soft limit")
        wait_until(hard.is_set, timeout=5, what="the hard limit")


def test_progress_is_batched_and_sequenced(settings, tmp_path):
    job_id = make_job(settings)
    assert _claim(settings, job_id, "me") is Claim.CLAIMED
    lost = threading.Event()
    progress = JobProgress(settings.sqlalchemy_url, job_id, "me", tmp_path, on_lost=lost.set)
    progress(ProgressEvent("0:distill", "starting", boundary=StageBoundary(0, "distill", "started")))
    for step in range(1, 2001):  # a fast stream of steps: coalesced, written at most every 0.5 s
        progress(ProgressEvent("0:distill", "training", step=step, total=2000, loss=1.0 / step))
    row = {"status": "passed", "duration_s": 1.5, "gate": {"passed": True, "shortfalls": []}, "device": "cpu"}
    progress(ProgressEvent("0:distill", "passed", boundary=StageBoundary(0, "distill", "finished", row, tmp_path)))
    events = job_events(settings, job_id)
    training = [e for e in events if e.message == "training"]
    assert 1 <= len(training) < 20 and training[-1].step == 2000
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    job = get_job(settings, job_id)
    assert job.current_stage == "0:distill" and job.progress["message"] == "passed"
    stage = next(s for s in job.stages if s.index == 0)
    assert stage.status == "passed" and stage.started_at <= stage.finished_at
    # the metrics are the row the engine handed over in memory (no stage.json was ever written here)
    assert stage.metrics["duration_s"] == 1.5 and stage.metrics["gate"]["passed"] and not stage.metrics["resumed"]

    with session_scope(settings.sqlalchemy_url) as session:  # another writer takes the next seq
        session.add(Event(job_id=job_id, seq=len(events) + 1, stage="job", message="elsewhere"))
    progress(ProgressEvent("1:quantize", "starting"))
    assert [e.seq for e in job_events(settings, job_id)][-2:] == [len(events) + 1, len(events) + 2]

    update_job(settings, job_id, lease_owner="someone-else")  # a lost lease: nothing more is written
    progress(ProgressEvent("1:quantize", "passed"))
    assert lost.is_set() and len(job_events(settings, job_id)) == len(events) + 2


def test_reconciler_sends_what_the_broker_may_have_lost_once(settings):
    broker = redis.Redis.from_url(settings.redis_url)
    broker.delete("cpu")
    old = utcnow() - timedelta(minutes=5)
    waiting = make_job(settings, created_at=old)
    fresh = make_job(settings)  # the API is enqueueing it right now
    live = make_job(settings, status="running", attempts=1, lease_owner="a", lease_expires_at=utcnow() + PAST,
                    created_at=old)
    lapsed = make_job(settings, status="running", attempts=1, lease_owner="a", lease_expires_at=utcnow() - PAST,
                      created_at=old)
    sent = reconcile(settings)
    assert waiting in sent and lapsed in sent and fresh not in sent and live not in sent
    assert reconcile(settings) == []  # their messages are in the broker: not sent again every tick
    assert broker.llen("cpu") == len(sent)

    clear_marker(settings, waiting)  # a worker took the message, yet the job is still queued
    assert reconcile(settings) == [waiting]

    # a lapsed lease: a message sent after the lapse still waits in the broker, one sent before it was
    # consumed by the worker that lost the lease
    update_job(settings, live, lease_expires_at=utcnow() - timedelta(seconds=1))
    enqueue_job(settings, live, "cpu")
    assert reconcile(settings) == []
    time.sleep(0.01)
    update_job(settings, live, lease_expires_at=utcnow())
    assert reconcile(settings) == [live]


def test_the_model_tar_is_deterministic(tmp_path):
    src = tmp_path / "artifact"
    (src / "sub").mkdir(parents=True)
    for name, data in {"b.json": b"{}", "a.bin": b"\0" * 1000, "sub/c.txt": b"c"}.items():
        (src / name).write_bytes(data)
    (src / "link").symlink_to(src / "a.bin")
    one = build_tar(src, tmp_path / "one.tar", mtime=1_700_000_000)
    (src / "b.json").touch()  # a later copy of the same files: other mtimes on disk
    two = build_tar(src, tmp_path / "two.tar", mtime=1_700_000_000)
    assert one == two and one[1] == hashlib.sha256((tmp_path / "one.tar").read_bytes()).hexdigest()
    assert one[0] == (tmp_path / "one.tar").stat().st_size
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["model", "model/a.bin", "model/b.json", "model/sub", "model/sub/c.txt"]
    assert all(m.mtime == 1_700_000_000 and m.uid == 0 and m.uname == "" for m in members)
    assert not list(tmp_path.glob("*.partial"))


def test_commit_waits_out_a_database_blip_when_asked(settings, tmp_path, monkeypatch):
    """The writes that open and close a job retry an unreachable database with backoff; others do not."""
    from sqlalchemy.exc import OperationalError

    from worker import progress_db

    job_id = make_job(settings)
    assert _claim(settings, job_id, "me") is Claim.CLAIMED
    progress = JobProgress(settings.sqlalchemy_url, job_id, "me", tmp_path)
    real, failures = progress_db.session_scope, {"left": 2}

    def flaky(url):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return real(url)

    monkeypatch.setattr(progress_db, "session_scope", flaky)
    with pytest.raises(OperationalError):  # no wait asked: the caller decides (the flush keeps its events)
        progress.commit([ProgressEvent("job", "no wait")])
    failures["left"] = 2
    assert progress.commit([ProgressEvent("job", "started")], wait_for_db=10)
    assert [e.message for e in job_events(settings, job_id)][-1] == "started"
    failures["left"] = 1000
    with pytest.raises(OperationalError):  # a database that stays away is not waited for forever
        progress.commit([ProgressEvent("job", "never")], wait_for_db=0.5)
