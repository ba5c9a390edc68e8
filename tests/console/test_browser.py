"""The console in a real browser: Chromium driven by Playwright, against the ASGI app
under uvicorn (WebSockets included), a real Celery worker and a simulated vLLM endpoint.

Screenshots of the main pages land in `test-artifacts/console/` (gitignored).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import processes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM") or shutil.which("chromium") or ""
ARTIFACTS = processes.REPO_ROOT / "test-artifacts" / "console"
PASSWORD = "browser-test-pw-1"
TIMEOUT_MS = 30_000

if not CHROMIUM:
    pytest.skip(
        "Chromium not found (apt-get install chromium, or set SWITCHBOARD_CHROMIUM); "
        ".ci/run installs it",
        allow_module_level=True,
    )

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
# ordinary blocking ones, which Django would otherwise refuse next to a running loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def platform_url(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """uvicorn + a Celery worker, both on the test database."""
    from django.conf import settings

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    tmp = tmp_path_factory.mktemp("browser")
    env = {"SWITCHBOARD_POOL_REFRESH_S": "0", "SWITCHBOARD_LIMITS_CACHE_S": "0"}
    with (
        processes.celery_worker(
            tmp, database_url=database_url, redis_url=settings.REDIS_URL, extra_env=env
        ),
        processes.web_server(
            tmp, database_url=database_url, redis_url=settings.REDIS_URL, extra_env=env
        ) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def _user(role: str, tenant: Any = None) -> Any:
    from django.contrib.auth import get_user_model

    from switchboard.console.models import Membership

    user = get_user_model().objects.create_user(
        username=f"{role}-{uuid.uuid4().hex[:6]}", password=PASSWORD
    )
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def _sign_in(page: Any, base: str, user: Any) -> None:
    page.goto(f"{base}/console/")
    assert "/console/login/" in page.url
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_tenant_admin_builds_a_bot_and_chats_with_it(
    platform_url: str, page: Any, tenant: Any, endpoint: Any, other_tenant: Any
) -> None:
    from django.utils import translation

    from switchboard.bots.models import Bot, Connector
    from switchboard.bots.services import bot_create

    base = platform_url
    admin = _user("admin", tenant)
    _sign_in(page, base, admin)

    # The overview's chart is drawn by the locally served Chart.js.
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('usage-chart'))"
    )
    _shot(page, "overview")

    # A bot, through the editor.
    page.goto(f"{base}/console/bots/new/")
    page.fill("#id_name", "Browser bot")
    page.fill("#id_system_prompt", "You are the browser test's assistant.")
    _shot(page, "bot-editor")
    page.click("#bot-form button[type=submit]")
    page.wait_for_url(f"{base}/console/bots/*/")
    bot = Bot.objects.get(tenant=tenant, name="Browser bot")

    # A webhook connector: the ingress URL to paste and the secret, shown once.
    page.goto(f"{base}/console/bots/{bot.pk}/connectors/new/webhook/")
    page.fill("#id_name", "Orders hook")
    page.fill("#id_callback_url", "https://hooks.example.com/switchboard")
    page.click("form.panel button[type=submit]")
    page.wait_for_url(f"{base}/console/bots/{bot.pk}/connectors/*/")
    connector = Connector.objects.get(bot=bot, kind="webhook")
    text = page.inner_text("body")
    assert f"/hooks/webhook/{connector.pk}/" in text
    assert connector.secret in text  # shown this once...
    _shot(page, "connector")
    page.reload()
    assert connector.secret not in page.inner_text("body")  # ...and never again

    # The test chat: the reply streams in, token by token, over the WebSocket.
    page.goto(f"{base}/console/chat/?bot={bot.pk}")
    page.wait_for_function("() => !document.getElementById('chat-send').disabled")
    page.evaluate(
        """() => {
            window.replyStates = [];
            const log = document.getElementById('chat-log');
            new MutationObserver(() => {
              const out = log.querySelectorAll('.msg.out');
              const last = out[out.length - 1];
              if (last) window.replyStates.push(last.querySelector('.text').textContent);
            }).observe(log, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.fill("#chat-input", "Hello from the browser")
    page.click("#chat-send")
    page.wait_for_function(
        "() => { const m = document.querySelector('.msg.out:not(.writing) .meta');"
        " return m && m.textContent.includes('ms'); }"
    )
    reply = page.inner_text(".msg.out .text")
    assert "[simulated" in reply and "Hello from the browser" in reply
    states = [s for s in page.evaluate("window.replyStates") if s]
    partial = {s for s in states if s != reply and reply.startswith(s)}
    assert len(partial) >= 2, f"expected a streamed reply, saw states {states[:5]}"
    _shot(page, "test-chat")

    page.goto(f"{base}/console/conversations/")
    _shot(page, "conversations")
    page.click("table a[href*='/console/conversations/']")
    assert "Hello from the browser" in page.inner_text("body")
    _shot(page, "transcript")

    # An API key, shown once.
    page.goto(f"{base}/console/keys/")
    page.fill("#id_name", "CRM integration")
    with page.expect_navigation():
        page.click("form[action$='/keys/new/'] button[type=submit]")
    assert page.inner_text("#new-api-key").startswith("sb_")
    _shot(page, "api-keys")

    # Another tenant's bot, opened by URL: it does not exist for this user.
    foreign = bot_create(tenant=other_tenant, name="Not yours")
    response = page.goto(f"{base}/console/bots/{foreign.pk}/")
    assert response is not None and response.status == 404
    response = page.goto(f"{base}/console/bots/{foreign.pk}/edit/")
    assert response is not None and response.status == 404

    # Chinese, switched in the page, and kept for the next page.
    page.goto(f"{base}/console/")
    with page.expect_navigation():
        page.select_option("#language-form select", "zh-hans")
    with translation.override("zh-hans"):
        overview_zh = translation.gettext("Overview")
        bots_zh = translation.gettext("Bots")
    assert overview_zh != "Overview", "the zh-hans catalogue is not compiled"
    assert page.get_attribute("html", "lang") == "zh-hans"
    assert overview_zh in page.inner_text("h1")
    page.goto(f"{base}/console/bots/")
    assert bots_zh in page.inner_text("h1")
    _shot(page, "overview-zh-hans")


def test_operator_pages_render(platform_url: str, page: Any, tenant: Any, endpoint: Any) -> None:
    base = platform_url
    _sign_in(page, base, _user("operator"))
    for name, path in [
        ("tenants", "/console/tenants/"),
        ("licences", "/console/licences/"),
        ("pool", "/console/pool/"),
        ("audit", "/console/audit/"),
        ("users", "/console/users/"),
        ("deliveries", "/console/deliveries/"),
    ]:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, path
        _shot(page, name)
    page.goto(f"{base}/console/pool/")
    assert endpoint.name in page.inner_text("table")
