"""The console in Chromium under the enforced production CSP: its scripts, charts, htmx
and inline handlers all work, and the browser reports no violation.

A blocked inline handler raises no JavaScript error, it just does nothing: this test
listens for the browser's `securitypolicyviolation` events and checks that the handlers
had their effect.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import processes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM") or shutil.which("chromium") or ""
PASSWORD = "csp-browser-pw-1"
TIMEOUT_MS = 30_000

if not CHROMIUM:
    pytest.skip(
        "Chromium not found (apt-get install chromium, or set SWITCHBOARD_CHROMIUM)",
        allow_module_level=True,
    )

# Playwright's sync API runs an event loop in this thread; the test's ORM calls block.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}: ${e.sample}`);
});
"""


@pytest.fixture(scope="module")
def production_url(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """uvicorn with production settings. The browser speaks plain HTTP to 127.0.0.1, so
    the HTTPS redirect is off; secure cookies stay on (browsers keep them for localhost)."""
    from django.conf import settings

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    env = {
        "SWITCHBOARD_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SWITCHBOARD_SSL_REDIRECT": "false",
    }
    with processes.web_server(
        tmp_path_factory.mktemp("csp"),
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env=env,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def violations(page: Any) -> Any:
    """What went wrong in the page so far: CSP violations, the browser's CSP console
    messages, JavaScript errors."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return lambda: [*page.evaluate("window.__csp || []"), *errors]


def _user(role: str, tenant: Any = None) -> Any:
    from django.contrib.auth import get_user_model

    from switchboard.console.models import Membership

    user = get_user_model().objects.create_user(
        username=f"{role}-{uuid.uuid4().hex[:6]}", password=PASSWORD
    )
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def _sign_in(page: Any, base: str, user: Any) -> None:
    page.goto(f"{base}/console/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def test_the_console_works_under_the_production_csp(
    production_url: str, page: Any, violations: Any, tenant: Any
) -> None:
    from switchboard.bots.services import bot_create

    base = production_url
    first = bot_create(tenant=tenant, name="First bot", system_prompt="Be brief.")
    second = bot_create(tenant=tenant, name="Second bot", system_prompt="Be kind.")
    checked: list[str] = []

    def visited(path: str) -> None:
        found = violations()
        assert not found, f"{path}: {found}"
        checked.append(path)

    _sign_in(page, base, _user("admin", tenant))
    # The policy really is enforced on what the browser got.
    response = page.goto(f"{base}/console/")
    assert response is not None
    assert "script-src" in response.headers["content-security-policy"]
    # Chart.js (a local file) draws the overview's chart; the sidebar's inline script ran.
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('usage-chart'))"
    )
    assert "active" in (page.get_attribute(".sidebar a[data-nav='overview']", "class") or "")
    visited("/console/")

    # htmx loads the prompt preview.
    page.goto(f"{base}/console/bots/new/")
    page.wait_for_function(
        "() => !document.getElementById('prompt-preview').textContent.includes('Loading')"
    )
    visited("/console/bots/new/")

    # An inline onsubmit handler asks before deactivating; dismissed, nothing happens.
    page.goto(f"{base}/console/bots/{first.pk}/")
    dialogs: list[str] = []

    def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("form[action$='/active/'] button[type=submit]")
    assert dialogs and "Deactivate" in dialogs[0]
    first.refresh_from_db()
    assert first.is_active
    visited(f"/console/bots/{first.pk}/")

    # An inline onchange handler switches the test chat's bot.
    page.goto(f"{base}/console/chat/?bot={first.pk}")
    with page.expect_navigation():
        page.select_option("#chat-bot", str(second.pk))
    assert f"bot={second.pk}" in page.url
    visited("/console/chat/")

    # Operator pages: the pool table refreshes by htmx, the users page draws a chart.
    page.context.clear_cookies()
    _sign_in(page, base, _user("operator"))
    for path in ("/console/pool/", "/console/users/", "/console/tenants/", "/console/audit/"):
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        visited(path)
    assert len(checked) == 8
