"""405 names every method the path serves (RFC 9110 15.5.6), not only the first route Starlette tried."""

from __future__ import annotations

from tests.app.assets_helpers import assert_problem


def test_405_allow_lists_every_method_of_the_path(client):
    cases = {("DELETE", "/v1/jobs"): "GET, HEAD, POST", ("PUT", "/v1/models"): "GET, HEAD, POST",
             ("PATCH", "/v1/jobs/job_x"): "GET, HEAD", ("GET", "/v1/jobs/job_x/cancel"): "POST",
             ("DELETE", "/v1/artifacts/art_x/download"): "GET, HEAD"}
    for (method, path), allow in cases.items():
        response = client.request(method, path)
        assert_problem(response, 405)
        assert response.headers["allow"] == allow, (method, path, response.headers.get("allow"))
