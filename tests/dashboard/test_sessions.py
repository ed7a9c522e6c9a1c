"""Who sees what: another key's table shows none of team-a's jobs, and a key revoked while signed in sends
the tab back to the sign-in form with the API's message."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import update

from app.auth import hash_key
from app.db.base import new_id, session_scope, utcnow
from app.db.models import ApiKey, Job
from tests.app.conftest import make_key
from tests.dashboard.conftest import sign_in


def test_another_key_sees_none_of_my_jobs(page, stack):
    with session_scope(stack.settings.sqlalchemy_url) as s:  # a finished job of team-a, without running one
        s.add(Job(id=new_id("job"), owner="team-a", status="succeeded", queue="cpu", request={}, recipe={},
                  created_at=utcnow()))
    mine = {j["id"] for j in stack.client.get("/v1/jobs").json()["data"]}
    assert mine
    sign_in(page, stack)
    page.wait_for_selector("#jobs-table tbody tr")
    assert set(page.eval_on_selector_all("#jobs-table tbody tr", "rs => rs.map(r => r.dataset.jobId)")) == mine
    page.click("#signout")
    sign_in(page, stack, key=stack.other_key)
    page.wait_for_selector(".empty:not([hidden])")
    assert page.locator("#jobs-table tbody tr").count() == 0


def test_a_key_revoked_while_signed_in_signs_the_tab_out(page, stack):
    key = make_key(stack.settings, "team-a")
    sign_in(page, stack, key=key)
    page.wait_for_selector("#jobs-table")
    with session_scope(stack.settings.sqlalchemy_url) as s:
        s.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=utcnow()))
    page.click("nav >> text=New job")
    page.wait_for_selector("#api-key")
    # a locator assertion, not wait_for_function: Playwright compiles a string predicate with eval in the page,
    # which the dashboard's CSP (no 'unsafe-eval') refuses whenever the first check does not already pass
    expect(page.locator("#key-error")).to_contain_text("revoked", timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('distillery.apiKey')") is None
