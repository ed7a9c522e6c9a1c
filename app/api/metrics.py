"""Prometheus metrics. Request latency is measured in this process; job counts, stage durations and
queue depth are read from the database and the broker at scrape time, so every API replica reports
the same truth whichever process did the work."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from sqlalchemy import func, select

from ..db.base import session_scope
from ..db.models import Job, StageRun
from ..settings import Settings

REGISTRY = CollectorRegistry()
REQUEST_LATENCY = Histogram(
    "distillery_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")


class StateCollector:
    settings: Settings | None = None

    def collect(self):
        if self.settings is None:  # registered before any scrape: nothing to report yet
            return
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by state", labels=["state"])
        stages = SummaryMetricFamily("distillery_stage_duration_seconds", "Duration of finished stages",
                                     labels=["kind"])
        with session_scope(self.settings.sqlalchemy_url) as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for state in JOB_STATES:
                jobs.add_metric([state], counts.get(state, 0))
            rows = session.execute(
                select(StageRun.kind, StageRun.started_at, StageRun.finished_at)
                .where(StageRun.finished_at.is_not(None), StageRun.started_at.is_not(None))
            ).all()
        by_kind: dict[str, list[float]] = {}
        for kind, start, end in rows:
            by_kind.setdefault(kind, []).append((end - start).total_seconds())
        for kind, values in sorted(by_kind.items()):
            stages.add_metric([kind], count_value=len(values), sum_value=sum(values))
        yield jobs
        yield stages
        depth = GaugeMetricFamily("distillery_queue_depth", "Messages waiting in the broker", labels=["queue"])
        for queue, n in queue_depths(self.settings).items():
            depth.add_metric([queue], n)
        yield depth


def queue_depths(settings: Settings) -> dict[str, int]:
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        return {q: int(client.llen(q)) for q in ("cpu", "gpu")}
    except redis.RedisError:
        return {}
