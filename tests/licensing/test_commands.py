"""licence_keygen → issue_licence → import_licence, as an operator runs them."""

from __future__ import annotations

import io
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from switchboard.licensing.documents import verify_signature_only
from switchboard.licensing.models import Licence
from switchboard.licensing.services import effective_limits
from tests.licensing.conftest import b64url, unb64url


def run(*args: str, stdin: str | None = None, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def keygen(tmp_path: Path) -> tuple[Path, str]:
    """A new key; returns its path and the public key the command printed."""
    key = tmp_path / "signing.pem"
    out, _ = run("licence_keygen", "--out", str(key))
    line = next(line for line in out.splitlines() if line.startswith("SWITCHBOARD_LICENCE_"))
    return key, line.split("=", 1)[1]


def test_keygen_writes_a_private_key_and_prints_the_setting(tmp_path):
    key, public = keygen(tmp_path)

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(public) == 44  # base64 of 32 bytes


def test_keygen_refuses_to_overwrite(tmp_path):
    key, _ = keygen(tmp_path)
    before = key.read_bytes()

    with pytest.raises(CommandError, match="already exists"):
        run("licence_keygen", "--out", str(key))
    assert key.read_bytes() == before


def test_issue_needs_no_database_and_writes_stdout(tmp_path):
    # No django_db mark: the issuing machine may not have the tenant, or any database.
    key, public = keygen(tmp_path)

    out, _ = run(
        "issue_licence",
        "--key", str(key),
        "--tenant", "far-away",
        "--mau-limit", "5000",
        "--connector-kinds", "webhook, dingtalk",
        "--enforcement", "soft",
        "--valid-from", "2030-01-01",
        "--valid-until", "2031-01-01T00:00:00Z",
    )  # fmt: skip

    terms = verify_signature_only(out, [public])
    assert terms.tenant == "far-away"
    assert terms.mau_limit == 5000
    assert terms.monthly_tokens is None
    assert terms.connector_kinds == ("dingtalk", "webhook")
    assert terms.enforcement == "soft"
    assert terms.valid_from == datetime(2030, 1, 1, tzinfo=UTC)
    assert terms.valid_until == datetime(2031, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--valid-days", "30", "--connector-kinds", "fax"], "unknown kind.*fax"),
        (["--valid-until", "yesterday"], "not an ISO-8601 date"),
        (["--valid-from", "2030-01-02", "--valid-until", "2030-01-01"], "must be before"),
        (["--valid-days", "30", "--tenant", "Bad Slug"], "tenant slug"),
        ([], "one of the arguments --valid-days --valid-until is required"),
        (["--valid-days", "30", "--valid-until", "2030-01-01"], "not allowed with"),
        (["--valid-days", "30", "--max-bots", "-1"], "negative"),
    ],
)
def test_issue_refuses_bad_terms(tmp_path, args, message):
    key, _ = keygen(tmp_path)

    with pytest.raises(CommandError, match=message):
        run("issue_licence", "--key", str(key), "--tenant", "acme", *args)


def test_issue_refuses_to_overwrite_a_file(tmp_path):
    key, _ = keygen(tmp_path)
    target = tmp_path / "acme.licence"
    target.write_text("keep me")

    with pytest.raises(CommandError, match="already exists"):
        run("issue_licence", "--key", str(key), "--tenant", "acme", "--valid-days", "1",
            "--out", str(target))  # fmt: skip
    assert target.read_text() == "keep me"


@pytest.mark.django_db
def test_keygen_issue_import_end_to_end(tmp_path, tenant):
    key, public = keygen(tmp_path)
    document = tmp_path / "acme.licence"
    _, err = run(
        "issue_licence",
        "--key", str(key),
        "--tenant", tenant.slug,
        "--mau-limit", "1200",
        "--monthly-tokens", "9000000",
        "--tenant-per-minute", "300",
        "--user-per-minute", "12",
        "--max-bots", "4",
        "--valid-days", "365",
        "--out", str(document),
    )  # fmt: skip
    assert str(document) in err

    with override_settings(SWITCHBOARD_LICENCE_PUBLIC_KEYS=[public]):
        out, _ = run("import_licence", str(document), "--by", "ops")

    licence = Licence.objects.get()
    assert licence.document == document.read_text()
    assert licence.imported_by == "ops"
    assert f"Imported licence {licence.licence_id} for tenant {tenant.slug}" in out
    assert "monthly users:    1,200 (hard)" in out
    assert "connector kinds:  all" in out
    limits = effective_limits(tenant.pk)
    assert (limits.mau_limit, limits.monthly_tokens, limits.max_bots) == (1200, 9_000_000, 4)
    assert (limits.tenant_messages_per_minute, limits.user_messages_per_minute) == (300, 12)


@pytest.mark.django_db
def test_import_from_stdin(tmp_path, tenant):
    key, public = keygen(tmp_path)
    text, _ = run("issue_licence", "--key", str(key), "--tenant", tenant.slug,
                  "--valid-days", "30")  # fmt: skip

    with override_settings(SWITCHBOARD_LICENCE_PUBLIC_KEYS=[public]):
        out, _ = run("import_licence", "-", stdin=text)

    assert "Imported licence" in out
    assert Licence.objects.count() == 1


@pytest.mark.django_db
def test_import_of_a_tampered_file_fails_and_changes_nothing(tmp_path, tenant):
    key, public = keygen(tmp_path)
    document = tmp_path / "acme.licence"
    run("issue_licence", "--key", str(key), "--tenant", tenant.slug, "--mau-limit", "100",
        "--valid-days", "30", "--out", str(document))  # fmt: skip
    data = json.loads(document.read_text())
    payload = unb64url(data["payload"]).replace(b'"mau_limit":100', b'"mau_limit":900')
    data["payload"] = b64url(payload)
    document.write_text(json.dumps(data))

    with (
        override_settings(SWITCHBOARD_LICENCE_PUBLIC_KEYS=[public]),
        pytest.raises(CommandError, match="licence refused: signature does not match"),
    ):
        run("import_licence", str(document))
    assert not Licence.objects.exists()


@pytest.mark.django_db
def test_import_with_an_untrusted_key_or_a_missing_file(tmp_path, tenant):
    key, _ = keygen(tmp_path)
    document = tmp_path / "acme.licence"
    run("issue_licence", "--key", str(key), "--tenant", tenant.slug, "--valid-days", "30",
        "--out", str(document))  # fmt: skip

    with (
        override_settings(SWITCHBOARD_LICENCE_PUBLIC_KEYS=[]),
        pytest.raises(CommandError, match="not trusted by this installation"),
    ):
        run("import_licence", str(document))
    with pytest.raises(CommandError, match="cannot read"):
        run("import_licence", str(tmp_path / "missing.licence"))
    assert not Licence.objects.exists()


def test_help_texts_render():
    for command in ("licence_keygen", "issue_licence", "import_licence"):
        from django.core.management import load_command_class

        parser = load_command_class("switchboard.licensing", command).create_parser(
            "manage.py", command
        )
        assert "usage:" in parser.format_help()
