"""HTTP behaviour around the routes, over real HTTP: CORS for a dashboard on another origin (and none when unset),
problem+json for a refused preflight, an unexpected 500 and a not-ready /readyz, and the cap on a job's body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from app.api.jobs import MAX_JOB_BYTES
from app.api.main import create_app

from .conftest import Server, free_port

DASHBOARD = "https://dash.example"


def _boom() -> dict:
    raise RuntimeError("a bug: the test route always fails")


@pytest.fixture
def cors_server(settings) -> Iterator[Server]:
    app = create_app(settings.model_copy(update={"cors_origins": [DASHBOARD]}))
    app.add_api_route("/v1/test-boom", _boom)  # only in this test app: an unhandled exception
    with Server(app) as srv:
        yield srv


def _is_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["request_id"] == response.headers["x-request-id"]
    return body


def test_cors_for_an_allowed_origin(cors_server, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    r = httpx.get(f"{cors_server.url}/v1/jobs", headers={**auth, "Origin": DASHBOARD})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == DASHBOARD
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "location", "etag", "content-range", "retry-after", "content-disposition"} <= exposed

    # an error answer carries them too, or the dashboard could not read its problem+json
    r = httpx.get(f"{cors_server.url}/v1/jobs/job_nope", headers={**auth, "Origin": DASHBOARD})
    _is_problem(r, 404)
    assert r.headers["access-control-allow-origin"] == DASHBOARD

    preflight = httpx.options(f"{cors_server.url}/v1/jobs", headers={
        "Origin": DASHBOARD, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, idempotency-key, content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == DASHBOARD
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "idempotency-key", "content-type"} <= allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_cors_refuses_another_origin_in_problem_json(cors_server, api_key):
    preflight = httpx.options(f"{cors_server.url}/v1/jobs", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    body = _is_problem(preflight, 400)
    assert body["type"] == "urn:distillery:problem:cors_refused" and "origin" in body["detail"]
    assert body["instance"] == "/v1/jobs"
    assert "access-control-allow-origin" not in preflight.headers
    # a plain request from there is answered, but without the header a browser needs to hand it over
    r = httpx.get(f"{cors_server.url}/v1/jobs", headers={"Authorization": f"Bearer {api_key}",
                                                        "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_no_cors_headers_when_cors_is_unset(client, server):
    r = client.get("/v1/jobs", headers={"Origin": DASHBOARD})
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    preflight = httpx.options(f"{server.url}/v1/jobs", headers={"Origin": DASHBOARD,
                                                                "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405 and not [h for h in preflight.headers if h.startswith("access-control-")]


def test_an_unexpected_error_is_a_500_with_request_id_and_cors_headers(cors_server, caplog):
    r = httpx.get(f"{cors_server.url}/v1/test-boom", headers={"Origin": DASHBOARD, "X-Request-ID": "trace-500"})
    body = _is_problem(r, 500)
    assert body["type"] == "urn:distillery:problem:internal_error" and body["request_id"] == "trace-500"
    assert r.headers["access-control-allow-origin"] == DASHBOARD
    assert "a bug" not in r.text and "Traceback" not in r.text  # the cause is logged, not sent
    assert any("unhandled error on GET /v1/test-boom" in rec.getMessage() for rec in caplog.records)


def test_readyz_names_what_is_unreachable_in_problem_json(settings):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})  # nothing listens
    with Server(create_app(down)) as srv:
        r = httpx.get(f"{srv.url}/readyz")
        ok = httpx.get(f"{srv.url}/healthz")
    body = _is_problem(r, 503)
    assert body["type"] == "urn:distillery:problem:not_ready" and body["instance"] == "/readyz"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error: ")
    assert body["detail"].startswith("unreachable: broker (")
    assert ok.json() == {"status": "ok"}


def _padded(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (an unknown field: past the cap's check it is a 422)."""
    head = b'{"pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_a_job_body_past_the_cap_is_413(client):
    at_cap, past = _padded(MAX_JOB_BYTES), _padded(MAX_JOB_BYTES + 1)
    assert len(at_cap) == MAX_JOB_BYTES and json.loads(at_cap)
    r = client.post("/v1/jobs", content=at_cap, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] != "body", r.text  # read and validated
    body = _is_problem(client.post("/v1/jobs", content=past, headers={"Content-Type": "application/json"}), 413)
    assert body["type"] == "urn:distillery:problem:payload_too_large" and str(MAX_JOB_BYTES) in body["detail"]


def test_a_streamed_job_body_is_refused_once_it_passes_the_cap(settings, api_key):
    """No Content-Length: the body is counted as it arrives, and the rest is never read."""
    chunk, sent = b"x" * 16384, []

    async def endless():  # far more than the cap, and valid JSON up to where the server stops reading
        yield b'{"pad": "'
        for _ in range(4096):  # 64 MiB
            sent.append(len(chunk))
            yield chunk

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return await c.post("/v1/jobs", content=endless(), headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})

    r = asyncio.run(post())
    body = _is_problem(r, 413)
    assert "larger than this endpoint's limit" in body["detail"]
    assert sum(sent) <= MAX_JOB_BYTES + 2 * len(chunk)  # stopped right past the cap


def test_a_client_that_goes_away_mid_body_is_a_400_not_a_500(settings, api_key):
    """The capped body reader sees the disconnect: the client's doing, answered (to nobody) as a 400."""
    messages = iter([{"type": "http.request", "body": b'{"teacher": ', "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"", "root_path": "",
             "server": ("api", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"api"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {api_key}".encode())]}
    asyncio.run(create_app(settings)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert body["status"] == 400 and "went away" in body["detail"]
