from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction

from switchboard.pool.models import InferenceEndpoint


def _parse_spec(spec: str) -> tuple[str, str]:
    name, sep, url = spec.partition("=")
    name, url = name.strip(), url.strip().rstrip("/")
    if not sep or not name or not url:
        raise CommandError(
            f"{spec!r} is not NAME=URL (e.g. vllm-1=http://vllm-1.pool.internal:8000)"
        )
    try:
        # The admin validates the same way; a URL it would refuse could not be edited there.
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise CommandError(
            f"{url!r} is not a URL the admin accepts (a host name needs a dot, e.g. "
            "vllm-1.pool.internal, or use an IP address)"
        ) from None
    return name, url


class Command(BaseCommand):
    help = (
        "Register, list or disable the GPU pool's inference endpoints. `add` is idempotent, "
        "so a deployment can run it at every start: "
        "manage.py pool_endpoint add vllm-1=http://10.0.0.5:8000 --model Qwen/Qwen-7B-Chat"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser(
            "add",
            help="Create endpoints, or update the URL and model of existing ones (by name). "
            "An existing endpoint keeps its enabled/draining state and, unless given here, "
            "its weight and max concurrency: what an operator set in the admin survives "
            "a redeploy.",
        )
        add.add_argument("endpoints", nargs="+", metavar="NAME=URL")
        add.add_argument("--model", required=True, help="model id the server serves")
        add.add_argument("--weight", type=float, help="relative share of traffic")
        add.add_argument(
            "--max-concurrency", type=int, help="most requests one worker process sends it"
        )
        sub.add_parser("list", help="Print every endpoint with its last health check.")
        disable = sub.add_parser(
            "disable", help="Take endpoints out of routing (kept, not deleted)."
        )
        disable.add_argument("names", nargs="+", metavar="NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            self._add(options)
        elif action == "list":
            self._list()
        else:
            self._disable(options["names"])

    def _add(self, options: dict[str, Any]) -> None:
        specs = [_parse_spec(spec) for spec in options["endpoints"]]
        names = [name for name, _ in specs]
        if len(set(names)) != len(names):
            raise CommandError("an endpoint name is given twice")
        tuning: dict[str, Any] = {}
        if options["weight"] is not None:
            tuning["weight"] = options["weight"]
        if options["max_concurrency"] is not None:
            tuning["max_concurrency"] = options["max_concurrency"]
        try:
            # All or nothing: a half-registered pool after a typo is worse than none.
            with transaction.atomic():
                for name, url in specs:
                    self._add_one(name, url, options["model"], tuning)
        except ValidationError as exc:
            problems = "; ".join(
                f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
            )
            raise CommandError(f"nothing registered: {problems}") from None
        except IntegrityError:
            # Another process registered the same URL under another name meanwhile.
            raise CommandError(
                "nothing registered: another endpoint already has one of these URLs"
            ) from None

    def _add_one(self, name: str, url: str, model: str, tuning: dict[str, Any]) -> None:
        row = InferenceEndpoint.objects.select_for_update().filter(name=name).first()
        wanted = {"url": url, "model": model, **tuning}
        if row is None:
            row = InferenceEndpoint(name=name, **wanted)
            row.full_clean()
            row.save()
            self.stdout.write(f"created {name} {url} ({model})")
            return
        changed = [field for field, value in wanted.items() if getattr(row, field) != value]
        if not changed:
            self.stdout.write(f"unchanged {name} {url} ({model})")
            return
        for field in changed:
            setattr(row, field, wanted[field])
        row.full_clean()
        # Saved through the model, not a queryset update, so the audit log records it.
        row.save(update_fields=changed)
        self.stdout.write(f"updated {name}: {', '.join(changed)}")

    def _list(self) -> None:
        for row in InferenceEndpoint.objects.order_by("name"):
            state = "enabled" if row.enabled else "disabled"
            if row.draining:
                state += ", draining"
            health = {True: "healthy", False: "unhealthy", None: "not checked"}[row.healthy]
            self.stdout.write(f"{row.name}\t{row.url}\t{row.model}\t{state}\t{health}")

    def _disable(self, names: list[str]) -> None:
        rows = {row.name: row for row in InferenceEndpoint.objects.filter(name__in=names)}
        unknown = sorted(set(names) - set(rows))
        if unknown:
            raise CommandError(f"no endpoint named {', '.join(unknown)}")
        for row in rows.values():
            row.enabled = False
            row.save(update_fields=["enabled"])
            self.stdout.write(f"disabled {row.name}")
