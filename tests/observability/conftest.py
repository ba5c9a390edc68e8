from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from connectors.webhook import sign_headers

TOKEN = "metrics-token-for-tests-0123456789"


@dataclass
class Scrape:
    """One parsed /metrics answer."""

    text: str
    families: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            scrape.families[family.name] = family
        return scrape

    def sample_names(self) -> set[str]:
        return {s.name for f in self.families.values() for s in f.samples}

    def value(self, name: str, **labels: str) -> float:
        """The one sample called `name` whose labels include `labels`; 0 if none (a
        counter nobody has incremented yet is absent)."""
        matches = [
            s.value
            for f in self.families.values()
            for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(matches) <= 1, f"{name}{labels} matches {len(matches)} samples"
        return matches[0] if matches else 0.0


@pytest.fixture(autouse=True)
def _fresh_state(redis_client: Any) -> Iterator[None]:
    """Counters live in Redis and outlive a test's database: start each test at zero."""
    from switchboard.licensing.services import limits_cache_clear
    from switchboard.metering import admission
    from switchboard.observability import counters

    def reset() -> None:
        keys = list(redis_client.scan_iter(match=f"{counters.PREFIX}*"))
        if keys:
            redis_client.delete(*keys)
        counters.connector_labels.cache_clear()
        counters.client.cache_clear()
        counters._paused_until = 0.0
        limits_cache_clear()
        admission.redis_reset()

    reset()
    yield
    reset()


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.SWITCHBOARD_METRICS_TOKEN = TOKEN
    settings.SWITCHBOARD_METRICS_ALLOWED_NETWORKS = []
    return TOKEN


@pytest.fixture
def scrape(metrics_token: str) -> Callable[..., Scrape]:
    def get(scope: str = "all") -> Scrape:
        response = Client().get(
            "/metrics", {"scope": scope}, HTTP_AUTHORIZATION=f"Bearer {metrics_token}"
        )
        assert response.status_code == 200, response.content[:500]
        assert response["Content-Type"].startswith("text/plain")
        return Scrape.parse(response.content.decode())

    return get


@pytest.fixture
def send_webhook() -> Callable[..., Any]:
    """A signed webhook message through the real ingress view (in process)."""

    def send(connector: Any, user: str, text: str = "hello", **headers: str) -> Any:
        body = json.dumps(
            {"message_id": uuid.uuid4().hex, "user_id": user, "text": text},
            ensure_ascii=False,
        )
        signed = sign_headers(
            secret=connector.secret, event_id=f"msg_{uuid.uuid4().hex}", body=body
        )
        extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in {**signed, **headers}.items()}
        return Client().post(
            f"/hooks/webhook/{connector.pk}/",
            body,
            content_type="application/json",
            **extra,
        )

    return send
