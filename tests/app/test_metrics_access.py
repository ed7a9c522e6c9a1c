"""/metrics counts every tenant's jobs, so no API key opens it: with DISTILLERY_METRICS_TOKEN set, only that
bearer token does (401 otherwise); unset, only a client on the server's own host, not relayed by a proxy (403
otherwise). Real uvicorn, real HTTP; the "remote" client connects to this host's own non-loopback address."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from pydantic import SecretStr

from tests.app.assets_helpers import assert_problem
from tests.app.conftest import free_port

TOKEN = "scrape-0123456789abcdef"


def outside_address() -> str | None:
    """This host's address on its network interface (no packet is sent), or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 9))  # any routable address picks the outgoing interface
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@contextmanager
def serve_on(settings, host: str) -> Iterator[str]:
    import uvicorn

    from app.api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_without_a_token_only_this_host_may_scrape(server, settings):
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    for relayed in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        problem = assert_problem(httpx.get(f"{server.url}/metrics", headers=relayed), 403)
        assert "DISTILLERY_METRICS_TOKEN" in problem["detail"]
    address = outside_address()
    if address is None:
        pytest.skip("this host has no non-loopback address to connect from")
    with serve_on(settings, address) as url:
        problem = assert_problem(httpx.get(f"{url}/metrics"), 403)
        assert "distillery_jobs" not in problem["detail"]
        assert httpx.get(f"{url}/healthz").status_code == 200  # the rest of the API is served as before


def test_with_a_token_the_scraper_sends_it(settings, api_key):
    settings = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    hosts = ["127.0.0.1", *([a] if (a := outside_address()) else [])]
    for host in hosts:
        with serve_on(settings, host) as url:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {api_key}"},
                            {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
                r = httpx.get(f"{url}/metrics", headers=headers)
                assert_problem(r, 401)
                assert r.headers["www-authenticate"].startswith("Bearer")
            r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and "distillery_jobs" in r.text, r.text
            assert TOKEN not in r.text
