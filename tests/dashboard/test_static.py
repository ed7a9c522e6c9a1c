"""The dashboard's files beside the API: served with a Content-Security-Policy, no inline script or style,
nothing from another origin, no path out of app/static; and the API around it unchanged (/v1, health,
metrics, docs, the schema, problem+json 404s for unknown paths)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx

from app.api.dashboard import STATIC
from tests.app.assets_helpers import assert_problem


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs), ""))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            tag, attrs, _ = self.tags[-1]
            self.tags[-1] = (tag, attrs, data)


def test_page_and_assets_carry_a_strict_csp(stack):
    r = httpx.get(f"{stack.url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-content-type-options"] == "nosniff"
    parser = Tags()
    parser.feed(r.text)
    scripts = [(a, body) for t, a, body in parser.tags if t == "script"]
    assert scripts and all(a.get("src", "").startswith("/ui/") and not body for a, body in scripts)
    assert not [t for t, _, _ in parser.tags if t == "style"]
    assert not re.search(r"\sstyle=|\son\w+=", r.text)  # no inline styles or handlers
    for tag, attrs, _ in parser.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("/", "#")), (tag, attrs)
    for path, kind in (("/ui/js/main.js", "javascript"), ("/ui/app.css", "text/css"),
                       ("/ui/vendor/js-yaml.js", "javascript"), ("/ui/favicon.svg", "image/svg+xml")):
        r = httpx.get(f"{stack.url}{path}")
        assert r.status_code == 200 and kind in r.headers["content-type"], path
        assert r.headers["content-security-policy"] == csp
    assert httpx.head(f"{stack.url}/").status_code == 200


def test_no_inline_markup_in_the_modules():
    # the modules build elements with the DOM, never HTML strings, so API data cannot become markup
    for path in (STATIC / "js").glob("*.js"):
        text = path.read_text(encoding="utf-8")
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path
        assert "setAttribute('style'" not in text, path


def test_nothing_outside_the_static_folder_is_served(stack):
    for path in ("/ui/../api/main.py", "/ui/%2e%2e/api/main.py", "/ui/..%2fsettings.py", "/ui/js/../../settings.py",
                 "/ui/nope.js"):
        r = httpx.get(f"{stack.url}{path}")
        assert r.status_code == 404, path
        assert "def " not in r.text


def test_the_api_around_the_dashboard_is_unchanged(stack):
    base = stack.url
    assert_problem(httpx.get(f"{base}/v1/nope"), 404)
    assert_problem(httpx.get(f"{base}/nope"), 404)
    assert_problem(httpx.get(f"{base}/v1/jobs"), 401)
    assert stack.client.get("/v1/jobs").status_code == 200
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = httpx.get(f"{base}/openapi.json").json()
    assert "/v1/events" in schema["paths"] and "/v1/jobs/{job_id}/events" in schema["paths"]
    assert not [p for p in schema["paths"] if not p.startswith("/v1/") and p not in ("/healthz", "/readyz", "/metrics")]
