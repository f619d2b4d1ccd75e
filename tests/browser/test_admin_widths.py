"""Every admin list at laptop widths, in headless Chromium: at 1366×768 and 1280×800 each
registered ModelAdmin's table fits its container (no column cut off or scrolled to), no cell
breaks a word in the middle (an email wraps after its @ or before a dot, an address after a
colon), and a short id copies whole. The rows are what makes lists wide: long emails and
tenant names, full UUIDs, browser user agents, IPv6 client addresses.

As in test_console.py, rows are made before the browser starts (Playwright's sync API and
the ORM do not share a thread).
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import User
from core.caller import Caller
from core.models import ActorType, AuditEvent
from realtime.models import Connection, ServerInstance
from sessions_runtime.models import EndReason, Execution, ExecutionStatus, Intent, RuntimeSession
from sessions_runtime.services import session_end
from tests import factories
from tests.browser.test_admin_pages import server, signed_in  # noqa: F401 - the module's server fixture
from tests.browser.test_console import CHROMIUM, _screenshot, browser_ready, sync_playwright  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

LONG_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
IPV6 = "2001:db8:85a3:8d3:1319:8a2e:370:7348"

# Within a table (its container, the `.results` div, scrolls sideways when it is wider):
# how far it pokes out, every data row counted, and each line break between two letters or
# digits of one cell (a word broken in the middle).
MEASURE = r"""() => {
  const table = document.querySelector('#result_list');
  if (!table) return null;
  const container = table.parentElement;
  const midWord = [];
  for (const cell of table.querySelectorAll('tbody td, tbody th')) {
    let previous = null;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const node = walker.currentNode;
      // A <wbr> before this text is a place to break, as a space is.
      if (previous && node.previousSibling && node.previousSibling.nodeName === 'WBR') previous.ch = ' ';
      for (let i = 0; i < node.length; i++) {
        const ch = node.data[i];
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        const rect = range.getClientRects()[0];
        if (!rect || rect.width === 0 || /\s/.test(ch)) {
          if (previous) previous.ch = ' ';
          continue;
        }
        if (previous && rect.top > previous.top + 2 && /[A-Za-z0-9]/.test(previous.ch) && /[A-Za-z0-9]/.test(ch)) {
          midWord.push(cell.className + ': ' + cell.textContent.trim());
        }
        previous = {top: rect.top, ch};
      }
    }
  }
  return {
    table: table.getBoundingClientRect().width,
    container: container.clientWidth,
    right: table.getBoundingClientRect().right,
    containerRight: container.getBoundingClientRect().right,
    rows: table.tBodies[0].rows.length,
    page: document.documentElement.scrollWidth - window.innerWidth,
    midWord: [...new Set(midWord)],
  };
}"""

COPY = """(selector) => {
  const cell = document.querySelector(selector);
  const range = document.createRange();
  range.selectNodeContents(cell);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  const id = cell.querySelector('.short-id');
  return {copied: selection.toString().trim(), shown: id.firstChild.textContent, title: id.title,
          hidden: id.querySelector('.id-rest').getBoundingClientRect().width};
}"""


def _rows() -> User:
    """An operator and a page of every list with the widest values an operator meets."""
    staff = User.objects.create_superuser(email="operations.on-call.lead@platform-team.example.com",
                                          password=factories.PASSWORD)
    Group.objects.create(name="Operators on call for the northern region and the night shift")
    tenant = factories.make_tenant(name="Northwind Traders International Holdings")
    for n in range(3):
        ServerInstance.objects.create(id=f"web-{n}.internal.example.com:{8000 + n}:5f2c9a1e")
    sessions = []
    for n in range(8):
        email = (f"firstname.lastname{n}@customer-department.example.com" if n % 2
                 else f"a.rather.long.firstname.and.lastname{n}@subsidiary.northwind-traders.example.com")
        user = factories.make_user(tenant=tenant, email=email)
        body = factories.login(APIClient(), user)
        session = RuntimeSession.objects.get(pk=body["session_id"])
        sessions.append(session)
        Connection.objects.create(session=session, user=user, channel_name=f"specific.{session.pk.hex}!{n}",
                                  server_instance=f"web-{n % 3}.internal.example.com:{8000 + n % 3}:5f2c9a1e",
                                  client_address=IPV6 if n % 2 else f"203.0.113.{n}", user_agent=LONG_AGENT)
        intent = Intent.objects.create(session=session, user=user, tenant=tenant, intent_type="batch", parameters={})
        Execution.objects.create(intent=intent, session=session, user=user, tenant=tenant, intent_type="batch",
                                 status=ExecutionStatus.RUNNING,
                                 progress={"total": 40, "processed": 3 * n, "succeeded": 3 * n, "failed": 1})
        AuditEvent.objects.create(at=timezone.now(), kind=AuditEvent.Kind.SOCKET_DISCONNECTED,
                                  actor_type=ActorType.ADMIN, actor=staff, user=user, tenant=tenant,
                                  session_id=session.pk, client_address=IPV6, data={"connection_id": n})
    session_end(session_id=sessions[0].pk, reason=EndReason.ADMIN, caller=Caller.command())
    BlacklistedToken.objects.create(token=OutstandingToken.objects.order_by("id").first())
    AuditEvent.objects.create(at=timezone.now(), kind=AuditEvent.Kind.SESSION_ENDED, actor_type=ActorType.SYSTEM,
                              session_id=uuid.uuid4(), client_address=IPV6)
    return staff


def _lists() -> list[str]:
    return [f"/admin/{model._meta.app_label}/{model._meta.model_name}/" for model in admin.site._registry]


@pytest.mark.parametrize("width, height", [(1366, 768), (1280, 800)])
def test_every_admin_list_fits_a_laptop_screen_without_cutting_a_column(browser_ready, server, width, height):
    staff = _rows()
    lists = _lists()
    assert len(lists) >= 10, lists
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = signed_in(browser, server, staff, width=width, height=height)
            for url in lists:
                page.goto(server.http + url)
                name = url.strip("/").replace("/", "-")
                _screenshot(page, f"{name}-{width}.png")
                got = page.evaluate(MEASURE)
                if got is None or got["rows"] == 0:
                    problems.append(f"{url}: no rows to measure (seed some in _rows)")
                    continue
                if got["table"] > got["container"] + 0.5 or got["right"] > got["containerRight"] + 0.5:
                    problems.append(f"{url}: the table is {got['table']:.0f}px wide in a {got['container']}px container")
                if got["page"] > 0:
                    problems.append(f"{url}: the page is {got['page']}px wider than the window")
                problems += [f"{url}: a word broken in the middle: {cell}" for cell in got["midWord"]]
            page.goto(server.http + "/admin/sessions_runtime/runtimesession/")
            copied = page.evaluate(COPY, "#result_list tbody tr th.field-short_id")
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
    # A short id shows its first block, and its title and a copy of the cell are the whole id.
    assert len(copied["shown"]) == 8 and copied["hidden"] == 0 and copied["copied"] == copied["title"]
    assert uuid.UUID(copied["copied"]) and copied["copied"].startswith(copied["shown"])
