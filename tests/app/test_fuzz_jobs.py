"""Fuzzing POST /v1/jobs over real HTTP: hostile variations of a valid job body (tests/recipe_strategies.py) are
answered with a 4xx problem+json, or accepted; never a 5xx, and no problem shows the server's data directory.
Sent as the JSON a client may write: NaN and Infinity as bare tokens, which Python's parser accepts.

The budget is DISTILLERY_FUZZ_EXAMPLES per database (see tests/engine/test_fuzz_recipe.py for the long run).
"""

from __future__ import annotations

import json

import httpx
from hypothesis import event, given
from hypothesis import strategies as st

from tests.app.assets_helpers import PROBLEM
from tests.app.test_jobs_api import body, reg  # noqa: F401  (reg is a fixture)
from tests.recipe_strategies import assert_safe, fuzz_settings, mutated

# Ids are filled in per test: the strategy mutates placeholders that stand for them.
TEMPLATE = {
    "teacher": {"model": "$model"}, "task": "feature-extraction",
    "data": {"train": "$train", "eval": {"sts": "$eval_sts", "cls": "$eval_cls"}},
    "stages": [{"kind": "distill", "student": {"layers": [0, 2]}, "epochs": 1, "max_steps": 2,
                "hidden_states": {"layer_map": {"1": 1}}},
               {"kind": "prune", "method": "n:m", "n": 2, "m": 4},
               {"kind": "quantize", "method": "int8-dynamic"}],
    "gates": {"min_retention": 0.5, "per_task": {"sts": 0.5}},
    "evaluate": {"max_examples": 8}, "seed": 3, "max_length": 32,
}
# A hub teacher the dry run looks up (offline here: a 422 naming it), whose id the strategy mutates.
HUB_TEACHER = {"source": "hf", "id": "org/tiny-bert", "revision": "c" * 40}


def with_ids(value: object, ids: dict[str, str]) -> object:
    if isinstance(value, str) and value.startswith("$"):
        return ids.get(value[1:], value)
    if isinstance(value, dict):
        return {k: with_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [with_ids(v, ids) for v in value]
    return value


def post(client: httpx.Client, content: str) -> httpx.Response:
    return client.post("/v1/jobs", content=content.encode("utf-8", "surrogatepass"),
                       headers={"content-type": "application/json"})


def assert_answered(response: httpx.Response, data_dir: str) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM), response.text
        assert response.json()["status"] == response.status_code
        assert data_dir not in response.text, response.text


def test_the_template_is_accepted(client, reg):  # noqa: F811
    r = client.post("/v1/jobs", json=with_ids(TEMPLATE, reg))
    assert r.status_code == 201, r.text


def test_bodies_no_parser_takes_are_a_4xx(client, settings):
    for content in ("[" * 100_000 + "]" * 100_000, '{"seed": ' * 5000 + "0" + "}" * 5000, '{"seed": 1e999999}',
                    '{"teacher": {"model": "\\ud800"}}', "\ufeff{}", '{"a": 1, "a": 2}', "null", "[]"):
        assert_answered(post(client, content), str(settings.data_dir))


@fuzz_settings(default=40)
@given(raw=st.one_of(mutated(TEMPLATE), mutated({**TEMPLATE, "teacher": HUB_TEACHER})))
def test_hostile_job_bodies_are_a_4xx_problem_or_accepted(client, reg, settings, raw):  # noqa: F811
    sent = with_ids(raw, reg)
    response = post(client, json.dumps(sent, allow_nan=True))
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows how often each came back
    assert_answered(response, str(settings.data_dir))
    if response.status_code == 201:  # accepted: every value sent is one the worker can use
        assert_safe(sent)
        assert 0 <= response.json()["request"].get("seed", 0) < 2**32


def test_a_few_known_hostile_values(client, reg, settings):  # noqa: F811
    """The classes an outside probe found, each named by its field."""
    hub = {"source": "hf", "revision": "a" * 40}
    cases = [
        ({"seed": 2**70}, "seed"), ({"seed": -1}, "seed"),
        ({"teacher": {**hub, "id": "a--b/c"}}, "teacher.id"), ({"teacher": {**hub, "id": "é/x"}}, "teacher.id"),
        ({"teacher": {**hub, "id": "a" * 5000}}, "teacher.id"),
        ({"stages": [{"kind": "distill", "student": {"model": {**hub, "id": "a--b/c"}}}]},
         "stages.0.student.model.id"),
        ({"stages": [{"kind": "distill", "max_steps": 2**70}]}, "stages.0.max_steps"),
        ({"evaluate": {"max_examples": 2**70}}, "evaluate.max_examples"),
        ({"data": {"train": reg["train"], "eval": {"s\u0000ts": reg["eval_sts"]}}}, "data.eval"),
        ({"gates": {"min_retention": 0.5, "per_task": {"\u0000": 0.5}}}, "gates.per_task"),
    ]
    for over, field in cases:
        r = client.post("/v1/jobs", json=body(reg, **over))
        assert r.status_code == 422, (over, r.text)
        assert r.json()["errors"][0]["field"] == field, (over, r.text)
    for token in ("Infinity", "-Infinity", "NaN"):
        content = json.dumps(body(reg)).replace('"epochs": 1', f'"epochs": 1, "temperature": {token}')
        r = post(client, content)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "stages.0.temperature", r.text
