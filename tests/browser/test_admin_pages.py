"""The operators' admin pages in headless Chromium at laptop width (1366×768): the session,
execution and connection lists fit without scrolling sideways, and ending goes through the
confirmation page. Screenshots land in the artifacts folder to be looked at.

As in test_console.py, rows are made before the browser starts (Playwright's sync API and
the ORM do not share a thread).
"""

from __future__ import annotations

from typing import Iterator

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from realtime.models import Connection, ServerInstance
from sessions_runtime.models import Execution, ExecutionStatus, Intent, RuntimeSession, SessionStatus
from tests import factories
from tests.browser.test_console import CHROMIUM, TIMEOUT_MS, _screenshot, browser_ready, sync_playwright  # noqa: F401
from tests.live import LiveServer, running

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

WIDTH, HEIGHT = 1366, 768
LONG_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    # The rows' server processes (_rows) stay alive for the whole test: the server's
    # heartbeat sweeps the records of processes silent for SERVER_STALE_AFTER.
    with running(tmp_path_factory.mktemp("daphne-admin"), THROTTLE_LOGIN_ADDRESS="1000/min",
                 SERVER_STALE_AFTER_SECONDS="3600") as live:
        yield live


def _rows() -> tuple[User, list[str]]:
    """An operator and a realistic page of sessions: long emails and tenant names, sockets
    with browser user agents, executions in progress."""
    staff = User.objects.create_superuser(email="ops@example.com", password=factories.PASSWORD)
    tenant = factories.make_tenant(name="Northwind Traders International Holdings")
    ids = []
    for n in range(3):
        ServerInstance.objects.create(id=f"web-{n}:{4000 + n}:5f2c9a1e")
    for n in range(12):
        user = factories.make_user(tenant=tenant, email=f"firstname.lastname{n}@customer-department.example.com")
        body = factories.login(APIClient(), user)
        session = RuntimeSession.objects.get(pk=body["session_id"])
        ids.append(str(session.pk))
        Connection.objects.create(session=session, user=user, channel_name=f"specific.{session.pk.hex}!{n}",
                                  server_instance=f"web-{n % 3}:{4000 + n % 3}:5f2c9a1e", client_address=f"203.0.113.{n}",
                                  user_agent=LONG_AGENT)
        intent = Intent.objects.create(session=session, user=user, tenant=tenant, intent_type="batch", parameters={})
        Execution.objects.create(intent=intent, session=session, user=user, tenant=tenant, intent_type="batch",
                                 status=ExecutionStatus.RUNNING,
                                 progress={"total": 40, "processed": 3 * n, "succeeded": 3 * n, "failed": 0})
    return staff, ids


def _fits(page, name: str) -> None:
    """The page does not scroll sideways (every list's table is measured against its
    container in test_admin_widths.py)."""
    _screenshot(page, name)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"


def signed_in(browser, server: LiveServer, staff: User, *, width: int = WIDTH, height: int = HEIGHT):
    """A page of `browser` at width × height, signed in to the admin as `staff`."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.http + "/admin/login/")
    page.fill("#id_username", staff.email)
    page.fill("#id_password", factories.PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    return page


def test_the_admin_lists_fit_a_laptop_screen_and_ending_asks_first(browser_ready, server):
    staff, ids = _rows()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = signed_in(browser, server, staff)

            page.goto(server.http + "/admin/sessions_runtime/runtimesession/")
            _fits(page, "admin-sessions-1366.png")
            headers = page.locator("#result_list thead th").all_inner_texts()
            for column in ("ID", "USER", "TENANT", "STATUS", "CREATED AT", "LAST SEEN AT", "NEXT EXPIRY", "LIVE SOCKETS",
                           "ENDED (REASON, BY)"):
                assert column in [h.strip().upper() for h in headers], headers
            assert " UTC" in page.locator("#result_list tbody").inner_text()

            page.goto(server.http + "/admin/realtime/connection/")
            _fits(page, "admin-connections-1366.png")
            page.goto(server.http + "/admin/sessions_runtime/execution/")
            _fits(page, "admin-executions-1366.png")
            assert "30/40 (75%)" in page.locator("#result_list").inner_text()

            # "End selected sessions": a confirmation page first, then the end.
            page.goto(server.http + "/admin/sessions_runtime/runtimesession/")
            page.locator(f"input[name=_selected_action][value='{ids[0]}']").check()
            page.select_option("select[name=action]", "end_sessions")
            page.click("button[name=index]")
            page.wait_for_selector("text=End 1 active session?")
            page.fill("textarea[name=note]", "checked with the customer")
            _screenshot(page, "admin-end-confirmation-1366.png")
            page.click("input[type=submit][value^='Yes']")
            page.wait_for_selector("text=Ended 1 sessions")

            # The End button on a session's page.
            page.goto(server.http + f"/admin/sessions_runtime/runtimesession/{ids[1]}/change/")
            _screenshot(page, "admin-session-page-1366.png")
            page.click("text=End session")
            page.click("input[type=submit][value^='Yes']")
            page.wait_for_selector("text=Session ended")
        finally:
            browser.close()
    statuses = {str(pk): status for pk, status in RuntimeSession.objects.values_list("pk", "status")}
    assert [statuses[i] for i in ids[:3]] == [SessionStatus.ENDED, SessionStatus.ENDED, SessionStatus.ACTIVE]
