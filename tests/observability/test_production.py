"""Production mode (SWITCHBOARD_ENV=production): `check --deploy` clean, the headers and
redirects a browser sees from the real ASGI server, and a CSP the console lives with."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from tests.observability.conftest import TOKEN
from tests.support import processes

REPO = processes.REPO_ROOT
# Where console and app templates live.
TEMPLATE_DIRS = [
    REPO / "templates",
    *sorted((REPO / "platform" / "switchboard").glob("*/templates")),
]


def _env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    # Browser test modules set DJANGO_ALLOW_ASYNC_UNSAFE in this process for Playwright;
    # a deployment never has it (check --deploy says so), nor this run's own settings.
    dropped = ("SWITCHBOARD_", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update({"DATABASE_URL": settings.DATABASE_URL, "REDIS_URL": settings.REDIS_URL})
    env.update(extra)
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _production(**extra: str) -> dict[str, str]:
    return _env(SWITCHBOARD_ENV="production", SECRET_KEY=secrets.token_urlsafe(64), **extra)


def test_check_deploy_is_clean_in_production_and_not_by_accident() -> None:
    clean = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production())
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no issues" in clean.stdout
    # The one silenced check is the documented HSTS preload opt-in; nothing else is.
    assert "(1 silenced)" in clean.stdout

    # The same check on development settings finds what production mode fixes: the test
    # would notice production mode losing them.
    development = _manage("check", "--deploy", "--fail-level", "WARNING", env=_env())
    output = development.stdout + development.stderr
    assert development.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in output


def test_opting_into_hsts_preload_needs_no_silencing() -> None:
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=_production(SWITCHBOARD_HSTS_PRELOAD="true"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(0 silenced)" in result.stdout


def test_production_refuses_to_start_without_a_shared_secret_key() -> None:
    result = _manage("check", env=_env(SWITCHBOARD_ENV="production"))
    assert result.returncode != 0
    assert "needs SECRET_KEY" in result.stderr


@pytest.fixture(scope="module")
def production_url(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """uvicorn in production mode behind a (pretend) TLS proxy."""
    from django.conf import settings

    database_url = processes.database_url_for(
        settings.DATABASE_URL, settings.DATABASES["default"]["NAME"]
    )
    env = _production(SWITCHBOARD_TRUST_X_FORWARDED_PROTO="true", SWITCHBOARD_METRICS_TOKEN=TOKEN)
    env.pop("DATABASE_URL")
    env.pop("REDIS_URL")
    with processes.web_server(
        tmp_path_factory.mktemp("production"),
        database_url=database_url,
        redis_url=settings.REDIS_URL,
        extra_env=env,
    ) as url:
        yield url


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_production_headers_redirects_and_static_files(production_url: str) -> None:
    https = {"X-Forwarded-Proto": "https"}

    plain = httpx.get(f"{production_url}/console/login/", follow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")

    # Probes and Prometheus talk plain HTTP to the server itself.
    assert httpx.get(f"{production_url}/healthz").status_code == 200
    scrape = httpx.get(f"{production_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scrape.status_code == 200 and "switchboard_queue_length" in scrape.text

    page = httpx.get(f"{production_url}/console/login/", headers=https)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin"
    policy = page.headers["Content-Security-Policy"]
    assert "Content-Security-Policy-Report-Only" not in page.headers
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"
    cookies = page.headers.get_list("Set-Cookie")
    csrf = [c for c in cookies if c.startswith("csrftoken=")]
    assert csrf and "Secure" in csrf[0]

    # Static files come from the app itself (WhiteNoise), under the same policy.
    static = httpx.get(f"{production_url}/static/console/vendor/htmx.min.js", headers=https)
    assert static.status_code == 200
    assert "javascript" in static.headers["Content-Type"]


@pytest.mark.django_db
def test_development_reports_csp_violations_without_enforcing() -> None:
    response = Client().get("/console/login/")
    assert "Content-Security-Policy" not in response
    assert "default-src 'self'" in response["Content-Security-Policy-Report-Only"]


def _handler_sources() -> set[str]:
    """The inline event handler attributes (onclick="...") of every template."""
    found: set[str] = set()
    pattern = re.compile(r"""\son[a-z]+\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
    for directory in TEMPLATE_DIRS:
        for path in directory.rglob("*.html"):
            for match in pattern.finditer(path.read_text()):
                found.add(match.group(1) if match.group(1) is not None else match.group(2))
    return found


def _inline_scripts() -> list[tuple[Path, str]]:
    """<script> elements with a body and no src (JSON data blocks run nothing)."""
    out = []
    for directory in TEMPLATE_DIRS:
        for path in directory.rglob("*.html"):
            for tag, body in re.findall(r"(<script\b[^>]*>)(.*?)</script>", path.read_text(), re.S):
                if "src=" not in tag and "application/json" not in tag and body.strip():
                    out.append((path, body))
    return out


def _sha256(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


@pytest.mark.django_db
def test_every_inline_script_in_the_templates_is_allowed_by_the_policy() -> None:
    from django.conf import settings

    sources = _handler_sources()
    assert sources, "the console has inline handlers; finding none means this scan broke"
    assert sources == set(settings.CSP_INLINE_EVENT_HANDLERS), (
        "templates and CSP_INLINE_EVENT_HANDLERS (settings.py) disagree: a handler not "
        "listed is blocked in production; one listed but unused should go"
    )
    policy = Client().get("/console/login/")["Content-Security-Policy-Report-Only"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    for source in sources:
        assert f"'{_sha256(source)}'" in script_src

    # Inline <script>s run only if their exact text's hash is listed.
    scripts = _inline_scripts()
    assert scripts, "console/base.html has an inline script; finding none means this scan broke"
    for path, body in scripts:
        assert _sha256(body) in settings.CSP_INLINE_SCRIPT_HASHES, (
            f"{path.relative_to(REPO)} has an inline <script> that the CSP blocks: move it to a "
            f"static file, or add {_sha256(body)!r} to CSP_INLINE_SCRIPT_HASHES (settings.py)"
        )
        assert f"'{_sha256(body)}'" in script_src
    assert len(settings.CSP_INLINE_SCRIPT_HASHES) == len({_sha256(b) for _, b in scripts}), (
        "CSP_INLINE_SCRIPT_HASHES lists a script no template has any more"
    )
