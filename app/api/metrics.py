"""Prometheus metrics. Request latency is measured in this process; job counts, stage durations and
queue depth are read from the database and the broker at scrape time, so every API replica reports
the same truth whichever process did the work."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..db.base import session_scope
from ..db.models import Job, StageRun
from ..errors import AppError, Unauthorized
from ..settings import Settings

REGISTRY = CollectorRegistry()
REQUEST_LATENCY = Histogram(
    "distillery_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
# Stages run from seconds (quantize a small model) to hours (distil a large one).
STAGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 21600)


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


def _loopback(request: Request) -> bool:
    """A client on this host, not relayed: a request a proxy forwarded (Forwarded, X-Forwarded-For) is not, even
    when the proxy itself connects from loopback."""
    if request.client is None or "forwarded" in request.headers or "x-forwarded-for" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def authorize_scrape(request: Request, token: str | None) -> None:
    """/metrics counts every tenant's jobs. With DISTILLERY_METRICS_TOKEN set, the scraper sends it as a bearer
    token (Prometheus' `authorization` option); unset, only a client on this host may scrape."""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthorized("send the metrics token as 'Authorization: Bearer <DISTILLERY_METRICS_TOKEN>'",
                               headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    elif not _loopback(request):
        raise Forbidden("/metrics is served to clients on this host only; set DISTILLERY_METRICS_TOKEN to scrape it "
                        "from elsewhere with that bearer token")


def stage_durations(session: Session) -> list[tuple[str, int, float, list[int]]]:
    """Per stage kind: (kind, count, sum of seconds, cumulative count per bucket of STAGE_BUCKETS), counted
    by the database in one grouped query, so a scrape costs the same with ten jobs or a million."""
    start, end = StageRun.started_at, StageRun.finished_at
    if session.get_bind().dialect.name == "postgresql":
        seconds = func.extract("epoch", end - start)
    else:  # SQLite keeps timestamps as text; julianday reads them (in days)
        seconds = (func.julianday(end) - func.julianday(start)) * 86400.0
    buckets = [func.sum(case((seconds <= le, 1), else_=0)) for le in STAGE_BUCKETS]
    rows = session.execute(
        select(StageRun.kind, func.count(), func.sum(seconds), *buckets)
        .where(end.is_not(None), start.is_not(None)).group_by(StageRun.kind).order_by(StageRun.kind)
    ).all()
    return [(kind, int(n), float(total or 0), [int(b or 0) for b in counts]) for kind, n, total, *counts in rows]


class StateCollector:
    settings: Settings | None = None

    def collect(self):
        if self.settings is None:  # registered before any scrape: nothing to report yet
            return
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by state", labels=["state"])
        stages = HistogramMetricFamily("distillery_stage_duration_seconds", "Duration of finished stages",
                                       labels=["kind"])
        with session_scope(self.settings.sqlalchemy_url) as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for state in JOB_STATES:
                jobs.add_metric([state], counts.get(state, 0))
            durations = stage_durations(session)
        for kind, n, total, cumulative in durations:
            buckets = [(str(float(le)), c) for le, c in zip(STAGE_BUCKETS, cumulative, strict=True)]
            stages.add_metric([kind], [*buckets, ("+Inf", n)], sum_value=total)
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
